/**
 * @file vmwkvm/tools.h
 * @brief The host side of VMware Tools: the RPCI commands Tools send, a TCLO command API,
 *        and the Tools state a VMM reads.
 *
 * A ::vmwkvm_tools attaches to a ::vmwkvm_rpc (one per VM). It registers the RPCI handlers
 * that open-vm-tools uses in normal operation (docs/tools-protocol.md lists them with the
 * exact answers) and takes the channel table's TCLO result callback. The VMM then:
 * - queues host-to-guest commands ("reset", "ping", "Capabilities_Register",
 *   "Set_Option broadcastIP 1", "OS_Halt", ...) with vmwkvm_tools_command(), and gets the
 *   guest's answer through a callback or vmwkvm_tools_command_result(), or a timeout;
 * - reads the Tools state (version, last TCLO activity, capabilities, guest info, the
 *   guestinfo.* store) with vmwkvm_tools_get_state() and the getters below;
 * - waits for changes on vmwkvm_tools_event_fd() (an eventfd) or a callback, and calls
 *   vmwkvm_tools_process() when it is readable or when the timeout returned by the last
 *   vmwkvm_tools_process() has passed (timeouts and heartbeat pings happen there; the
 *   component starts no thread).
 *
 * **RPCI commands answered** (ovt sends most of them with a trailing NUL, which is
 * ignored): `tools.set.version N`, `tools.set.versiontype N T`, `tools.capability.NAME
 * [VALUE]` (including `tools.capability.features I=V ...`), `vmx.capability.unified_loop
 * APP`, `log TEXT`, `SetGuestInfo  N VALUE`, `SetGuestDiskInfo JSON`, `info-set guestinfo.KEY VALUE`, `info-get
 * guestinfo.KEY` ("0 No value found" when unset), `tools.os.statechange.status OK STATE`.
 * Every other command keeps the channel table's
 * answer "0 Unknown command", which is what a VMware host answers.
 *
 * **Bounds** (a hostile guest cannot grow memory): at most
 * vmwkvm_tools_opts::max_pending commands per VM and vmwkvm_tools_opts::max_per_channel per
 * TCLO channel queued or awaiting an answer (completed results waiting to be read count
 * too), replies kept up to vmwkvm_tools_opts::max_reply bytes (longer ones are truncated
 * and flagged), at most vmwkvm_tools_opts::max_keys guestinfo keys and
 * vmwkvm_tools_opts::max_store_bytes bytes of guestinfo values, at most
 * vmwkvm_tools_opts::max_caps capabilities of at most ::VMWKVM_TOOLS_MAX_VALUE bytes each,
 * guest info values of at most ::VMWKVM_TOOLS_MAX_GUESTINFO bytes each. A guest that never
 * answers a command gets it timed out; a guest result for no pending command (wrong
 * sequence, flood) is counted and dropped.
 *
 * Thread-safety: every function may be called from any thread (one mutex per component);
 * callbacks run without that mutex held and may call any function of this header except
 * vmwkvm_tools_free().
 */
#ifndef VMWKVM_TOOLS_H
#define VMWKVM_TOOLS_H

#include <vmwkvm/common.h>
#include <vmwkvm/rpc.h>
#include <vmwkvm/backdoor.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque Tools host component (one per VM). */
typedef struct vmwkvm_tools vmwkvm_tools;

/** Default command timeout, milliseconds. */
#define VMWKVM_TOOLS_DEFAULT_TIMEOUT_MS 30000u
/** Default bound on commands per VM (queued, awaiting an answer, or unread). */
#define VMWKVM_TOOLS_DEFAULT_PENDING 64u
/** Default bound on commands per TCLO channel. */
#define VMWKVM_TOOLS_DEFAULT_PER_CHANNEL 8u
/** Default bound on a kept reply, bytes. */
#define VMWKVM_TOOLS_DEFAULT_REPLY 4096u
/** Default bound on guestinfo.* keys. */
#define VMWKVM_TOOLS_DEFAULT_KEYS 256u
/** Default bound on the bytes of all guestinfo.* values together. */
#define VMWKVM_TOOLS_DEFAULT_STORE (1u << 20)
/** Default bound on registered capabilities. */
#define VMWKVM_TOOLS_DEFAULT_CAPS 128u
/** Longest capability name or value, guestinfo.* key, or app name kept, bytes. */
#define VMWKVM_TOOLS_MAX_VALUE 1024u
/** Longest guest info value (SetGuestInfo, SetGuestDiskInfo) kept, bytes; longer ones are truncated. */
#define VMWKVM_TOOLS_MAX_GUESTINFO 16384u
/** vmwkvm_tools_guest_info() type of the JSON sent with SetGuestDiskInfo (ovt's unused INFO_ERROR number). */
#define VMWKVM_TOOLS_GUESTINFO_DISKS 0u
/** Highest SetGuestInfo type number kept (ovt's INFO_MAX - 1 is 11). */
#define VMWKVM_TOOLS_MAX_GUESTINFO_TYPE 31u

