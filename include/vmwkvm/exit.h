/**
 * @file vmwkvm/exit.h
 * @brief Recognise a VMware backdoor access in a KVM exit and complete it.
 *
 * Transports (protocol facts: the VMware backdoor facts sheet):
 * - **LB**: `IN EAX,DX` (or `OUT`) on port 0x5658, arriving as KVM_EXIT_IO, 4 bytes.
 * - **HB**: `REP OUTSB` (guest to host) / `REP INSB` (host to guest) on port 0x5659.
 *   KVM delivers string I/O in pieces (one exit per piece); the library tracks the
 *   transfer per vCPU and reports each piece with its offset, the total length, and
 *   whether it is the first and the last piece.
 * - **HYPERCALL**: VMCALL/VMMCALL with EAX = 0x564D5868, only under a proposed dialect
 *   whose hypercall exit this VM enabled through the library (exit 40 is KVM_EXIT_TDX on
 *   mainline, so it is never decoded as VMware otherwise).
 *
 * The pure decoder vmwkvm_exit_decode_raw() is a function of `struct kvm_run`, the
 * register state and a small environment; it reads nothing outside the given run size.
 * vmwkvm_exit_decode()/vmwkvm_exit_complete() are the per-vCPU forms; with sync regs
 * they perform no ioctl and no allocation, and take no lock.
 */
#ifndef VMWKVM_EXIT_H
#define VMWKVM_EXIT_H

#include <vmwkvm/common.h>
#include <vmwkvm/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The backdoor magic value, "VMXh". */
#define VMWKVM_BDOOR_MAGIC 0x564D5868u
/** Low-bandwidth backdoor port. */
#define VMWKVM_BDOOR_PORT 0x5658u
/** High-bandwidth backdoor port. */
#define VMWKVM_BDOORHB_PORT 0x5659u

/** How a backdoor call reached the host. */
enum vmwkvm_transport {
	VMWKVM_TRANSPORT_NONE = 0,      /**< not a backdoor access */
	VMWKVM_TRANSPORT_LB = 1,        /**< port 0x5658, IN or OUT */
	VMWKVM_TRANSPORT_HB = 2,        /**< port 0x5659, REP INSB / REP OUTSB */
	VMWKVM_TRANSPORT_HYPERCALL = 3, /**< VMCALL/VMMCALL forwarded by a proposed dialect */
};

/** Direction of the data, seen from the guest instruction. */
enum vmwkvm_direction {
	VMWKVM_DIR_NONE = 0, /**< no data phase (hypercall) */
	VMWKVM_DIR_IN = 1,   /**< host to guest: IN, REP INSB, HB receive */
	VMWKVM_DIR_OUT = 2,  /**< guest to host: OUT, REP OUTSB, HB send */
};

/** Guest operating mode at the call. */
enum vmwkvm_cpu_mode {
	VMWKVM_MODE_UNKNOWN = 0, /**< not known */
	VMWKVM_MODE_REAL = 1,    /**< real mode (16-bit) */
	VMWKVM_MODE_VM86 = 2,    /**< virtual-8086 mode (16-bit, CPL3) */
	VMWKVM_MODE_PROT16 = 3,  /**< protected mode, 16-bit code segment */
	VMWKVM_MODE_PROT32 = 4,  /**< protected mode, 32-bit code segment (or compatibility mode) */
	VMWKVM_MODE_LONG64 = 5,  /**< 64-bit mode */
};

/** Where the call came from, in nesting terms. */
enum vmwkvm_origin {
	VMWKVM_ORIGIN_UNKNOWN = 0, /**< the kernel does not say (no KVM_CAP_X86_GUEST_MODE) */
	VMWKVM_ORIGIN_L1 = 1,      /**< the VM itself */
	VMWKVM_ORIGIN_L2 = 2,      /**< a nested guest of the VM (KVM_RUN_X86_GUEST_MODE was set) */
};

