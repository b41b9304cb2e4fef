/* Capability probing (vmwkvm/probe.h): the entry point vmwkvm_probe_new() and the kvm, caps
 * and library items. The other groups are in probe_vmware.c and probe_uffd.c, the item
 * store and accessors in items.c. */
#include "probe/items.h"
#include "probe/probe_uffd.h"
#include "probe/probe_vmware.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ kvm + caps */

static const struct cap_def {
	uint32_t id;
	uint32_t cap;
	const char *key;
	const char *kname;
} cap_defs[] = {
	{ VMWKVM_PROBE_CAP_SYNC_REGS, VMWKVM_UAPI_CAP_SYNC_REGS, "sync_regs", "KVM_CAP_SYNC_REGS" },
	{ VMWKVM_PROBE_CAP_X86_GUEST_MODE, VMWKVM_UAPI_CAP_X86_GUEST_MODE, "x86_guest_mode", "KVM_CAP_X86_GUEST_MODE" },
	{ VMWKVM_PROBE_CAP_MEMORY_FAULT_INFO, VMWKVM_UAPI_CAP_MEMORY_FAULT_INFO, "memory_fault_info",
	  "KVM_CAP_MEMORY_FAULT_INFO" },
	{ VMWKVM_PROBE_CAP_USER_MEMORY2, VMWKVM_UAPI_CAP_USER_MEMORY2, "user_memory2", "KVM_CAP_USER_MEMORY2" },
	{ VMWKVM_PROBE_CAP_GUEST_MEMFD, VMWKVM_UAPI_CAP_GUEST_MEMFD, "guest_memfd", "KVM_CAP_GUEST_MEMFD" },
	{ VMWKVM_PROBE_CAP_EXIT_HYPERCALL, VMWKVM_UAPI_CAP_EXIT_HYPERCALL, "exit_hypercall", "KVM_CAP_EXIT_HYPERCALL" },
	{ VMWKVM_PROBE_CAP_X86_USER_SPACE_MSR, VMWKVM_UAPI_CAP_X86_USER_SPACE_MSR, "x86_user_space_msr",
	  "KVM_CAP_X86_USER_SPACE_MSR" },
	{ VMWKVM_PROBE_CAP_X86_MSR_FILTER, VMWKVM_UAPI_CAP_X86_MSR_FILTER, "x86_msr_filter", "KVM_CAP_X86_MSR_FILTER" },
	{ VMWKVM_PROBE_CAP_XEN_HVM, VMWKVM_UAPI_CAP_XEN_HVM, "xen_hvm", "KVM_CAP_XEN_HVM" },
	{ VMWKVM_PROBE_CAP_VM_TYPES, VMWKVM_UAPI_CAP_VM_TYPES, "vm_types", "KVM_CAP_VM_TYPES" },
	{ VMWKVM_PROBE_CAP_PRE_FAULT_MEMORY, VMWKVM_UAPI_CAP_PRE_FAULT_MEMORY, "pre_fault_memory",
	  "KVM_CAP_PRE_FAULT_MEMORY" },
	{ VMWKVM_PROBE_CAP_GUEST_MEMFD_FLAGS, VMWKVM_UAPI_CAP_GUEST_MEMFD_FLAGS, "guest_memfd_flags",
	  "KVM_CAP_GUEST_MEMFD_FLAGS" },
	{ VMWKVM_PROBE_CAP_MEMORY_ATTRIBUTES, VMWKVM_UAPI_CAP_MEMORY_ATTRIBUTES, "memory_attributes",
	  "KVM_CAP_MEMORY_ATTRIBUTES" },
	{ VMWKVM_PROBE_CAP_CHECK_EXTENSION_VM, KVM_CAP_CHECK_EXTENSION_VM, "check_extension_vm",
	  "KVM_CAP_CHECK_EXTENSION_VM" },
	{ VMWKVM_PROBE_CAP_IMMEDIATE_EXIT, KVM_CAP_IMMEDIATE_EXIT, "immediate_exit", "KVM_CAP_IMMEDIATE_EXIT" },
	{ VMWKVM_PROBE_CAP_ENABLE_CAP_VM, KVM_CAP_ENABLE_CAP_VM, "enable_cap_vm", "KVM_CAP_ENABLE_CAP_VM" },
};