/** Monotonic clock for the component (tests use it to make timeouts exact). */
typedef uint64_t (*vmwkvm_tools_clock_fn)(void *ctx);

/** Bits passed to the change callback and accumulated for vmwkvm_tools_get_state(). */
enum vmwkvm_tools_change {
	VMWKVM_TOOLS_CHANGED_VERSION = 1u << 0,   /**< tools.set.version(type) received */
	VMWKVM_TOOLS_CHANGED_CAPS = 1u << 1,      /**< a capability was registered or changed */
	VMWKVM_TOOLS_CHANGED_GUESTINFO = 1u << 2, /**< SetGuestInfo value changed */
	VMWKVM_TOOLS_CHANGED_STORE = 1u << 3,     /**< the guest set a guestinfo.* key */
	VMWKVM_TOOLS_CHANGED_RUNNING = 1u << 4,   /**< Tools started or stopped answering TCLO */
	VMWKVM_TOOLS_CHANGED_COMMAND = 1u << 5,   /**< a command finished (answer, error, timeout) */
	VMWKVM_TOOLS_CHANGED_LOG = 1u << 6,       /**< a "log" line arrived */
	VMWKVM_TOOLS_CHANGED_STATE = 1u << 7,     /**< tools.os.statechange.status or unified_loop */
};

/**
 * Change callback.
 * @param tools the component
 * @param what  enum vmwkvm_tools_change bits of this change
 * @param ctx   vmwkvm_tools_opts::notify_ctx
 * Runs on the thread that caused the change (a vCPU thread for guest RPCs, the VMM's
 * thread for vmwkvm_tools_process()), without the component's lock.
 */
typedef void (*vmwkvm_tools_notify_fn)(vmwkvm_tools *tools, uint32_t what, void *ctx);

/** Options for vmwkvm_tools_new(). Zero-fill, then set @ref sz. All fields optional. */
struct vmwkvm_tools_opts {
	size_t sz;                    /**< sizeof(struct vmwkvm_tools_opts) */
	uint32_t max_pending;         /**< 0 = ::VMWKVM_TOOLS_DEFAULT_PENDING; at most 4096 */
	uint32_t max_per_channel;     /**< 0 = ::VMWKVM_TOOLS_DEFAULT_PER_CHANNEL; at most max_pending */
	uint32_t max_reply;           /**< 0 = ::VMWKVM_TOOLS_DEFAULT_REPLY; at most 65536 */
	uint32_t default_timeout_ms;  /**< 0 = ::VMWKVM_TOOLS_DEFAULT_TIMEOUT_MS */
	uint32_t max_keys;            /**< 0 = ::VMWKVM_TOOLS_DEFAULT_KEYS; at most 65536 */
	uint32_t max_store_bytes;     /**< 0 = ::VMWKVM_TOOLS_DEFAULT_STORE; at most 64 MiB */
	uint32_t max_caps;            /**< 0 = ::VMWKVM_TOOLS_DEFAULT_CAPS; at most 4096 */
	uint32_t heartbeat_ms;        /**< non-zero: vmwkvm_tools_process() queues "ping" when no
	                                   command is in flight and nothing was heard for this long */
	uint32_t running_ms;          /**< Tools count as running while a TCLO answer is at most this
	                                   old; 0 = 3 x heartbeat_ms, or 60000 without heartbeat */
	uint32_t cpu_mhz;             /**< GETMHZ answer for vmwkvm_tools_bind_backdoor(); 0 = leave GETMHZ alone */
	vmwkvm_tools_clock_fn clock;  /**< monotonic nanoseconds; NULL = CLOCK_MONOTONIC */
	void *clock_ctx;              /**< passed to @ref clock */
	vmwkvm_tools_notify_fn notify;/**< change callback, or NULL */
	void *notify_ctx;             /**< passed to @ref notify */
	uint64_t reserved[4];         /**< zero */
};

