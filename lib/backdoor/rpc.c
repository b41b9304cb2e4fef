/* GuestRPC message channel (backdoor command MESSAGE): channel table, LB and HB transfers,
 * RPCI dispatch, TCLO queues, checkpoint. Protocol: facts sheet section 3. */
#include "backdoor/rpc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define RPC_MESSAGE_CMD 0x1Eu
#define RPC_HB_CMD_MESSAGE 0u
#define RPC_MAX_TCLO_QUEUE 4096u
#define RPC_HCALL_FLAG_HB 0x0001u /* EDX bit 0 of a hypercall: high bandwidth */

/* status << 16 for LB answers in ECX */
#define ST_OK VMWKVM_RPC_STATUS_SUCCESS
#define ST_FAIL 0u
#define ST_CPT VMWKVM_RPC_STATUS_CPT

enum send_state {
	SEND_IDLE = 0,
	SEND_COLLECTING = 1, /* SENDSIZE seen, payload being collected */
	SEND_BUSY = 2,       /* RPCI handler running outside the lock */
};

enum hb_state {
	HB_NONE = 0,
	HB_ACTIVE = 1,
	HB_FAILED = 2, /* remaining pieces are ignored; the last one answers hb_fail */
};

/* A host-to-guest message: a queued TCLO command or an RPCI reply. */
struct rpc_msg {
	struct rpc_msg *next;
	uint64_t seq;  /* TCLO command sequence number, 0 for RPCI replies */
	size_t len;
	size_t alloc;  /* bytes accounted for this node */
	char data[];   /* len bytes + NUL */
};

struct rpc_chan {
	uint32_t proto;
	bool cookies;
	uint32_t ck_hi, ck_lo;
	uint64_t open_seq;
	uint64_t gen;
	/* guest to host */
	uint8_t send_state;
	char *in;        /* in_len + 1 bytes */
	size_t in_len, in_got;
	/* host to guest */
	struct rpc_msg *out; /* message being offered / fetched */
	size_t out_off;
	bool recv_started;   /* RECVSIZE answered DORECV for @out */
	/* HB transfer in progress */
	uint8_t hb_state;
	uint8_t hb_dir;
	uint16_t hb_fail;
	/* a checkpoint interrupted the transfer in flight */
	bool cpt;
	/* TCLO */
	struct rpc_msg *q_head, *q_tail;
	unsigned q_len;
	uint64_t last_fetched_seq;
};

struct rpc_handler {
	char *name;
	size_t len;
	bool prefix; /* name ends in '.' */
	vmwkvm_rpci_handler_fn fn;
	void *ctx;
};

struct vmwkvm_rpc {
	pthread_mutex_t lock;
	uint32_t max_channels, max_message, max_tclo_queue;
	bool hb;
	struct rpc_chan **chans;
	uint32_t nopen;
	uint64_t open_counter, seq_counter, gen_counter;
	uint64_t cookie_state;
	bool cookie_det;
	_Atomic size_t allocated; /* bytes of channels, messages, queue entries, reply builders */
	size_t table_bytes;
	struct rpc_handler *handlers;
	size_t nhandlers, handlers_cap;
	vmwkvm_tclo_result_fn tclo_fn;
	void *tclo_ctx;
};

struct vmwkvm_rpc_out {
	struct vmwkvm_rpc *rpc;
	struct rpc_msg *msg; /* data[0..1] reserved for the "1 "/"0 " prefix */
	size_t cap;          /* capacity of msg->data without the NUL */
	size_t limit;        /* max_message */
	bool oom;
};

/* Work that runs after the lock is dropped. */
struct rpc_work {
	int kind; /* 0 none, 1 RPCI handler, 2 TCLO result */
	uint16_t id;
	uint64_t gen;
	char *msg;
	size_t len;
	uint64_t seq;
	uint8_t cpl, origin;
	vmwkvm_rpci_handler_fn fn;
	void *ctx;
	vmwkvm_tclo_result_fn tclo_fn;
	void *tclo_ctx;
};

/* ---- accounting ---- */

static void *rpc_alloc(struct vmwkvm_rpc *rpc, size_t n)
{
	void *p = calloc(1, n);
	if (p)
		atomic_fetch_add(&rpc->allocated, n);
	return p;
}

static void rpc_release(struct vmwkvm_rpc *rpc, void *p, size_t n)
{
	if (!p)
		return;
	free(p);
	atomic_fetch_sub(&rpc->allocated, n);
}

static struct rpc_msg *msg_new(struct vmwkvm_rpc *rpc, size_t len)
{
	size_t n = sizeof(struct rpc_msg) + len + 1;
	struct rpc_msg *m = rpc_alloc(rpc, n);
	if (m) {
		m->len = len;
		m->alloc = n;
	}
	return m;
}

static void msg_free(struct vmwkvm_rpc *rpc, struct rpc_msg *m)
{
	if (m)
		rpc_release(rpc, m, m->alloc);
}

size_t vk_rpc_allocated(const vmwkvm_rpc *rpc)
{
	return rpc ? atomic_load(&((struct vmwkvm_rpc *)rpc)->allocated) : 0;
}

