/**
 * @file vmwkvm/backdoor.h
 * @brief Backdoor command dispatch: built-in commands, VMM handlers, CPL0 rules, origin filter.
 *
 * A ::vmwkvm_backdoor is the per-VM command table. It is a pure state machine fed with
 * the calls that vmwkvm_exit_decode() produces; it never touches a vCPU itself (except in
 * the convenience vmwkvm_backdoor_handle_exit()). The flow in a VMM's run loop is:
 *
 * @code
 * struct vmwkvm_call call;
 * struct vmwkvm_reply reply;
 * int r = vmwkvm_exit_decode(vcpu, &call);
 * if (r == VMWKVM_EXIT_CALL) {
 *         vmwkvm_backdoor_handle(bd, &call, &reply);
 *         vmwkvm_exit_complete(vcpu, &call, &reply);
 * } else if (r == VMWKVM_EXIT_INVALID) {
 *         vmwkvm_exit_complete_invalid(vcpu, &call);
 * }
 * @endcode
 * or, in one call, vmwkvm_backdoor_handle_exit(bd, vcpu).
 *
 * Order of checks for every call (the first that applies answers it):
 * 1. a call the decoder marked invalid, or without the magic: failure answer;
 * 2. the origin filter (vmwkvm_backdoor_filter_set()): a refused call gets the failure
 *    answer and a ::VMWKVM_LOG_WARN log entry (rate limited: the guest controls the rate);
 * 3. CPL0-only commands (facts sheet 2.2, plus STEALCLOCK 91 and MKS_GUEST_STATS 85)
 *    from CPL > 0: failure answer, whatever handler is registered;
 * 4. the handler registered for the command (VMM handler or enabled built-in);
 * 5. the default handler, if any;
 * 6. otherwise the failure answer.
 *
 * The **failure answer** of the protocol: EAX = 0xFFFFFFFF and no other register changes
 * (`reply->set == VMWKVM_REPLY_EAX`). MESSAGE (0x1E) is the one low-bandwidth exception:
 * its guests read the status from ECX bits 31:16, where their own sub-command number still
 * stands (SENDSIZE's 1 would read as SUCCESS), so a refused or unsupported MESSAGE call also
 * gets ECX = 0 (status 0, failure). On the high-bandwidth port (and for a high-bandwidth
 * request by hypercall, which the library does not implement) the guest reads its status
 * from EBX bits 31:16, and it preloads SUCCESS there, so the failure answer there is
 * EBX = 0 at the last piece (plus zero bytes for each REP INSB piece).
 *
 * HB pieces (port 0x5659) are MESSAGE traffic: the filter and the routing treat them as
 * command ::VMWKVM_BDOOR_CMD_MESSAGE, and they go to the attached ::vmwkvm_rpc.
 */
#ifndef VMWKVM_BACKDOOR_H
#define VMWKVM_BACKDOOR_H

#include <stdbool.h>

#include <vmwkvm/common.h>
#include <vmwkvm/vm.h>
#include <vmwkvm/exit.h>
#include <vmwkvm/rpc.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Backdoor command numbers (ECX bits 15:0) the library knows by name. */
enum vmwkvm_bdoor_cmd {
	VMWKVM_BDOOR_CMD_GETMHZ = 1,                 /**< CPU speed in MHz */
	VMWKVM_BDOOR_CMD_GETVERSION = 10,            /**< version, magic, product type (built-in) */
	VMWKVM_BDOOR_CMD_GETHWVERSION = 17,          /**< virtual hardware version */
	VMWKVM_BDOOR_CMD_GETUUID = 19,               /**< BIOS UUID in EAX..EDX (built-in; QEMU: GETBIOSUUID) */
	VMWKVM_BDOOR_CMD_GETMEMSIZE = 20,            /**< RAM size (built-in; QEMU semantics) */
	VMWKVM_BDOOR_CMD_GETTIME = 23,               /**< deprecated host time */
	VMWKVM_BDOOR_CMD_MESSAGE = 30,               /**< GuestRPC message channel (built-in, routed to ::vmwkvm_rpc) */
	VMWKVM_BDOOR_CMD_GETHZ = 45,                 /**< TSC and APIC bus frequencies (built-in) */
	VMWKVM_BDOOR_CMD_GETTIMEFULL = 46,           /**< host time, seconds in ESI:EDX (built-in) */
	VMWKVM_BDOOR_CMD_GETTIMEFULL_WITH_LAG = 55,  /**< as GETTIMEFULL plus interrupt lag in EDI (built-in) */
	VMWKVM_BDOOR_CMD_NESTING_CONTROL = 63,       /**< nesting-aware host query */
	VMWKVM_BDOOR_CMD_GET_VCPU_INFO = 68,         /**< vCPU feature bits (built-in) */
	VMWKVM_BDOOR_CMD_MKS_GUEST_STATS = 85,       /**< CPL0 only */
	VMWKVM_BDOOR_CMD_ABSPOINTER_RESTRICT = 86,   /**< pointer privilege restriction */
	VMWKVM_BDOOR_CMD_STEALCLOCK = 91,            /**< CPL0 only */
	VMWKVM_BDOOR_CMD_GETBUILDNUM = 100,          /**< host build number */
};

