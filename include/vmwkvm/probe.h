/**
 * @file vmwkvm/probe.h
 * @brief Capability probing: what this kernel really offers, item by item, with reasons.
 *
 * A probe asks the kernel once and keeps the answers in an opaque ::vmwkvm_probe. Each
 * answer is one ::vmwkvm_probe_item: an identifier, the scope it was asked in (the system
 * `/dev/kvm` fd, a VM fd, the host, the library), a state (present, absent or unknown), the
 * raw value the kernel gave, and a reason in words. An item is never guessed: when an
 * ioctl fails the item is ::VMWKVM_PROBE_UNKNOWN and its reason names the ioctl and the
 * errno (for example `KVM_CHECK_EXTENSION(74) failed: EINTR (interrupted)`).
 *
 * What is probed (one item each; @ref vmwkvm_probe_id lists them all):
 * - **kvm**: `/dev/kvm` usable, `KVM_GET_API_VERSION`, `KVM_GET_VCPU_MMAP_SIZE`, the VM the
 *   VM-scope items were asked on (the caller's, or a scratch VM the probe creates and closes).
 * - **caps**: every capability the library uses, by `KVM_CHECK_EXTENSION` on the system fd
 *   and on the VM fd, with the raw value (sync regs, X86_GUEST_MODE, MEMORY_FAULT_INFO,
 *   USER_MEMORY2, GUEST_MEMFD, EXIT_HYPERCALL, USER_SPACE_MSR, MSR_FILTER, XEN_HVM, ...).
 * - **vmware**: the global `kvm.enable_vmware_backdoor` parameter (read from sysfs), the
 *   per-VM backdoor and hypercall state under the active dialect, the active dialect and
 *   whether its support was verified, and for each dialect the VMware policy it would
 *   allow on this kernel (value: `VMWKVM_PROBE_ALLOW_*` bits) or why it is refused.
 * - **nested**: whether L0 can answer backdoor calls made at CPL3 in an L2 guest (per
 *   dialect, and under the active one), whether calls can be attributed to L1 or L2
 *   (`KVM_CAP_X86_GUEST_MODE`), whether nested virtualization is on at all.
 * - **userfaultfd**: how a userfaultfd can be obtained (syscall with and without
 *   `UFFD_USER_MODE_ONLY`, `/dev/userfaultfd` + `USERFAULTFD_IOC_NEW`, the
 *   `vm.unprivileged_userfaultfd` sysctl), the features `UFFDIO_API` reports, and whether
 *   faults KVM takes inside the kernel can be trapped (needs a uffd that is not
 *   user-mode-only).
 * - **library**: version, default dialect, the proposed numbers in force and whether each
 *   collides with a mainline assignment.
 *
 * Every kernel access goes through the library's system-call layer, so tests can inject
 * failures. The probe never prints and never enables anything on the caller's VM; the
 * behaviour checks that confirm a dialect run on a scratch VM only.
 */
#ifndef VMWKVM_PROBE_H
#define VMWKVM_PROBE_H

#include <vmwkvm/common.h>
#include <vmwkvm/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque result of one probe. */
typedef struct vmwkvm_probe vmwkvm_probe;

/** What the probe found out about an item. */
enum vmwkvm_probe_state {
	VMWKVM_PROBE_UNKNOWN = 0, /**< could not be determined; the reason says why (a failed ioctl, no /dev/kvm ...) */
	VMWKVM_PROBE_ABSENT = 1,  /**< determined: not available (the reason says what answered so) */
	VMWKVM_PROBE_PRESENT = 2, /**< determined: available; see the item's value */
};

/** Where an item was asked. */
enum vmwkvm_probe_scope {
	VMWKVM_PROBE_SCOPE_SYSTEM = 0,  /**< the `/dev/kvm` fd */
	VMWKVM_PROBE_SCOPE_VM = 1,      /**< a VM fd: the caller's, or a scratch VM */
	VMWKVM_PROBE_SCOPE_HOST = 2,    /**< the host: sysfs, procfs, userfaultfd */
	VMWKVM_PROBE_SCOPE_LIBRARY = 3, /**< this library's configuration */
};

