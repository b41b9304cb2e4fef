/* The host side of VMware Tools on top of the GuestRPC channel table: the RPCI commands
 * Tools send in normal operation, the TCLO command API with timeouts and bounds, and the
 * Tools state a VMM reads. Protocol findings: docs/tools-protocol.md. */
#include "internal.h"

#include <vmwkvm/tools.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

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

/* ---- helpers ---- */

static uint64_t now_ns(const struct vmwkvm_tools *t)
{
	if (t->clock)
		return t->clock(t->clock_ctx);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* lock held: record a change; the caller calls notify_out() after unlocking */
static void changed(struct vmwkvm_tools *t, uint32_t what)
{
	t->changes |= what;
	t->generation++;
	uint64_t one = 1;
	ssize_t r = write(t->efd, &one, sizeof(one));
	(void)r; /* EAGAIN: the counter is saturated, the fd is readable anyway */
}

static void notify_out(struct vmwkvm_tools *t, uint32_t what)
{
	if (what && t->notify)
		t->notify(t, what, t->notify_ctx);
}

/* args without trailing NULs (ovt sends most requests with strlen + 1 bytes) */
static size_t trim_nul(const char *s, size_t len)
{
	while (len && s[len - 1] == '\0')
		len--;
	return len;
}

static bool parse_u32(const char *s, size_t len, uint32_t *out, size_t *used)
{
	size_t i = 0;
	uint64_t v = 0;
	while (i < len && s[i] >= '0' && s[i] <= '9') {
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > UINT32_MAX)
			return false;
		i++;
	}
	if (!i)
		return false;
	*out = (uint32_t)v;
	if (used)
		*used = i;
	return true;
}

static bool parse_i32(const char *s, size_t len, int32_t *out, size_t *used)
{
	bool neg = len && s[0] == '-';
	uint32_t v;
	size_t u;
	if (!parse_u32(s + neg, len - neg, &v, &u) || v > (uint32_t)INT32_MAX)
		return false;
	*out = neg ? -(int32_t)v : (int32_t)v;
	*used = u + neg;
	return true;
}

static char *dup_bytes(const char *s, size_t len)
{
	char *p = malloc(len + 1);
	if (p) {
		if (len)
			memcpy(p, s, len);
		p[len] = '\0';
	}
	return p;
}

static void copy_text(char *dst, size_t cap, const char *s, size_t len)
{
	size_t n = len < cap - 1 ? len : cap - 1;
	for (size_t i = 0; i < n; i++)
		dst[i] = (s[i] >= 0x20 && s[i] != 0x7F) || s[i] == '\t' ? s[i] : '?';
	dst[n] = '\0';
}

static int reply_text(vmwkvm_rpc_out *out, const char *text)
{
	vmwkvm_rpc_out_append(out, text, strlen(text));
	return -EINVAL;
}

static struct kv *store_find(struct vmwkvm_tools *t, const char *key, size_t klen)
{
	for (struct kv *e = t->store; e; e = e->next)
		if (strlen(e->key) == klen && !memcmp(e->key, key, klen))
			return e;
	return NULL;
}

static bool key_ok(const char *key, size_t klen)
{
	static const char pfx[] = "guestinfo.";
	if (klen <= sizeof(pfx) - 1 || klen > VMWKVM_TOOLS_MAX_VALUE || memcmp(key, pfx, sizeof(pfx) - 1))
		return false;
	for (size_t i = 0; i < klen; i++)
		if ((unsigned char)key[i] <= 0x20 || key[i] == 0x7F)
			return false;
	return true;
}

/* lock held. 0, -ENOSPC (key bound), -E2BIG (byte bound), -ENOMEM, -ENOENT (remove of an absent key) */
static int store_set(struct vmwkvm_tools *t, const char *key, size_t klen, const char *val, size_t len)
{
	struct kv *e = store_find(t, key, klen);
	if (!val) {
		if (!e)
			return -ENOENT;
		for (struct kv **pp = &t->store; *pp; pp = &(*pp)->next)
			if (*pp == e) {
				*pp = e->next;
				break;
			}
		t->store_bytes -= e->len;
		t->nkeys--;
		free(e->key);
		free(e->val);
		free(e);
		return 0;
	}
	size_t old = e ? e->len : 0;
	if (!e && t->nkeys >= t->max_keys)
		return -ENOSPC;
	if (t->store_bytes - old + len > t->max_store)
		return -E2BIG;
	char *v = dup_bytes(val, len);
	if (!v)
		return -ENOMEM;
	if (!e) {
		e = calloc(1, sizeof(*e));
		char *k = e ? dup_bytes(key, klen) : NULL;
		if (!k) {
			free(e);
			free(v);
			return -ENOMEM;
		}
		e->key = k;
		e->next = t->store;
		t->store = e;
		t->nkeys++;
	}
	free(e->val);
	e->val = v;
	e->len = len;
	t->store_bytes = t->store_bytes - old + len;
	return 0;
}