/**
 * Create the component and attach it to a channel table: registers its RPCI handlers and
 * installs its TCLO result callback (replacing any other).
 * @param rpc  the VM's channel table (borrowed; must outlive the component)
 * @param opts options, or NULL for defaults
 * @param out  receives the handle
 * @return 0; -EINVAL (NULL @p rpc or @p out, bad @p opts->sz, reserved bytes, a bound out of
 *         range), -EEXIST (one of the RPCI names is already registered on @p rpc; nothing
 *         changed), -ENOMEM, or the negative errno of eventfd().
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_tools_new(vmwkvm_rpc *rpc, const struct vmwkvm_tools_opts *opts, vmwkvm_tools **out);

/**
 * Detach from the channel table (unregisters the handlers and the TCLO callback) and free
 * everything. Pending commands are dropped without callback.
 * @param tools handle, or NULL (no-op)
 * @par Thread-safety
 * Not safe against concurrent use of @p tools; call when no vCPU runs.
 */
VMWKVM_API void vmwkvm_tools_free(vmwkvm_tools *tools);

/**
 * Register the backdoor commands Tools use besides MESSAGE that the backdoor has no
 * built-in for: GETMHZ (EAX = vmwkvm_tools_opts::cpu_mhz, EBX = magic), if cpu_mhz is set.
 * @param tools handle
 * @param bd    the VM's command table
 * @return 0; -EINVAL (NULL argument), or the errno of vmwkvm_backdoor_set_handler().
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_tools_bind_backdoor(vmwkvm_tools *tools, vmwkvm_backdoor *bd);

/** Outcome of a command (vmwkvm_tools_command()). */
enum vmwkvm_tools_status {
	VMWKVM_TOOLS_PENDING = 0,   /**< queued or sent, no answer yet */
	VMWKVM_TOOLS_OK = 1,        /**< the guest answered "OK ..." */
	VMWKVM_TOOLS_ERROR = 2,     /**< the guest answered "ERROR ..." (e.g. "ERROR Unknown command") */
	VMWKVM_TOOLS_BADREPLY = 3,  /**< the guest answered something else */
	VMWKVM_TOOLS_TIMEOUT = 4,   /**< no answer within the timeout */
	VMWKVM_TOOLS_CANCELLED = 5, /**< the TCLO channel closed, or vmwkvm_tools_cancel() */
};

/** A command's result. */
struct vmwkvm_tools_result {
	size_t sz;            /**< sizeof(struct vmwkvm_tools_result), set by the caller */
	uint64_t id;          /**< the command id */
	uint32_t status;      /**< enum vmwkvm_tools_status */
	uint16_t channel;     /**< TCLO channel it was queued on */
	uint8_t truncated;    /**< the reply was longer than max_reply */
	uint8_t pad;          /**< zero */
	const char *reply;    /**< the answer after "OK " / "ERROR " (NUL-terminated; binary safe
	                           with @ref reply_len); valid only during the callback, or until
	                           the next vmwkvm_tools_command_result() call for this id */
	size_t reply_len;     /**< its length */
	uint64_t elapsed_ns;  /**< queue to answer (or timeout) */
	uint64_t reserved[2]; /**< zero */
};

/**
 * Command completion callback.
 * @param tools the component
 * @param res   the result (valid only during the call)
 * @param ctx   the pointer given to vmwkvm_tools_command()
 * Runs without the component's lock, on a vCPU thread (answer) or the thread calling
 * vmwkvm_tools_process() / vmwkvm_tools_cancel() (timeout, cancel).
 */
typedef void (*vmwkvm_tools_result_fn)(vmwkvm_tools *tools, const struct vmwkvm_tools_result *res, void *ctx);