/** Groups of items (the top-level objects of `vmwkvm-probe --json`). */
enum vmwkvm_probe_group {
	VMWKVM_PROBE_GROUP_KVM = 0,         /**< "kvm" */
	VMWKVM_PROBE_GROUP_CAPS = 1,        /**< "caps" */
	VMWKVM_PROBE_GROUP_VMWARE = 2,      /**< "vmware" */
	VMWKVM_PROBE_GROUP_NESTED = 3,      /**< "nested" */
	VMWKVM_PROBE_GROUP_USERFAULTFD = 4, /**< "userfaultfd" */
	VMWKVM_PROBE_GROUP_LIBRARY = 5,     /**< "library" */
};

/** Bits of the value of the per-dialect policy items: what the dialect would let a VMM turn on.
 * They equal the VMWKVM_POLICY_* flags of vmwkvm/policy.h and the proposal's enable bits. */
#define VMWKVM_PROBE_ALLOW_BACKDOOR (1u << 0) /**< the I/O-port backdoor, per VM */
#define VMWKVM_PROBE_ALLOW_HYPERCALL (1u << 1) /**< VMCALL/VMMCALL with the magic forwarded to userspace */
#define VMWKVM_PROBE_ALLOW_NESTED (1u << 2)   /**< L0 answers CPL3 backdoor calls made in L2 */

/**
 * Item identifiers. Numbers are stable (new ones are only appended). The group and scope
 * of each item are in the item itself; "(S+V)" marks items reported in both the system
 * and the VM scope.
 */
enum vmwkvm_probe_id {
	/* kvm */
	VMWKVM_PROBE_KVM_DEVICE = 0,        /**< `/dev/kvm` opened (HOST); err says why not */
	VMWKVM_PROBE_KVM_API_VERSION = 1,   /**< KVM_GET_API_VERSION (SYSTEM); value 12 expected */
	VMWKVM_PROBE_KVM_VCPU_MMAP_SIZE = 2,/**< KVM_GET_VCPU_MMAP_SIZE (SYSTEM); bytes */
	VMWKVM_PROBE_KVM_VM = 3,            /**< the VM the VM-scope items were asked on (VM); value = VM fd or -1 */

	/* caps (S+V), value = raw KVM_CHECK_EXTENSION result, number = capability number */
	VMWKVM_PROBE_CAP_SYNC_REGS = 16,          /**< 74: mask of KVM_SYNC_X86_* */
	VMWKVM_PROBE_CAP_X86_GUEST_MODE = 17,     /**< 238: kvm_run.flags says L2 */
	VMWKVM_PROBE_CAP_MEMORY_FAULT_INFO = 18,  /**< 232: KVM_EXIT_MEMORY_FAULT */
	VMWKVM_PROBE_CAP_USER_MEMORY2 = 19,       /**< 231: KVM_SET_USER_MEMORY_REGION2 */
	VMWKVM_PROBE_CAP_GUEST_MEMFD = 20,        /**< 234 */
	VMWKVM_PROBE_CAP_EXIT_HYPERCALL = 21,     /**< 201: mask of forwardable KVM hypercalls */
	VMWKVM_PROBE_CAP_X86_USER_SPACE_MSR = 22, /**< 188 */
	VMWKVM_PROBE_CAP_X86_MSR_FILTER = 23,     /**< 189 */
	VMWKVM_PROBE_CAP_XEN_HVM = 24,            /**< 38: mask of KVM_XEN_HVM_CONFIG_* (intercept) */
	VMWKVM_PROBE_CAP_VM_TYPES = 25,           /**< 235: mask of VM types */
	VMWKVM_PROBE_CAP_PRE_FAULT_MEMORY = 26,   /**< 236 */
	VMWKVM_PROBE_CAP_GUEST_MEMFD_FLAGS = 27,  /**< 244: mask of GUEST_MEMFD_FLAG_* */
	VMWKVM_PROBE_CAP_MEMORY_ATTRIBUTES = 28,  /**< 233: mask of memory attributes */
	VMWKVM_PROBE_CAP_CHECK_EXTENSION_VM = 29, /**< 105: VM fds answer KVM_CHECK_EXTENSION */
	VMWKVM_PROBE_CAP_IMMEDIATE_EXIT = 30,     /**< 136 */
	VMWKVM_PROBE_CAP_ENABLE_CAP_VM = 31,      /**< 98: KVM_ENABLE_CAP on VM fds */