/* ---- RPCI handlers (run on vCPU threads, without the channel table's lock) ---- */

static int h_version(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	size_t len = trim_nul(req->args, req->args_len), u = 0;
	uint32_t v, type = 0;
	bool typed = req->command_len == sizeof("tools.set.versiontype") - 1;
	if (!parse_u32(req->args, len, &v, &u))
		return reply_text(out, "Invalid version");
	if (typed) {
		size_t u2;
		if (u >= len || req->args[u] != ' ' || !parse_u32(req->args + u + 1, len - u - 1, &type, &u2))
			return reply_text(out, "Invalid version");
	}
	pthread_mutex_lock(&t->lock);
	bool diff = !t->version_set || t->version != v || (typed && t->version_type != type);
	t->version = v;
	if (typed)
		t->version_type = type;
	t->version_set = true;
	if (diff)
		changed(t, VMWKVM_TOOLS_CHANGED_VERSION);
	pthread_mutex_unlock(&t->lock);
	notify_out(t, diff ? VMWKVM_TOOLS_CHANGED_VERSION : 0);
	return 0;
}

static int h_capability(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	static const char pfx[] = "tools.capability.";
	const char *name = req->command + sizeof(pfx) - 1;
	size_t nlen = req->command_len - (sizeof(pfx) - 1);
	size_t vlen = trim_nul(req->args, req->args_len);
	if (!nlen || nlen >= VMWKVM_TOOLS_MAX_VALUE || memchr(name, '\0', nlen))
		return reply_text(out, "Invalid capability");
	if (vlen >= VMWKVM_TOOLS_MAX_VALUE)
		vlen = VMWKVM_TOOLS_MAX_VALUE - 1;
	int r = 0;
	bool diff = false;
	pthread_mutex_lock(&t->lock);
	struct cap *c = NULL;
	for (uint32_t i = 0; i < t->ncaps; i++)
		if (strlen(t->caps[i].name) == nlen && !memcmp(t->caps[i].name, name, nlen))
			c = &t->caps[i];
	char *v = dup_bytes(req->args, vlen);
	if (!v) {
		r = -ENOMEM;
	} else if (c) {
		diff = strcmp(c->value, v) != 0 || strlen(c->value) != vlen;
		free(c->value);
		c->value = v;
	} else if (t->ncaps >= t->max_caps) {
		free(v);
		r = -ENOSPC;
	} else {
		char *n = dup_bytes(name, nlen);
		if (!n) {
			free(v);
			r = -ENOMEM;
		} else {
			t->caps[t->ncaps++] = (struct cap){.name = n, .value = v};
			diff = true;
		}
	}
	if (diff)
		changed(t, VMWKVM_TOOLS_CHANGED_CAPS);
	pthread_mutex_unlock(&t->lock);
	notify_out(t, diff ? VMWKVM_TOOLS_CHANGED_CAPS : 0);
	if (r == -ENOSPC)
		return reply_text(out, "Too many capabilities");
	return r;
}

static int h_unified_loop(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	(void)out;
	size_t len = trim_nul(req->args, req->args_len);
	pthread_mutex_lock(&t->lock);
	t->unified_loop = true;
	copy_text(t->app, sizeof(t->app), req->args, len);
	changed(t, VMWKVM_TOOLS_CHANGED_STATE);
	pthread_mutex_unlock(&t->lock);
	notify_out(t, VMWKVM_TOOLS_CHANGED_STATE);
	return 0;
}

static int h_log(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	(void)out;
	size_t len = trim_nul(req->args, req->args_len);
	pthread_mutex_lock(&t->lock);
	t->logs++;
	copy_text(t->last_log, sizeof(t->last_log), req->args, len);
	changed(t, VMWKVM_TOOLS_CHANGED_LOG);
	pthread_mutex_unlock(&t->lock);
	vk_debug("tools: guest log: %.*s", (int)(len < 200 ? len : 200), req->args);
	notify_out(t, VMWKVM_TOOLS_CHANGED_LOG);
	return 0;
}

static int h_setguestinfo(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	const char *a = req->args;
	size_t len = req->args_len, i = 0, u;
	while (i < len && a[i] == ' ')
		i++;
	uint32_t type;
	if (!parse_u32(a + i, len - i, &type, &u) || type == 0 || type > VMWKVM_TOOLS_MAX_GUESTINFO_TYPE)
		return reply_text(out, "Invalid key");
	i += u;
	if (i < len && a[i] == ' ')
		i++;
	const char *val = a + i;
	size_t vlen = len - i;
	if (type <= 8) /* text types arrive with a trailing NUL */
		vlen = trim_nul(val, vlen);
	if (vlen > VMWKVM_TOOLS_MAX_GUESTINFO)
		vlen = VMWKVM_TOOLS_MAX_GUESTINFO;
	char *v = dup_bytes(val, vlen);
	if (!v)
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	bool diff = !t->ginfo[type].val || t->ginfo[type].len != vlen || memcmp(t->ginfo[type].val, v, vlen);
	if (!t->ginfo[type].val)
		t->nginfo++;
	free(t->ginfo[type].val);
	t->ginfo[type].val = v;
	t->ginfo[type].len = vlen;
	if (diff)
		changed(t, VMWKVM_TOOLS_CHANGED_GUESTINFO);
	pthread_mutex_unlock(&t->lock);
	notify_out(t, diff ? VMWKVM_TOOLS_CHANGED_GUESTINFO : 0);
	return 0;
}