/** GETVERSION EAX answer guests require (ovt's VERSION_MAGIC). */
#define VMWKVM_BDOOR_VERSION 6u
/** Default GETVERSION ECX (product type): 2 = ESX, the value QEMU reports by default. */
#define VMWKVM_BDOOR_PRODUCT_ESX 2u
/** GETMEMSIZE EBX answer (QEMU's constant). */
#define VMWKVM_BDOOR_MEMSIZE_EBX 0x1177u
/** Default GETTIMEFULL ECX (maximum allowed time lag), microseconds. */
#define VMWKVM_BDOOR_DEFAULT_MAX_LAG_US 1000000u

/** GET_VCPU_INFO bits (EAX). */
#define VMWKVM_VCPU_INFO_SYNC_VTSCS (1u << 1)       /**< vTSCs are synchronised */
#define VMWKVM_VCPU_INFO_LEGACY_X2APIC_OK (1u << 3) /**< x2APIC usable without interrupt remapping */
#define VMWKVM_VCPU_INFO_MMIO_HONORS_PAT (1u << 4)  /**< MMIO mappings honour the PAT */
#define VMWKVM_VCPU_INFO_RESERVED (1u << 31)        /**< "command not implemented" */

/** Host time as GETTIMEFULL / GETTIMEFULL_WITH_LAG report it. */
struct vmwkvm_bdoor_time {
	uint64_t sec;              /**< seconds since the Unix epoch (ESI:EDX) */
	uint32_t usec;             /**< microseconds, 0..999999 (EBX) */
	uint32_t max_lag_us;       /**< maximum time lag the guest should tolerate, µs (ECX) */
	uint32_t interrupt_lag_us; /**< interrupt lag, µs (EDI, WITH_LAG only) */
	uint32_t reserved;         /**< zero */
};

/**
 * Clock source for the GETTIMEFULL built-ins (tests use it to make answers exact).
 *
 * On entry @p t holds the defaults: @ref vmwkvm_bdoor_time::max_lag_us from the options and
 * @ref vmwkvm_bdoor_time::interrupt_lag_us = 0; the callback fills sec and usec and may
 * change the lags.
 * @param t   time to fill
 * @param ctx vmwkvm_backdoor_opts::clock_ctx
 * @return 0, or a negative errno: the guest then gets the failure answer (EAX != magic).
 * May be called concurrently from several vCPU threads.
 */
typedef int (*vmwkvm_bdoor_clock_fn)(struct vmwkvm_bdoor_time *t, void *ctx);

