/* VMware hypervisor CPUID leaves. See vmwkvm/cpuid.h. */
#include "core/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define HV_FIRST 0x40000000u
#define HV_LAST 0x400000ffu
#define MOVED_LAST (VMWKVM_CPUID_KVM_MOVED_BASE + 0xffu)

/* "VMwareVMware" and "KVMKVMKVM\0\0\0" as EBX, ECX, EDX */
#define VMW_EBX 0x61774d56u
#define VMW_ECX 0x4d566572u
#define VMW_EDX 0x65726177u
#define KVM_EBX 0x4b4d564bu
#define KVM_ECX 0x564b4d56u
#define KVM_EDX 0x0000004du

static bool in_range(uint32_t f, uint32_t lo, uint32_t hi)
{
	return f >= lo && f <= hi;
}

static bool is_kvm_signature(const struct kvm_cpuid_entry2 *e)
{
	return e->ebx == KVM_EBX && e->ecx == KVM_ECX && e->edx == KVM_EDX;
}

/* Hypercalls in force and confirmed by the kernel for this VM. */
static bool hypercalls_confirmed(struct vmwkvm_vm *vm)
{
	if (!vm)
		return false;
	pthread_mutex_lock(&vm->lock);
	bool on = (vm->policy_flags & VMWKVM_POLICY_HYPERCALL) && (vm->policy_confirmed & VMWKVM_POLICY_HYPERCALL) &&
		  vm->hypercall_exit != 0;
	pthread_mutex_unlock(&vm->lock);
	return on;
}

static int tsc_khz_from_kvm(struct vmwkvm_vm *vm, const struct vmwkvm_cpuid_opts *o, uint32_t *out)
{
	int fd;
	if (o->vcpu_fd_set)
		fd = o->vcpu_fd;
	else if (vm)
		fd = vm->vm_fd;
	else {
		vk_warn("CPUID: no TSC frequency given and no VM or vCPU fd to ask KVM_GET_TSC_KHZ");
		return -EINVAL;
	}
	if (fd < 0)
		return -EINVAL;
	int r = vk_ioctl(fd, KVM_GET_TSC_KHZ, NULL);
	if (r < 0) {
		vk_warn("CPUID: KVM_GET_TSC_KHZ on fd %d failed: %s", fd, vmwkvm_strerror(r));
		return r;
	}
	if (r == 0) {
		vk_warn("CPUID: KVM reports a TSC frequency of 0 kHz; give opts->tsc_khz");
		return -EINVAL;
	}
	*out = (uint32_t)r;
	return 0;
}

static void set_entry(struct kvm_cpuid_entry2 *e, uint32_t function, uint32_t eax, uint32_t ebx, uint32_t ecx,
		      uint32_t edx)
{
	memset(e, 0, sizeof(*e));
	e->function = function;
	e->index = 0;
	e->flags = 0;
	e->eax = eax;
	e->ebx = ebx;
	e->ecx = ecx;
	e->edx = edx;
}

