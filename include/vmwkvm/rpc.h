/**
 * @file vmwkvm/rpc.h
 * @brief The GuestRPC message channel (backdoor command MESSAGE = 0x1E): RPCI and TCLO.
 *
 * A ::vmwkvm_rpc is the per-VM channel table, a pure state machine fed with decoded calls
 * (normally through the ::vmwkvm_backdoor it is attached to, or directly with
 * vmwkvm_rpc_handle()). Protocol: facts sheet section 3.
 *
 * **Low bandwidth** (port 0x5658, ECX = subcommand << 16 | 0x1E): the status goes in
 * ECX bits 31:16 with ECX bits 15:0 = 0. Exact answers:
 * | subcommand | success | other registers written |
 * |---|---|---|
 * | OPEN (0) | ECX = 0x00010000 | EDX = id << 16 \| guest's EDX low16; with the cookie flag ESI = cookie-high, EDI = cookie-low |
 * | SENDSIZE (1) | ECX = 0x00810000 (0x00010000 with HB advertisement off) | none |
 * | SENDPAYLOAD (2) | ECX = 0x00010000 | none (EBX = next 4 bytes, little-endian, last chunk partial) |
 * | RECVSIZE (3) | ECX = 0x00830000 with a message waiting, else 0x00810000 (HB bit only if advertised) | with a message: EDX = 1 << 16 \| low16, EBX = length |
 * | RECVPAYLOAD (4) | ECX = 0x00010000 | EDX = 2 << 16 \| low16, EBX = next 4 bytes (zero padded) |
 * | RECVSTATUS (5) | ECX = 0x00010000 | none |
 * | CLOSE (6) | ECX = 0x00010000 | none |
 * A failure writes ECX = 0 (status without SUCCESS), or ECX = 0x00100000 (CPT) when a
 * checkpoint interrupted the transfer; nothing else. EAX and EBP are never written.
 *
 * **High bandwidth** (port 0x5659, only after the HB bit was advertised): REP OUTSB sends
 * the whole message (EDX high16 = id, ESI = buffer, cookies EDI = low / EBP = high),
 * REP INSB receives the whole reply (EDI = buffer, cookies ESI = high / EBP = low). The
 * decoder hands each piece over as a call with hb_offset/hb_count/hb_total/hb_flags; the
 * channel checks hb_total against the SENDSIZE length (send) or the reply length (receive)
 * at the FIRST piece, copies pieces in order, and answers EBX = status << 16 at the LAST
 * piece only (other pieces change no register). For REP INSB pieces the channel writes
 * the bytes into vmwkvm_call::hb_data itself and sets vmwkvm_reply::hb_data to the same
 * pointer; a refused piece gets vmwkvm_reply::hb_data = NULL (zeroes).
 *
 * **State per channel**: idle -> SENDSIZE n -> collecting n bytes -> complete: an RPCI
 * channel runs the handler and stores the reply; a TCLO channel hands the guest's result
 * to the TCLO callback -> RECVSIZE hands out the waiting message (RPCI reply, or the next
 * queued TCLO command) -> RECVPAYLOAD... -> RECVSTATUS: idle. A SENDSIZE restarts the send
 * (drops a partial send and an unfetched reply), except while the channel's RPCI handler
 * or TCLO result callback runs (status 0: one message in flight per channel); other
 * out-of-order subcommands get status 0 and change nothing. A TCLO command the guest
 * fetched completely counts as delivered at its next SENDSIZE or RECVSIZE even without
 * RECVSTATUS (the result that follows belongs to it). A guest that aborts a receive
 * (RECVPAYLOAD or RECVSTATUS with EBX bit 0 clear) drops the message, also after a
 * checkpoint. RPCI replies are "1 " or "0 " followed by
 * the text, so they are at least 2 bytes long. Cookies are checked on every call of a
 * channel opened with the cookie flag; on other channels ESI/EDI are ignored. An OPEN
 * that finds every channel open closes the one idle longest if it has been idle for
 * vmwkvm_rpc_set_idle_timeout() (default 30 s), as VMware closes idle channels.
 *
 * **Bounds**: at most vmwkvm_rpc_opts::max_channels channels (default 128), at most
 * vmwkvm_rpc_opts::max_message bytes per message in either direction (default 65536), at
 * most vmwkvm_rpc_opts::max_tclo_queue queued commands per TCLO channel (default 16).
 * Memory is allocated on demand and freed on CLOSE, on vmwkvm_rpc_reset() and by
 * vmwkvm_rpc_free().
 *
 * Thread-safety: every function may be called from any thread; one mutex per channel
 * table, no global lock. RPCI handlers and the TCLO callback run without that mutex held,
 * so they may call any function of this header.
 */
