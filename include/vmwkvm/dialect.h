/**
 * @file vmwkvm/dialect.h
 * @brief Named shapes ("dialects") of the proposed, unmerged VMware KVM uAPI, and their numbers.
 *
 * None of the per-VM VMware uAPI is in mainline Linux. Two shapes were posted:
 *
 * - **rusin-v2**: three capabilities, `KVM_CAP_X86_VMWARE_BACKDOOR` (proposed 239),
 *   `KVM_CAP_X86_VMWARE_HYPERCALL` (240) and `KVM_CAP_X86_VMWARE_NESTED_BACKDOOR_L0` (241),
 *   plus exit reason `KVM_EXIT_VMWARE` (40) carrying `struct kvm_vmware_exit`.
 *   Mainline has since given 239/240/241 to arm64 features and exit 40 to TDX.
 * - **single-cap**: one `KVM_CAP_X86_VMWARE` whose KVM_CHECK_EXTENSION value is the mask
 *   of accepted bits (BACKDOOR bit 0, HYPERCALL bit 1, NESTED_BACKDOOR bit 2), accepted
 *   only before the first vCPU. No number has been assigned; the default is 0 (unset).
 * - **none**: mainline; only the global, read-only `kvm.enable_vmware_backdoor` module
 *   parameter exists.
 *
 * The numbers live in their own namespace (`VMWKVM_PROPOSED_*`). They come from the
 * build (CMake cache variables of the same names), can be overridden at run time by the
 * `VMWKVM_PROPOSED` environment variable, read once at first use:
 * `VMWKVM_PROPOSED="rusin.cap_backdoor=239,rusin.cap_hypercall=240,rusin.cap_nested=241,rusin.exit=40,single.cap=250,single.exit=43"`
 * (any subset), and by vmwkvm_proposed_set(). The dialect the library uses is chosen by
 * `VMWKVM_DIALECT` (`auto`, `none`, `rusin-v2`, `single-cap`) or vmwkvm_dialect_set_default().
 *
 * **Safety rule.** In `auto` mode the library never trusts a proposed number that
 * mainline assigned to another feature (see vmwkvm_mainline_cap_name()): such a dialect
 * is reported as absent with the collision as the reason, and nothing is enabled through
 * it. A dialect is only ever used for enabling after its behaviour was confirmed on a
 * scratch VM (see vmwkvm/probe.h); `KVM_CHECK_EXTENSION` answering non-zero is never
 * enough.
 */
#ifndef VMWKVM_DIALECT_H
#define VMWKVM_DIALECT_H

#include <vmwkvm/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Shapes of the VMware per-VM uAPI. */
enum vmwkvm_dialect {
	VMWKVM_DIALECT_AUTO = -1,      /**< probe the kernel; trust only non-colliding, confirmed numbers */
	VMWKVM_DIALECT_NONE = 0,       /**< mainline: global module parameter only */
	VMWKVM_DIALECT_RUSIN_V2 = 1,   /**< three caps + KVM_EXIT_VMWARE (Zack Rusin's v2 series) */
	VMWKVM_DIALECT_SINGLE_CAP = 2, /**< one KVM_CAP_X86_VMWARE with a bit mask (maintainers' request) */
};

/** single-cap enable bit: handle the I/O-port backdoor for this VM. */
#define VMWKVM_SINGLE_CAP_ENABLE_BACKDOOR (1ull << 0)
/** single-cap enable bit: forward VMCALL/VMMCALL with the VMware magic to userspace. */
#define VMWKVM_SINGLE_CAP_ENABLE_HYPERCALL (1ull << 1)
/** single-cap enable bit: L0 handles CPL3 backdoor accesses made in L2 (needs BACKDOOR). */
#define VMWKVM_SINGLE_CAP_ENABLE_NESTED_BACKDOOR (1ull << 2)

/**
 * Proposed uAPI numbers in force. 0 means "no number assigned": the feature is absent.
 * A size-prefixed structure: set @ref sz to sizeof(struct vmwkvm_proposed_numbers).
 */
struct vmwkvm_proposed_numbers {
	size_t sz;                    /**< sizeof(struct vmwkvm_proposed_numbers) */
	uint32_t rusin_cap_backdoor;  /**< rusin-v2 KVM_CAP_X86_VMWARE_BACKDOOR (default 239) */
	uint32_t rusin_cap_hypercall; /**< rusin-v2 KVM_CAP_X86_VMWARE_HYPERCALL (default 240) */
	uint32_t rusin_cap_nested;    /**< rusin-v2 KVM_CAP_X86_VMWARE_NESTED_BACKDOOR_L0 (default 241) */
	uint32_t rusin_exit_vmware;   /**< rusin-v2 KVM_EXIT_VMWARE (default 40) */
	uint32_t single_cap;          /**< single-cap KVM_CAP_X86_VMWARE (default 0: unassigned) */
	uint32_t single_exit;         /**< single-cap hypercall exit reason (default 0: unassigned) */
	uint32_t reserved[6];         /**< must be zero */
};

/**
 * Read the proposed numbers in force (build defaults, then `VMWKVM_PROPOSED`, then
 * vmwkvm_proposed_set()).
 * @param out receives the numbers; out->sz must be set by the caller.
 * @return 0; -EINVAL if @p out is NULL or out->sz is smaller than the first field.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_proposed_get(struct vmwkvm_proposed_numbers *out);

/**
 * Override the proposed numbers process-wide. Affects VMs and probes created afterwards.
 * @param nums new numbers, or NULL to return to the build and environment defaults.
 * @return 0; -EINVAL if nums->sz is wrong or a reserved field is non-zero.
 * @par Thread-safety
 * Safe; objects created before the call keep the numbers they were created with.
 */
VMWKVM_API int vmwkvm_proposed_set(const struct vmwkvm_proposed_numbers *nums);

/**
 * Choose the dialect used by VMs and probes created afterwards (default: `VMWKVM_DIALECT`
 * from the environment, else the build default, normally ::VMWKVM_DIALECT_AUTO).
 * @param dialect an enum vmwkvm_dialect value
 * @return 0; -EINVAL for an unknown value.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_dialect_set_default(int dialect);

/**
 * The dialect selection in force for new objects.
 * @return an enum vmwkvm_dialect value (possibly ::VMWKVM_DIALECT_AUTO); never fails.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_dialect_get_default(void);

/**
 * Name of a dialect: "auto", "none", "rusin-v2", "single-cap".
 * @param dialect an enum vmwkvm_dialect value
 * @return a static string, or "invalid" for unknown values; never NULL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API const char *vmwkvm_dialect_name(int dialect);

/**
 * Parse a dialect name as printed by vmwkvm_dialect_name().
 * @param name dialect name
 * @return the enum vmwkvm_dialect value (note: ::VMWKVM_DIALECT_AUTO is -1), or -EINVAL
 *         (which is never a dialect value) for NULL or an unknown name.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_dialect_from_name(const char *name);

/**
 * The mainline (x86 or other architecture) capability that owns a number, if any.
 * Used to explain why a proposed number is not trusted.
 * @param cap capability number
 * @return the mainline name (for example "KVM_CAP_ARM_EL2" for 240), or NULL if the
 *         library knows no mainline cap with that number.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API const char *vmwkvm_mainline_cap_name(uint32_t cap);

/**
 * The mainline exit reason that owns a number, if any (for example "KVM_EXIT_TDX" for 40).
 * @param exit_reason exit reason number
 * @return the mainline name, or NULL if none is known.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API const char *vmwkvm_mainline_exit_name(uint32_t exit_reason);

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_DIALECT_H */
