/* Capability probing (vmwkvm/probe.h): kvm, caps, userfaultfd and library items.
 * The VMware and nested items are in probe_vmware.c. */
#include "probe/probe_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ names */

const char *vmwkvm_probe_state_name(uint32_t state)
{
	switch (state) {
	case VMWKVM_PROBE_UNKNOWN: return "unknown";
	case VMWKVM_PROBE_ABSENT: return "absent";
	case VMWKVM_PROBE_PRESENT: return "present";
	default: return "invalid";
	}
}

const char *vmwkvm_probe_scope_name(uint32_t scope)
{
	switch (scope) {
	case VMWKVM_PROBE_SCOPE_SYSTEM: return "system";
	case VMWKVM_PROBE_SCOPE_VM: return "vm";
	case VMWKVM_PROBE_SCOPE_HOST: return "host";
	case VMWKVM_PROBE_SCOPE_LIBRARY: return "library";
	default: return "invalid";
	}
}

const char *vmwkvm_probe_group_name(uint32_t group)
{
	switch (group) {
	case VMWKVM_PROBE_GROUP_KVM: return "kvm";
	case VMWKVM_PROBE_GROUP_CAPS: return "caps";
	case VMWKVM_PROBE_GROUP_VMWARE: return "vmware";
	case VMWKVM_PROBE_GROUP_NESTED: return "nested";
	case VMWKVM_PROBE_GROUP_USERFAULTFD: return "userfaultfd";
	case VMWKVM_PROBE_GROUP_LIBRARY: return "library";
	default: return "invalid";
	}
}

const char *vmwkvm_errno_name(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case 0: return "0";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EINTR: return "EINTR";
	case EIO: return "EIO";
	case ENXIO: return "ENXIO";
	case E2BIG: return "E2BIG";
	case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case ENODEV: return "ENODEV";
	case ENOTDIR: return "ENOTDIR";
	case EINVAL: return "EINVAL";
	case ENFILE: return "ENFILE";
	case EMFILE: return "EMFILE";
	case ENOTTY: return "ENOTTY";
	case ENOSPC: return "ENOSPC";
	case EROFS: return "EROFS";
	case ERANGE: return "ERANGE";
	case ENOSYS: return "ENOSYS";
	case EPROTO: return "EPROTO";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case ETIMEDOUT: return "ETIMEDOUT";
	case EHWPOISON: return "EHWPOISON";
	default: return "E?";
	}
}

/* ------------------------------------------------------------------ item store */

void vk_probe_add(struct vmwkvm_probe *p, uint32_t id, uint32_t group, uint32_t scope, const char *key,
		  uint32_t state, bool has_value, int64_t value, uint32_t number, int err, const char *fmt, ...)
{
	if (p->n >= VK_PROBE_MAX_ITEMS) {
		p->overflow = true;
		return;
	}
	struct vk_probe_entry *e = &p->e[p->n++];
	memset(e, 0, sizeof(*e));
	e->item.id = id;
	e->item.group = group;
	e->item.scope = scope;
	e->item.state = state;
	e->item.has_value = has_value ? 1 : 0;
	e->item.value = has_value ? value : 0;
	e->item.number = number;
	e->item.err = err > 0 ? -err : err;
	snprintf(e->name, sizeof(e->name), "%s.%s", vmwkvm_probe_group_name(group), key);
	e->item.name = e->name;
	e->item.key = e->name + strlen(vmwkvm_probe_group_name(group)) + 1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->reason, sizeof(e->reason), fmt, ap);
	va_end(ap);
	e->item.reason = e->reason;
}

const struct vmwkvm_probe_item *vk_probe_get(const struct vmwkvm_probe *p, uint32_t id, uint32_t scope)
{
	for (size_t i = 0; i < p->n; i++)
		if (p->e[i].item.id == id && p->e[i].item.scope == scope)
			return &p->e[i].item;
	return NULL;
}

int vk_probe_errstr(char *buf, size_t len, int err)
{
	return snprintf(buf, len, "%s (%s)", vmwkvm_errno_name(err), vmwkvm_strerror(err));
}

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

/* ------------------------------------------------------------------ userfaultfd */

