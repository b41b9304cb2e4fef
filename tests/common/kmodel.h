/*
 * kmodel: a KERNEL MODEL for tests. It stands for KVM behind the library's raw ioctl layer
 * (lib/core/sys.h, vmwkvm_sys_set_ops()) and implements the PROPOSED, UNMERGED VMware uAPIs
 * that no kernel on our machines implements, so that the library's dialect handling,
 * policy sequences and hypercall completion can be tested without such a kernel.
 *
 * It is a test fixture, not a KVM emulator: it models exactly what is listed here, from
 * shared/uapi/kvm-uapi-notes.md (sections 1.2-1.7 for the proposals, 7 for this host).
 * Tests that use it carry the label `model` and are kept apart from the real-KVM tests
 * (label `kvm`); nothing in the library itself knows the model exists.
 *
 * What is modelled
 * - open("/dev/kvm") returns a model fd (unless config.no_dev_kvm); other paths fail with
 *   -ENOENT unless registered with kmodel_set_file(). Model fds start at KMODEL_FD_BASE;
 *   close/ioctl/mmap of any other fd never reaches the real kernel (-EBADF), except mmap
 *   with fd -1 (anonymous), munmap/mprotect of memory the model does not own, which go
 *   to the real kernel.
 * - /dev/kvm fd: KVM_GET_API_VERSION (12), KVM_GET_VCPU_MMAP_SIZE (12288),
 *   KVM_CHECK_EXTENSION (table below), KVM_CREATE_VM (type 0 only, as KVM_CAP_VM_TYPES=1
 *   here); anything else -EINVAL.
 * - VM fd: KVM_CHECK_EXTENSION (same table), KVM_CREATE_VCPU (ids 0..1023, duplicate
 *   -EEXIST; counts vCPUs), KVM_ENABLE_CAP (flags must be 0; dialect rules below;
 *   188 USER_SPACE_MSR and 201 EXIT_HYPERCALL accept a subset of their check value;
 *   anything else -EINVAL), KVM_GET_TSC_KHZ, KVM_SET_USER_MEMORY_REGION (accepted,
 *   no effect); anything else -ENOTTY.
 * - vCPU fd: mmap (off 0, len <= 12288) returns a model-owned 12288-byte zeroed buffer
 *   standing for struct kvm_run (the same buffer for every mmap; munmap of it is a no-op
 *   returning 0); KVM_GET/SET_REGS, KVM_GET/SET_SREGS (state per vCPU, x86 reset state at
 *   creation), KVM_GET_TSC_KHZ, KVM_SET_CPUID2 (accepted, entry count remembered),
 *   KVM_RUN; anything else -EINVAL.
 * - KVM_RUN, in the kernel's order: reject kvm_valid_regs/kvm_dirty_regs bits outside
 *   KVM_SYNC_X86_VALID_FIELDS (-EINVAL); apply kvm_dirty_regs (REGS, SREGS; EVENTS is
 *   accepted and ignored) and clear those bits; complete a pending VMware hypercall exit
 *   (RAX := hcall.result, 32-bit truncated outside long mode; if hcall.exception.inject:
 *   record the exception, RIP not advanced; else RIP += 3); if immediate_exit: -EINTR
 *   with KVM_EXIT_INTR; else produce the next exit: an armed VMCALL (kmodel_vcpu_vmcall()),
 *   else the run hook (kmodel_set_run_hook()), else KVM_EXIT_HLT with no register change.
 *   On the way out (success or failure after the sync-regs check) the registers named in
 *   kvm_valid_regs are copied into kvm_run.s.regs (EVENTS zeroed).
 * - A guest VMCALL/VMMCALL (3 bytes) when this VM forwards hypercalls (rusin-v2: cap
 *   HYPERCALL enabled with 1, forwards every VMCALL; single-cap: HYPERCALL bit in the mask,
 *   forwards only EAX == 0x564D5868, as the maintainers asked): exit rusin_exit / single_exit
 *   with struct vmwkvm_proposed_vmware_exit at kvm_run offset 32: type 1, longmode
 *   (EFER.LMA && CS.L), cpl (0 in real mode, 3 in VM86, else SS.DPL), RAX..RBP truncated
 *   to 32 bits outside long mode, result and exception zeroed. Otherwise mainline: RAX :=
 *   -1 (-KVM_EPERM) at CPL > 0 or -1000 (-KVM_ENOSYS) at CPL 0 (32-bit truncated outside
 *   long mode), RIP += 3, and the guest continues (to the hook, or KVM_EXIT_HLT when the
 *   VMCALL came from the hook).
 *
 * KVM_CHECK_EXTENSION table (system and VM fd alike). Defaults = this host (notes section
 * 7): 74 SYNC_REGS=7, 188=1, 189=1, 201=0x1000, 231=1, 232=1, 233=0, 234=1, 235=1, 236=0,
 * 237=1, 238=1, 239..243=0, 244=3, 38=0; plus long-standing caps every x86 kernel answers:
 * 3 USER_MEMORY=1, 61 GET_TSC_KHZ=1, 98 ENABLE_CAP_VM=1, 105 CHECK_EXTENSION_VM=1,
 * 136 IMMEDIATE_EXIT=1; every other number 0. The dialect then answers for its numbers,
 * and kmodel_set_cap() overrides win over both (to model a kernel that lies).
 *
 * Dialects (config.dialect):
 * - KMODEL_DIALECT_NONE (this host, mainline x86): the proposed numbers answer 0 and
 *   ENABLE_CAP of them fails -EINVAL.
 * - KMODEL_DIALECT_RUSIN_V2 (numbers from the config, default 239/240/241, exit 40):
 *   CHECK_EXTENSION answers 1 for each. ENABLE_CAP BACKDOOR: args[0] in {0,1} else
 *   -EINVAL, and only while no vCPU was created, else -EINVAL. HYPERCALL and NESTED:
 *   args[0] in {0,1} else -EINVAL, no vCPU check (as posted in v2).
 * - KMODEL_DIALECT_SINGLE_CAP (config.single_cap, default 250; exit config.single_exit,
 *   default 43): CHECK_EXTENSION answers config.single_valid_mask (default 7). ENABLE_CAP
 *   rejects bits outside that mask with -EINVAL, only while no vCPU exists (else -EINVAL),
 *   and replaces the stored mask.
 * - KMODEL_DIALECT_MAINLINE_ARM (collision model): 239/240/241 answer as the arm64
 *   features that own them upstream (239 KVM_CAP_ARM_WRITABLE_IMP_ID_REGS = 1,
 *   240 KVM_CAP_ARM_EL2 = 1, 241 KVM_CAP_ARM_EL2_E2H0 = 1). ENABLE_CAP(239) succeeds with
 *   ANY args[0] before the first vCPU and flips an unrelated feature (counted in
 *   kmodel_vm_state::unrelated_enables); ENABLE_CAP(240/241) fails -EINVAL. Used to prove
 *   the library never enables VMware through them in auto mode.
 *
 * Also modelled: read_file("/sys/module/kvm/parameters/enable_vmware_backdoor") gives
 * "Y\n" / "N\n" (config.backdoor_param) or -ENOENT (0); userfaultfd() returns
 * config.uffd_result (default -ENOSYS; 0 = hand out a model fd whose ioctls fail -ENOTTY
 * and whose read fails -EAGAIN).
 *
 * Recording: every call that reaches the model (ioctls and the other ops) is appended to a
 * log (fd kind, request, cap, args[0], result), readable entry by entry or formatted one
 * line per call for exact comparison, e.g. "vm ENABLE_CAP 239 1 = -EINVAL".
 *
 * Fault injection: kmodel_inject_fault() makes the Nth (or every) later call of a request
 * (optionally only for one cap) fail with a given errno BEFORE the model acts on it (no side
 * effect), e.g. EINTR, ENOMEM, EBADF, EFAULT. Ops other than ioctl use KMODEL_OP_* as
 * their request value.
 *
 * Thread-safety: every entry point takes one model-wide mutex; the run hook is called with
 * it held and must not call kmodel_* functions. Only one model is installed at a time.
 */