/** Options for vmwkvm_backdoor_new(). Zero-fill, then set @ref sz. All fields optional. */
struct vmwkvm_backdoor_opts {
	size_t sz;                  /**< sizeof(struct vmwkvm_backdoor_opts) */
	uint32_t version;           /**< GETVERSION EAX; 0 = ::VMWKVM_BDOOR_VERSION (6) */
	uint32_t product_type;      /**< GETVERSION ECX when @ref product_type_set */
	uint8_t product_type_set;   /**< non-zero: use @ref product_type (0 = "unset" is a valid answer); else 2 (ESX) */
	uint8_t uuid_set;           /**< non-zero: @ref uuid is valid and GETUUID answers; else GETUUID fails */
	uint8_t pad0[2];            /**< zero */
	uint32_t apic_hz;           /**< GETHZ ECX (APIC bus Hz); 0 = unknown (ECX = 0xFFFFFFFF) */
	uint64_t tsc_hz;            /**< GETHZ EBX:EAX (TSC Hz); 0 = unknown (GETHZ answers unsupported) */
	uint64_t ram_bytes;         /**< GETMEMSIZE: RAM size in bytes; 0 = unknown (GETMEMSIZE fails) */
	uint8_t uuid[16];           /**< BIOS UUID bytes in storage order: EAX = bytes 0..3 little-endian, ... EDX = bytes 12..15 */
	uint32_t vcpu_info;         /**< GET_VCPU_INFO EAX bits (VMWKVM_VCPU_INFO_*; bit 31 is ignored) */
	uint32_t max_lag_us;        /**< GETTIMEFULL ECX; 0 = ::VMWKVM_BDOOR_DEFAULT_MAX_LAG_US */
	vmwkvm_bdoor_clock_fn clock;/**< clock for GETTIMEFULL*; NULL = CLOCK_REALTIME */
	void *clock_ctx;            /**< passed to @ref clock */
	vmwkvm_rpc *rpc;            /**< message channel for MESSAGE (borrowed; see vmwkvm_backdoor_set_rpc()) */
	uint64_t reserved[4];       /**< zero */
};

/** Opaque per-VM command table. */
typedef struct vmwkvm_backdoor vmwkvm_backdoor;

/**
 * A command handler.
 *
 * Called with @p reply zero-filled (no register set). Fill the registers the command
 * defines and set their bits in vmwkvm_reply::set; registers not set keep the guest's
 * values.
 * @param call  the decoded call (origin, CPL, registers)
 * @param reply the answer to fill
 * @param ctx   the pointer given at registration
 * @return 0 when @p reply is the answer; a negative errno to make the dispatcher send the
 *         failure answer instead (whatever @p reply holds).
 * Called on vCPU threads, possibly concurrently; the dispatcher holds no lock during the
 * call, so a handler may (re)configure the dispatcher.
 */
typedef int (*vmwkvm_backdoor_handler_fn)(const struct vmwkvm_call *call, struct vmwkvm_reply *reply,
					  void *ctx);

/**
 * Create a command table. Every command starts unhandled (failure answer); built-ins are
 * enabled one by one with vmwkvm_backdoor_enable_builtin(); the origin filter starts
 * allowing everything.
 * @param opts options, or NULL for defaults
 * @param out  receives the handle
 * @return 0; -EINVAL (NULL @p out, bad @p opts->sz, non-zero reserved bytes), -ENOMEM.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_backdoor_new(const struct vmwkvm_backdoor_opts *opts, vmwkvm_backdoor **out);

/**
 * Free a command table (an attached ::vmwkvm_rpc is not freed).
 * @param bd handle, or NULL (no-op)
 * @par Thread-safety
 * Not safe against concurrent use of @p bd.
 */
VMWKVM_API void vmwkvm_backdoor_free(vmwkvm_backdoor *bd);

/**
 * Register (or remove) the VMM's handler for one command; it replaces a built-in.
 * @param bd      handle
 * @param command ECX bits 15:0
 * @param fn      handler, or NULL to make the command unhandled again
 * @param ctx     passed to @p fn
 * @return 0; -EINVAL (NULL @p bd), -ENOMEM (no room to register a command >= 256).
 * @par Thread-safety
 * Safe, also from inside a handler; a call already dispatched may still reach the
 * previous handler.
 */
VMWKVM_API int vmwkvm_backdoor_set_handler(vmwkvm_backdoor *bd, uint16_t command,
					   vmwkvm_backdoor_handler_fn fn, void *ctx);

/**
 * Register (or remove) the handler for every command that has no handler of its own.
 * @param bd  handle
 * @param fn  handler, or NULL for the failure answer
 * @param ctx passed to @p fn
 * @return 0, or -EINVAL (NULL @p bd).
 * @par Thread-safety
 * As vmwkvm_backdoor_set_handler().
 */
VMWKVM_API int vmwkvm_backdoor_set_default(vmwkvm_backdoor *bd, vmwkvm_backdoor_handler_fn fn, void *ctx);

