/**
 * @file vmwkvm/policy.h
 * @brief Per-VM VMware switches: backdoor, hypercalls, nested backdoor.
 *
 * A VMM says once per VM, before its first vCPU exists, which VMware mechanisms KVM should
 * provide for that VM, and reads back what is in force. None of the per-VM uAPI is in
 * mainline Linux; the library speaks the proposed shapes ("dialects", see vmwkvm/dialect.h)
 * and only after confirming on a scratch VM that the running kernel behaves as the
 * proposal says (`KVM_CHECK_EXTENSION` alone is never trusted; in auto mode a proposed
 * number that mainline gave to another feature is never touched).
 *
 * What vmwkvm_vm_set_vmware_policy() sends to the VM fd, per dialect:
 * - **rusin-v2**: `KVM_ENABLE_CAP(BACKDOOR, b)`, `KVM_ENABLE_CAP(HYPERCALL, h)`,
 *   `KVM_ENABLE_CAP(NESTED_BACKDOOR_L0, n)` in this order, with b/h/n = 0 or 1 from the
 *   flags (a cap the kernel does not offer is skipped when its flag is 0). If a step fails,
 *   the steps already made are undone (each cap written back to its previous value), so
 *   the previous policy stays in force.
 * - **single-cap**: one `KVM_ENABLE_CAP(KVM_CAP_X86_VMWARE, mask)` with mask = the flags
 *   (the bits are the proposal's: BACKDOOR bit 0, HYPERCALL bit 1, NESTED bit 2); the
 *   kernel replaces the whole mask, so a second call replaces the first.
 * - **none** (mainline): nothing is sent. Only the global, read-only
 *   `kvm.enable_vmware_backdoor` parameter exists, so the only request that can succeed is
 *   the one that asks for exactly what that parameter already gives: ::VMWKVM_POLICY_BACKDOOR
 *   when it is Y, 0 when it is N (both return 0 and change nothing). Anything else fails
 *   with -EOPNOTSUPP. This is deliberate: a VMM asking for the backdoor on a host where the
 *   parameter is on gets it, and is told so, instead of a failure it cannot act on.
 *
 * When hypercalls are in force the library decodes the dialect's hypercall exit for this VM
 * (vmwkvm_exit_decode()); otherwise that exit number is never treated as VMware (exit 40 is
 * KVM_EXIT_TDX upstream).
 *
 * Guest-visible consequence (protocol facts): with the backdoor on, KVM lets IN/OUT and
 * INS/OUTS to ports 0x5658/0x5659 through at any CPL and hands them to the VMM as
 * KVM_EXIT_IO; with hypercalls on, VMCALL/VMMCALL reach the VMM instead of failing in the
 * guest with -KVM_ENOSYS/-KVM_EPERM; with the nested backdoor on, L0 (this VMM) answers
 * backdoor calls made at CPL3 inside an L2 guest (for example Windows with VBS, whose
 * Hyper-V L1 cannot answer VMware Tools).
 */
#ifndef VMWKVM_POLICY_H
#define VMWKVM_POLICY_H

#include <vmwkvm/common.h>
#include <vmwkvm/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Handle the VMware I/O-port backdoor (ports 0x5658/0x5659) for this VM, at any CPL. */
#define VMWKVM_POLICY_BACKDOOR (1u << 0)
/** Forward VMCALL/VMMCALL VMware hypercalls of this VM to the VMM (a dialect exit). */
#define VMWKVM_POLICY_HYPERCALL (1u << 1)
/** L0 answers CPL3 backdoor calls made in an L2 guest of this VM. Requires ::VMWKVM_POLICY_BACKDOOR. */
#define VMWKVM_POLICY_NESTED_BACKDOOR (1u << 2)
/** Every flag this version knows. */
#define VMWKVM_POLICY_ALL (VMWKVM_POLICY_BACKDOOR | VMWKVM_POLICY_HYPERCALL | VMWKVM_POLICY_NESTED_BACKDOOR)

/** State of the global `kvm.enable_vmware_backdoor` module parameter. */
enum vmwkvm_module_param {
	VMWKVM_PARAM_UNKNOWN = -1, /**< unreadable: see vmwkvm_vmware_policy::param_err */
	VMWKVM_PARAM_OFF = 0,      /**< N */
	VMWKVM_PARAM_ON = 1,       /**< Y: every VM has the I/O-port backdoor by default */
};