static void probe_caps(struct vmwkvm_probe *p, uint32_t scope, int fd, const char *fd_unusable)
{
	const char *where = scope == VMWKVM_PROBE_SCOPE_SYSTEM ? "system fd" : "VM fd";
	for (size_t i = 0; i < sizeof(cap_defs) / sizeof(cap_defs[0]); i++) {
		const struct cap_def *c = &cap_defs[i];
		if (fd < 0) {
			vk_probe_add(p, c->id, VMWKVM_PROBE_GROUP_CAPS, scope, c->key, VMWKVM_PROBE_UNKNOWN, false, 0,
				     c->cap, 0, "not asked: %s", fd_unusable);
			continue;
		}
		int r = vk_check_extension(fd, c->cap);
		if (r < 0) {
			char es[80];
			vk_probe_errstr(es, sizeof(es), r);
			vk_probe_add(p, c->id, VMWKVM_PROBE_GROUP_CAPS, scope, c->key, VMWKVM_PROBE_UNKNOWN, false, 0,
				     c->cap, r, "KVM_CHECK_EXTENSION(%u) on the %s failed: %s", c->cap, where, es);
		} else if (r == 0) {
			vk_probe_add(p, c->id, VMWKVM_PROBE_GROUP_CAPS, scope, c->key, VMWKVM_PROBE_ABSENT, true, 0,
				     c->cap, 0, "KVM_CHECK_EXTENSION(%u) on the %s = 0: %s not offered", c->cap, where,
				     c->kname);
		} else {
			vk_probe_add(p, c->id, VMWKVM_PROBE_GROUP_CAPS, scope, c->key, VMWKVM_PROBE_PRESENT, true, r,
				     c->cap, 0, "KVM_CHECK_EXTENSION(%u) on the %s = %d (0x%x): %s", c->cap, where, r,
				     (unsigned)r, c->kname);
		}
	}
}