/**
 * Enable the library's own implementation of a command (replacing a VMM handler).
 *
 * Built-ins and their answers (EAX = magic on entry; "fail" = the failure answer):
 * | command | answer |
 * |---|---|
 * | GETVERSION (10) | EAX = version (6), EBX = magic, ECX = product type (default 2, ESX) |
 * | GETUUID (19) | EAX, EBX, ECX, EDX = UUID bytes 0..3, 4..7, 8..11, 12..15 as little-endian dwords; fail without a UUID |
 * | GETMEMSIZE (20) | QEMU semantics: EAX = RAM bytes truncated to 32 bits, EBX = 0x1177; fail without a size |
 * | MESSAGE (30) | the attached ::vmwkvm_rpc (LB, and HB pieces on port 0x5659); fail without one |
 * | GETHZ (45) | EAX = TSC Hz bits 31:0, EBX = bits 63:32, ECX = APIC bus Hz (0xFFFFFFFF if unknown); TSC unknown: EAX = EBX = 0xFFFFFFFF ("unsupported") |
 * | GETTIMEFULL (46) | EAX kept (= magic: success), ESI:EDX = seconds, EBX = µs, ECX = max lag µs; clock failure: fail |
 * | GETTIMEFULL_WITH_LAG (55) | as 46, plus EDI = interrupt lag µs |
 * | GET_VCPU_INFO (68) | EAX = configured bits (bit 31 clear: implemented) |
 * @param bd      handle
 * @param command one of the commands above
 * @return 0; -EINVAL (NULL @p bd), -ENOENT (no built-in for @p command).
 * @par Thread-safety
 * As vmwkvm_backdoor_set_handler().
 */
VMWKVM_API int vmwkvm_backdoor_enable_builtin(vmwkvm_backdoor *bd, uint16_t command);

/**
 * Enable every built-in listed for vmwkvm_backdoor_enable_builtin().
 * @param bd handle
 * @return 0, or -EINVAL (NULL @p bd).
 * @par Thread-safety
 * As vmwkvm_backdoor_set_handler().
 */
VMWKVM_API int vmwkvm_backdoor_enable_all_builtins(vmwkvm_backdoor *bd);

/**
 * Attach (or detach) the message channel that answers MESSAGE and the HB port.
 * @param bd  handle
 * @param rpc the channel (borrowed; must outlive its attachment), or NULL to detach
 * @return 0, or -EINVAL (NULL @p bd).
 * @par Thread-safety
 * Safe against concurrent dispatch only if the previous channel stays alive until every
 * call in flight has returned.
 */
VMWKVM_API int vmwkvm_backdoor_set_rpc(vmwkvm_backdoor *bd, vmwkvm_rpc *rpc);

/** Origin classes for the filter: nesting level x privilege. CPL 1..3 count as "user". */
enum vmwkvm_bdoor_from {
	VMWKVM_BDOOR_FROM_L1_CPL0 = 1u << 0,      /**< the VM itself, CPL0 */
	VMWKVM_BDOOR_FROM_L1_USER = 1u << 1,      /**< the VM itself, CPL 1..3 */
	VMWKVM_BDOOR_FROM_L2_CPL0 = 1u << 2,      /**< a nested guest, CPL0 */
	VMWKVM_BDOOR_FROM_L2_USER = 1u << 3,      /**< a nested guest, CPL 1..3 */
	VMWKVM_BDOOR_FROM_UNKNOWN_CPL0 = 1u << 4, /**< nesting level unknown, CPL0 */
	VMWKVM_BDOOR_FROM_UNKNOWN_USER = 1u << 5, /**< nesting level unknown, CPL 1..3 */
	VMWKVM_BDOOR_FROM_L1 = 0x03u,             /**< both L1 classes */
	VMWKVM_BDOOR_FROM_L2 = 0x0Cu,             /**< both L2 classes */
	VMWKVM_BDOOR_FROM_UNKNOWN = 0x30u,        /**< both unknown classes */
	VMWKVM_BDOOR_FROM_ALL = 0x3Fu,            /**< every class */
};

/**
 * The origin class (one enum vmwkvm_bdoor_from bit) of a call.
 * @param origin enum vmwkvm_origin (other values count as unknown)
 * @param cpl    CPL at the call
 * @return one VMWKVM_BDOOR_FROM_* bit; never fails.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API uint32_t vmwkvm_backdoor_from(uint8_t origin, uint8_t cpl);

/**
 * Allow or refuse one command from the given origin classes.
 * @param bd      handle
 * @param from    VMWKVM_BDOOR_FROM_* bits to change
 * @param command ECX bits 15:0 (::VMWKVM_BDOOR_CMD_MESSAGE also covers HB pieces)
 * @param allow   true to allow, false to refuse
 * @return 0; -EINVAL (NULL @p bd, @p from with unknown bits), -ENOMEM.
 * @par Thread-safety
 * Safe, also while vCPUs dispatch.
 */