/** What is in force for a VM. Zero-fill, set @ref sz, call vmwkvm_vm_get_vmware_policy(). */
struct vmwkvm_vmware_policy {
	size_t sz;              /**< sizeof(struct vmwkvm_vmware_policy) */
	uint32_t flags;         /**< VMWKVM_POLICY_* in force for this VM */
	uint32_t confirmed;     /**< the subset of @ref flags the kernel itself confirmed (an accepted
				     KVM_ENABLE_CAP under a confirmed dialect, or the module parameter read
				     from sysfs for the default backdoor) */
	int32_t dialect;        /**< enum vmwkvm_dialect of the VM (never ::VMWKVM_DIALECT_AUTO) */
	int32_t module_param;   /**< enum vmwkvm_module_param: `kvm.enable_vmware_backdoor` */
	int32_t param_err;      /**< 0, or the negative errno reading the parameter failed with (-ENOENT: no such file) */
	uint32_t hypercall_exit;/**< exit reason decoded as a VMware hypercall for this VM, 0 = none */
	uint8_t set_called;     /**< 1 once vmwkvm_vm_set_vmware_policy() succeeded on this VM */
	uint8_t pad[7];         /**< zero */
	uint64_t reserved[4];   /**< zero */
};

/**
 * Set the VM's VMware policy (see the file description for the exact ioctls per dialect).
 *
 * Must be called before the VM's first vCPU exists. Before any kernel call, the library
 * confirms the dialect by behaviour on a scratch VM (created from the VM's /dev/kvm fd and
 * closed again); the caller's VM only ever receives the dialect's enable sequence.
 * Without a successful call, a VM has the kernel's default: the backdoor iff
 * `kvm.enable_vmware_backdoor` is Y.
 * @param vm    the VM
 * @param flags VMWKVM_POLICY_* bits (0 turns everything off where the dialect allows it)
 * @return 0 on success; -EINVAL for a NULL @p vm, unknown bits in @p flags, or
 *         ::VMWKVM_POLICY_NESTED_BACKDOOR without ::VMWKVM_POLICY_BACKDOOR; -EBUSY once a
 *         vCPU exists (created through vmwkvm_vm_create_vcpu() or announced with
 *         vmwkvm_vm_note_vcpu_created(); also when the kernel refuses the vCPU-guarded enable
 *         with EINVAL although the dialect accepts the value, which means the VMM created a
 *         vCPU on its own); -EOPNOTSUPP when the kernel or dialect cannot do what was asked
 *         (the log callback gets the dialect and the reason at ::VMWKVM_LOG_WARN); or the
 *         negative errno of a failed KVM_ENABLE_CAP (-EINTR, -ENOMEM, -EFAULT ...). On every
 *         failure the previous policy stays in force (a partial rusin-v2 sequence is undone;
 *         if undoing fails too, an error is logged and vmwkvm_vm_get_vmware_policy() reports
 *         only what the kernel still confirms).
 * @par Thread-safety
 * Safe; serialised with vCPU creation on the same VM.
 */
VMWKVM_API int vmwkvm_vm_set_vmware_policy(vmwkvm_vm *vm, uint32_t flags);

/**
 * Read the policy in force, what the kernel confirmed, the dialect and the module parameter.
 *
 * Performs no ioctl; reads `/sys/module/kvm/parameters/enable_vmware_backdoor` each time.
 * Before a successful vmwkvm_vm_set_vmware_policy(), @ref vmwkvm_vmware_policy::flags is
 * the kernel default (::VMWKVM_POLICY_BACKDOOR iff the parameter is Y). Under dialect
 * `none`, the flags are always that default.
 * @param vm  the VM
 * @param out receives the state; out->sz must be set (older, smaller structs are filled up
 *            to their size)
 * @return 0; -EINVAL for NULL arguments or out->sz smaller than its first field.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_vm_get_vmware_policy(vmwkvm_vm *vm, struct vmwkvm_vmware_policy *out);

/**
 * Format policy flags as text: "backdoor,hypercall,nested" ("none" for 0; unknown bits as
 * "0x..").
 * @param flags VMWKVM_POLICY_* bits
 * @param buf   destination
 * @param len   size of @p buf (the text is truncated and always NUL-terminated)
 * @return the length of the full text (like snprintf), or -EINVAL for a NULL @p buf or @p len 0.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_policy_flags_format(uint32_t flags, char *buf, size_t len);

/**
 * Parse a comma-separated list of "backdoor", "hypercall", "nested" (or "none").
 * @param text the list, for example "backdoor,nested"
 * @param out  receives the VMWKVM_POLICY_* bits
 * @return 0; -EINVAL for NULL arguments or an unknown word.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_policy_flags_parse(const char *text, uint32_t *out);

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_POLICY_H */