#ifndef VMWKVM_RPC_H
#define VMWKVM_RPC_H

#include <vmwkvm/common.h>
#include <vmwkvm/exit.h>

#ifdef __cplusplus
extern "C" {
#endif

/** OPEN protocol: guest-to-host requests ("RPCI"). */
#define VMWKVM_RPC_PROTO_RPCI 0x49435052u
/** OPEN protocol: host-to-guest requests ("TCLO"). */
#define VMWKVM_RPC_PROTO_TCLO 0x4F4C4354u
/** OPEN flag: the guest wants cookies. */
#define VMWKVM_RPC_FLAG_COOKIE 0x80000000u

/** MESSAGE subcommands (ECX bits 31:16). */
enum vmwkvm_rpc_subcmd {
	VMWKVM_RPC_OPEN = 0,        /**< open a channel */
	VMWKVM_RPC_SENDSIZE = 1,    /**< announce the length of a guest-to-host message */
	VMWKVM_RPC_SENDPAYLOAD = 2, /**< 4 bytes of it (LB) */
	VMWKVM_RPC_RECVSIZE = 3,    /**< ask for a host-to-guest message */
	VMWKVM_RPC_RECVPAYLOAD = 4, /**< 4 bytes of it (LB) */
	VMWKVM_RPC_RECVSTATUS = 5,  /**< the guest's verdict on the received message */
	VMWKVM_RPC_CLOSE = 6,       /**< close the channel */
};

/** Status bits (ECX bits 31:16 for LB, EBX bits 31:16 for HB). */
#define VMWKVM_RPC_STATUS_SUCCESS 0x0001u  /**< the step worked */
#define VMWKVM_RPC_STATUS_DORECV 0x0002u   /**< a message waits for the guest (RECVSIZE) */
#define VMWKVM_RPC_STATUS_CLOSED 0x0004u   /**< channel closed */
#define VMWKVM_RPC_STATUS_UNSENT 0x0008u   /**< message withdrawn */
#define VMWKVM_RPC_STATUS_CPT 0x0010u      /**< a checkpoint interrupted the transfer: restart it */
#define VMWKVM_RPC_STATUS_POWEROFF 0x0020u /**< powering off */
#define VMWKVM_RPC_STATUS_TIMEOUT 0x0040u  /**< channel timed out */
#define VMWKVM_RPC_STATUS_HB 0x0080u       /**< the host supports high-bandwidth transfers */

/** Default channel count (VMware's GUESTMSG_MAX_CHANNEL). */
#define VMWKVM_RPC_DEFAULT_CHANNELS 128u
/** Largest channel count: channel ids are 16 bits. */
#define VMWKVM_RPC_MAX_CHANNELS 65536u
/** Default message size bound, bytes (VMware's 64 KiB guest-to-host cap). */
#define VMWKVM_RPC_DEFAULT_MESSAGE 65536u
/** Largest configurable message size bound, bytes. */
#define VMWKVM_RPC_MAX_MESSAGE (16u << 20)
/** Default idle time after which a full table may close a channel, milliseconds (vmwkvm_rpc_set_idle_timeout()). */
#define VMWKVM_RPC_DEFAULT_IDLE_MS 30000u
/** Default queue depth per TCLO channel. */
#define VMWKVM_RPC_DEFAULT_TCLO_QUEUE 16u
/** Longest RPCI handler name, bytes. */
#define VMWKVM_RPC_MAX_NAME 255u

/** Opaque per-VM channel table. */
typedef struct vmwkvm_rpc vmwkvm_rpc;

/** Options for vmwkvm_rpc_new(). Zero-fill, then set @ref sz. */
struct vmwkvm_rpc_opts {
	size_t sz;               /**< sizeof(struct vmwkvm_rpc_opts) */
	uint32_t max_channels;   /**< 0 = ::VMWKVM_RPC_DEFAULT_CHANNELS; at most ::VMWKVM_RPC_MAX_CHANNELS */
	uint32_t max_message;    /**< 0 = ::VMWKVM_RPC_DEFAULT_MESSAGE; 2 .. ::VMWKVM_RPC_MAX_MESSAGE */
	uint32_t max_tclo_queue; /**< 0 = ::VMWKVM_RPC_DEFAULT_TCLO_QUEUE; at most 4096 */
	uint8_t no_hb;           /**< non-zero: do not advertise HB (iPXE then fails: it demands 0x00810000) and refuse HB */
	uint8_t pad[3];          /**< zero */
	uint64_t cookie_seed;    /**< 0: cookies from getrandom(); else a deterministic sequence (tests, fuzzing only) */
	uint64_t reserved[4];    /**< zero */
};

/** An RPCI request as a handler sees it. The bytes stay valid only during the call. */
struct vmwkvm_rpci_request {
	const char *message;   /**< the whole message, with a NUL after @ref message_len (it may contain NULs) */
	size_t message_len;    /**< its length, bytes */
	const char *command;   /**< the first word (up to the first space); points into @ref message */
	size_t command_len;    /**< its length */
	const char *args;      /**< everything after the first space ("" when none or when only a trailing space) */
	size_t args_len;       /**< its length */
	uint16_t channel;      /**< channel id */
	uint8_t cpl;           /**< CPL of the call that completed the message */
	uint8_t origin;        /**< enum vmwkvm_origin of that call */
	uint32_t reserved0;    /**< zero */
	uint64_t reserved[2];  /**< zero */
};

/** The reply text being built for an RPCI request (opaque; bounded by max_message - 2). */
typedef struct vmwkvm_rpc_out vmwkvm_rpc_out;

/**
 * An RPCI command handler.
 * @param req the request
 * @param out append the reply text here (without the "1 "/"0 " prefix)
 * @param ctx the pointer given at registration
 * @return 0: the guest gets "1 " + text; a negative errno: "0 " + text, or "0 " +
 *         vmwkvm_strerror() text if nothing was appended.
 * Runs on a vCPU thread, without the channel table's lock.
 */
typedef int (*vmwkvm_rpci_handler_fn)(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx);

/**
 * TCLO result callback: the guest sent a non-empty message on a TCLO channel (its
 * answer to the last command it received, normally "OK ..." or "ERROR ...").
 * @param channel channel id
 * @param seq     sequence number (from vmwkvm_rpc_tclo_queue()) of the last command the
 *                guest fetched completely on this channel, 0 if none
 * @param data    the bytes (NUL after @p len), valid only during the call
 * @param len     their length
 * @param ctx     the pointer given to vmwkvm_rpc_set_tclo_handler()
 * Runs on a vCPU thread, without the channel table's lock.
 */
typedef void (*vmwkvm_tclo_result_fn)(uint16_t channel, uint64_t seq, const char *data, size_t len, void *ctx);

/**
 * Create a channel table.
 * @param opts options, or NULL for defaults
 * @param out  receives the handle
 * @return 0; -EINVAL (NULL @p out, bad @p opts->sz or reserved bytes, a bound out of range), -ENOMEM.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_rpc_new(const struct vmwkvm_rpc_opts *opts, vmwkvm_rpc **out);

/**
 * Free a channel table, its channels, messages and queues.
 * @param rpc handle, or NULL (no-op)
 * @par Thread-safety
 * Not safe against concurrent use of @p rpc.
 */
VMWKVM_API void vmwkvm_rpc_free(vmwkvm_rpc *rpc);

/**
 * Register (or remove) an RPCI handler.
 *
 * A message is routed by its first word (up to the first space): to the handler whose
 * name equals that word, else to the handler with the longest name ending in '.' that
 * prefixes it (e.g. "tools.capability." receives "tools.capability.hgfs_server 1").
 * Messages without a handler get "0 Unknown command". A trailing space with an empty
 * argument ("log ", as ovt sends) is accepted.
 * @param rpc  handle
 * @param name command word or '.'-terminated prefix: 1..::VMWKVM_RPC_MAX_NAME bytes, no space, no NUL
 * @param fn   handler, or NULL to remove the registration
 * @param ctx  passed to @p fn
 * @return 0; -EINVAL (NULL @p rpc or @p name, bad name), -EEXIST (already registered;
 *         remove first), -ENOENT (removing a name not registered), -ENOMEM.
 * @par Thread-safety
 * Safe; a request already dispatched may still reach a removed handler.
 */
VMWKVM_API int vmwkvm_rpc_register(vmwkvm_rpc *rpc, const char *name, vmwkvm_rpci_handler_fn fn, void *ctx);

/**
 * Append bytes to an RPCI reply.
 * @param out  the reply being built
 * @param data bytes (may contain NULs)
 * @param len  their number
 * @return 0; -EINVAL (NULL argument), -E2BIG (the reply would exceed max_message - 2
 *         bytes; nothing appended), -ENOMEM.
 * @par Thread-safety
 * Only inside the handler that received @p out.
 */
VMWKVM_API int vmwkvm_rpc_out_append(vmwkvm_rpc_out *out, const void *data, size_t len);

/**
 * Append formatted text to an RPCI reply.
 * @param out the reply being built
 * @param fmt printf format
 * @return 0; -EINVAL, -E2BIG (too long; nothing appended), -ENOMEM.
 * @par Thread-safety
 * Only inside the handler that received @p out.
 */
VMWKVM_API int vmwkvm_rpc_out_printf(vmwkvm_rpc_out *out, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 2, 3)))
#endif
	;