static const struct uffd_feature_def {
	uint32_t id;
	uint32_t bit;
	const char *key;
	const char *what;
} uffd_features[] = {
	{ VMWKVM_PROBE_UFFD_WP, 0, "wp", "write-protect faults on anonymous memory" },
	{ VMWKVM_PROBE_UFFD_WP_HUGETLBFS_SHMEM, 12, "wp_hugetlbfs_shmem", "write-protect on shmem and hugetlbfs" },
	{ VMWKVM_PROBE_UFFD_WP_UNPOPULATED, 13, "wp_unpopulated",
	  "write-protect of never-touched anonymous pages (without it the first write is not reported)" },
	{ VMWKVM_PROBE_UFFD_WP_ASYNC, 15, "wp_async", "asynchronous write-protect (dirty tracking, no trap)" },
	{ VMWKVM_PROBE_UFFD_MINOR_SHMEM, 10, "minor_shmem", "minor faults on shmem (UFFDIO_CONTINUE)" },
	{ VMWKVM_PROBE_UFFD_MINOR_HUGETLBFS, 9, "minor_hugetlbfs", "minor faults on hugetlbfs" },
	{ VMWKVM_PROBE_UFFD_MISSING_SHMEM, 5, "missing_shmem", "missing faults on shmem" },
	{ VMWKVM_PROBE_UFFD_EVENT_REMOVE, 3, "event_remove", "MADV_DONTNEED/MADV_REMOVE events" },
	{ VMWKVM_PROBE_UFFD_MOVE, 16, "move", "UFFDIO_MOVE" },
};

#define UFFD_ADD(p, id, key, state, hv, val, num, err, ...)                                                          \
	vk_probe_add((p), (id), VMWKVM_PROBE_GROUP_USERFAULTFD, VMWKVM_PROBE_SCOPE_HOST, (key), (state), (hv), (val), \
		     (num), (err), __VA_ARGS__)

static void probe_uffd_skipped(struct vmwkvm_probe *p, const char *why)
{
	UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCALL, "syscall", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0, "%s", why);
	UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCALL_USER_ONLY, "syscall_user_mode_only", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0,
		 "%s", why);
	UFFD_ADD(p, VMWKVM_PROBE_UFFD_DEV, "dev_userfaultfd", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0, "%s", why);
	UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCTL, "unprivileged_sysctl", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0, "%s", why);
	UFFD_ADD(p, VMWKVM_PROBE_UFFD_API, "api", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0, "%s", why);
	UFFD_ADD(p, VMWKVM_PROBE_UFFD_KERNEL_FAULTS, "kernel_faults", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0, "%s", why);
	for (size_t i = 0; i < sizeof(uffd_features) / sizeof(uffd_features[0]); i++)
		UFFD_ADD(p, uffd_features[i].id, uffd_features[i].key, VMWKVM_PROBE_UNKNOWN, false, 0,
			 uffd_features[i].bit, 0, "%s", why);
}

/* State of a userfaultfd creation attempt from its errno: which failures are facts. */
static uint32_t uffd_create_state(int r, bool user_only_flag)
{
	if (r >= 0)
		return VMWKVM_PROBE_PRESENT;
	if (r == -ENOSYS || r == -EPERM || (user_only_flag && r == -EINVAL))
		return VMWKVM_PROBE_ABSENT;
	return VMWKVM_PROBE_UNKNOWN;
}