int vmwkvm_cpuid_vmware(vmwkvm_vm *vm, struct kvm_cpuid_entry2 *entries, uint32_t nent, uint32_t max_ent,
			const struct vmwkvm_cpuid_opts *opts)
{
	if (!entries || nent > max_ent || !VK_OPTS_VALID(opts, struct vmwkvm_cpuid_opts))
		return -EINVAL;
	struct vmwkvm_cpuid_opts o;
	memset(&o, 0, sizeof(o));
	if (opts)
		memcpy(&o, opts, opts->sz < sizeof(o) ? opts->sz : sizeof(o));
	if (o.flags & ~(uint32_t)VMWKVM_CPUID_KEEP_KVM_LEAVES)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(o.reserved) / sizeof(o.reserved[0]); i++)
		if (o.reserved[i])
			return -EINVAL;
	if (o.cpu_vendor > VMWKVM_CPU_VENDOR_AMD)
		return -EINVAL;

	/* leaf 1 must exist: the hypervisor bit lives there */
	bool have_leaf1 = false;
	for (uint32_t i = 0; i < nent; i++)
		if (entries[i].function == 1)
			have_leaf1 = true;
	if (!have_leaf1) {
		vk_warn("CPUID: the array has no leaf 1; cannot set the hypervisor bit");
		return -EINVAL;
	}

	/* transport bit */
	uint32_t ecx_bits = 0;
	if (hypercalls_confirmed(vm)) {
		if (o.cpu_vendor == VMWKVM_CPU_VENDOR_INTEL)
			ecx_bits = VMWKVM_CPUID_ECX_VMCALL;
		else if (o.cpu_vendor == VMWKVM_CPU_VENDOR_AMD)
			ecx_bits = VMWKVM_CPUID_ECX_VMMCALL;
		else {
			vk_warn("CPUID: hypercalls are in force for VM fd %d but the CPU vendor is unknown: "
				"cannot choose VMCALL or VMMCALL",
				vm->vm_fd);
			return -EINVAL;
		}
	}

	/* frequencies */
	uint32_t tsc = o.tsc_khz;
	if (!tsc) {
		int r = tsc_khz_from_kvm(vm, &o, &tsc);
		if (r < 0)
			return r;
	}
	uint32_t apic = o.apic_bus_khz ? o.apic_bus_khz : VMWKVM_CPUID_APIC_BUS_KHZ_DEFAULT;

	/* KVM's leaves at 0x40000000, to keep (moved) or drop */
	bool move_kvm = false;
	if (o.flags & VMWKVM_CPUID_KEEP_KVM_LEAVES) {
		for (uint32_t i = 0; i < nent; i++)
			if (entries[i].function == HV_FIRST && entries[i].index == 0 && is_kvm_signature(&entries[i]))
				move_kvm = true;
		if (move_kvm) {
			for (uint32_t i = 0; i < nent; i++) {
				if (in_range(entries[i].function, VMWKVM_CPUID_KVM_MOVED_BASE, MOVED_LAST)) {
					vk_warn("CPUID: cannot move KVM's leaves: leaf 0x%x is already in use",
						entries[i].function);
					return -EEXIST;
				}
			}
		}
	}

	/* build the result in a copy */
	size_t cap = (size_t)nent + 2;
	struct kvm_cpuid_entry2 *out = calloc(cap, sizeof(*out));
	if (!out)
		return -ENOMEM;
	size_t n = 0;
	unsigned removed = 0, moved = 0;
	for (uint32_t i = 0; i < nent; i++) {
		struct kvm_cpuid_entry2 e = entries[i];
		if (e.function == 1) {
			e.ecx |= 1u << 31;
		} else if (in_range(e.function, HV_FIRST, HV_LAST)) {
			if (!move_kvm) {
				removed++;
				continue;
			}
			/* move the whole KVM block; its max leaf moves with it */
			if (e.function == HV_FIRST && e.index == 0 && in_range(e.eax, HV_FIRST, HV_LAST))
				e.eax += 0x100;
			e.function += 0x100;
			bool dup = false;
			for (size_t k = 0; k < n; k++)
				if (out[k].function == e.function && out[k].index == e.index)
					dup = true;
			if (dup) {
				removed++;
				continue;
			}
			moved++;
		}
		out[n++] = e;
	}
	set_entry(&out[n++], VMWKVM_CPUID_LEAF_VENDOR, VMWKVM_CPUID_LEAF_VMWARE_INFO, VMW_EBX, VMW_ECX, VMW_EDX);
	set_entry(&out[n++], VMWKVM_CPUID_LEAF_VMWARE_INFO, tsc, apic, ecx_bits, 0);
	if (n > max_ent) {
		free(out);
		vk_warn("CPUID: %zu entries needed, the array holds %u", n, max_ent);
		return -ENOSPC;
	}
	memcpy(entries, out, n * sizeof(*out));
	free(out);
	vk_debug("CPUID: VMware leaves written (TSC %u kHz, APIC bus %u kHz, transport %s); %u hypervisor leaves "
		 "removed, %u moved to 0x%x",
		 tsc, apic, ecx_bits == VMWKVM_CPUID_ECX_VMCALL ? "VMCALL" : ecx_bits ? "VMMCALL" : "I/O port",
		 removed, moved, VMWKVM_CPUID_KVM_MOVED_BASE);
	return (int)n;
}