VMWKVM_API int vmwkvm_backdoor_filter_set(vmwkvm_backdoor *bd, uint32_t from, uint16_t command, bool allow);

/**
 * For the given origin classes, refuse every command except those listed
 * (e.g. from = ::VMWKVM_BDOOR_FROM_L2_USER, commands = {GETVERSION, MESSAGE}).
 * Classes outside @p from keep their settings.
 * @param bd       handle
 * @param from     VMWKVM_BDOOR_FROM_* bits
 * @param commands commands to allow (may be NULL when @p n is 0: refuse everything)
 * @param n        number of entries in @p commands
 * @return 0; -EINVAL (NULL @p bd, unknown bits in @p from, NULL @p commands with n > 0), -ENOMEM.
 *         On error nothing changed.
 * @par Thread-safety
 * Safe, also while vCPUs dispatch (the new set applies atomically).
 */
VMWKVM_API int vmwkvm_backdoor_filter_allow_only(vmwkvm_backdoor *bd, uint32_t from,
						 const uint16_t *commands, size_t n);

/**
 * Whether the filter lets a command through from an origin class.
 * @param bd      handle
 * @param from    exactly one VMWKVM_BDOOR_FROM_* bit
 * @param command command number
 * @return 1 allowed, 0 refused, -EINVAL (NULL @p bd, @p from not a single known bit).
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_backdoor_filter_allowed(const vmwkvm_backdoor *bd, uint32_t from, uint16_t command);

/**
 * Whether the protocol reserves a command to CPL0 (facts sheet 2.2, plus MKS_GUEST_STATS
 * and STEALCLOCK).
 * @param command command number
 * @return true for CPL0-only commands.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API bool vmwkvm_backdoor_cpl0_only(uint16_t command);

/**
 * Parse a command given by name ("GETVERSION", case-insensitive, as vmwkvm_command_name()
 * spells it) or number ("30", "0x1e").
 * @param name the text
 * @return the command number (0..65535); -EINVAL (NULL), -ENOENT (unknown name, number out of range).
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_backdoor_command_from_name(const char *name);

/** vmwkvm_backdoor_handle() results (>= 0). */
enum vmwkvm_backdoor_result {
	VMWKVM_BACKDOOR_ANSWERED = 0,    /**< a handler (built-in, VMM or default) answered */
	VMWKVM_BACKDOOR_UNSUPPORTED = 1, /**< no handler, or the handler failed: failure answer */
	VMWKVM_BACKDOOR_REFUSED = 2,     /**< origin filter, CPL0-only rule or invalid call: failure answer */
};

/**
 * Answer one decoded call (or HB piece).
 * @param bd    handle
 * @param call  the call (from vmwkvm_exit_decode() or vmwkvm_exit_decode_raw())
 * @param reply receives the answer for vmwkvm_exit_complete() (fully written)
 * @return enum vmwkvm_backdoor_result (>= 0), or -EINVAL (NULL argument; @p reply is then
 *         the failure answer if it is not NULL).
 * @par Thread-safety
 * Safe from any number of vCPU threads at once.
 */
VMWKVM_API int vmwkvm_backdoor_handle(vmwkvm_backdoor *bd, const struct vmwkvm_call *call,
				      struct vmwkvm_reply *reply);

/**
 * Decode the vCPU's last exit, answer it if it is a backdoor call, and complete it:
 * vmwkvm_exit_decode(), then vmwkvm_backdoor_handle() + vmwkvm_exit_complete(), or
 * vmwkvm_exit_complete_invalid() for a malformed access.
 * @param bd   handle
 * @param vcpu the vCPU, just back from KVM_RUN
 * @return 1 if the exit was a backdoor access and is completed (re-enter KVM_RUN);
 *         0 if it is not (the VMM handles the exit; nothing changed); -EINVAL (NULL
 *         argument), or the negative errno of the decode or completion.
 * @par Thread-safety
 * Call only from the thread that owns @p vcpu; @p bd may be shared by all vCPUs.
 */
VMWKVM_API int vmwkvm_backdoor_handle_exit(vmwkvm_backdoor *bd, vmwkvm_vcpu *vcpu);

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_BACKDOOR_H */