static void probe_uffd(struct vmwkvm_probe *p)
{
	char es[80];
	/* the sysctl */
	char buf[32];
	int r = vk_read_file("/proc/sys/vm/unprivileged_userfaultfd", buf, sizeof(buf));
	if (r < 0) {
		vk_probe_errstr(es, sizeof(es), r);
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCTL, "unprivileged_sysctl", VMWKVM_PROBE_UNKNOWN, false, 0, 0, r,
			 "reading /proc/sys/vm/unprivileged_userfaultfd failed: %s", es);
	} else {
		char *end = NULL;
		long v = strtol(buf, &end, 10);
		if (end == buf || (*end && *end != '\n') || v < 0) {
			UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCTL, "unprivileged_sysctl", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0,
				 "/proc/sys/vm/unprivileged_userfaultfd holds no number");
		} else {
			UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCTL, "unprivileged_sysctl",
				 v ? VMWKVM_PROBE_PRESENT : VMWKVM_PROBE_ABSENT, true, v, 0, 0,
				 v ? "vm.unprivileged_userfaultfd = %ld: unprivileged processes may trap kernel faults"
				   : "vm.unprivileged_userfaultfd = %ld: without CAP_SYS_PTRACE only user-mode-only "
				     "userfaultfds are allowed",
				 v);
		}
	}

	/* userfaultfd(2) without and with UFFD_USER_MODE_ONLY */
	int fd_full = vk_userfaultfd(O_CLOEXEC | O_NONBLOCK);
	uint32_t st_full = uffd_create_state(fd_full, false);
	if (fd_full >= 0) {
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCALL, "syscall", st_full, false, 0, 0, 0,
			 "userfaultfd(O_CLOEXEC|O_NONBLOCK) succeeded: this process may trap kernel-mode faults");
	} else {
		vk_probe_errstr(es, sizeof(es), fd_full);
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCALL, "syscall", st_full, false, 0, 0, fd_full,
			 "userfaultfd(O_CLOEXEC|O_NONBLOCK) failed: %s%s", es,
			 fd_full == -EPERM ? " (needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1)"
			 : fd_full == -ENOSYS ? " (kernel built without CONFIG_USERFAULTFD, or blocked by seccomp)"
					      : "");
	}
	int fd_user = vk_userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	uint32_t st_user = uffd_create_state(fd_user, true);
	if (fd_user >= 0) {
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCALL_USER_ONLY, "syscall_user_mode_only", st_user, false, 0, 0, 0,
			 "userfaultfd(UFFD_USER_MODE_ONLY) succeeded (traps user-mode faults only, not faults KVM takes)");
	} else {
		vk_probe_errstr(es, sizeof(es), fd_user);
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCALL_USER_ONLY, "syscall_user_mode_only", st_user, false, 0, 0, fd_user,
			 "userfaultfd(UFFD_USER_MODE_ONLY) failed: %s%s", es,
			 fd_user == -EINVAL ? " (kernel older than 5.11)" : "");
	}

	/* /dev/userfaultfd + USERFAULTFD_IOC_NEW */
	int fd_dev = -1;
	uint32_t st_dev;
	int dev = vk_open("/dev/userfaultfd", O_RDWR);
	if (dev < 0) {
		vk_probe_errstr(es, sizeof(es), dev);
		bool fact = dev == -ENOENT || dev == -EACCES || dev == -EPERM || dev == -ENODEV || dev == -ENXIO;
		st_dev = fact ? VMWKVM_PROBE_ABSENT : VMWKVM_PROBE_UNKNOWN;
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_DEV, "dev_userfaultfd", st_dev, false, 0, 0, dev,
			 "open(/dev/userfaultfd) failed: %s%s", es,
			 dev == -ENOENT ? " (kernel older than 6.1, or no device node)"
			 : (dev == -EACCES || dev == -EPERM) ? " (grant access to the device, e.g. with an ACL)"
							     : "");
	} else {
		fd_dev = vk_ioctl(dev, USERFAULTFD_IOC_NEW, (void *)(uintptr_t)(O_CLOEXEC | O_NONBLOCK));
		vk_close(dev);
		if (fd_dev < 0) {
			vk_probe_errstr(es, sizeof(es), fd_dev);
			st_dev = VMWKVM_PROBE_UNKNOWN;
			UFFD_ADD(p, VMWKVM_PROBE_UFFD_DEV, "dev_userfaultfd", st_dev, false, 0, 0, fd_dev,
				 "/dev/userfaultfd opened, but USERFAULTFD_IOC_NEW failed: %s", es);
		} else {
			st_dev = VMWKVM_PROBE_PRESENT;
			UFFD_ADD(p, VMWKVM_PROBE_UFFD_DEV, "dev_userfaultfd", st_dev, false, 0, 0, 0,
				 "/dev/userfaultfd + USERFAULTFD_IOC_NEW gave a userfaultfd that traps kernel-mode faults");
		}
	}

	/* can faults KVM takes inside the kernel be trapped? */
	if (st_full == VMWKVM_PROBE_PRESENT || st_dev == VMWKVM_PROBE_PRESENT) {
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_KERNEL_FAULTS, "kernel_faults", VMWKVM_PROBE_PRESENT, false, 0, 0, 0,
			 "yes: a userfaultfd without UFFD_USER_MODE_ONLY is available through %s",
			 st_full == VMWKVM_PROBE_PRESENT && st_dev == VMWKVM_PROBE_PRESENT ? "userfaultfd(2) and /dev/userfaultfd"
			 : st_full == VMWKVM_PROBE_PRESENT				 ? "userfaultfd(2)"
											 : "/dev/userfaultfd");
	} else if (st_full == VMWKVM_PROBE_ABSENT && st_dev == VMWKVM_PROBE_ABSENT) {
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_KERNEL_FAULTS, "kernel_faults", VMWKVM_PROBE_ABSENT, false, 0, 0, 0,
			 "no: neither userfaultfd(2) without UFFD_USER_MODE_ONLY nor /dev/userfaultfd is available%s",
			 st_user == VMWKVM_PROBE_PRESENT ? " (a user-mode-only uffd does not see faults KVM takes)" : "");
	} else {
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_KERNEL_FAULTS, "kernel_faults", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0,
			 "cannot tell: creating a kernel-fault-capable userfaultfd failed for a reason that is not a "
			 "refusal (see syscall and dev_userfaultfd)");
	}

	/* features, from the most capable fd we have */
	int api_fd = fd_full >= 0 ? fd_full : fd_dev >= 0 ? fd_dev : fd_user;
	const char *api_src = fd_full >= 0 ? "userfaultfd(2)" : fd_dev >= 0 ? "/dev/userfaultfd" : "userfaultfd(2) user-mode-only";
	bool have_features = false;
	uint64_t features = 0;
	if (api_fd < 0) {
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_API, "api", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0,
			 "no userfaultfd could be created, so UFFDIO_API was not asked");
		snprintf(es, sizeof(es), "no userfaultfd could be created");
	} else {
		struct uffdio_api api;
		memset(&api, 0, sizeof(api));
		api.api = UFFD_API;
		api.features = 0;
		r = vk_ioctl(api_fd, UFFDIO_API, &api);
		if (r < 0) {
			char e2[80];
			vk_probe_errstr(e2, sizeof(e2), r);
			UFFD_ADD(p, VMWKVM_PROBE_UFFD_API, "api", VMWKVM_PROBE_UNKNOWN, false, 0, 0, r,
				 "UFFDIO_API on a uffd from %s failed: %s", api_src, e2);
			snprintf(es, sizeof(es), "UFFDIO_API failed: %.50s", e2);
		} else {
			have_features = true;
			features = api.features;
			UFFD_ADD(p, VMWKVM_PROBE_UFFD_API, "api", VMWKVM_PROBE_PRESENT, true, (int64_t)features, 0, 0,
				 "UFFDIO_API (uffd from %s): features 0x%llx, ioctls 0x%llx", api_src,
				 (unsigned long long)api.features, (unsigned long long)api.ioctls);
		}
	}
	for (size_t i = 0; i < sizeof(uffd_features) / sizeof(uffd_features[0]); i++) {
		const struct uffd_feature_def *f = &uffd_features[i];
		if (!have_features) {
			UFFD_ADD(p, f->id, f->key, VMWKVM_PROBE_UNKNOWN, false, 0, f->bit, 0, "not known: %s", es);
			continue;
		}
		bool on = (features >> f->bit) & 1u;
		UFFD_ADD(p, f->id, f->key, on ? VMWKVM_PROBE_PRESENT : VMWKVM_PROBE_ABSENT, true,
			 (int64_t)(features & (1ull << f->bit)), f->bit, 0, "UFFDIO_API feature bit %u %s: %s", f->bit,
			 on ? "set" : "clear", f->what);
	}
	if (fd_full >= 0)
		vk_close(fd_full);
	if (fd_user >= 0)
		vk_close(fd_user);
	if (fd_dev >= 0)
		vk_close(fd_dev);
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
		probe_uffd_skipped(p, "not asked: userfaultfd probing was disabled (VMWKVM_PROBE_F_NO_USERFAULTFD)");
	else
		probe_uffd(p);
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