	/* vmware */
	VMWKVM_PROBE_VMWARE_BACKDOOR_PARAM = 64,   /**< kvm.enable_vmware_backdoor (HOST); value 1 = Y */
	VMWKVM_PROBE_VMWARE_BACKDOOR = 65,         /**< I/O-port backdoor for this VM under the active dialect (VM); value 1 = on */
	VMWKVM_PROBE_VMWARE_HYPERCALL = 66,        /**< VMware hypercalls reach userspace for this VM (VM) */
	VMWKVM_PROBE_VMWARE_DIALECT = 67,          /**< active dialect (VM); value = enum vmwkvm_dialect; PRESENT = verified */
	VMWKVM_PROBE_VMWARE_POLICY_NONE = 68,      /**< what dialect "none" allows (VM); value = VMWKVM_PROBE_ALLOW_* */
	VMWKVM_PROBE_VMWARE_POLICY_RUSIN_V2 = 69,  /**< what dialect "rusin-v2" allows (VM) */
	VMWKVM_PROBE_VMWARE_POLICY_SINGLE_CAP = 70,/**< what dialect "single-cap" allows (VM) */

	/* nested */
	VMWKVM_PROBE_NESTED_BACKDOOR = 96,          /**< L0 answers CPL3 backdoor calls in L2 under the active dialect (VM) */
	VMWKVM_PROBE_NESTED_ORIGIN = 97,            /**< calls can be attributed to L1/L2 (KVM_CAP_X86_GUEST_MODE) (VM) */
	VMWKVM_PROBE_NESTED_VIRT = 98,              /**< nested virtualization enabled in kvm_intel/kvm_amd (HOST) */
	VMWKVM_PROBE_NESTED_POLICY_NONE = 99,       /**< nested backdoor under "none" (VM) */
	VMWKVM_PROBE_NESTED_POLICY_RUSIN_V2 = 100,  /**< nested backdoor under "rusin-v2" (VM) */
	VMWKVM_PROBE_NESTED_POLICY_SINGLE_CAP = 101,/**< nested backdoor under "single-cap" (VM) */

	/* userfaultfd (HOST) */
	VMWKVM_PROBE_UFFD_SYSCALL = 128,           /**< userfaultfd(2) without UFFD_USER_MODE_ONLY */
	VMWKVM_PROBE_UFFD_SYSCALL_USER_ONLY = 129, /**< userfaultfd(2) with UFFD_USER_MODE_ONLY */
	VMWKVM_PROBE_UFFD_DEV = 130,               /**< /dev/userfaultfd + USERFAULTFD_IOC_NEW */
	VMWKVM_PROBE_UFFD_SYSCTL = 131,            /**< vm.unprivileged_userfaultfd; value = the sysctl */
	VMWKVM_PROBE_UFFD_API = 132,               /**< UFFDIO_API; value = feature mask */
	VMWKVM_PROBE_UFFD_KERNEL_FAULTS = 133,     /**< faults KVM takes in the kernel can be trapped */
	VMWKVM_PROBE_UFFD_WP = 134,                /**< UFFD_FEATURE_PAGEFAULT_FLAG_WP (bit 0): write-protect, anonymous */
	VMWKVM_PROBE_UFFD_WP_HUGETLBFS_SHMEM = 135,/**< bit 12: write-protect shmem/hugetlbfs */
	VMWKVM_PROBE_UFFD_WP_UNPOPULATED = 136,    /**< bit 13: write-protect unpopulated ranges */
	VMWKVM_PROBE_UFFD_WP_ASYNC = 137,          /**< bit 15: asynchronous write-protect */
	VMWKVM_PROBE_UFFD_MINOR_SHMEM = 138,       /**< bit 10 */
	VMWKVM_PROBE_UFFD_MINOR_HUGETLBFS = 139,   /**< bit 9 */
	VMWKVM_PROBE_UFFD_MISSING_SHMEM = 140,     /**< bit 5 */
	VMWKVM_PROBE_UFFD_EVENT_REMOVE = 141,      /**< bit 3 */
	VMWKVM_PROBE_UFFD_MOVE = 142,              /**< bit 16 */

