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
	VMWKVM_INVALID_HYPERCALL = 8,  /**< hypercall exit with an unknown type or CPL */
	VMWKVM_INVALID_HB_ABANDONED = 9,/**< a piece of an HB transfer that the VMM refused earlier
	                                     (vmwkvm_exit_complete_invalid() on one of its pieces) */
};

/** Flags in vmwkvm_call::hb_flags. */
#define VMWKVM_HB_FIRST (1u << 0) /**< first piece of the transfer */
#define VMWKVM_HB_LAST (1u << 1)  /**< last piece: the guest's instruction finishes after it */

/** Flags in vmwkvm_call::hypercall_flags (EDX bits 15:0 of a hypercall, protocol 1.1). */
#define VMWKVM_HCALL_FLAG_HB (1u << 0)    /**< high-bandwidth: RCX bytes at RSI (send) / RDI (receive) */
#define VMWKVM_HCALL_FLAG_WRITE (1u << 1) /**< with HB: guest to host (send); without it host to guest */

/** General-purpose registers as KVM_GET_REGS returns them (same layout as struct kvm_regs). */
struct vmwkvm_regs {
	uint64_t rax;     /**< RAX */
	uint64_t rbx;     /**< RBX */
	uint64_t rcx;     /**< RCX */
	uint64_t rdx;     /**< RDX */
	uint64_t rsi;     /**< RSI */
	uint64_t rdi;     /**< RDI */
	uint64_t rsp;     /**< RSP */
	uint64_t rbp;     /**< RBP */
	uint64_t r8;      /**< R8 */
	uint64_t r9;      /**< R9 */
	uint64_t r10;     /**< R10 */
	uint64_t r11;     /**< R11 */
	uint64_t r12;     /**< R12 */
	uint64_t r13;     /**< R13 */
	uint64_t r14;     /**< R14 */
	uint64_t r15;     /**< R15 */
	uint64_t rip;     /**< instruction pointer */
	uint64_t rflags;  /**< flags */
};

/** CPU state the pure decoder needs besides `struct kvm_run`. */
struct vmwkvm_cpu_state {
	struct vmwkvm_regs regs; /**< registers at the exit */
	uint8_t cpl;             /**< current privilege level (0..3) */
	uint8_t mode;            /**< enum vmwkvm_cpu_mode */
	uint8_t addr_bits;       /**< address size of string instructions: 16, 32 or 64 */
	uint8_t pad[5];          /**< zero */
};

/**
 * Per-vCPU high-bandwidth transfer tracking (owned by the caller of the pure decoder).
 * Zero-fill it once; the decoder keeps it. A transfer is identified by its direction,
 * the RIP of its REP instruction and the bytes still to come.
 */