/**
 * Install (or remove) the TCLO result callback.
 * @param rpc handle
 * @param fn  callback, or NULL to drop TCLO results
 * @param ctx passed to @p fn
 * @return 0, or -EINVAL (NULL @p rpc).
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_rpc_set_tclo_handler(vmwkvm_rpc *rpc, vmwkvm_tclo_result_fn fn, void *ctx);

/**
 * Queue a host-to-guest command ("reset", "ping", "Set_Option ...") on a TCLO channel.
 * The guest fetches it at its next RECVSIZE poll; its answer reaches the TCLO callback.
 * @param rpc     handle
 * @param channel an open TCLO channel id, or -1 for the TCLO channel opened first of
 *                those open now
 * @param cmd     the command bytes (sent verbatim, no prefix)
 * @param len     their number, 1..max_message
 * @param seq     receives the command's sequence number (> 0; may be NULL)
 * @return 0; -EINVAL (NULL @p rpc or @p cmd, @p len 0, channel out of range), -ENOENT (no
 *         such open TCLO channel), -E2BIG (@p len > max_message), -ENOSPC (queue full), -ENOMEM.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_rpc_tclo_queue(vmwkvm_rpc *rpc, int channel, const void *cmd, size_t len, uint64_t *seq);

/**
 * Withdraw a queued TCLO command the guest has not started to fetch (a command that timed
 * out must not reach the guest later: a late "OS_Reboot" would be worse than none).
 * @param rpc     handle
 * @param channel the TCLO channel it was queued on
 * @param seq     its sequence number (from vmwkvm_rpc_tclo_queue())
 * @return 0 (removed and freed); -EBUSY (the guest is fetching it: it will be delivered),
 *         -ENOENT (no such open TCLO channel, or no such command queued: already fetched
 *         or withdrawn), -EINVAL (NULL @p rpc, @p channel out of range, @p seq 0).
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_rpc_tclo_cancel(vmwkvm_rpc *rpc, int channel, uint64_t seq);

/**
 * List the open TCLO channels, oldest first.
 * @param rpc handle
 * @param ids receives up to @p n ids (may be NULL when @p n is 0)
 * @param n   capacity of @p ids
 * @return the number of open TCLO channels (may exceed @p n), -EINVAL, or -ENOMEM.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_rpc_tclo_channels(vmwkvm_rpc *rpc, uint16_t *ids, size_t n);

/**
 * Set how long a channel may stay idle before an OPEN that finds the table full may close
 * it (VMware closes idle channels). An OPEN on a full table closes the channel idle
 * longest, if it has been idle at least this long and no RPCI handler or TCLO result of
 * it is being handled; the closed channel's owner then gets failures (and a channel opened
 * with cookies no longer accepts its old cookies). Default ::VMWKVM_RPC_DEFAULT_IDLE_MS.
 * @param rpc handle
 * @param ms  idle time in milliseconds, or 0 to never close channels for idleness
 * @return 0, or -EINVAL (NULL @p rpc).
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_rpc_set_idle_timeout(vmwkvm_rpc *rpc, uint32_t ms);

/**
 * Answer one MESSAGE call: an LB call with command 0x1E, or an HB piece (port 0x5659).
 * The caller (normally vmwkvm_backdoor_handle()) has checked magic and origin.
 * @param rpc   handle
 * @param call  the call; for REP INSB pieces the channel writes vmwkvm_call::hb_data
 * @param reply receives the answer (fully written)
 * @return 0 (protocol failures are answers, not errors); -EINVAL (NULL argument, or a call
 *         that is neither MESSAGE nor an HB piece: @p reply is then the failure answer).
 * @par Thread-safety
 * Safe from any number of vCPU threads.
 */
VMWKVM_API int vmwkvm_rpc_handle(vmwkvm_rpc *rpc, const struct vmwkvm_call *call, struct vmwkvm_reply *reply);

/**
 * Checkpoint: every transfer in flight (a send partly collected, a message partly
 * fetched, an HB transfer in progress) fails at its next step with status CPT (0x0010,
 * without SUCCESS), so the guest restarts from SENDSIZE or RECVSIZE. A fetched-but-not
 * confirmed message stays available for the new RECVSIZE.
 * @param rpc handle
 * @return the number of transfers marked (>= 0), or -EINVAL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_rpc_checkpoint(vmwkvm_rpc *rpc);

/**
 * VM reset: close every channel and free its messages and queue.
 * @param rpc handle
 * @return the number of channels closed (>= 0), or -EINVAL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_rpc_reset(vmwkvm_rpc *rpc);

/**
 * Number of open channels.
 * @param rpc handle
 * @return the count (>= 0), or -EINVAL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_rpc_channel_count(vmwkvm_rpc *rpc);

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_RPC_H */
