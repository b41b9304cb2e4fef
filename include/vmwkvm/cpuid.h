/**
 * @file vmwkvm/cpuid.h
 * @brief VMware hypervisor CPUID leaves, so that guests find the backdoor the way they look for it.
 *
 * Guests decide from CPUID, before their first backdoor call, whether they run on VMware
 * and which transport to use (protocol facts sheet sections 1.2, 1.7 and 6 items 5 and 7):
 * - Linux with CPUID.1:ECX[31] (hypervisor) set accepts only the vendor "VMwareVMware" at
 *   leaf 0x40000000; its DMI + GETVERSION fallback runs only when the hypervisor bit is
 *   clear. It reads leaf 0x40000010 only when the max leaf (0x40000000 EAX) is >=
 *   0x40000010, and then uses ECX & 3: 2 = VMCALL, 1 = VMMCALL, anything else (0, or 3 =
 *   both bits) = the I/O port.
 * - open-vm-tools needs the hypervisor bit, the vendor "VMwareVMware" and max leaf >=
 *   0x40000010, then takes VMCALL if 0x40000010 ECX bit 1 is set (checked first), else
 *   VMMCALL if bit 0, else the port. vmtoolsd refuses to start when leaf 0x40000000 says
 *   "KVMKVMKVM" (or Xen).
 * - Leaf 0x40000010 EAX is the TSC frequency and EBX the APIC bus frequency, in **kHz**
 *   (QEMU writes EAX = tsc_khz, EBX = 1000000).
 *
 * vmwkvm_cpuid_vmware() edits the VMM's `struct kvm_cpuid_entry2` array (the one it passes
 * to KVM_SET_CPUID2; include `<linux/kvm.h>` for the type) and writes exactly:
 *
 * | leaf (index 0) | register | value |
 * |---|---|---|
 * | 0x00000001 | ECX | bit 31 set (every copy of the leaf) |
 * | 0x40000000 | EAX | 0x40000010 (max hypervisor leaf) |
 * | 0x40000000 | EBX, ECX, EDX | 0x61774D56, 0x4D566572, 0x65726177 ("VMwa", "reVM", "ware") |
 * | 0x40000010 | EAX | TSC frequency in kHz |
 * | 0x40000010 | EBX | APIC bus frequency in kHz |
 * | 0x40000010 | ECX | 0x2 (VMCALL) on Intel or 0x1 (VMMCALL) on AMD, only when the VM's policy has VMWKVM_POLICY_HYPERCALL in force and confirmed by the kernel; otherwise 0. Never both bits. Bit 3 (TDX API) is never set. |
 * | 0x40000010 | EDX | 0 |
 *
 * Every other entry of the hypervisor range 0x40000000-0x400000FF (KVM's own "KVMKVMKVM"
 * leaves 0x40000000/0x40000001, Hyper-V or Xen leaves, an older copy of the VMware leaves)
 * is removed, unless ::VMWKVM_CPUID_KEEP_KVM_LEAVES moves KVM's leaves up (see there).
 * Each leaf written appears exactly once, whatever duplicates the input held, so calling
 * the function again on its own output changes nothing.
 */
#ifndef VMWKVM_CPUID_H
#define VMWKVM_CPUID_H

#include <vmwkvm/common.h>
#include <vmwkvm/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

struct kvm_cpuid_entry2;

/** The hypervisor vendor leaf. */
#define VMWKVM_CPUID_LEAF_VENDOR 0x40000000u
/** VMware's timing and features leaf (TSC kHz, APIC bus kHz, hypercall transport bits). */
#define VMWKVM_CPUID_LEAF_VMWARE_INFO 0x40000010u
/** Base KVM's own leaves move to with ::VMWKVM_CPUID_KEEP_KVM_LEAVES. */
#define VMWKVM_CPUID_KVM_MOVED_BASE 0x40000100u
/** 0x40000010 ECX: the guest may use VMMCALL for backdoor calls. */
#define VMWKVM_CPUID_ECX_VMMCALL (1u << 0)
/** 0x40000010 ECX: the guest may use VMCALL for backdoor calls. */
#define VMWKVM_CPUID_ECX_VMCALL (1u << 1)
/** APIC bus frequency written when the VMM gives none: KVM's default 1 ns bus cycle = 1 GHz. */
#define VMWKVM_CPUID_APIC_BUS_KHZ_DEFAULT 1000000u