size_t vk_rpc_bound(const vmwkvm_rpc *rpc)
{
	if (!rpc)
		return 0;
	size_t msg = sizeof(struct rpc_msg) + (size_t)rpc->max_message + 1;
	size_t per_chan = sizeof(struct rpc_chan) + (size_t)rpc->max_message + 1 /* in */
			  + msg /* out */ + (size_t)rpc->max_tclo_queue * msg;
	/* one handler in flight (its detached message and its reply builder) */
	return (size_t)rpc->max_channels * per_chan + 2 * msg;
}

/* ---- cookies ---- */

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static uint64_t rpc_cookie(struct vmwkvm_rpc *rpc)
{
	uint64_t v;
	if (rpc->cookie_det)
		return splitmix64(&rpc->cookie_state);
	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == (ssize_t)sizeof(v))
		return v;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	rpc->cookie_state ^= (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uintptr_t)rpc;
	return splitmix64(&rpc->cookie_state);
}

/* ---- lifecycle ---- */

int vmwkvm_rpc_new(const struct vmwkvm_rpc_opts *opts, vmwkvm_rpc **out)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!VK_OPTS_VALID(opts, struct vmwkvm_rpc_opts))
		return -EINVAL;
	/* an older caller's shorter struct: the fields it does not know are zero */
	struct vmwkvm_rpc_opts o = {0};
	if (opts)
		memcpy(&o, opts, opts->sz < sizeof(o) ? opts->sz : sizeof(o));
	for (size_t i = 0; i < sizeof(o.reserved) / sizeof(o.reserved[0]); i++)
		if (o.reserved[i])
			return -EINVAL;
	if (o.pad[0] | o.pad[1] | o.pad[2])
		return -EINVAL;
	uint32_t max_ch = o.max_channels ? o.max_channels : VMWKVM_RPC_DEFAULT_CHANNELS;
	uint32_t max_msg = o.max_message ? o.max_message : VMWKVM_RPC_DEFAULT_MESSAGE;
	uint32_t max_q = o.max_tclo_queue ? o.max_tclo_queue : VMWKVM_RPC_DEFAULT_TCLO_QUEUE;
	bool hb = !o.no_hb;
	uint64_t seed = o.cookie_seed;
	if (max_ch > VMWKVM_RPC_MAX_CHANNELS || max_msg < 2 || max_msg > VMWKVM_RPC_MAX_MESSAGE ||
	    max_q > RPC_MAX_TCLO_QUEUE)
		return -EINVAL;
	struct vmwkvm_rpc *rpc = calloc(1, sizeof(*rpc));
	if (!rpc)
		return -ENOMEM;
	rpc->chans = calloc(max_ch, sizeof(*rpc->chans));
	if (!rpc->chans) {
		free(rpc);
		return -ENOMEM;
	}
	int r = pthread_mutex_init(&rpc->lock, NULL);
	if (r) {
		free(rpc->chans);
		free(rpc);
		return -r;
	}
	rpc->max_channels = max_ch;
	rpc->max_message = max_msg;
	rpc->max_tclo_queue = max_q;
	rpc->hb = hb;
	rpc->table_bytes = max_ch * sizeof(*rpc->chans);
	atomic_init(&rpc->allocated, 0);
	if (seed) {
		rpc->cookie_det = true;
		rpc->cookie_state = seed;
	}
	*out = rpc;
	return 0;
}

static void chan_drop_out(struct vmwkvm_rpc *rpc, struct rpc_chan *c)
{
	msg_free(rpc, c->out);
	c->out = NULL;
	c->out_off = 0;
	c->recv_started = false;
}

static void chan_drop_in(struct vmwkvm_rpc *rpc, struct rpc_chan *c)
{
	if (c->in)
		rpc_release(rpc, c->in, c->in_len + 1);
	c->in = NULL;
	c->in_len = c->in_got = 0;
	c->send_state = SEND_IDLE;
}

/* A checkpoint interrupted the guest's send: the partial message is dropped. */
static void cpt_drop_send(struct vmwkvm_rpc *rpc, struct rpc_chan *c)
{
	chan_drop_in(rpc, c);
	c->cpt = false;
}

/* A checkpoint interrupted the guest's receive: it starts again at RECVSIZE. */
static void cpt_restart_recv(struct rpc_chan *c)
{
	c->cpt = false;
	c->recv_started = false;
	c->out_off = 0;
}

static void chan_free(struct vmwkvm_rpc *rpc, uint16_t id)
{
	struct rpc_chan *c = rpc->chans[id];
	if (!c)
		return;
	chan_drop_in(rpc, c);
	chan_drop_out(rpc, c);
	while (c->q_head) {
		struct rpc_msg *m = c->q_head;
		c->q_head = m->next;
		msg_free(rpc, m);
	}
	rpc_release(rpc, c, sizeof(*c));
	rpc->chans[id] = NULL;
	rpc->nopen--;
}

void vmwkvm_rpc_free(vmwkvm_rpc *rpc)
{
	if (!rpc)
		return;
	for (uint32_t i = 0; i < rpc->max_channels; i++)
		chan_free(rpc, (uint16_t)i);
	for (size_t i = 0; i < rpc->nhandlers; i++)
		free(rpc->handlers[i].name);
	free(rpc->handlers);
	free(rpc->chans);
	pthread_mutex_destroy(&rpc->lock);
	free(rpc);
}

int vmwkvm_rpc_reset(vmwkvm_rpc *rpc)
{
	if (!rpc)
		return -EINVAL;
	pthread_mutex_lock(&rpc->lock);
	int n = (int)rpc->nopen;
	for (uint32_t i = 0; i < rpc->max_channels; i++)
		chan_free(rpc, (uint16_t)i);
	pthread_mutex_unlock(&rpc->lock);
	return n;
}