	/* library (LIBRARY) */
	VMWKVM_PROBE_LIB_VERSION = 160,          /**< value = vmwkvm_version() */
	VMWKVM_PROBE_LIB_DIALECT_DEFAULT = 161,  /**< value = vmwkvm_dialect_get_default() (auto = -1) */
	VMWKVM_PROBE_LIB_RUSIN_CAP_BACKDOOR = 162, /**< proposed number; PRESENT = assigned and not taken by mainline */
	VMWKVM_PROBE_LIB_RUSIN_CAP_HYPERCALL = 163,/**< proposed number */
	VMWKVM_PROBE_LIB_RUSIN_CAP_NESTED = 164,   /**< proposed number */
	VMWKVM_PROBE_LIB_RUSIN_EXIT_VMWARE = 165,  /**< proposed exit reason */
	VMWKVM_PROBE_LIB_SINGLE_CAP = 166,         /**< proposed number */
	VMWKVM_PROBE_LIB_SINGLE_EXIT = 167,        /**< proposed exit reason */
};

/** One probed item. Owned by the probe; valid until vmwkvm_probe_free(). */
struct vmwkvm_probe_item {
	uint32_t id;        /**< enum vmwkvm_probe_id */
	uint32_t group;     /**< enum vmwkvm_probe_group */
	uint32_t scope;     /**< enum vmwkvm_probe_scope */
	uint32_t state;     /**< enum vmwkvm_probe_state */
	int64_t value;      /**< raw value (ioctl result, feature mask, sysfs value ...) when @ref has_value */
	uint32_t number;    /**< the kernel's number for the thing (capability number, feature bit), else 0 */
	int32_t err;        /**< the negative errno behind the state, or 0 */
	uint8_t has_value;  /**< non-zero when @ref value holds what the kernel (or the library) answered */
	uint8_t pad[7];     /**< zero */
	const char *key;    /**< short name, unique in its group and scope: "sync_regs", "wp_async" */
	const char *name;   /**< "<group>.<key>", for example "caps.sync_regs" */
	const char *reason; /**< why the state is what it is, in words; never NULL */
	uint64_t reserved[4]; /**< zero */
};

/** vmwkvm_probe_opts::flags: create no scratch VM. VM-scope items become unknown without a VM
 * fd, and proposed dialects stay unverified (their behaviour checks need scratch VMs). */
#define VMWKVM_PROBE_F_NO_SCRATCH_VM (1u << 0)
/** vmwkvm_probe_opts::flags: skip the userfaultfd items (they are reported unknown). */
#define VMWKVM_PROBE_F_NO_USERFAULTFD (1u << 1)

/** Options for vmwkvm_probe_new(). Zero-fill, then set @ref sz. */
struct vmwkvm_probe_opts {
	size_t sz;           /**< sizeof(struct vmwkvm_probe_opts) */
	int kvm_fd;          /**< the VMM's /dev/kvm fd (borrowed), when @ref kvm_fd_set */
	int kvm_fd_set;      /**< non-zero: use @ref kvm_fd instead of opening /dev/kvm */
	int vm_fd;           /**< a VM fd (borrowed) for the VM-scope items, when @ref vm_fd_set */
	int vm_fd_set;       /**< non-zero: use @ref vm_fd instead of a scratch VM */
	const vmwkvm_vm *vm; /**< a library VM handle: its fd, dialect and policy are reported (overrides @ref vm_fd) */
	const char *dialect; /**< dialect to evaluate as the active one ("auto", "none", "rusin-v2", "single-cap"); NULL = vmwkvm_dialect_get_default() */
	uint32_t flags;      /**< VMWKVM_PROBE_F_* */
	uint32_t reserved0;  /**< must be zero */
	uint64_t reserved[4];/**< must be zero */
};