/** Result of decoding an exit. */
enum vmwkvm_decode_result {
	VMWKVM_EXIT_NOT_BACKDOOR = 0, /**< not ours: the VMM handles the exit; nothing was changed */
	VMWKVM_EXIT_CALL = 1,         /**< a backdoor call (or HB piece): handle it, then vmwkvm_exit_complete() */
	VMWKVM_EXIT_INVALID = 2,      /**< a backdoor-port access that is malformed: see vmwkvm_call::invalid; complete it */
};

/** Why an access to a backdoor port is invalid. */
enum vmwkvm_invalid_reason {
	VMWKVM_INVALID_NONE = 0,       /**< valid */
	VMWKVM_INVALID_MAGIC = 1,      /**< EAX was not the magic */
	VMWKVM_INVALID_SIZE = 2,       /**< LB access not 4 bytes wide, or HB access not byte-sized */
	VMWKVM_INVALID_DIRECTION = 3,  /**< direction that the transport does not allow */
	VMWKVM_INVALID_STRING = 4,     /**< string I/O on the LB port, or non-string I/O on the HB port */
	VMWKVM_INVALID_BOUNDS = 5,     /**< the exit's data area lies outside the kvm_run mapping */
	VMWKVM_INVALID_HB_SEQUENCE = 6,/**< an HB piece that does not continue the transfer in progress */
	VMWKVM_INVALID_HB_LENGTH = 7,  /**< HB transfer longer than the configured bound, or empty */
	VMWKVM_INVALID_HYPERCALL = 8,  /**< hypercall exit with an unknown type */
};

/** Flags in vmwkvm_call::hb_flags. */
#define VMWKVM_HB_FIRST (1u << 0) /**< first piece of the transfer */
#define VMWKVM_HB_LAST (1u << 1)  /**< last piece: the guest's instruction finishes after it */

/** General-purpose registers as KVM_GET_REGS returns them (same layout as struct kvm_regs). */
struct vmwkvm_regs {
	uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp; /**< GPRs */
	uint64_t r8, r9, r10, r11, r12, r13, r14, r15;   /**< GPRs */
	uint64_t rip, rflags;                            /**< instruction pointer, flags */
};

/** CPU state the pure decoder needs besides `struct kvm_run`. */
struct vmwkvm_cpu_state {
	struct vmwkvm_regs regs; /**< registers at the exit */
	uint8_t cpl;             /**< current privilege level (0..3) */
	uint8_t mode;            /**< enum vmwkvm_cpu_mode */
	uint8_t addr_bits;       /**< address size of string instructions: 16, 32 or 64 */
	uint8_t pad[5];          /**< zero */
};

/** Per-vCPU high-bandwidth transfer tracking (owned by the caller of the pure decoder). */
struct vmwkvm_hb_state {
	uint64_t total;      /**< bytes in the transfer in progress, 0 when idle */
	uint64_t done;       /**< bytes already seen */
	uint8_t direction;   /**< enum vmwkvm_direction of the transfer in progress */
	uint8_t pad[7];      /**< zero */
	uint64_t rip;        /**< RIP of the REP instruction */
	uint64_t reserved[2];/**< zero */
};

/** Environment of the pure decoder (per VM). Zero-fill, then set @ref sz. */
struct vmwkvm_decode_env {
	size_t sz;                   /**< sizeof(struct vmwkvm_decode_env) */
	size_t run_size;             /**< bytes mapped at the kvm_run pointer (bounds every read) */
	uint32_t hypercall_exit;     /**< exit reason of the VMware hypercall exit in force, 0 = none */
	uint32_t hypercall_dialect;  /**< enum vmwkvm_dialect that defined @ref hypercall_exit */
	uint32_t hb_max;             /**< largest HB transfer accepted, bytes (0 = 65536) */
	uint8_t guest_mode_valid;    /**< KVM_CAP_X86_GUEST_MODE present: trust KVM_RUN_X86_GUEST_MODE */
	uint8_t pad[3];              /**< zero */
	uint64_t reserved[4];        /**< zero */
};