/* "SetGuestDiskInfo JSON": kept as guest info type 0 (ovt's unused INFO_ERROR) */
static int h_diskinfo(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	(void)out;
	size_t vlen = trim_nul(req->args, req->args_len);
	if (vlen > VMWKVM_TOOLS_MAX_GUESTINFO)
		vlen = VMWKVM_TOOLS_MAX_GUESTINFO;
	char *v = dup_bytes(req->args, vlen);
	if (!v)
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	bool diff = !t->ginfo[0].val || t->ginfo[0].len != vlen || memcmp(t->ginfo[0].val, v, vlen);
	if (!t->ginfo[0].val)
		t->nginfo++;
	free(t->ginfo[0].val);
	t->ginfo[0].val = v;
	t->ginfo[0].len = vlen;
	if (diff)
		changed(t, VMWKVM_TOOLS_CHANGED_GUESTINFO);
	pthread_mutex_unlock(&t->lock);
	notify_out(t, diff ? VMWKVM_TOOLS_CHANGED_GUESTINFO : 0);
	return 0;
}

static int h_info_set(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	const char *a = req->args;
	size_t len = req->args_len;
	const char *sp = memchr(a, ' ', len);
	if (!sp)
		return reply_text(out, MSG_TWO_ARGS);
	size_t klen = (size_t)(sp - a);
	if (klen > VMWKVM_TOOLS_MAX_VALUE)
		return reply_text(out, MSG_KEY_LONG);
	if (!key_ok(a, klen))
		return reply_text(out, "Invalid key");
	const char *val = sp + 1;
	size_t vlen = len - klen - 1;
	if (vlen && val[vlen - 1] == '\0')
		vlen--; /* vmtoolsd sends strlen + 1 bytes */
	pthread_mutex_lock(&t->lock);
	int r = store_set(t, a, klen, val, vlen);
	if (!r)
		changed(t, VMWKVM_TOOLS_CHANGED_STORE);
	pthread_mutex_unlock(&t->lock);
	if (r == -ENOSPC)
		return reply_text(out, MSG_TOO_MANY);
	if (r == -E2BIG)
		return reply_text(out, MSG_VAL_LONG);
	if (r)
		return r;
	notify_out(t, VMWKVM_TOOLS_CHANGED_STORE);
	return 0;
}

static int h_info_get(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	size_t klen = trim_nul(req->args, req->args_len);
	while (klen && req->args[klen - 1] == ' ')
		klen--;
	pthread_mutex_lock(&t->lock);
	struct kv *e = key_ok(req->args, klen) ? store_find(t, req->args, klen) : NULL;
	int r = e ? vmwkvm_rpc_out_append(out, e->val, e->len) : -ENOENT;
	pthread_mutex_unlock(&t->lock);
	if (r == -ENOENT)
		return reply_text(out, MSG_NO_VALUE);
	if (r == -E2BIG)
		return reply_text(out, MSG_VAL_LONG);
	return r;
}

static int h_statechange(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	size_t len = trim_nul(req->args, req->args_len), u1, u2;
	int32_t ok, st;
	if (!parse_i32(req->args, len, &ok, &u1) || u1 >= len || req->args[u1] != ' ' ||
	    !parse_i32(req->args + u1 + 1, len - u1 - 1, &st, &u2))
		return reply_text(out, "Invalid arguments");
	pthread_mutex_lock(&t->lock);
	t->state_change_ok = ok;
	t->state_change = st;
	changed(t, VMWKVM_TOOLS_CHANGED_STATE);
	pthread_mutex_unlock(&t->lock);
	notify_out(t, VMWKVM_TOOLS_CHANGED_STATE);
	return 0;
}

static const struct {
	const char *name;
	vmwkvm_rpci_handler_fn fn;
} handlers[] = {
	{"tools.set.version", h_version},
	{"tools.set.versiontype", h_version},
	{"tools.capability.", h_capability},
	{"vmx.capability.unified_loop", h_unified_loop},
	{"log", h_log},
	{"SetGuestInfo", h_setguestinfo},
	{"SetGuestDiskInfo", h_diskinfo},
	{"info-set", h_info_set},
	{"info-get", h_info_get},
	{"tools.os.statechange.status", h_statechange},
};
#define NHANDLERS (sizeof(handlers) / sizeof(handlers[0]))