/* Open /dev/kvm (or take the caller's fd) and report kvm.device, api_version, vcpu_mmap_size. */
static void probe_kvm_system(struct vmwkvm_probe *p, struct vk_probe_ctx *c)
{
	char es[80];
	if (c->kvm_fd >= 0) {
		vk_probe_add(p, VMWKVM_PROBE_KVM_DEVICE, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_HOST, "device",
			     VMWKVM_PROBE_PRESENT, true, c->kvm_fd, 0, 0, "using the caller's /dev/kvm fd %d", c->kvm_fd);
	} else {
		int fd = vk_open("/dev/kvm", O_RDWR);
		if (fd < 0) {
			vk_probe_errstr(es, sizeof(es), fd);
			bool absent = fd == -ENOENT || fd == -ENODEV || fd == -ENXIO || fd == -ENOTDIR;
			bool denied = fd == -EACCES || fd == -EPERM;
			vk_probe_add(p, VMWKVM_PROBE_KVM_DEVICE, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_HOST, "device",
				     absent ? VMWKVM_PROBE_ABSENT : VMWKVM_PROBE_UNKNOWN, false, 0, 0, fd,
				     absent ? "/dev/kvm is absent: open failed with %s"
				     : denied ? "/dev/kvm exists but this process may not open it: %s"
					      : "open(/dev/kvm) failed: %s",
				     es);
			snprintf(c->kvm_unusable, sizeof(c->kvm_unusable), "no /dev/kvm fd: open(/dev/kvm) failed with %s",
				 es);
			vk_probe_add(p, VMWKVM_PROBE_KVM_API_VERSION, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_SYSTEM,
				     "api_version", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0, "not asked: %s", c->kvm_unusable);
			vk_probe_add(p, VMWKVM_PROBE_KVM_VCPU_MMAP_SIZE, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_SYSTEM,
				     "vcpu_mmap_size", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0, "not asked: %s", c->kvm_unusable);
			return;
		}
		c->kvm_fd = fd;
		c->kvm_fd_owned = true;
		vk_probe_add(p, VMWKVM_PROBE_KVM_DEVICE, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_HOST, "device",
			     VMWKVM_PROBE_PRESENT, false, 0, 0, 0, "/dev/kvm opened read-write");
	}
	int v = vk_ioctl(c->kvm_fd, KVM_GET_API_VERSION, NULL);
	if (v < 0) {
		vk_probe_errstr(es, sizeof(es), v);
		vk_probe_add(p, VMWKVM_PROBE_KVM_API_VERSION, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_SYSTEM,
			     "api_version", VMWKVM_PROBE_UNKNOWN, false, 0, 0, v, "KVM_GET_API_VERSION failed: %s", es);
	} else if (v != KVM_API_VERSION) {
		vk_probe_add(p, VMWKVM_PROBE_KVM_API_VERSION, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_SYSTEM,
			     "api_version", VMWKVM_PROBE_ABSENT, true, v, 0, 0,
			     "KVM_GET_API_VERSION = %d, but this library speaks API version %d", v, KVM_API_VERSION);
	} else {
		c->api_ok = true;
		vk_probe_add(p, VMWKVM_PROBE_KVM_API_VERSION, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_SYSTEM,
			     "api_version", VMWKVM_PROBE_PRESENT, true, v, 0, 0, "KVM_GET_API_VERSION = %d", v);
	}
	int sz = vk_ioctl(c->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, NULL);
	if (sz < 0) {
		vk_probe_errstr(es, sizeof(es), sz);
		vk_probe_add(p, VMWKVM_PROBE_KVM_VCPU_MMAP_SIZE, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_SYSTEM,
			     "vcpu_mmap_size", VMWKVM_PROBE_UNKNOWN, false, 0, 0, sz, "KVM_GET_VCPU_MMAP_SIZE failed: %s",
			     es);
	} else if ((size_t)sz < sizeof(struct kvm_run)) {
		vk_probe_add(p, VMWKVM_PROBE_KVM_VCPU_MMAP_SIZE, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_SYSTEM,
			     "vcpu_mmap_size", VMWKVM_PROBE_ABSENT, true, sz, 0, 0,
			     "KVM_GET_VCPU_MMAP_SIZE = %d, smaller than struct kvm_run (%zu)", sz, sizeof(struct kvm_run));
	} else {
		vk_probe_add(p, VMWKVM_PROBE_KVM_VCPU_MMAP_SIZE, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_SYSTEM,
			     "vcpu_mmap_size", VMWKVM_PROBE_PRESENT, true, sz, 0, 0, "KVM_GET_VCPU_MMAP_SIZE = %d bytes", sz);
	}
}