/** One decoded backdoor call (or HB piece). All register values are as the guest set them. */
struct vmwkvm_call {
	uint32_t transport;      /**< enum vmwkvm_transport */
	uint32_t direction;      /**< enum vmwkvm_direction */
	uint32_t invalid;        /**< enum vmwkvm_invalid_reason (non-zero only for ::VMWKVM_EXIT_INVALID) */
	uint16_t command;        /**< ECX bits 15:0 (LB, hypercall); for HB, EBX bits 15:0 (the HB command) */
	uint16_t subcommand;     /**< ECX bits 31:16 (MESSAGE type and the like) */
	uint8_t magic_ok;        /**< EAX (low 32 bits) equals ::VMWKVM_BDOOR_MAGIC */
	uint8_t cpl;             /**< guest CPL at the call */
	uint8_t mode;            /**< enum vmwkvm_cpu_mode */
	uint8_t origin;          /**< enum vmwkvm_origin */
	uint8_t io_size;         /**< I/O access width in bytes (1, 2, 4) for port transports */
	uint8_t hb_flags;        /**< VMWKVM_HB_FIRST / VMWKVM_HB_LAST */
	uint16_t port;           /**< I/O port for port transports */
	uint32_t exit_reason;    /**< raw kvm_run exit_reason */
	uint32_t hb_count;       /**< bytes in this HB piece */
	uint64_t hb_offset;      /**< offset of this piece within the HB transfer */
	uint64_t hb_total;       /**< bytes in the whole HB transfer */
	uint8_t *hb_data;        /**< this piece's bytes inside kvm_run: the guest's (OUT) or where the host's go (IN) */
	uint64_t rax, rbx, rcx, rdx, rsi, rdi, rbp; /**< guest GPRs at the call (full 64 bits) */
	uint64_t rip;            /**< guest RIP at the exit */
	uint64_t reserved[6];    /**< zero */
};

/** Register bits for vmwkvm_reply::set. */
enum vmwkvm_reply_reg {
	VMWKVM_REPLY_EAX = 1u << 0, /**< write vmwkvm_reply::eax (for LB IN it is also the I/O data) */
	VMWKVM_REPLY_EBX = 1u << 1, /**< write vmwkvm_reply::ebx */
	VMWKVM_REPLY_ECX = 1u << 2, /**< write vmwkvm_reply::ecx */
	VMWKVM_REPLY_EDX = 1u << 3, /**< write vmwkvm_reply::edx */
	VMWKVM_REPLY_ESI = 1u << 4, /**< write vmwkvm_reply::esi */
	VMWKVM_REPLY_EDI = 1u << 5, /**< write vmwkvm_reply::edi */
	VMWKVM_REPLY_EBP = 1u << 6, /**< write vmwkvm_reply::ebp (no standard command does) */
	VMWKVM_REPLY_INJECT = 1u << 7, /**< hypercall only: inject an exception instead of completing */
};

/** The answer to a call. Registers not in @ref set keep the guest's values. */
struct vmwkvm_reply {
	uint32_t set;            /**< enum vmwkvm_reply_reg bits */
	uint32_t eax, ebx, ecx, edx, esi, edi, ebp; /**< 32-bit results, written zero-extended */
	uint8_t vector;          /**< exception vector (with ::VMWKVM_REPLY_INJECT) */
	uint8_t pad[3];          /**< zero */
	uint32_t error_code;     /**< exception error code, for vectors that have one */
	uint64_t address;        /**< CR2 for #PF */
	const void *hb_data;     /**< HB IN: the vmwkvm_call::hb_count bytes for this piece (NULL: zeroes) */
	uint64_t reserved[4];    /**< zero */
};