/* ---- commands ---- */

static bool running_now(const struct vmwkvm_tools *t, uint64_t now)
{
	return t->answered && t->tclo_open && now - t->last_answer_ns <= (uint64_t)t->running_ms * NS_PER_MS;
}

/* lock held: unlink a command */
static void cmd_unlink(struct vmwkvm_tools *t, struct tcmd *c)
{
	for (struct tcmd **pp = &t->cmds; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			t->ncmds--;
			return;
		}
}

static void cmd_free(struct tcmd *c)
{
	if (c) {
		free(c->reply);
		free(c);
	}
}

static void fill_result(const struct tcmd *c, struct vmwkvm_tools_result *res)
{
	size_t sz = res->sz;
	struct vmwkvm_tools_result r = {
		.sz = sz,
		.id = c->id,
		.status = c->status,
		.channel = c->channel,
		.truncated = c->truncated,
		.reply = c->reply ? c->reply : "",
		.reply_len = c->reply_len,
		.elapsed_ns = c->done_ns - c->queued_ns,
	};
	memcpy(res, &r, sz < sizeof(r) ? sz : sizeof(r));
}

/* lock held: finish a pending command. Returns the command when its callback must run
 * (the caller runs it after unlocking, then frees it); NULL when it stays for polling or
 * was internal (then freed here). */
static struct tcmd *cmd_finish(struct vmwkvm_tools *t, struct tcmd *c, uint8_t status, uint64_t now)
{
	c->status = status;
	c->done_ns = now;
	if (c->internal) {
		cmd_unlink(t, c);
		cmd_free(c);
		return NULL;
	}
	changed(t, VMWKVM_TOOLS_CHANGED_COMMAND);
	if (c->fn) {
		cmd_unlink(t, c);
		return c;
	}
	return NULL;
}

static void run_callbacks(struct vmwkvm_tools *t, struct tcmd *list)
{
	while (list) {
		struct tcmd *c = list;
		list = c->next;
		struct vmwkvm_tools_result r = {.sz = sizeof(r)};
		fill_result(c, &r);
		c->fn(t, &r, c->ctx);
		cmd_free(c);
	}
}

static void on_tclo(uint16_t channel, uint64_t seq, const char *data, size_t len, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	uint32_t what = 0;
	struct tcmd *cb = NULL;
	pthread_mutex_lock(&t->lock);
	uint64_t now = now_ns(t);
	bool was = running_now(t, now);
	t->answered = true;
	t->last_answer_ns = now;
	t->tclo_open = true; /* it just spoke on one */
	struct tcmd *c = NULL;
	for (struct tcmd *p = t->cmds; p; p = p->next)
		if (p->channel == channel && p->seq == seq && seq && p->status == VMWKVM_TOOLS_PENDING) {
			c = p;
			break;
		}
	if (!c) {
		t->dropped++;
	} else {
		t->answers++;
		uint8_t st = VMWKVM_TOOLS_BADREPLY;
		size_t skip = 0;
		if (len >= 2 && !memcmp(data, "OK", 2) && (len == 2 || data[2] == ' ')) {
			st = VMWKVM_TOOLS_OK;
			skip = len == 2 ? 2 : 3;
		} else if (len >= 5 && !memcmp(data, "ERROR", 5) && (len == 5 || data[5] == ' ')) {
			st = VMWKVM_TOOLS_ERROR;
			skip = len == 5 ? 5 : 6;
		}
		size_t rlen = len - skip;
		if (rlen > t->max_reply) {
			rlen = t->max_reply;
			c->truncated = true;
		}
		c->reply = dup_bytes(data + skip, rlen);
		c->reply_len = c->reply ? rlen : 0;
		c->truncated |= !c->reply && rlen;
		bool internal = c->internal;
		cb = cmd_finish(t, c, st, now);
		if (!internal)
			what |= VMWKVM_TOOLS_CHANGED_COMMAND;
	}
	if (!was) {
		changed(t, VMWKVM_TOOLS_CHANGED_RUNNING);
		what |= VMWKVM_TOOLS_CHANGED_RUNNING;
	}
	t->running = true;
	pthread_mutex_unlock(&t->lock);
	if (cb) {
		cb->next = NULL;
		run_callbacks(t, cb);
	}
	notify_out(t, what);
}