/**
 * Queue a host-to-guest command for the guest's Tools (TCLO).
 * @param tools      handle
 * @param channel    a TCLO channel id, or -1 for the oldest open TCLO channel
 * @param cmd        the command text (sent without a NUL): "reset", "ping",
 *                   "Capabilities_Register", "Set_Option synctime 0", "OS_Halt", ...
 * @param timeout_ms 0 = vmwkvm_tools_opts::default_timeout_ms
 * @param fn         completion callback, or NULL to collect the result with
 *                   vmwkvm_tools_command_result()
 * @param ctx        passed to @p fn
 * @param id         receives the command id (> 0; may be NULL)
 * @return 0; -EINVAL (NULL @p tools or @p cmd, empty command, a NUL in it), -E2BIG (longer
 *         than the message bound), -ENOENT (no such open TCLO channel), -ENOSPC (the VM's
 *         or the channel's bound reached, or the channel table's queue is full), -ENOMEM.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_tools_command(vmwkvm_tools *tools, int channel, const char *cmd, uint32_t timeout_ms,
				    vmwkvm_tools_result_fn fn, void *ctx, uint64_t *id);

/**
 * Fetch the result of a command queued without callback. A finished result is handed out
 * once and then freed (its reply stays valid until the next call of this function).
 * @param tools handle
 * @param id    the command id
 * @param res   receives the result (res->sz set by the caller)
 * @return 0 (finished; @p res filled), -EAGAIN (still pending; res->status = PENDING),
 *         -ENOENT (unknown id, already fetched, or a command with callback), -EINVAL.
 * @par Thread-safety
 * Safe; the reply pointer is shared by all callers of this function on @p tools.
 */
VMWKVM_API int vmwkvm_tools_command_result(vmwkvm_tools *tools, uint64_t id, struct vmwkvm_tools_result *res);

/**
 * Cancel a pending command: it completes as ::VMWKVM_TOOLS_CANCELLED. If the guest has not
 * started to fetch it, it is withdrawn from the channel table's queue and never reaches the
 * guest (so is a command that times out); one being fetched is delivered, and its answer is
 * then dropped.
 * @param tools handle
 * @param id    the command id
 * @return 0; -ENOENT (unknown or finished), -EINVAL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_tools_cancel(vmwkvm_tools *tools, uint64_t id);

/**
 * Expire timed-out commands, cancel commands whose TCLO channel closed, update "running",
 * and queue the heartbeat ping. Call it when vmwkvm_tools_event_fd() is readable and when
 * the previous call's timeout has passed.
 * @param tools handle
 * @return milliseconds until the next deadline (>= 0), INT32_MAX when there is none, or
 *         -EINVAL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_tools_process(vmwkvm_tools *tools);

/**
 * The change notification: an eventfd (EFD_NONBLOCK | EFD_CLOEXEC) that becomes readable
 * when the state changed or a command finished. Read it (8 bytes) to clear it.
 * @param tools handle
 * @return the descriptor (owned by the component), or -EINVAL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_tools_event_fd(const vmwkvm_tools *tools);

/** Flag for vmwkvm_tools_reset(): also forget the guestinfo.* store. */
#define VMWKVM_TOOLS_RESET_STORE (1u << 0)

/**
 * VM reset (call it with vmwkvm_rpc_reset()): pending commands complete as
 * ::VMWKVM_TOOLS_CANCELLED (their callbacks run), and what the guest's Tools reported is
 * forgotten: version, capabilities, guest info, unified loop, state change, last log line,
 * TCLO liveness. The guestinfo.* store survives unless @p flags has
 * ::VMWKVM_TOOLS_RESET_STORE (values the VMM set with vmwkvm_tools_info_set() are then gone too).
 * Counters (answers, dropped, timeouts, logs) keep counting.
 * @param tools handle
 * @param flags 0 or ::VMWKVM_TOOLS_RESET_STORE
 * @return 0; -EINVAL (NULL @p tools, unknown flags).
 * @par Thread-safety
 * Safe; callbacks run on the calling thread.
 */
VMWKVM_API int vmwkvm_tools_reset(vmwkvm_tools *tools, uint32_t flags);

/** Tools state as the VMM sees it. */
struct vmwkvm_tools_state {
	size_t sz;                 /**< sizeof(struct vmwkvm_tools_state), set by the caller */
	uint32_t version;          /**< tools.set.version(type) version number, 0 = not reported */
	uint32_t version_type;     /**< tools.set.versiontype type (ovt: 4), 0 = not reported */
	uint8_t version_set;       /**< a version was reported */
	uint8_t running;           /**< a TCLO answer arrived less than running_ms ago and, at the last
	                                vmwkvm_tools_process(), a TCLO channel was still open */
	uint8_t unified_loop;      /**< vmx.capability.unified_loop was received */
	uint8_t pad;               /**< zero */
	uint32_t changes;          /**< enum vmwkvm_tools_change bits since the last call (cleared by it) */
	uint64_t last_answer_age_ns; /**< age of the last TCLO answer, UINT64_MAX if none */
	uint64_t generation;       /**< incremented on every change */
	uint32_t caps;             /**< capabilities registered */
	uint32_t guestinfo;        /**< SetGuestInfo types with a value */
	uint32_t keys;             /**< guestinfo.* keys set */
	uint32_t pending;          /**< commands queued or awaiting an answer */
	uint64_t answers;          /**< TCLO answers matched to a command */
	uint64_t dropped;          /**< guest TCLO messages dropped (no pending command, flood) */
	uint64_t timeouts;         /**< commands timed out */
	uint64_t logs;             /**< "log" lines received */
	int32_t state_change;      /**< last tools.os.statechange.status state, -1 if none */
	int32_t state_change_ok;   /**< its success value, -1 if none */
	char app[64];              /**< unified loop application name ("toolbox"), "" if none */
	char last_log[256];        /**< last "log" line (truncated), "" if none */
	uint64_t reserved[4];      /**< zero */
};