/**
 * Option: keep KVM's paravirtual leaves, moved from 0x40000000.. to 0x40000100.., for VMMs
 * that want both VMware and KVM paravirtualization (kvmclock, PV EOI, ...).
 *
 * Applies when leaf 0x40000000 carries KVM's signature "KVMKVMKVM": every entry in
 * 0x40000000-0x400000FF moves up by 0x100 and the moved signature leaf's EAX (its max
 * leaf) moves with it (0x40000001 becomes 0x40000101). What guests then see:
 * - open-vm-tools and other tools that read only leaf 0x40000000 see VMware and use the
 *   transport of 0x40000010.
 * - Linux scans 0x40000000-0x4000FF00 in steps of 0x100 for "KVMKVMKVM" and finds KVM at
 *   0x40000100, so its KVM paravirtual features work. But Linux picks ONE platform: the
 *   detector returning the highest value wins, VMware's returns 0x40000000 and KVM's
 *   returns its base, 0x40000100. So Linux reports "Hypervisor detected: KVM" and its
 *   VMware platform code does not run (no VMware hypercall-mode selection, no GETHZ
 *   calibration; drivers that require the VMware platform type stay off). Without this
 *   option Linux detects VMware and does not use KVM's paravirtual features.
 * If the target range 0x40000100-0x400001FF is already used by other entries, the call
 * fails with -EEXIST. Leaves at 0x40000000 that are not KVM's are removed as usual.
 */
#define VMWKVM_CPUID_KEEP_KVM_LEAVES (1u << 0)

/** CPU vendor of the guest's CPU model: selects which hypercall instruction is advertised. */
enum vmwkvm_cpu_vendor {
	VMWKVM_CPU_VENDOR_UNKNOWN = 0, /**< not given: no hypercall bit can be chosen */
	VMWKVM_CPU_VENDOR_INTEL = 1,   /**< GenuineIntel (and Centaur/Zhaoxin): VMCALL, ECX bit 1 */
	VMWKVM_CPU_VENDOR_AMD = 2,     /**< AuthenticAMD (and HygonGenuine): VMMCALL, ECX bit 0 */
};

/** Options for vmwkvm_cpuid_vmware(). Zero-fill, then set @ref sz. */
struct vmwkvm_cpuid_opts {
	size_t sz;             /**< sizeof(struct vmwkvm_cpuid_opts) */
	uint32_t flags;        /**< ::VMWKVM_CPUID_KEEP_KVM_LEAVES */
	uint32_t cpu_vendor;   /**< enum vmwkvm_cpu_vendor; required when hypercalls are in force */
	uint32_t tsc_khz;      /**< TSC frequency in kHz; 0 = ask KVM (KVM_GET_TSC_KHZ) */
	uint32_t apic_bus_khz; /**< APIC bus frequency in kHz; 0 = ::VMWKVM_CPUID_APIC_BUS_KHZ_DEFAULT
				    (pass your value if you changed it with KVM_CAP_X86_APIC_BUS_CYCLES_NS) */
	int vcpu_fd;           /**< vCPU fd to ask KVM_GET_TSC_KHZ on (when @ref vcpu_fd_set) */
	int vcpu_fd_set;       /**< non-zero: @ref vcpu_fd is meaningful; else the VM fd is asked */
	uint64_t reserved[4];  /**< must be zero */
};

/**
 * Edit a CPUID entry array in place for a VMware guest (values in the file description).
 *
 * The work is done on a copy: on any error the array is unchanged.
 * @param vm      the VM whose policy decides the hypercall bit, and whose fd answers
 *                KVM_GET_TSC_KHZ when no vCPU fd is given; may be NULL (then no
 *                hypercall bit, and the TSC frequency must come from opts)
 * @param entries the array (as for KVM_SET_CPUID2)
 * @param nent    entries in use
 * @param max_ent capacity of @p entries
 * @param opts    options, or NULL for defaults
 * @return the number of entries in use afterwards (>= 1); -EINVAL (NULL @p entries, @p nent >
 *         @p max_ent, bad @p opts, no leaf 1 in the array, KVM reports a TSC frequency of 0,
 *         or hypercalls are in force and opts->cpu_vendor is unknown); -ENOSPC when the
 *         result needs more than @p max_ent entries; -EEXIST (::VMWKVM_CPUID_KEEP_KVM_LEAVES
 *         and 0x40000100.. already used); -ENOMEM; or the negative errno of
 *         KVM_GET_TSC_KHZ (-ENOTTY on a kernel without the VM-scope ioctl: pass a vCPU fd).
 * @par Thread-safety
 * Safe; @p entries must not be used concurrently.
 */
VMWKVM_API int vmwkvm_cpuid_vmware(vmwkvm_vm *vm, struct kvm_cpuid_entry2 *entries, uint32_t nent,
				   uint32_t max_ent, const struct vmwkvm_cpuid_opts *opts);

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_CPUID_H */