int vmwkvm_tools_command(vmwkvm_tools *t, int channel, const char *cmd, uint32_t timeout_ms,
			 vmwkvm_tools_result_fn fn, void *ctx, uint64_t *id)
{
	if (!t || !cmd || !*cmd)
		return -EINVAL;
	size_t len = strlen(cmd);
	if (len > VMWKVM_RPC_MAX_MESSAGE)
		return -E2BIG;
	struct tcmd *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	int r = 0;
	uint16_t ids[1];
	int ch = channel;
	if (channel == -1) {
		int n = vmwkvm_rpc_tclo_channels(t->rpc, ids, 1);
		if (n < 0)
			r = n;
		else if (n == 0)
			r = -ENOENT;
		else
			ch = ids[0];
	} else if (channel < 0 || channel > 0xFFFF) {
		r = -EINVAL;
	}
	unsigned on_ch = 0;
	for (struct tcmd *p = t->cmds; !r && p; p = p->next)
		on_ch += p->channel == ch && p->status == VMWKVM_TOOLS_PENDING;
	if (!r && (t->ncmds >= t->max_pending || on_ch >= t->max_per_channel))
		r = -ENOSPC;
	uint64_t seq = 0;
	if (!r)
		r = vmwkvm_rpc_tclo_queue(t->rpc, ch, cmd, len, &seq);
	if (r) {
		pthread_mutex_unlock(&t->lock);
		free(c);
		return r;
	}
	uint64_t now = now_ns(t);
	c->id = ++t->next_id;
	c->seq = seq;
	c->channel = (uint16_t)ch;
	c->fn = fn;
	c->ctx = ctx;
	c->queued_ns = now;
	c->deadline_ns = now + (uint64_t)(timeout_ms ? timeout_ms : t->default_timeout_ms) * NS_PER_MS;
	c->next = t->cmds;
	t->cmds = c;
	t->ncmds++;
	if (id)
		*id = c->id;
	pthread_mutex_unlock(&t->lock);
	return 0;
}

int vmwkvm_tools_command_result(vmwkvm_tools *t, uint64_t id, struct vmwkvm_tools_result *res)
{
	if (!t || !res || res->sz < offsetof(struct vmwkvm_tools_result, reply))
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	struct tcmd *c = NULL;
	for (struct tcmd *p = t->cmds; p; p = p->next)
		if (p->id == id && !p->fn && !p->internal)
			c = p;
	if (!c) {
		pthread_mutex_unlock(&t->lock);
		return -ENOENT;
	}
	if (c->status == VMWKVM_TOOLS_PENDING) {
		c->done_ns = now_ns(t);
		fill_result(c, res);
		pthread_mutex_unlock(&t->lock);
		return -EAGAIN;
	}
	cmd_unlink(t, c);
	free(t->fetched);
	t->fetched = c->reply;
	fill_result(c, res);
	c->reply = NULL;
	free(c);
	pthread_mutex_unlock(&t->lock);
	return 0;
}

int vmwkvm_tools_cancel(vmwkvm_tools *t, uint64_t id)
{
	if (!t)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	struct tcmd *c = NULL;
	for (struct tcmd *p = t->cmds; p; p = p->next)
		if (p->id == id && p->status == VMWKVM_TOOLS_PENDING && !p->internal)
			c = p;
	if (!c) {
		pthread_mutex_unlock(&t->lock);
		return -ENOENT;
	}
	struct tcmd *cb = cmd_finish(t, c, VMWKVM_TOOLS_CANCELLED, now_ns(t));
	pthread_mutex_unlock(&t->lock);
	if (cb) {
		cb->next = NULL;
		run_callbacks(t, cb);
	}
	notify_out(t, VMWKVM_TOOLS_CHANGED_COMMAND);
	return 0;
}