/**
 * Read the Tools state. Clears the accumulated vmwkvm_tools_state::changes.
 * @param tools handle
 * @param st    receives the state (st->sz set by the caller)
 * @return 0; -EINVAL (NULL argument, st->sz too small).
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_tools_get_state(vmwkvm_tools *tools, struct vmwkvm_tools_state *st);

/**
 * A registered capability by index (registration order).
 * @param tools    handle
 * @param index    0 .. caps - 1
 * @param name     receives the name after "tools.capability." (NUL-terminated, truncated)
 * @param name_cap capacity of @p name
 * @param value    receives the value text ("" for a capability without value)
 * @param value_cap capacity of @p value
 * @return 0; -ENOENT (index out of range), -EINVAL (NULL argument, zero capacity).
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_tools_capability(vmwkvm_tools *tools, uint32_t index, char *name, size_t name_cap,
				       char *value, size_t value_cap);

/**
 * The value of one capability by name ("statechange", "features", ...).
 * @param tools handle
 * @param name  the name after "tools.capability."
 * @param value receives the value text (NUL-terminated, truncated to @p cap)
 * @param cap   capacity of @p value (> 0)
 * @return the value's full length (>= 0); -ENOENT (not registered), -EINVAL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_tools_capability_get(vmwkvm_tools *tools, const char *name, char *value, size_t cap);

/**
 * The last value Tools sent with `SetGuestInfo  TYPE VALUE` (1 = DNS name, 3 = disk free
 * space (XDR), 4 = build number, 5 = full OS name, 6 = OS name, 7 = uptime, 8 = memory
 * (binary), 10 = IP addresses v3 (XDR), 11 = detailed OS data (binary)), or with type
 * ::VMWKVM_TOOLS_GUESTINFO_DISKS the JSON of `SetGuestDiskInfo JSON`. Values are bytes, not
 * necessarily text; text values are kept without their trailing NUL; each is truncated to
 * ::VMWKVM_TOOLS_MAX_GUESTINFO bytes.
 * @param tools handle
 * @param type  0 (::VMWKVM_TOOLS_GUESTINFO_DISKS) .. ::VMWKVM_TOOLS_MAX_GUESTINFO_TYPE
 * @param buf   receives up to @p cap bytes (may be NULL when @p cap is 0)
 * @param cap   capacity of @p buf
 * @return the value's full length (>= 0; may exceed @p cap); -ENOENT (never sent), -EINVAL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_tools_guest_info(vmwkvm_tools *tools, uint32_t type, void *buf, size_t cap);

/**
 * Read a guestinfo.* key (as the guest's `info-get` would).
 * @param tools handle
 * @param key   the full key, "guestinfo.NAME"
 * @param buf   receives up to @p cap bytes (may be NULL when @p cap is 0)
 * @param cap   capacity of @p buf
 * @return the value's full length (>= 0); -ENOENT (not set), -EINVAL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_tools_info_get(vmwkvm_tools *tools, const char *key, void *buf, size_t cap);

/**
 * Set (or with @p value NULL remove) a guestinfo.* key from the host side, for the guest
 * to read with `info-get`.
 * @param tools handle
 * @param key   "guestinfo.NAME": 11..::VMWKVM_TOOLS_MAX_VALUE bytes, no space, no control character
 * @param value the bytes, or NULL to remove
 * @param len   their number (at most the message bound minus 2)
 * @return 0; -EINVAL (NULL @p tools or @p key, bad key), -E2BIG (value too long, or the
 *         byte bound would be exceeded), -ENOSPC (key bound reached), -ENOENT (removing a key
 *         not set), -ENOMEM.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_tools_info_set(vmwkvm_tools *tools, const char *key, const void *value, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_TOOLS_H */