/**
 * Decode an exit without a vCPU handle (pure function).
 * @param run   the exit (read only)
 * @param cpu   registers, CPL and mode at the exit
 * @param env   per-VM decoding environment (env->run_size bounds every read)
 * @param hb    per-vCPU HB transfer state (updated for HB pieces)
 * @param call  receives the decoded call; fully written for every return value >= 0
 * @return enum vmwkvm_decode_result (>= 0), or -EINVAL for NULL arguments, a bad
 *         env->sz, or run_size smaller than the fixed part of `struct kvm_run`.
 * @par Thread-safety
 * Safe; @p hb must not be shared between threads.
 */
VMWKVM_API int vmwkvm_exit_decode_raw(const struct kvm_run *run, const struct vmwkvm_cpu_state *cpu,
				      const struct vmwkvm_decode_env *env, struct vmwkvm_hb_state *hb,
				      struct vmwkvm_call *call);

/**
 * Decode the vCPU's last exit.
 *
 * Reads the registers through sync regs (no ioctl) or KVM_GET_REGS/KVM_GET_SREGS.
 * A non-backdoor exit is returned as ::VMWKVM_EXIT_NOT_BACKDOOR and left untouched.
 * @param vcpu the vCPU, just back from KVM_RUN
 * @param call receives the call
 * @return enum vmwkvm_decode_result, or -EINVAL (NULL argument), or the negative errno
 *         of a failed register ioctl.
 * @par Thread-safety
 * Call only from the thread that owns @p vcpu. No lock, no allocation.
 */
VMWKVM_API int vmwkvm_exit_decode(vmwkvm_vcpu *vcpu, struct vmwkvm_call *call);

/**
 * Complete a call with the given answer before the VMM re-enters KVM_RUN.
 *
 * Writes the registers in reply->set as zero-extended 32-bit values (EFLAGS untouched),
 * puts EAX into the I/O data for an LB IN (and into the registers whenever any register is
 * written, so KVM cannot lose it), copies HB IN data into the exit's data area, and for
 * hypercall exits fills the exit's result and exception fields.
 * @param vcpu  the vCPU
 * @param call  the call returned by vmwkvm_exit_decode() for the current exit
 * @param reply the answer; NULL means "unsupported": EAX = 0xFFFFFFFF, nothing else changes
 * @return 0; -EINVAL (NULL vcpu/call, a call of another transport than the exit, an
 *         exception requested for a non-hypercall exit, a bad vector), or the negative
 *         errno of KVM_SET_REGS in ioctl mode.
 * @par Thread-safety
 * Call only from the thread that owns @p vcpu. No lock, no allocation.
 */
VMWKVM_API int vmwkvm_exit_complete(vmwkvm_vcpu *vcpu, const struct vmwkvm_call *call,
				    const struct vmwkvm_reply *reply);

/**
 * Complete an access that vmwkvm_exit_decode() found invalid the way the protocol says:
 * an IN returns all ones in the accessed width and no register changes; an OUT is
 * dropped; an HB transfer in progress is abandoned.
 * @param vcpu the vCPU
 * @param call the ::VMWKVM_EXIT_INVALID call
 * @return 0, or -EINVAL.
 * @par Thread-safety
 * Call only from the thread that owns @p vcpu.
 */
VMWKVM_API int vmwkvm_exit_complete_invalid(vmwkvm_vcpu *vcpu, const struct vmwkvm_call *call);

/**
 * Name of a backdoor command (ECX low 16 bits), for logs: "GETVERSION", "MESSAGE" ...
 * @param command command number
 * @return a static string, or NULL if the command is not known to the library.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API const char *vmwkvm_command_name(uint16_t command);

/**
 * Name of an enum vmwkvm_invalid_reason value.
 * @param reason the reason
 * @return a static string; never NULL ("unknown" for other values).
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API const char *vmwkvm_invalid_reason_name(uint32_t reason);

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_EXIT_H */