int vmwkvm_tools_process(vmwkvm_tools *t)
{
	if (!t)
		return -EINVAL;
	uint16_t ids[64];
	pthread_mutex_lock(&t->lock);
	int n = vmwkvm_rpc_tclo_channels(t->rpc, ids, sizeof(ids) / sizeof(ids[0]));
	uint64_t now = now_ns(t);
	if (n >= 0)
		t->tclo_open = n > 0;
	uint32_t what = 0;
	struct tcmd *cbs = NULL, **tail = &cbs;
	uint64_t next = UINT64_MAX;
	bool again;
	do {
		again = false;
		for (struct tcmd *c = t->cmds; c; c = c->next) {
			if (c->status != VMWKVM_TOOLS_PENDING)
				continue;
			uint8_t st = 0;
			if (now >= c->deadline_ns) {
				st = VMWKVM_TOOLS_TIMEOUT;
				t->timeouts++;
			} else if (n >= 0 && n <= (int)(sizeof(ids) / sizeof(ids[0]))) {
				bool open = false;
				for (int i = 0; i < n; i++)
					open |= ids[i] == c->channel;
				if (!open)
					st = VMWKVM_TOOLS_CANCELLED;
			}
			if (!st) {
				if (c->deadline_ns < next)
					next = c->deadline_ns;
				continue;
			}
			if (!c->internal)
				what |= VMWKVM_TOOLS_CHANGED_COMMAND;
			struct tcmd *cb = cmd_finish(t, c, st, now);
			if (cb) {
				cb->next = NULL;
				*tail = cb;
				tail = &cb->next;
			}
			again = true; /* the list changed under the iterator */
			break;
		}
	} while (again);
	/* running */
	bool run = running_now(t, now);
	if (run != t->running) {
		t->running = run;
		changed(t, VMWKVM_TOOLS_CHANGED_RUNNING);
		what |= VMWKVM_TOOLS_CHANGED_RUNNING;
	}
	if (run) {
		uint64_t end = t->last_answer_ns + (uint64_t)t->running_ms * NS_PER_MS + 1;
		if (end < next)
			next = end;
	}
	/* heartbeat */
	if (t->heartbeat_ms && n > 0) {
		uint64_t hb = (uint64_t)t->heartbeat_ms * NS_PER_MS;
		bool busy = false;
		for (struct tcmd *c = t->cmds; c; c = c->next)
			busy |= c->status == VMWKVM_TOOLS_PENDING;
		uint64_t la = t->answered ? t->last_answer_ns : 0, lp = t->pinged ? t->last_ping_ns : 0;
		uint64_t last = la > lp ? la : lp;
		bool any = t->answered || t->pinged;
		if (!busy && (!any || now - last >= hb) && t->ncmds < t->max_pending) {
			struct tcmd *c = calloc(1, sizeof(*c));
			uint64_t seq;
			if (c && !vmwkvm_rpc_tclo_queue(t->rpc, ids[0], "ping", 4, &seq)) {
				c->id = ++t->next_id;
				c->seq = seq;
				c->channel = ids[0];
				c->internal = true;
				c->queued_ns = now;
				c->deadline_ns = now + (uint64_t)t->default_timeout_ms * NS_PER_MS;
				c->next = t->cmds;
				t->cmds = c;
				t->ncmds++;
				t->last_ping_ns = now;
				t->pinged = true;
				last = now;
				any = true;
				if (c->deadline_ns < next)
					next = c->deadline_ns;
			} else {
				free(c);
			}
		}
		uint64_t due = any ? last + hb : now;
		if (due > now && due < next)
			next = due;
	}
	pthread_mutex_unlock(&t->lock);
	run_callbacks(t, cbs);
	notify_out(t, what);
	if (next == UINT64_MAX)
		return INT32_MAX;
	uint64_t ms = next > now ? (next - now + NS_PER_MS - 1) / NS_PER_MS : 0;
	return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

int vmwkvm_tools_reset(vmwkvm_tools *t, uint32_t flags)
{
	if (!t || (flags & ~VMWKVM_TOOLS_RESET_STORE))
		return -EINVAL;
	struct tcmd *cbs = NULL, **tail = &cbs;
	pthread_mutex_lock(&t->lock);
	uint64_t now = now_ns(t);
	bool again;
	do {
		again = false;
		for (struct tcmd *c = t->cmds; c; c = c->next) {
			if (c->status != VMWKVM_TOOLS_PENDING)
				continue;
			struct tcmd *cb = cmd_finish(t, c, VMWKVM_TOOLS_CANCELLED, now);
			if (cb) {
				cb->next = NULL;
				*tail = cb;
				tail = &cb->next;
			}
			again = true;
			break;
		}
	} while (again);
	t->version = t->version_type = 0;
	t->version_set = t->running = t->unified_loop = t->answered = t->pinged = t->tclo_open = false;
	t->state_change = t->state_change_ok = -1;
	t->app[0] = t->last_log[0] = '\0';
	for (uint32_t i = 0; i < t->ncaps; i++) {
		free(t->caps[i].name);
		free(t->caps[i].value);
	}
	t->ncaps = 0;
	for (size_t i = 0; i <= VMWKVM_TOOLS_MAX_GUESTINFO_TYPE; i++) {
		free(t->ginfo[i].val);
		t->ginfo[i].val = NULL;
		t->ginfo[i].len = 0;
	}
	t->nginfo = 0;
	uint32_t what = VMWKVM_TOOLS_CHANGED_VERSION | VMWKVM_TOOLS_CHANGED_CAPS | VMWKVM_TOOLS_CHANGED_GUESTINFO |
			VMWKVM_TOOLS_CHANGED_RUNNING | VMWKVM_TOOLS_CHANGED_STATE;
	if (cbs)
		what |= VMWKVM_TOOLS_CHANGED_COMMAND;
	if (flags & VMWKVM_TOOLS_RESET_STORE) {
		while (t->store) {
			struct kv *e = t->store;
			t->store = e->next;
			free(e->key);
			free(e->val);
			free(e);
		}
		t->nkeys = 0;
		t->store_bytes = 0;
		what |= VMWKVM_TOOLS_CHANGED_STORE;
	}
	changed(t, what);
	pthread_mutex_unlock(&t->lock);
	run_callbacks(t, cbs);
	notify_out(t, what);
	return 0;
}

/* ---- backdoor ---- */

static int h_getmhz(const struct vmwkvm_call *call, struct vmwkvm_reply *reply, void *ctx)
{
	(void)call;
	const struct vmwkvm_tools *t = ctx;
	reply->eax = t->cpu_mhz;
	reply->ebx = VMWKVM_BDOOR_MAGIC;
	reply->set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX;
	return 0;
}

int vmwkvm_tools_bind_backdoor(vmwkvm_tools *t, vmwkvm_backdoor *bd)
{
	if (!t || !bd)
		return -EINVAL;
	if (t->cpu_mhz)
		return vmwkvm_backdoor_set_handler(bd, VMWKVM_BDOOR_CMD_GETMHZ, h_getmhz, t);
	return 0;
}

/* ---- life cycle ---- */

int vmwkvm_tools_new(vmwkvm_rpc *rpc, const struct vmwkvm_tools_opts *opts, vmwkvm_tools **out)
{
	if (!rpc || !out || !VK_OPTS_VALID(opts, struct vmwkvm_tools_opts))
		return -EINVAL;
	struct vmwkvm_tools_opts o = {0};
	if (opts)
		memcpy(&o, opts, opts->sz < sizeof(o) ? opts->sz : sizeof(o));
	for (size_t i = 0; i < sizeof(o.reserved) / sizeof(o.reserved[0]); i++)
		if (o.reserved[i])
			return -EINVAL;
	uint32_t pend = o.max_pending ? o.max_pending : VMWKVM_TOOLS_DEFAULT_PENDING;
	uint32_t perch = o.max_per_channel ? o.max_per_channel : VMWKVM_TOOLS_DEFAULT_PER_CHANNEL;
	if (!o.max_per_channel && perch > pend)
		perch = pend;
	uint32_t rep = o.max_reply ? o.max_reply : VMWKVM_TOOLS_DEFAULT_REPLY;
	uint32_t keys = o.max_keys ? o.max_keys : VMWKVM_TOOLS_DEFAULT_KEYS;
	uint32_t store = o.max_store_bytes ? o.max_store_bytes : VMWKVM_TOOLS_DEFAULT_STORE;
	uint32_t caps = o.max_caps ? o.max_caps : VMWKVM_TOOLS_DEFAULT_CAPS;
	if (pend > TOOLS_MAX_PENDING || perch > pend || rep > TOOLS_MAX_REPLY || keys > TOOLS_MAX_KEYS ||
	    store > TOOLS_MAX_STORE || caps > TOOLS_MAX_CAPS)
		return -EINVAL;
	struct vmwkvm_tools *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->caps = calloc(caps, sizeof(*t->caps));
	if (!t->caps) {
		free(t);
		return -ENOMEM;
	}
	t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (t->efd < 0) {
		int e = -errno;
		free(t->caps);
		free(t);
		return e;
	}
	pthread_mutex_init(&t->lock, NULL);
	t->rpc = rpc;
	t->max_pending = pend;
	t->max_per_channel = perch;
	t->max_reply = rep;
	t->default_timeout_ms = o.default_timeout_ms ? o.default_timeout_ms : VMWKVM_TOOLS_DEFAULT_TIMEOUT_MS;
	t->max_keys = keys;
	t->max_store = store;
	t->max_caps = caps;
	t->heartbeat_ms = o.heartbeat_ms;
	t->running_ms = o.running_ms ? o.running_ms
				     : (o.heartbeat_ms ? 3 * o.heartbeat_ms : TOOLS_DEFAULT_RUNNING_MS);
	t->cpu_mhz = o.cpu_mhz;
	t->clock = o.clock;
	t->clock_ctx = o.clock_ctx;
	t->notify = o.notify;
	t->notify_ctx = o.notify_ctx;
	t->state_change = -1;
	t->state_change_ok = -1;
	size_t i;
	int r = 0;
	for (i = 0; i < NHANDLERS; i++) {
		r = vmwkvm_rpc_register(rpc, handlers[i].name, handlers[i].fn, t);
		if (r)
			break;
	}
	if (r) {
		while (i--)
			vmwkvm_rpc_register(rpc, handlers[i].name, NULL, NULL);
		close(t->efd);
		pthread_mutex_destroy(&t->lock);
		free(t->caps);
		free(t);
		return r;
	}
	vmwkvm_rpc_set_tclo_handler(rpc, on_tclo, t);
	*out = t;
	return 0;
}

void vmwkvm_tools_free(vmwkvm_tools *t)
{
	if (!t)
		return;
	vmwkvm_rpc_set_tclo_handler(t->rpc, NULL, NULL);
	for (size_t i = 0; i < NHANDLERS; i++)
		vmwkvm_rpc_register(t->rpc, handlers[i].name, NULL, NULL);
	while (t->cmds) {
		struct tcmd *c = t->cmds;
		t->cmds = c->next;
		cmd_free(c);
	}
	while (t->store) {
		struct kv *e = t->store;
		t->store = e->next;
		free(e->key);
		free(e->val);
		free(e);
	}
	for (uint32_t i = 0; i < t->ncaps; i++) {
		free(t->caps[i].name);
		free(t->caps[i].value);
	}
	for (size_t i = 0; i <= VMWKVM_TOOLS_MAX_GUESTINFO_TYPE; i++)
		free(t->ginfo[i].val);
	free(t->caps);
	free(t->fetched);
	close(t->efd);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

int vmwkvm_tools_event_fd(const vmwkvm_tools *t)
{
	return t ? t->efd : -EINVAL;
}

/* ---- state ---- */

int vmwkvm_tools_get_state(vmwkvm_tools *t, struct vmwkvm_tools_state *st)
{
	if (!t || !st || st->sz < offsetof(struct vmwkvm_tools_state, last_answer_age_ns))
		return -EINVAL;
	size_t sz = st->sz;
	struct vmwkvm_tools_state s = {.sz = sz};
	pthread_mutex_lock(&t->lock);
	uint64_t now = now_ns(t);
	s.version = t->version;
	s.version_type = t->version_type;
	s.version_set = t->version_set;
	s.running = running_now(t, now);
	s.unified_loop = t->unified_loop;
	s.changes = t->changes;
	t->changes = 0;
	s.last_answer_age_ns = t->answered ? now - t->last_answer_ns : UINT64_MAX;
	s.generation = t->generation;
	s.caps = t->ncaps;
	s.guestinfo = t->nginfo;
	s.keys = t->nkeys;
	for (struct tcmd *c = t->cmds; c; c = c->next)
		s.pending += c->status == VMWKVM_TOOLS_PENDING;
	s.answers = t->answers;
	s.dropped = t->dropped;
	s.timeouts = t->timeouts;
	s.logs = t->logs;
	s.state_change = t->state_change;
	s.state_change_ok = t->state_change_ok;
	memcpy(s.app, t->app, sizeof(s.app));
	memcpy(s.last_log, t->last_log, sizeof(s.last_log));
	pthread_mutex_unlock(&t->lock);
	memcpy(st, &s, sz < sizeof(s) ? sz : sizeof(s));
	return 0;
}

static void copy_out(char *dst, size_t cap, const char *s)
{
	size_t n = strlen(s);
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, s, n);
	dst[n] = '\0';
}

int vmwkvm_tools_capability(vmwkvm_tools *t, uint32_t index, char *name, size_t name_cap, char *value,
			    size_t value_cap)
{
	if (!t || !name || !value || !name_cap || !value_cap)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	int r = -ENOENT;
	if (index < t->ncaps) {
		copy_out(name, name_cap, t->caps[index].name);
		copy_out(value, value_cap, t->caps[index].value);
		r = 0;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

int vmwkvm_tools_capability_get(vmwkvm_tools *t, const char *name, char *value, size_t cap)
{
	if (!t || !name || !value || !cap)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	int r = -ENOENT;
	for (uint32_t i = 0; i < t->ncaps; i++)
		if (!strcmp(t->caps[i].name, name)) {
			copy_out(value, cap, t->caps[i].value);
			r = (int)strlen(t->caps[i].value);
			break;
		}
	pthread_mutex_unlock(&t->lock);
	return r;
}

int vmwkvm_tools_guest_info(vmwkvm_tools *t, uint32_t type, void *buf, size_t cap)
{
	if (!t || (!buf && cap) || type > VMWKVM_TOOLS_MAX_GUESTINFO_TYPE)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	int r = -ENOENT;
	if (t->ginfo[type].val) {
		size_t len = t->ginfo[type].len;
		if (cap)
			memcpy(buf, t->ginfo[type].val, len < cap ? len : cap);
		r = (int)len;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

int vmwkvm_tools_info_get(vmwkvm_tools *t, const char *key, void *buf, size_t cap)
{
	if (!t || !key || (!buf && cap))
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	struct kv *e = store_find(t, key, strlen(key));
	int r = -ENOENT;
	if (e) {
		if (cap)
			memcpy(buf, e->val, e->len < cap ? e->len : cap);
		r = e->len > INT_MAX ? INT_MAX : (int)e->len;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

int vmwkvm_tools_info_set(vmwkvm_tools *t, const char *key, const void *value, size_t len)
{
	if (!t || !key || !key_ok(key, strlen(key)))
		return -EINVAL;
	if (value && len > VMWKVM_RPC_MAX_MESSAGE - 2)
		return -E2BIG;
	pthread_mutex_lock(&t->lock);
	int r = store_set(t, key, strlen(key), value ? value : NULL, value ? len : 0);
	pthread_mutex_unlock(&t->lock);
	return r;
}