void vmwkvm_probe_free(vmwkvm_probe *probe)
{
	free(probe);
}

size_t vmwkvm_probe_count(const vmwkvm_probe *probe)
{
	return probe ? probe->n : 0;
}

const struct vmwkvm_probe_item *vmwkvm_probe_item(const vmwkvm_probe *probe, size_t index)
{
	if (!probe || index >= probe->n) {
		errno = EINVAL;
		return NULL;
	}
	return &probe->e[index].item;
}

const struct vmwkvm_probe_item *vmwkvm_probe_find(const vmwkvm_probe *probe, uint32_t id, uint32_t scope)
{
	if (!probe) {
		errno = EINVAL;
		return NULL;
	}
	const struct vmwkvm_probe_item *it = vk_probe_get(probe, id, scope);
	if (!it)
		errno = ENOENT;
	return it;
}

int vmwkvm_probe_kvm_usable(const vmwkvm_probe *probe)
{
	if (!probe)
		return -EINVAL;
	const struct vmwkvm_probe_item *dev = vk_probe_get(probe, VMWKVM_PROBE_KVM_DEVICE, VMWKVM_PROBE_SCOPE_HOST);
	const struct vmwkvm_probe_item *api =
		vk_probe_get(probe, VMWKVM_PROBE_KVM_API_VERSION, VMWKVM_PROBE_SCOPE_SYSTEM);
	return dev && api && dev->state == VMWKVM_PROBE_PRESENT && api->state == VMWKVM_PROBE_PRESENT ? 1 : 0;
}