int vmwkvm_rpc_channel_count(vmwkvm_rpc *rpc)
{
	if (!rpc)
		return -EINVAL;
	pthread_mutex_lock(&rpc->lock);
	int n = (int)rpc->nopen;
	pthread_mutex_unlock(&rpc->lock);
	return n;
}

int vmwkvm_rpc_checkpoint(vmwkvm_rpc *rpc)
{
	if (!rpc)
		return -EINVAL;
	int n = 0;
	pthread_mutex_lock(&rpc->lock);
	for (uint32_t i = 0; i < rpc->max_channels; i++) {
		struct rpc_chan *c = rpc->chans[i];
		if (!c)
			continue;
		if (c->send_state == SEND_COLLECTING || (c->out && c->recv_started) || c->hb_state == HB_ACTIVE) {
			c->cpt = true;
			n++;
		}
	}
	pthread_mutex_unlock(&rpc->lock);
	return n;
}

/* ---- handlers ---- */

static bool name_ok(const char *name, size_t *len)
{
	size_t n = strnlen(name, VMWKVM_RPC_MAX_NAME + 1);
	if (n == 0 || n > VMWKVM_RPC_MAX_NAME)
		return false;
	for (size_t i = 0; i < n; i++)
		if (name[i] == ' ')
			return false;
	*len = n;
	return true;
}

int vmwkvm_rpc_register(vmwkvm_rpc *rpc, const char *name, vmwkvm_rpci_handler_fn fn, void *ctx)
{
	size_t len;
	if (!rpc || !name || !name_ok(name, &len))
		return -EINVAL;
	int r = 0;
	pthread_mutex_lock(&rpc->lock);
	size_t i;
	for (i = 0; i < rpc->nhandlers; i++)
		if (rpc->handlers[i].len == len && !memcmp(rpc->handlers[i].name, name, len))
			break;
	if (!fn) {
		if (i == rpc->nhandlers) {
			r = -ENOENT;
		} else {
			free(rpc->handlers[i].name);
			rpc->handlers[i] = rpc->handlers[--rpc->nhandlers];
		}
		goto out;
	}
	if (i < rpc->nhandlers) {
		r = -EEXIST;
		goto out;
	}
	if (rpc->nhandlers == rpc->handlers_cap) {
		size_t cap = rpc->handlers_cap ? rpc->handlers_cap * 2 : 8;
		struct rpc_handler *h = realloc(rpc->handlers, cap * sizeof(*h));
		if (!h) {
			r = -ENOMEM;
			goto out;
		}
		rpc->handlers = h;
		rpc->handlers_cap = cap;
	}
	char *copy = malloc(len + 1);
	if (!copy) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(copy, name, len + 1);
	rpc->handlers[rpc->nhandlers++] = (struct rpc_handler){
		.name = copy, .len = len, .prefix = copy[len - 1] == '.', .fn = fn, .ctx = ctx};
out:
	pthread_mutex_unlock(&rpc->lock);
	return r;
}

int vmwkvm_rpc_set_tclo_handler(vmwkvm_rpc *rpc, vmwkvm_tclo_result_fn fn, void *ctx)
{
	if (!rpc)
		return -EINVAL;
	pthread_mutex_lock(&rpc->lock);
	rpc->tclo_fn = fn;
	rpc->tclo_ctx = ctx;
	pthread_mutex_unlock(&rpc->lock);
	return 0;
}

/* Length of the command word of a message. */
static size_t command_word_len(const char *msg, size_t len)
{
	const char *sp = memchr(msg, ' ', len);
	return sp ? (size_t)(sp - msg) : len;
}

/* Caller holds the lock. */
static const struct rpc_handler *find_handler(const struct vmwkvm_rpc *rpc, const char *word, size_t wlen)
{
	const struct rpc_handler *best = NULL;
	for (size_t i = 0; i < rpc->nhandlers; i++) {
		const struct rpc_handler *h = &rpc->handlers[i];
		if (!h->prefix) {
			if (h->len == wlen && !memcmp(h->name, word, wlen))
				return h;
		} else if (h->len <= wlen && !memcmp(h->name, word, h->len) && (!best || h->len > best->len)) {
			best = h;
		}
	}
	return best;
}

/* ---- reply builder ---- */

static int out_reserve(struct vmwkvm_rpc_out *out, size_t extra)
{
	size_t used = out->msg->len;
	if (extra > out->limit - used)
		return -E2BIG;
	size_t need = used + extra;
	if (need <= out->cap)
		return 0;
	size_t cap = out->cap * 2;
	if (cap < need)
		cap = need;
	if (cap > out->limit)
		cap = out->limit;
	struct rpc_msg *m = msg_new(out->rpc, cap);
	if (!m) {
		out->oom = true;
		return -ENOMEM;
	}
	memcpy(m->data, out->msg->data, used);
	m->len = used;
	msg_free(out->rpc, out->msg);
	out->msg = m;
	out->cap = cap;
	return 0;
}

int vmwkvm_rpc_out_append(vmwkvm_rpc_out *out, const void *data, size_t len)
{
	if (!out || (!data && len))
		return -EINVAL;
	int r = out_reserve(out, len);
	if (r)
		return r;
	if (len)
		memcpy(out->msg->data + out->msg->len, data, len);
	out->msg->len += len;
	out->msg->data[out->msg->len] = '\0';
	return 0;
}