/* The VM for VM-scope items: the caller's, or a scratch VM (type 0). */
static void probe_kvm_vm(struct vmwkvm_probe *p, struct vk_probe_ctx *c)
{
	char es[80];
	if (c->vm_fd >= 0) {
		vk_probe_add(p, VMWKVM_PROBE_KVM_VM, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_VM, "vm",
			     VMWKVM_PROBE_PRESENT, true, c->vm_fd, 0, 0, "VM-scope items asked on the caller's VM fd %d%s",
			     c->vm_fd, c->handle ? " (library VM handle)" : "");
		return;
	}
	if (c->kvm_fd < 0) {
		snprintf(c->vm_unusable, sizeof(c->vm_unusable), "no VM: %s", c->kvm_unusable);
		vk_probe_add(p, VMWKVM_PROBE_KVM_VM, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_VM, "vm",
			     VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0, "%s", c->vm_unusable);
		return;
	}
	if (c->flags & VMWKVM_PROBE_F_NO_SCRATCH_VM) {
		snprintf(c->vm_unusable, sizeof(c->vm_unusable),
			 "no VM: no VM fd given and scratch VMs were disabled (VMWKVM_PROBE_F_NO_SCRATCH_VM)");
		vk_probe_add(p, VMWKVM_PROBE_KVM_VM, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_VM, "vm",
			     VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0, "%s", c->vm_unusable);
		return;
	}
	int fd = vk_ioctl(c->kvm_fd, KVM_CREATE_VM, (void *)0);
	if (fd < 0) {
		vk_probe_errstr(es, sizeof(es), fd);
		snprintf(c->vm_unusable, sizeof(c->vm_unusable), "no VM: KVM_CREATE_VM for a scratch VM failed with %s",
			 es);
		vk_probe_add(p, VMWKVM_PROBE_KVM_VM, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_VM, "vm",
			     VMWKVM_PROBE_UNKNOWN, false, 0, 0, fd, "KVM_CREATE_VM (scratch VM, type 0) failed: %s", es);
		return;
	}
	c->vm_fd = fd;
	c->vm_fd_scratch = true;
	vk_probe_add(p, VMWKVM_PROBE_KVM_VM, VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_SCOPE_VM, "vm", VMWKVM_PROBE_PRESENT,
		     true, -1, 0, 0, "VM-scope items asked on a scratch VM (KVM_CREATE_VM type 0), closed after probing");
}

/* ------------------------------------------------------------------ library */

static void lib_number(struct vmwkvm_probe *p, uint32_t id, const char *key, uint32_t num, bool is_exit)
{
	const char *owner = num ? (is_exit ? vmwkvm_mainline_exit_name(num) : vmwkvm_mainline_cap_name(num)) : NULL;
	if (num == 0)
		vk_probe_add(p, id, VMWKVM_PROBE_GROUP_LIBRARY, VMWKVM_PROBE_SCOPE_LIBRARY, key, VMWKVM_PROBE_ABSENT, true,
			     0, 0, 0, "no number assigned (0): this part of the dialect is unavailable until one is set");
	else if (owner)
		vk_probe_add(p, id, VMWKVM_PROBE_GROUP_LIBRARY, VMWKVM_PROBE_SCOPE_LIBRARY, key, VMWKVM_PROBE_ABSENT, true,
			     num, num, 0, "%u collides with mainline %s: never trusted in auto mode", num, owner);
	else
		vk_probe_add(p, id, VMWKVM_PROBE_GROUP_LIBRARY, VMWKVM_PROBE_SCOPE_LIBRARY, key, VMWKVM_PROBE_PRESENT, true,
			     num, num, 0, "%u (not assigned to any mainline feature known to this library)", num);
}

static void probe_library(struct vmwkvm_probe *p, const struct vk_probe_ctx *c)
{
	vk_probe_add(p, VMWKVM_PROBE_LIB_VERSION, VMWKVM_PROBE_GROUP_LIBRARY, VMWKVM_PROBE_SCOPE_LIBRARY, "version",
		     VMWKVM_PROBE_PRESENT, true, vmwkvm_version(), 0, 0, "libvmwkvm %s", vmwkvm_version_string());
	int d = vmwkvm_dialect_get_default();
	vk_probe_add(p, VMWKVM_PROBE_LIB_DIALECT_DEFAULT, VMWKVM_PROBE_GROUP_LIBRARY, VMWKVM_PROBE_SCOPE_LIBRARY,
		     "dialect_default", VMWKVM_PROBE_PRESENT, true, d, 0, 0,
		     "default dialect for new VMs: %s (VMWKVM_DIALECT, else the build default, unless set by "
		     "vmwkvm_dialect_set_default())",
		     vmwkvm_dialect_name(d));
	const struct vmwkvm_proposed_numbers *n = &c->numbers;
	lib_number(p, VMWKVM_PROBE_LIB_RUSIN_CAP_BACKDOOR, "rusin_cap_backdoor", n->rusin_cap_backdoor, false);
	lib_number(p, VMWKVM_PROBE_LIB_RUSIN_CAP_HYPERCALL, "rusin_cap_hypercall", n->rusin_cap_hypercall, false);
	lib_number(p, VMWKVM_PROBE_LIB_RUSIN_CAP_NESTED, "rusin_cap_nested", n->rusin_cap_nested, false);
	lib_number(p, VMWKVM_PROBE_LIB_RUSIN_EXIT_VMWARE, "rusin_exit_vmware", n->rusin_exit_vmware, true);
	lib_number(p, VMWKVM_PROBE_LIB_SINGLE_CAP, "single_cap", n->single_cap, false);
	lib_number(p, VMWKVM_PROBE_LIB_SINGLE_EXIT, "single_exit", n->single_exit, true);
}

