/* Tools host component internals (lib/backdoor/tools*.c). Not installed.
 * tools.c: object, life cycle, state getters (the top); tools_tclo.c: the TCLO command
 * queue, results, timeouts and heartbeat; tools_rpci.c: the RPCI commands Tools send and
 * the guestinfo store; tools_base.c: helpers (the bottom). tools_tclo.c and tools_rpci.c
 * call only tools_base.c and the public GuestRPC API. */
#ifndef VMWKVM_LIB_BACKDOOR_TOOLS_INT_H
#define VMWKVM_LIB_BACKDOOR_TOOLS_INT_H

#include "core/internal.h"

#include <vmwkvm/tools.h>

#define TOOLS_MAX_PENDING 4096u
#define TOOLS_MAX_REPLY 65536u
#define TOOLS_MAX_KEYS 65536u
#define TOOLS_MAX_STORE (64u << 20)
#define TOOLS_MAX_CAPS 4096u
#define TOOLS_DEFAULT_RUNNING_MS 60000u
#define NS_PER_MS 1000000ull

/* refusal texts (docs/tools-protocol.md says which ones a VMware host is known to send) */
#define MSG_NO_VALUE "No value found"
#define MSG_TWO_ARGS "Two and exactly two arguments expected"
#define MSG_TOO_MANY "Too many keys"
#define MSG_VAL_LONG "Value too long"
#define MSG_KEY_LONG "Key is too long"

struct tcmd {
	struct tcmd *next;
	uint64_t id;
	uint64_t seq;       /* the channel table's sequence number */
	uint16_t channel;
	uint8_t status;     /* enum vmwkvm_tools_status */
	bool internal;      /* heartbeat ping: nobody reads the result */
	bool truncated;
	vmwkvm_tools_result_fn fn;
	void *ctx;
	uint64_t queued_ns, deadline_ns, done_ns;
	char *reply;        /* reply_len + 1 bytes */
	size_t reply_len;
};

struct kv {
	struct kv *next;
	char *key;
	char *val;   /* len + 1 bytes */
	size_t len;
};

struct cap {
	char *name;
	char *value;
};

struct vmwkvm_tools {
	pthread_mutex_t lock;
	vmwkvm_rpc *rpc;
	int efd;
	/* options */
	uint32_t max_pending, max_per_channel, max_reply, default_timeout_ms;
	uint32_t max_keys, max_store, max_caps, heartbeat_ms, running_ms, cpu_mhz;
	vmwkvm_tools_clock_fn clock;
	void *clock_ctx;
	vmwkvm_tools_notify_fn notify;
	void *notify_ctx;
	/* commands */
	struct tcmd *cmds;
	unsigned ncmds;
	uint64_t next_id;
	char *fetched;      /* the reply handed out by vmwkvm_tools_command_result() */
	/* state */
	uint32_t version, version_type;
	bool version_set, running, unified_loop, answered, pinged;
	bool tclo_open;     /* a TCLO channel was open at the last look */
	uint32_t changes;
	uint64_t generation;
	uint64_t last_answer_ns, last_ping_ns;
	uint64_t answers, dropped, timeouts, logs;
	int32_t state_change, state_change_ok;
	char app[64];
	char last_log[256];
	struct cap *caps;
	uint32_t ncaps;
	struct { char *val; size_t len; } ginfo[VMWKVM_TOOLS_MAX_GUESTINFO_TYPE + 1];
	uint32_t nginfo;
	struct kv *store;
	uint32_t nkeys;
	size_t store_bytes;
};


/* ---- helpers (tools_base.c) ---- */
uint64_t vk_tools_now_ns(const struct vmwkvm_tools *t);
/* lock held: record a change; the caller calls vk_tools_notify_out() after unlocking */
void vk_tools_changed(struct vmwkvm_tools *t, uint32_t what);
void vk_tools_notify_out(struct vmwkvm_tools *t, uint32_t what);
/* args without trailing NULs (ovt sends most requests with strlen + 1 bytes) */
size_t vk_tools_trim_nul(const char *s, size_t len);
/* malloc'ed copy of len bytes plus a NUL, or NULL */
char *vk_tools_dup_bytes(const char *s, size_t len);

/* ---- RPCI commands and the guestinfo store (tools_rpci.c) ---- */
/* Register every RPCI handler on t->rpc; on failure none stays registered. */
int vk_tools_register_rpci(struct vmwkvm_tools *t);
void vk_tools_unregister_rpci(struct vmwkvm_tools *t);
struct kv *vk_tools_store_find(struct vmwkvm_tools *t, const char *key, size_t klen);
bool vk_tools_key_ok(const char *key, size_t klen);
int vk_tools_store_set(struct vmwkvm_tools *t, const char *key, size_t klen, const char *val, size_t len);

/* ---- TCLO commands (tools_tclo.c) ---- */
void vk_tools_on_tclo(uint16_t channel, uint64_t seq, const char *data, size_t len, void *ctx);
void vk_tools_cmd_free(struct tcmd *c);
bool vk_tools_running_now(const struct vmwkvm_tools *t, uint64_t now);

#endif