int vmwkvm_rpc_out_printf(vmwkvm_rpc_out *out, const char *fmt, ...)
{
	if (!out || !fmt)
		return -EINVAL;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	int r = out_reserve(out, (size_t)n);
	if (r)
		return r;
	/* vsnprintf writes a NUL: the buffer has cap + 1 bytes */
	va_start(ap, fmt);
	vsnprintf(out->msg->data + out->msg->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	out->msg->len += (size_t)n;
	return 0;
}

/* Append library text, truncated to what fits. */
static void out_text(struct vmwkvm_rpc_out *out, const char *text)
{
	size_t len = strlen(text);
	size_t room = out->limit - out->msg->len;
	if (len > room)
		len = room;
	vmwkvm_rpc_out_append(out, text, len);
}

static int out_init(struct vmwkvm_rpc_out *out, struct vmwkvm_rpc *rpc)
{
	out->rpc = rpc;
	out->limit = rpc->max_message;
	out->cap = out->limit < 64 ? out->limit : 64;
	out->oom = false;
	out->msg = msg_new(rpc, out->cap);
	if (!out->msg)
		return -ENOMEM;
	out->msg->len = 2; /* prefix */
	return 0;
}

/* Final reply: "1 " / "0 " + text. */
static struct rpc_msg *out_finish(struct vmwkvm_rpc_out *out, bool ok)
{
	out->msg->data[0] = ok ? '1' : '0';
	out->msg->data[1] = ' ';
	out->msg->data[out->msg->len] = '\0';
	struct rpc_msg *m = out->msg;
	out->msg = NULL;
	return m;
}

/* Run an RPCI request (no lock held) and return the reply, or NULL on ENOMEM. */
static struct rpc_msg *run_rpci(struct vmwkvm_rpc *rpc, const struct rpc_work *w)
{
	struct vmwkvm_rpc_out out;
	if (out_init(&out, rpc))
		return NULL;
	bool ok = false;
	if (w->fn) {
		size_t wlen = command_word_len(w->msg, w->len);
		struct vmwkvm_rpci_request req = {
			.message = w->msg,
			.message_len = w->len,
			.command = w->msg,
			.command_len = wlen,
			.args = wlen < w->len ? w->msg + wlen + 1 : w->msg + w->len,
			.args_len = wlen < w->len ? w->len - wlen - 1 : 0,
			.channel = w->id,
			.cpl = w->cpl,
			.origin = w->origin,
		};
		int r = w->fn(&req, &out, w->ctx);
		if (!out.msg)
			return NULL;
		if (r >= 0 && !out.oom) {
			ok = true;
		} else {
			if (out.oom)
				r = -ENOMEM;
			if (out.msg->len == 2)
				out_text(&out, vmwkvm_strerror(r));
		}
	} else {
		out_text(&out, "Unknown command");
	}
	return out_finish(&out, ok);
}

/* ---- the state machine (lock held) ---- */

struct rpc_regs {
	uint32_t ebx, edx, esi, edi, ebp;
};

static struct rpc_chan *chan_get(struct vmwkvm_rpc *rpc, uint32_t id)
{
	return id < rpc->max_channels ? rpc->chans[id] : NULL;
}

static uint16_t hb_bit(const struct vmwkvm_rpc *rpc)
{
	return rpc->hb ? VMWKVM_RPC_STATUS_HB : 0;
}

/* A complete guest-to-host message: hand it to the work that runs after unlock. */
static void send_complete(struct vmwkvm_rpc *rpc, struct rpc_chan *c, uint16_t id,
			  const struct vmwkvm_call *call, struct rpc_work *w)
{
	if (c->proto == VMWKVM_RPC_PROTO_TCLO) {
		if (c->in_len && rpc->tclo_fn) {
			w->kind = 2;
			w->msg = c->in;
			w->len = c->in_len;
			w->seq = c->last_fetched_seq;
			w->tclo_fn = rpc->tclo_fn;
			w->tclo_ctx = rpc->tclo_ctx;
			w->id = id;
			c->in = NULL; /* the work owns it now; accounting keeps it until freed */
			c->in_len = c->in_got = 0;
			c->send_state = SEND_IDLE;
		} else {
			chan_drop_in(rpc, c);
		}
		return;
	}
	/* RPCI: a new request replaces an unfetched reply */
	chan_drop_out(rpc, c);
	size_t wlen = command_word_len(c->in, c->in_len);
	const struct rpc_handler *h = find_handler(rpc, c->in, wlen);
	w->kind = 1;
	w->id = id;
	w->gen = c->gen;
	w->msg = c->in;
	w->len = c->in_len;
	w->cpl = call->cpl;
	w->origin = call->origin;
	w->fn = h ? h->fn : NULL;
	w->ctx = h ? h->ctx : NULL;
	c->in = NULL;
	c->in_got = 0;
	c->send_state = SEND_BUSY;
}

static bool cookie_ok(const struct rpc_chan *c, uint32_t hi, uint32_t lo)
{
	return !c->cookies || (c->ck_hi == hi && c->ck_lo == lo);
}

static uint16_t lb_open(struct vmwkvm_rpc *rpc, const struct rpc_regs *g, struct vmwkvm_reply *reply)
{
	uint32_t proto = g->ebx & ~VMWKVM_RPC_FLAG_COOKIE;
	if (proto != VMWKVM_RPC_PROTO_RPCI && proto != VMWKVM_RPC_PROTO_TCLO) {
		vk_debug("rpc: OPEN with unknown protocol 0x%08x", g->ebx);
		return ST_FAIL;
	}
	uint32_t id;
	for (id = 0; id < rpc->max_channels; id++)
		if (!rpc->chans[id])
			break;
	if (id == rpc->max_channels) {
		vk_debug("rpc: OPEN refused: all %u channels in use", rpc->max_channels);
		return ST_FAIL;
	}
	struct rpc_chan *c = rpc_alloc(rpc, sizeof(*c));
	if (!c)
		return ST_FAIL;
	c->proto = proto;
	c->open_seq = ++rpc->open_counter;
	c->gen = ++rpc->gen_counter;
	rpc->chans[id] = c;
	rpc->nopen++;
	reply->set |= VMWKVM_REPLY_EDX;
	reply->edx = (id << 16) | (g->edx & 0xFFFFu);
	if (g->ebx & VMWKVM_RPC_FLAG_COOKIE) {
		uint64_t ck = rpc_cookie(rpc);
		c->cookies = true;
		c->ck_hi = (uint32_t)(ck >> 32);
		c->ck_lo = (uint32_t)ck;
		reply->set |= VMWKVM_REPLY_ESI | VMWKVM_REPLY_EDI;
		reply->esi = c->ck_hi;
		reply->edi = c->ck_lo;
	}
	return ST_OK;
}

static uint16_t lb_sendsize(struct vmwkvm_rpc *rpc, struct rpc_chan *c, uint16_t id, const struct rpc_regs *g,
			    const struct vmwkvm_call *call, struct rpc_work *w)
{
	if (c->send_state == SEND_BUSY)
		return ST_FAIL;
	/* SENDSIZE (re)starts a send */
	chan_drop_in(rpc, c);
	c->hb_state = HB_NONE;
	c->cpt = false;
	if (c->proto == VMWKVM_RPC_PROTO_RPCI)
		chan_drop_out(rpc, c);
	else {
		c->recv_started = false; /* the guest restarts a fetch with RECVSIZE */
		c->out_off = 0;
	}
	if (g->ebx > rpc->max_message) {
		vk_debug("rpc: channel %u: SENDSIZE %u over the %u-byte bound", id, g->ebx, rpc->max_message);
		return ST_FAIL;
	}
	c->in = rpc_alloc(rpc, (size_t)g->ebx + 1);
	if (!c->in)
		return ST_FAIL;
	c->in_len = g->ebx;
	c->in_got = 0;
	c->send_state = SEND_COLLECTING;
	if (c->in_len == 0)
		send_complete(rpc, c, id, call, w);
	return ST_OK | hb_bit(rpc);
}

static uint16_t lb_sendpayload(struct vmwkvm_rpc *rpc, struct rpc_chan *c, uint16_t id, const struct rpc_regs *g,
			       const struct vmwkvm_call *call, struct rpc_work *w)
{
	if (c->send_state != SEND_COLLECTING || c->in_got >= c->in_len || c->hb_state == HB_ACTIVE)
		return ST_FAIL;
	if (c->cpt) {
		cpt_drop_send(rpc, c);
		return ST_CPT;
	}
	size_t n = c->in_len - c->in_got;
	if (n > 4)
		n = 4;
	for (size_t i = 0; i < n; i++)
		c->in[c->in_got + i] = (char)(g->ebx >> (8 * i));
	c->in_got += n;
	if (c->in_got == c->in_len) {
		c->in[c->in_len] = '\0';
		send_complete(rpc, c, id, call, w);
	}
	return ST_OK;
}

static uint16_t lb_recvsize(struct vmwkvm_rpc *rpc, struct rpc_chan *c, const struct rpc_regs *g,
			    struct vmwkvm_reply *reply)
{
	if (c->send_state != SEND_IDLE)
		return ST_FAIL;
	c->cpt = false;
	c->hb_state = HB_NONE;
	if (!c->out && c->q_head) {
		c->out = c->q_head;
		c->q_head = c->out->next;
		if (!c->q_head)
			c->q_tail = NULL;
		c->q_len--;
		c->out->next = NULL;
	}
	if (!c->out)
		return ST_OK | hb_bit(rpc);
	c->recv_started = true;
	c->out_off = 0;
	reply->set |= VMWKVM_REPLY_EDX | VMWKVM_REPLY_EBX;
	reply->edx = (1u << 16) | (g->edx & 0xFFFFu);
	reply->ebx = (uint32_t)c->out->len;
	return ST_OK | VMWKVM_RPC_STATUS_DORECV | hb_bit(rpc);
}

static uint16_t lb_recvpayload(struct vmwkvm_rpc *rpc, struct rpc_chan *c, const struct rpc_regs *g,
			       struct vmwkvm_reply *reply)
{
	if (!c->out || !c->recv_started || c->hb_state == HB_ACTIVE)
		return ST_FAIL;
	if (c->cpt) {
		cpt_restart_recv(c);
		return ST_CPT;
	}
	if (!(g->ebx & VMWKVM_RPC_STATUS_SUCCESS)) {
		/* the guest gives up on this message */
		chan_drop_out(rpc, c);
		return ST_OK;
	}
	if (c->out_off >= c->out->len)
		return ST_FAIL;
	uint32_t v = 0;
	size_t n = c->out->len - c->out_off;
	if (n > 4)
		n = 4;
	for (size_t i = 0; i < n; i++)
		v |= (uint32_t)(uint8_t)c->out->data[c->out_off + i] << (8 * i);
	c->out_off += n;
	reply->set |= VMWKVM_REPLY_EDX | VMWKVM_REPLY_EBX;
	reply->edx = (2u << 16) | (g->edx & 0xFFFFu);
	reply->ebx = v;
	return ST_OK;
}

static uint16_t lb_recvstatus(struct vmwkvm_rpc *rpc, struct rpc_chan *c, const struct rpc_regs *g)
{
	if (!c->out || !c->recv_started || c->hb_state == HB_ACTIVE)
		return ST_FAIL;
	if (c->cpt) {
		cpt_restart_recv(c);
		return ST_CPT;
	}
	if ((g->ebx & VMWKVM_RPC_STATUS_SUCCESS) && c->out->seq)
		c->last_fetched_seq = c->out->seq;
	chan_drop_out(rpc, c);
	return ST_OK;
}

static uint16_t rpc_lb(struct vmwkvm_rpc *rpc, const struct vmwkvm_call *call, const struct rpc_regs *g,
		       struct vmwkvm_reply *reply, struct rpc_work *w)
{
	uint16_t sub = call->subcommand;
	if (sub == VMWKVM_RPC_OPEN)
		return lb_open(rpc, g, reply);
	uint16_t id = (uint16_t)(g->edx >> 16);
	struct rpc_chan *c = chan_get(rpc, id);
	if (!c) {
		vk_debug("rpc: subcommand %u on channel %u, which is not open", sub, id);
		return ST_FAIL;
	}
	if (!cookie_ok(c, g->esi, g->edi)) {
		vk_debug("rpc: channel %u: bad cookie", id);
		return ST_FAIL;
	}
	switch (sub) {
	case VMWKVM_RPC_SENDSIZE:
		return lb_sendsize(rpc, c, id, g, call, w);
	case VMWKVM_RPC_SENDPAYLOAD:
		return lb_sendpayload(rpc, c, id, g, call, w);
	case VMWKVM_RPC_RECVSIZE:
		return lb_recvsize(rpc, c, g, reply);
	case VMWKVM_RPC_RECVPAYLOAD:
		return lb_recvpayload(rpc, c, g, reply);
	case VMWKVM_RPC_RECVSTATUS:
		return lb_recvstatus(rpc, c, g);
	case VMWKVM_RPC_CLOSE:
		chan_free(rpc, id);
		return ST_OK;
	default:
		vk_debug("rpc: unknown subcommand %u", sub);
		return ST_FAIL;
	}
}

/* HB piece failure: remember it on the channel (if any) until the last piece. */
static void hb_fail(struct rpc_chan *c, uint16_t status)
{
	if (c) {
		c->hb_state = HB_FAILED;
		c->hb_fail = status;
	}
}

/* Returns true when the piece was consumed; *status is the answer at the last piece. */
static bool hb_send_piece(struct vmwkvm_rpc *rpc, struct rpc_chan *c, uint16_t id, const struct vmwkvm_call *call,
			  struct rpc_work *w, uint16_t *status)
{
	bool first = call->hb_flags & VMWKVM_HB_FIRST, last = call->hb_flags & VMWKVM_HB_LAST;
	if (first) {
		if (c->cpt && c->send_state == SEND_COLLECTING) {
			cpt_drop_send(rpc, c);
			hb_fail(c, ST_CPT);
			return false;
		}
		if (c->send_state != SEND_COLLECTING || c->in_got != 0 || call->hb_total != c->in_len ||
		    c->in_len == 0) {
			vk_debug("rpc: channel %u: HB send of %llu bytes does not match SENDSIZE %zu", id,
				 (unsigned long long)call->hb_total, c->in_len);
			hb_fail(c, ST_FAIL);
			return false;
		}
		c->hb_state = HB_ACTIVE;
		c->hb_dir = VMWKVM_DIR_OUT;
	} else if (c->hb_state != HB_ACTIVE || c->hb_dir != VMWKVM_DIR_OUT || c->send_state != SEND_COLLECTING) {
		if (c->hb_state != HB_FAILED)
			hb_fail(c, ST_FAIL);
		return false;
	}
	if (c->cpt) {
		cpt_drop_send(rpc, c);
		hb_fail(c, ST_CPT);
		return false;
	}
	if (call->hb_offset != c->in_got || call->hb_count > c->in_len - c->in_got ||
	    (call->hb_count && !call->hb_data)) {
		chan_drop_in(rpc, c);
		hb_fail(c, ST_FAIL);
		return false;
	}
	if (call->hb_count)
		memcpy(c->in + c->in_got, call->hb_data, call->hb_count);
	c->in_got += call->hb_count;
	if (last) {
		c->hb_state = HB_NONE;
		if (c->in_got != c->in_len) {
			chan_drop_in(rpc, c);
			*status = ST_FAIL;
			return true;
		}
		c->in[c->in_len] = '\0';
		send_complete(rpc, c, id, call, w);
		*status = ST_OK;
	}
	return true;
}

static bool hb_recv_piece(struct rpc_chan *c, uint16_t id, const struct vmwkvm_call *call,
			  struct vmwkvm_reply *reply, uint16_t *status)
{
	bool first = call->hb_flags & VMWKVM_HB_FIRST, last = call->hb_flags & VMWKVM_HB_LAST;
	if (first) {
		if (c->cpt && c->out && c->recv_started) {
			cpt_restart_recv(c);
			hb_fail(c, ST_CPT);
			return false;
		}
		if (!c->out || !c->recv_started || c->out_off != 0 || call->hb_total != c->out->len) {
			vk_debug("rpc: channel %u: HB receive of %llu bytes does not match the message", id,
				 (unsigned long long)call->hb_total);
			hb_fail(c, ST_FAIL);
			return false;
		}
		c->hb_state = HB_ACTIVE;
		c->hb_dir = VMWKVM_DIR_IN;
	} else if (c->hb_state != HB_ACTIVE || c->hb_dir != VMWKVM_DIR_IN || !c->out || !c->recv_started) {
		if (c->hb_state != HB_FAILED)
			hb_fail(c, ST_FAIL);
		return false;
	}
	if (c->cpt) {
		cpt_restart_recv(c);
		hb_fail(c, ST_CPT);
		return false;
	}
	if (call->hb_offset != c->out_off || call->hb_count > c->out->len - c->out_off ||
	    (call->hb_count && !call->hb_data)) {
		c->recv_started = false;
		c->out_off = 0;
		hb_fail(c, ST_FAIL);
		return false;
	}
	if (call->hb_count) {
		memcpy(call->hb_data, c->out->data + c->out_off, call->hb_count);
		reply->hb_data = call->hb_data;
	}
	c->out_off += call->hb_count;
	if (last) {
		c->hb_state = HB_NONE;
		*status = c->out_off == c->out->len ? ST_OK : ST_FAIL;
	}
	return true;
}

static void rpc_hb(struct vmwkvm_rpc *rpc, const struct vmwkvm_call *call, const struct rpc_regs *g,
		   struct vmwkvm_reply *reply, struct rpc_work *w)
{
	bool in = call->direction == VMWKVM_DIR_IN;
	bool last = call->hb_flags & VMWKVM_HB_LAST;
	uint16_t id = (uint16_t)(g->edx >> 16);
	struct rpc_chan *c = chan_get(rpc, id);
	uint16_t status = ST_FAIL;
	bool done = false;
	if (c && !(in ? cookie_ok(c, g->esi, g->ebp) : cookie_ok(c, g->ebp, g->edi))) {
		/* not the channel's owner: fail this piece without touching the channel */
		vk_debug("rpc: channel %u: bad cookie on an HB piece", id);
		c = NULL;
	} else if (!c) {
		vk_debug("rpc: HB piece on channel %u, which is not open", id);
	}
	if (!c) {
		/* failure answer below */
	} else if (!rpc->hb || call->command != RPC_HB_CMD_MESSAGE ||
		   (call->direction != VMWKVM_DIR_IN && call->direction != VMWKVM_DIR_OUT)) {
		hb_fail(c, ST_FAIL);
	} else if (!(call->hb_flags & VMWKVM_HB_FIRST) && c->hb_state == HB_FAILED) {
		/* the rest of a refused transfer */
	} else if (in) {
		done = hb_recv_piece(c, id, call, reply, &status);
	} else {
		done = hb_send_piece(rpc, c, id, call, w, &status);
	}
	if (!done && c && c->hb_state == HB_FAILED)
		status = c->hb_fail;
	if (in && !done)
		reply->hb_data = NULL; /* zeroes */
	if (last) {
		if (c && c->hb_state == HB_FAILED)
			c->hb_state = HB_NONE;
		reply->set |= VMWKVM_REPLY_EBX;
		reply->ebx = ((uint32_t)status << 16) | (g->ebx & 0xFFFFu);
	}
}

static void rpc_failure(struct vmwkvm_reply *reply)
{
	memset(reply, 0, sizeof(*reply));
	reply->set = VMWKVM_REPLY_EAX;
	reply->eax = 0xFFFFFFFFu;
}

/* After unlock: run the handler or the TCLO callback, install an RPCI reply. */
static void rpc_run_work(struct vmwkvm_rpc *rpc, struct rpc_work *w)
{
	if (w->kind == 2) {
		w->tclo_fn(w->id, w->seq, w->msg, w->len, w->tclo_ctx);
	} else if (w->kind == 1) {
		struct rpc_msg *m = run_rpci(rpc, w);
		pthread_mutex_lock(&rpc->lock);
		struct rpc_chan *c = chan_get(rpc, w->id);
		if (c && c->gen == w->gen && c->send_state == SEND_BUSY) {
			c->send_state = SEND_IDLE;
			if (m) {
				c->out = m;
				c->out_off = 0;
				c->recv_started = false;
				m = NULL;
			} else {
				vk_warn("rpc: channel %u: no memory for the reply", w->id);
			}
		}
		pthread_mutex_unlock(&rpc->lock);
		msg_free(rpc, m);
	}
	if (w->msg)
		rpc_release(rpc, w->msg, w->len + 1);
}

int vmwkvm_rpc_handle(vmwkvm_rpc *rpc, const struct vmwkvm_call *call, struct vmwkvm_reply *reply)
{
	if (!reply)
		return -EINVAL;
	if (!rpc || !call) {
		rpc_failure(reply);
		return -EINVAL;
	}
	memset(reply, 0, sizeof(*reply));
	struct rpc_regs g = {
		.ebx = (uint32_t)call->rbx,
		.edx = (uint32_t)call->rdx,
		.esi = (uint32_t)call->rsi,
		.edi = (uint32_t)call->rdi,
		.ebp = (uint32_t)call->rbp,
	};
	struct rpc_work w = {0};
	if (call->transport == VMWKVM_TRANSPORT_HB) {
		pthread_mutex_lock(&rpc->lock);
		rpc_hb(rpc, call, &g, reply, &w);
		pthread_mutex_unlock(&rpc->lock);
	} else if (call->transport == VMWKVM_TRANSPORT_HYPERCALL && (g.edx & RPC_HCALL_FLAG_HB)) {
		/* HB by hypercall (command in EBX low16) would need guest-virtual memory access:
		 * not implemented, so refused with status 0 */
		vk_debug("rpc: HB request by hypercall refused");
		reply->set = VMWKVM_REPLY_EBX;
		reply->ebx = g.ebx & 0xFFFFu;
		return 0;
	} else if ((call->transport == VMWKVM_TRANSPORT_LB || call->transport == VMWKVM_TRANSPORT_HYPERCALL) &&
		   call->command == RPC_MESSAGE_CMD) {
		pthread_mutex_lock(&rpc->lock);
		uint16_t st = rpc_lb(rpc, call, &g, reply, &w);
		pthread_mutex_unlock(&rpc->lock);
		if (st == ST_FAIL || st == ST_CPT)
			reply->set = 0; /* a failure changes nothing but ECX */
		reply->set |= VMWKVM_REPLY_ECX;
		reply->ecx = (uint32_t)st << 16;
	} else {
		rpc_failure(reply);
		return -EINVAL;
	}
	if (w.kind)
		rpc_run_work(rpc, &w);
	return 0;
}

/* ---- TCLO ---- */

/* Lock held. Oldest open TCLO channel, or -1. */
static int oldest_tclo(const struct vmwkvm_rpc *rpc)
{
	int best = -1;
	uint64_t seq = UINT64_MAX;
	for (uint32_t i = 0; i < rpc->max_channels; i++) {
		const struct rpc_chan *c = rpc->chans[i];
		if (c && c->proto == VMWKVM_RPC_PROTO_TCLO && c->open_seq < seq) {
			seq = c->open_seq;
			best = (int)i;
		}
	}
	return best;
}

int vmwkvm_rpc_tclo_queue(vmwkvm_rpc *rpc, int channel, const void *cmd, size_t len, uint64_t *seq)
{
	if (!rpc || !cmd || len == 0 || channel < -1 || channel >= (int)VMWKVM_RPC_MAX_CHANNELS)
		return -EINVAL;
	if (len > rpc->max_message)
		return -E2BIG;
	struct rpc_msg *m = msg_new(rpc, len);
	if (!m)
		return -ENOMEM;
	memcpy(m->data, cmd, len);
	m->data[len] = '\0';
	int r = 0;
	pthread_mutex_lock(&rpc->lock);
	int id = channel == -1 ? oldest_tclo(rpc) : channel;
	struct rpc_chan *c = id >= 0 ? chan_get(rpc, (uint32_t)id) : NULL;
	if (!c || c->proto != VMWKVM_RPC_PROTO_TCLO) {
		r = -ENOENT;
	} else if (c->q_len >= rpc->max_tclo_queue) {
		r = -ENOSPC;
	} else {
		m->seq = ++rpc->seq_counter;
		if (seq)
			*seq = m->seq;
		if (c->q_tail)
			c->q_tail->next = m;
		else
			c->q_head = m;
		c->q_tail = m;
		c->q_len++;
		m = NULL;
	}
	pthread_mutex_unlock(&rpc->lock);
	msg_free(rpc, m);
	return r;
}

struct tclo_entry {
	uint64_t open_seq;
	uint16_t id;
};

static int tclo_cmp(const void *a, const void *b)
{
	const struct tclo_entry *x = a, *y = b;
	return x->open_seq < y->open_seq ? -1 : x->open_seq > y->open_seq;
}

int vmwkvm_rpc_tclo_channels(vmwkvm_rpc *rpc, uint16_t *ids, size_t n)
{
	if (!rpc || (!ids && n))
		return -EINVAL;
	pthread_mutex_lock(&rpc->lock);
	struct tclo_entry *e = malloc((size_t)(rpc->nopen ? rpc->nopen : 1) * sizeof(*e));
	if (!e) {
		pthread_mutex_unlock(&rpc->lock);
		return -ENOMEM;
	}
	size_t count = 0;
	for (uint32_t i = 0; i < rpc->max_channels; i++) {
		const struct rpc_chan *c = rpc->chans[i];
		if (c && c->proto == VMWKVM_RPC_PROTO_TCLO)
			e[count++] = (struct tclo_entry){.open_seq = c->open_seq, .id = (uint16_t)i};
	}
	pthread_mutex_unlock(&rpc->lock);
	qsort(e, count, sizeof(*e), tclo_cmp);
	for (size_t i = 0; i < count && i < n; i++)
		ids[i] = e[i].id;
	free(e);
	return (int)count;
}