/**
 * Probe the kernel.
 *
 * Opens `/dev/kvm` unless given a fd, asks every item, closes what it opened (and the
 * scratch VM). A kernel without `/dev/kvm` is not an error: the probe succeeds and the
 * KVM items say ::VMWKVM_PROBE_UNKNOWN with the reason (see vmwkvm_probe_kvm_usable()).
 * Nothing is enabled on a VM the caller passes in.
 * @param opts options, or NULL for defaults
 * @param out  receives the probe, to be released with vmwkvm_probe_free()
 * @return 0; -EINVAL (NULL @p out, bad @p opts: wrong size, non-zero reserved fields,
 *         unknown flags or dialect name, negative fds), -ENOMEM.
 * @par Thread-safety
 * Safe. Probes are independent of each other.
 */
VMWKVM_API int vmwkvm_probe_new(const struct vmwkvm_probe_opts *opts, vmwkvm_probe **out);

/**
 * Release a probe and its items.
 * @param probe the probe, or NULL (no-op)
 * @par Thread-safety
 * Not safe against concurrent use of @p probe.
 */
VMWKVM_API void vmwkvm_probe_free(vmwkvm_probe *probe);

/**
 * Number of items in a probe.
 * @param probe the probe
 * @return the count, or 0 if @p probe is NULL.
 * @par Thread-safety
 * Safe (a probe is read-only once made).
 */
VMWKVM_API size_t vmwkvm_probe_count(const vmwkvm_probe *probe);

/**
 * Item by position, for iterating: `for (i = 0; i < vmwkvm_probe_count(p); i++)`.
 * @param probe the probe
 * @param index 0 .. vmwkvm_probe_count() - 1
 * @return the item, or NULL (errno EINVAL) if @p probe is NULL or @p index out of range.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API const struct vmwkvm_probe_item *vmwkvm_probe_item(const vmwkvm_probe *probe, size_t index);

/**
 * Item by identifier and scope.
 * @param probe the probe
 * @param id    enum vmwkvm_probe_id
 * @param scope enum vmwkvm_probe_scope
 * @return the item, or NULL (errno ENOENT) if the probe has no such item, or NULL
 *         (errno EINVAL) if @p probe is NULL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API const struct vmwkvm_probe_item *vmwkvm_probe_find(const vmwkvm_probe *probe, uint32_t id,
							    uint32_t scope);

/**
 * Is `/dev/kvm` usable (it was opened and answered KVM_GET_API_VERSION with 12)?
 * @param probe the probe
 * @return 1 if usable; 0 if not; -EINVAL if @p probe is NULL. When 0, the item
 *         ::VMWKVM_PROBE_KVM_DEVICE (or ::VMWKVM_PROBE_KVM_API_VERSION) carries the
 *         reason and the errno (-ENOENT: absent; -EACCES/-EPERM: not permitted).
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_probe_kvm_usable(const vmwkvm_probe *probe);

/**
 * Name of a state: "present", "absent", "unknown".
 * @param state enum vmwkvm_probe_state
 * @return a static string; "invalid" for other values; never NULL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API const char *vmwkvm_probe_state_name(uint32_t state);

/**
 * Name of a scope: "system", "vm", "host", "library".
 * @param scope enum vmwkvm_probe_scope
 * @return a static string; "invalid" for other values; never NULL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API const char *vmwkvm_probe_scope_name(uint32_t scope);

/**
 * Name of a group: "kvm", "caps", "vmware", "nested", "userfaultfd", "library".
 * @param group enum vmwkvm_probe_group
 * @return a static string; "invalid" for other values; never NULL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API const char *vmwkvm_probe_group_name(uint32_t group);

/**
 * Symbolic name of an errno value ("EINTR", "ENOMEM" ...), for reports and logs.
 * @param err an errno value, negative or positive
 * @return a static string ("E?" for values the library does not name); never NULL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API const char *vmwkvm_errno_name(int err);

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_PROBE_H */