struct vmwkvm_hb_state {
	uint64_t total;      /**< bytes in the transfer in progress, 0 when idle */
	uint64_t done;       /**< bytes already seen */
	uint8_t direction;   /**< enum vmwkvm_direction of the transfer in progress */
	uint8_t rejected;    /**< enum vmwkvm_invalid_reason: the transfer in progress is being
	                          discarded (its remaining pieces decode as invalid), 0 = accepted */
	uint8_t pad[6];      /**< zero */
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
	uint16_t command;        /**< ECX bits 15:0 (LB, hypercall); for HB (port or hypercall flag),
	                              EBX bits 15:0 (the HB command, 0 = MESSAGE) */
	uint16_t subcommand;     /**< ECX bits 31:16 (MESSAGE type and the like); for HB, EBX bits 31:16
	                              (the status the guest passes, normally SUCCESS = 1) */
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
	uint64_t hb_total;       /**< bytes in the whole HB transfer (for an HB hypercall: RCX, the
	                              length of the guest buffer; hb_count/hb_data are then 0/NULL) */
	uint8_t *hb_data;        /**< this piece's bytes inside kvm_run: the guest's (OUT) or where the host's go (IN) */
	uint64_t rax;            /**< guest RAX at the call (hypercall: as the exit reports it, 32 bits outside long mode) */
	uint64_t rbx;            /**< guest RBX at the call (hypercall: as the exit reports it, 32 bits outside long mode) */
	uint64_t rcx;            /**< guest RCX at the call (hypercall: as the exit reports it, 32 bits outside long mode) */
	uint64_t rdx;            /**< guest RDX at the call (hypercall: as the exit reports it, 32 bits outside long mode) */
	uint64_t rsi;            /**< guest RSI at the call (hypercall: as the exit reports it, 32 bits outside long mode) */
	uint64_t rdi;            /**< guest RDI at the call (hypercall: as the exit reports it, 32 bits outside long mode) */
	uint64_t rbp;            /**< guest RBP at the call (hypercall: as the exit reports it, 32 bits outside long mode) */
	uint64_t rip;            /**< guest RIP at the exit */
	uint32_t hypercall_flags;/**< hypercall only: EDX bits 15:0 (::VMWKVM_HCALL_FLAG_HB, ::VMWKVM_HCALL_FLAG_WRITE) */
	uint32_t pad2;           /**< zero */
	uint64_t reserved[5];    /**< zero */
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
	uint32_t eax;            /**< EAX result (32 bits, written zero-extended) */
	uint32_t ebx;            /**< EBX result (32 bits, written zero-extended) */
	uint32_t ecx;            /**< ECX result (32 bits, written zero-extended) */
	uint32_t edx;            /**< EDX result (32 bits, written zero-extended) */
	uint32_t esi;            /**< ESI result (32 bits, written zero-extended) */
	uint32_t edi;            /**< EDI result (32 bits, written zero-extended) */
	uint32_t ebp;            /**< EBP result (32 bits, written zero-extended) */
	uint8_t vector;          /**< exception vector (with ::VMWKVM_REPLY_INJECT) */
	uint8_t pad[3];          /**< zero */
	uint32_t error_code;     /**< exception error code, for vectors that have one */
	uint64_t address;        /**< CR2 for \#PF */
	const void *hb_data;     /**< HB IN: the vmwkvm_call::hb_count bytes for this piece (NULL: zeroes) */
	uint64_t reserved[4];    /**< zero */
};