#ifndef VMWKVM_TESTS_KMODEL_H
#define VMWKVM_TESTS_KMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

#ifdef __cplusplus
extern "C" {
#endif

/** First fd number the model hands out (real fds never get this high in tests). */
#define KMODEL_FD_BASE 20000
/** Size of a model vCPU's kvm_run mapping (KVM_GET_VCPU_MMAP_SIZE). */
#define KMODEL_RUN_SIZE 12288

/** Which uAPI shape the model implements. */
enum kmodel_dialect {
	KMODEL_DIALECT_NONE = 0,        /**< mainline x86: no per-VM VMware uAPI (this host) */
	KMODEL_DIALECT_RUSIN_V2 = 1,    /**< three caps + exit (v2 as posted) */
	KMODEL_DIALECT_SINGLE_CAP = 2,  /**< one cap with a bit mask (maintainers' request) */
	KMODEL_DIALECT_MAINLINE_ARM = 3,/**< 239/240/241 answer as the arm64 caps that own them */
};

/** Model configuration. Fill with kmodel_config_init(), then change fields. */
struct kmodel_config {
	int dialect;                  /**< enum kmodel_dialect */
	uint32_t rusin_cap_backdoor;  /**< default 239 */
	uint32_t rusin_cap_hypercall; /**< default 240 */
	uint32_t rusin_cap_nested;    /**< default 241 */
	uint32_t rusin_exit;          /**< default 40 */
	uint32_t single_cap;          /**< default 250 */
	uint32_t single_exit;         /**< default 43 */
	uint64_t single_valid_mask;   /**< CHECK_EXTENSION value of single_cap, default 7 */
	char backdoor_param;          /**< 'Y', 'N' (default), or 0: the sysfs file is absent */
	int uffd_result;              /**< userfaultfd(): negative errno (default -ENOSYS), or 0: model fd */
	bool no_dev_kvm;              /**< open("/dev/kvm") fails with -ENOENT */
	uint32_t tsc_khz;             /**< KVM_GET_TSC_KHZ answer (default 2500000) */
};

/** Pseudo request values for the non-ioctl ops (in the log and for fault injection). */
#define KMODEL_OP_OPEN 0xffff0001ul
#define KMODEL_OP_CLOSE 0xffff0002ul
#define KMODEL_OP_MMAP 0xffff0003ul
#define KMODEL_OP_MUNMAP 0xffff0004ul
#define KMODEL_OP_READ_FILE 0xffff0005ul
#define KMODEL_OP_USERFAULTFD 0xffff0006ul
#define KMODEL_OP_READ 0xffff0007ul

/** Kind of fd a call was made on. */
enum kmodel_fd_kind {
	KMODEL_FD_OTHER = 0, /**< not a model fd (or no fd: read_file, userfaultfd) */
	KMODEL_FD_SYS = 1,   /**< /dev/kvm */
	KMODEL_FD_VM = 2,
	KMODEL_FD_VCPU = 3,
	KMODEL_FD_UFFD = 4,
	KMODEL_FD_FILE = 5,  /**< a path registered with kmodel_set_file() */
};

/** One recorded call. */
struct kmodel_call {
	unsigned long req; /**< ioctl request, or KMODEL_OP_* */
	int fd;            /**< fd the call was made on (-1 when none) */
	int fd_kind;       /**< enum kmodel_fd_kind */
	long cap;          /**< cap of CHECK_EXTENSION / ENABLE_CAP, else -1 */
	uint64_t arg0;     /**< ENABLE_CAP args[0], CREATE_VCPU id, CREATE_VM type, else 0 */
	int result;        /**< what the op returned (>= 0 or -errno) */
	bool injected;     /**< the result came from kmodel_inject_fault() */
	char path[64];     /**< open/read_file path (truncated), else "" */
};

/** Per-VM state visible to tests. */
struct kmodel_vm_state {
	unsigned vcpus;             /**< vCPUs created */
	bool rusin_backdoor;        /**< rusin-v2 BACKDOOR enabled */
	bool rusin_hypercall;       /**< rusin-v2 HYPERCALL enabled */
	bool rusin_nested;          /**< rusin-v2 NESTED enabled */
	uint64_t single_mask;       /**< single-cap stored mask */
	unsigned unrelated_enables; /**< MAINLINE_ARM: successful ENABLE_CAP(239) (an unrelated feature) */
	bool closed;                /**< its fd was closed */
};

/** An exception injected by a completed hypercall exit. */
struct kmodel_exception {
	uint32_t vector;
	uint32_t error_code;
	uint64_t address;
};

/** What the run hook sees (pointers into the model's vCPU; valid during the call). */
struct kmodel_run_ctx {
	int vcpu_fd;
	unsigned long vcpu_id;
	unsigned long runs;     /**< KVM_RUN calls on this vCPU that reached the guest, this one included */
	struct kvm_run *run;    /**< fill exit_reason and the payload */
	struct kvm_regs *regs;  /**< the guest's registers (may be changed) */
	struct kvm_sregs *sregs;/**< the guest's segment registers (may be changed) */
};

/** Run-hook return value: "the guest executes VMCALL now" (with the registers as they are). */
#define KMODEL_RUN_VMCALL 1000

/**
 * Produces an exit. Return 0 (exit in rc->run), a negative errno (KVM_RUN fails with it,
 * e.g. -EFAULT with a memory-fault exit), or KMODEL_RUN_VMCALL. Called with the model lock
 * held: must not call kmodel_* functions.
 */
typedef int (*kmodel_run_hook_fn)(void *ctx, struct kmodel_run_ctx *rc);

/** Fill @p c with the defaults (this host: dialect NONE, numbers 239/240/241/40, 250/43, mask 7, 'N'). */
void kmodel_config_init(struct kmodel_config *c);

/** Create a model (@p c NULL: defaults). Returns NULL on allocation failure. */
struct kmodel *kmodel_new(const struct kmodel_config *c);
/** Free a model (uninstalls it first if installed). Frees the kvm_run buffers. */
void kmodel_free(struct kmodel *m);
/** Put @p m behind the library's raw ioctl layer (vmwkvm_sys_set_ops). */
void kmodel_install(struct kmodel *m);
/** Restore the real kernel ops. */
void kmodel_uninstall(void);

/** Override the CHECK_EXTENSION answer for @p cap (both fds); @p value < 0 removes the override. */
void kmodel_set_cap(struct kmodel *m, uint32_t cap, long value);
/** Register a path for read_file/open with @p content (NULL: remove). Returns 0 or -ENOMEM/-ENOSPC. */
int kmodel_set_file(struct kmodel *m, const char *path, const char *content);
/** Set the enable_vmware_backdoor module parameter ('Y', 'N', or 0 = absent). */
void kmodel_set_backdoor_param(struct kmodel *m, char value);

/** Install the run hook (NULL: none). */
void kmodel_set_run_hook(struct kmodel *m, kmodel_run_hook_fn fn, void *ctx);

/**
 * Fail a later call: the @p nth (1 = next) matching call of @p req fails with -@p err; @p nth 0
 * means every matching call. @p cap >= 0 restricts to CHECK_EXTENSION/ENABLE_CAP of that cap.
 * Counting starts at injection. Returns 0, or -ENOSPC when 16 injections are pending.
 */
int kmodel_inject_fault(struct kmodel *m, unsigned long req, long cap, unsigned nth, int err);
/** Like kmodel_inject_fault(), counting only calls made on @p fd (-1: any fd). */
int kmodel_inject_fault_fd(struct kmodel *m, int fd, unsigned long req, long cap, unsigned nth, int err);
/** Remove all pending fault injections. */
void kmodel_clear_faults(struct kmodel *m);

/** Number of recorded calls. */
size_t kmodel_log_count(struct kmodel *m);
/** Copy recorded call @p i into @p out. Returns 0 or -ERANGE. */
int kmodel_log_get(struct kmodel *m, size_t i, struct kmodel_call *out);
/** Forget the recorded calls. */
void kmodel_log_clear(struct kmodel *m);
/** How many recorded calls (from index @p from) have request @p req (and cap @p cap if >= 0). */
size_t kmodel_log_count_req(struct kmodel *m, size_t from, unsigned long req, long cap);
/**
 * Format recorded calls from index @p from, one line each ("<kind> <NAME>[ cap][ arg0] = <result>\n",
 * fd-creating results print as "fd", errors as "-EINVAL" ...), keeping only requests in
 * @p reqs (NULL: all). Always NUL-terminates; returns the length of the full text (may
 * exceed @p len - 1 like snprintf).
 */
size_t kmodel_log_format(struct kmodel *m, size_t from, const unsigned long *reqs, size_t nreqs, char *buf,
			 size_t len);
/** Like kmodel_log_format(), keeping only calls made on @p fd (-1: any fd). */
size_t kmodel_log_format_fd(struct kmodel *m, size_t from, int fd, const unsigned long *reqs, size_t nreqs,
			    char *buf, size_t len);
/** Name of a request ("KVM_ENABLE_CAP", "open" ...) without the KVM_ prefix in the log. */
const char *kmodel_req_name(unsigned long req);

/** Number of VMs created so far (closed ones included). */
int kmodel_vm_count(struct kmodel *m);
/** fd of the @p index-th VM created, or -ENOENT. */
int kmodel_vm_fd(struct kmodel *m, int index);
/** State of the VM behind @p vm_fd. Returns 0 or -EBADF. */
int kmodel_vm_state(struct kmodel *m, int vm_fd, struct kmodel_vm_state *out);

/** Arm a VMCALL: the next KVM_RUN on @p vcpu_fd runs one VMCALL with the current registers. */
int kmodel_vcpu_vmcall(struct kmodel *m, int vcpu_fd);
/** Read the guest registers (what the guest would see now). 0 or -EBADF. */
int kmodel_vcpu_regs(struct kmodel *m, int vcpu_fd, struct kvm_regs *out);
/** Set the guest registers directly (not logged). 0 or -EBADF. */
int kmodel_vcpu_set_regs(struct kmodel *m, int vcpu_fd, const struct kvm_regs *regs);
/** Read the guest segment registers. 0 or -EBADF. */
int kmodel_vcpu_sregs(struct kmodel *m, int vcpu_fd, struct kvm_sregs *out);
/** Set the guest segment registers directly (not logged). 0 or -EBADF. */
int kmodel_vcpu_set_sregs(struct kmodel *m, int vcpu_fd, const struct kvm_sregs *sregs);
/** 1 and the exception if a completed hypercall injected one (cleared by this call), 0 if none, -EBADF. */
int kmodel_vcpu_take_exception(struct kmodel *m, int vcpu_fd, struct kmodel_exception *out);
/** 1 if the vCPU has a hypercall exit waiting for completion, 0 if not, -EBADF. */
int kmodel_vcpu_pending_hypercall(struct kmodel *m, int vcpu_fd);
/** The model's kvm_run buffer of a vCPU (NULL for a bad fd). */
struct kvm_run *kmodel_vcpu_run_buffer(struct kmodel *m, int vcpu_fd);
/** KVM_SET_CPUID2 entry count last accepted on this vCPU, or -EBADF. */
int kmodel_vcpu_cpuid_count(struct kmodel *m, int vcpu_fd);

/** Guest operating modes for kmodel_sregs_mode(). */
enum kmodel_mode {
	KMODEL_MODE_REAL = 0,   /**< CR0.PE = 0 */
	KMODEL_MODE_PROT32 = 1, /**< protected, 32-bit code */
	KMODEL_MODE_LONG64 = 2, /**< EFER.LMA, CS.L */
	KMODEL_MODE_VM86 = 3,   /**< protected mode with EFLAGS.VM (set it in rflags yourself) */
};
/** Fill @p s with a flat segment state for @p mode at @p cpl (helper for tests). */
void kmodel_sregs_mode(struct kvm_sregs *s, int mode, unsigned cpl);

#ifdef __cplusplus
}
#endif
#endif