/* ------------------------------------------------------------------ public entry points */

int vmwkvm_probe_new(const struct vmwkvm_probe_opts *opts, vmwkvm_probe **out)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!VK_OPTS_VALID(opts, struct vmwkvm_probe_opts))
		return -EINVAL;
	struct vmwkvm_probe_opts o;
	memset(&o, 0, sizeof(o));
	if (opts) {
		size_t sz = opts->sz < sizeof(o) ? opts->sz : sizeof(o);
		memcpy(&o, opts, sz);
	}
	const uint32_t known_flags = VMWKVM_PROBE_F_NO_SCRATCH_VM | VMWKVM_PROBE_F_NO_USERFAULTFD;
	if ((o.flags & ~known_flags) || o.reserved0)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(o.reserved) / sizeof(o.reserved[0]); i++)
		if (o.reserved[i])
			return -EINVAL;
	if ((o.kvm_fd_set && o.kvm_fd < 0) || (o.vm_fd_set && o.vm_fd < 0 && !o.vm))
		return -EINVAL;

	struct vk_probe_ctx c;
	memset(&c, 0, sizeof(c));
	c.kvm_fd = o.kvm_fd_set ? o.kvm_fd : -1;
	c.vm_fd = -1;
	c.flags = o.flags;
	c.handle = o.vm;
	if (o.vm) {
		c.vm_fd = o.vm->vm_fd;
		c.numbers = o.vm->numbers;
		c.requested = o.vm->dialect_requested;
		if (c.kvm_fd < 0 && o.vm->kvm_fd >= 0)
			c.kvm_fd = o.vm->kvm_fd;
	} else {
		if (o.vm_fd_set)
			c.vm_fd = o.vm_fd;
		c.numbers.sz = sizeof(c.numbers);
		vk_proposed_snapshot(&c.numbers);
		c.requested = vmwkvm_dialect_get_default();
	}
	if (o.dialect) {
		int d = vmwkvm_dialect_from_name(o.dialect);
		if (d == -EINVAL)
			return -EINVAL;
		c.requested = d;
	}

	struct vmwkvm_probe *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;

	probe_kvm_system(p, &c);
	probe_caps(p, VMWKVM_PROBE_SCOPE_SYSTEM, c.kvm_fd, c.kvm_unusable);
	probe_kvm_vm(p, &c);
	probe_caps(p, VMWKVM_PROBE_SCOPE_VM, c.vm_fd, c.vm_unusable);
	vk_probe_vmware(p, &c);
	if (c.flags & VMWKVM_PROBE_F_NO_USERFAULTFD)
		vk_probe_uffd_skipped(p, "not asked: userfaultfd probing was disabled (VMWKVM_PROBE_F_NO_USERFAULTFD)");
	else
		vk_probe_uffd(p);
	probe_library(p, &c);

	if (c.vm_fd_scratch)
		vk_close(c.vm_fd);
	if (c.kvm_fd_owned)
		vk_close(c.kvm_fd);
	if (p->overflow)
		vk_err("probe: more than %d items; some were dropped (library bug)", VK_PROBE_MAX_ITEMS);
	*out = p;
	return 0;
}