/**
 * Decode an exit without a vCPU handle (pure function).
 *
 * - KVM_EXIT_IO on port 0x5658 (LB): a call when it is a single 4-byte access (IN or OUT;
 *   both are calls, an OUT is answered in EAX like an IN) with EAX = magic. Otherwise
 *   invalid: ::VMWKVM_INVALID_BOUNDS (data area outside kvm_run), ::VMWKVM_INVALID_STRING
 *   (count != 1), ::VMWKVM_INVALID_SIZE, ::VMWKVM_INVALID_MAGIC. A string access with
 *   count 1 cannot be told from IN/OUT in kvm_run and decodes as IN/OUT.
 * - KVM_EXIT_IO on port 0x5659 (HB): one piece of a REP INSB/OUTSB, byte-sized. The bytes
 *   still to come after the piece are RCX (OUT: KVM has already counted the piece) or
 *   RCX - count (IN: it has not), RCX taken at cpu->addr_bits. The first piece gives
 *   the total (checked against env->hb_max: ::VMWKVM_INVALID_HB_LENGTH); the last one is
 *   the piece after which nothing remains. A piece that does not continue the transfer
 *   in progress (other direction, other RIP, other remaining count; on the last OUT
 *   byte RIP may already be past the instruction) is ::VMWKVM_INVALID_HB_SEQUENCE and
 *   starts a new, discarded transfer. All pieces of a discarded transfer (too long, bad
 *   magic, out of sequence, abandoned by vmwkvm_exit_complete_invalid()) decode as
 *   invalid with that reason until its last piece. An IN piece with RCX < count is no
 *   REP INSB: ::VMWKVM_INVALID_STRING. LB exits never touch @p hb.
 * - env->hypercall_exit (non-zero) with payload type 1: a hypercall. GPRs and CPL come
 *   from the payload; EDX bits 15:0 are the flags (vmwkvm_call::hypercall_flags). WRITE
 *   without HB is ::VMWKVM_INVALID_DIRECTION, an HB length of 0 or above hb_max is
 *   ::VMWKVM_INVALID_HB_LENGTH, another type ::VMWKVM_INVALID_HYPERCALL. Exit 40 without
 *   a hypercall exit in env is KVM_EXIT_TDX on mainline: ::VMWKVM_EXIT_NOT_BACKDOOR.
 * - Origin: L2/L1 from KVM_RUN_X86_GUEST_MODE in run->flags when env->guest_mode_valid,
 *   else unknown.
 *
 * Reads only the fixed part of kvm_run and the I/O data area, which must lie inside
 * env->run_size bytes after the fixed part.
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
 * Decode the vCPU's last exit (vmwkvm_exit_decode_raw() on the vCPU's kvm_run, the VM's
 * environment and the vCPU's HB state).
 *
 * Reads the registers through sync regs (no ioctl; the VMM should keep KVM_SYNC_X86_REGS and
 * KVM_SYNC_X86_SREGS in `run->kvm_valid_regs`, as vmwkvm_vcpu_new() set them: if it cleared
 * them, the synced copy is stale, so this exit's registers are read by KVM_GET_REGS and
 * KVM_GET_SREGS into kvm_run, the bits are set again and a warning is logged) or
 * KVM_GET_REGS/KVM_GET_SREGS, and only for exits that can be backdoor accesses (the
 * backdoor ports, the hypercall exit). Updates the vCPU's HB transfer state.
 * A non-backdoor exit is returned as ::VMWKVM_EXIT_NOT_BACKDOOR and left untouched; its
 * record then carries only exit_reason and origin (registers read as 0).
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
 * Writes the registers in reply->set as zero-extended 32-bit values (EFLAGS and RIP
 * untouched; registers not in the set keep all 64 bits). Per transport:
 * - LB IN: the I/O data always receives EAX (reply->eax, or the guest's own EAX when
 *   EAX is not in the set); when other registers are written, RAX is written too, so
 *   KVM cannot lose it. With only EAX, no register write happens at all.
 * - LB OUT: registers only (EAX is the result).
 * - HB piece: for IN, reply->hb_data (hb_count bytes; NULL: zeroes) goes to the exit's
 *   data area; registers are written only when reply->set asks, on any piece (the
 *   service normally writes EBX, the status in bits 31:16, at the ::VMWKVM_HB_LAST piece).
 * - Hypercall: `result` (written by KVM to RAX) = reply->eax, or the guest's RAX when EAX
 *   is not in the set; other registers through sync regs/KVM_SET_REGS;
 *   ::VMWKVM_REPLY_INJECT fills the exit's exception fields (vector, error_code, address
 *   for \#PF) and KVM then delivers the fault at the VMCALL instead of skipping it.
 * With sync regs no ioctl is made; in ioctl mode at most one KVM_SET_REGS.
 * @param vcpu  the vCPU
 * @param call  the call returned by vmwkvm_exit_decode() for the current exit
 * @param reply the answer; NULL means "unsupported": EAX = 0xFFFFFFFF, nothing else changes
 *              (for an HB piece or an HB hypercall: refused as by vmwkvm_exit_complete_invalid())
 * @return 0; -EINVAL (NULL vcpu/call, an invalid call, a call that does not match the
 *         current exit (exit reason, port, direction, size, piece length), unknown bits in
 *         reply->set, an exception requested for a non-hypercall exit, a vector above 31,
 *         NMI (2) or a reserved vector (15, 22-27, 31), an I/O data area outside kvm_run), or
 *         the negative errno of KVM_GET_REGS/KVM_SET_REGS in ioctl mode.
 * @par Thread-safety
 * Call only from the thread that owns @p vcpu. No lock, no allocation.
 */
VMWKVM_API int vmwkvm_exit_complete(vmwkvm_vcpu *vcpu, const struct vmwkvm_call *call,
				    const struct vmwkvm_reply *reply);

/**
 * Complete an access that vmwkvm_exit_decode() found invalid the way the protocol says:
 * an IN returns all ones in the accessed width and no register changes; an OUT is
 * dropped; an HB transfer in progress is abandoned.
 *
 * Also usable on a valid call to refuse it that way. HB: IN pieces receive 0xFF bytes;
 * if the piece is not the last, the rest of the transfer is discarded (its pieces decode
 * as invalid, ::VMWKVM_INVALID_HB_ABANDONED); at the last piece of a transfer that had
 * the magic, EBX bits 31:16 (the status) are cleared, so the guest sees no SUCCESS.
 * Hypercall: result = 0xFFFFFFFF, no exception; for an HB request (EDX flag HB) with the
 * magic, EBX bits 31:16 (the status) are cleared as well. An unknown payload type is left alone.
 * @param vcpu the vCPU
 * @param call the ::VMWKVM_EXIT_INVALID call (or a call to refuse)
 * @return 0; -EINVAL (NULL argument, a call that does not match the current exit), or the
 *         negative errno of KVM_GET_REGS/KVM_SET_REGS in ioctl mode (HB status write).
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
