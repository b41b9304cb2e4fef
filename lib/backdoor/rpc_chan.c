/* GuestRPC, the channel layer under every transfer: memory accounting and messages,
 * cookies, the channel table (lookup, dropping transfers, freeing a channel), the RPCI
 * handler lookup and the hand-over of a complete guest-to-host message. Protocol: facts
 * sheet section 3. Calls nothing else of GuestRPC. */
#include "backdoor/rpc_chan.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

void *vk_rpc_alloc(struct vmwkvm_rpc *rpc, size_t n)
{
	void *p = calloc(1, n);
	if (p)
		atomic_fetch_add(&rpc->allocated, n);
	return p;
}

void vk_rpc_release(struct vmwkvm_rpc *rpc, void *p, size_t n)
{
	if (!p)
		return;
	free(p);
	atomic_fetch_sub(&rpc->allocated, n);
}

struct rpc_msg *vk_rpc_msg_new(struct vmwkvm_rpc *rpc, size_t len)
{
	size_t n = sizeof(struct rpc_msg) + len + 1;
	struct rpc_msg *m = vk_rpc_alloc(rpc, n);
	if (m) {
		m->len = len;
		m->alloc = n;
	}
	return m;
}

void vk_rpc_msg_free(struct vmwkvm_rpc *rpc, struct rpc_msg *m)
{
	if (m)
		vk_rpc_release(rpc, m, m->alloc);
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
	/* per channel: the message coming in (or, while its RPCI handler or TCLO result runs,
	 * handed to that work: at most one per channel, SEND_BUSY), the message going out or
	 * the reply being built (two while the builder grows), and the TCLO queue */
	size_t per_chan = sizeof(struct rpc_chan) + (size_t)rpc->max_message + 1 /* in */
			  + 2 * msg /* out */ + (size_t)rpc->max_tclo_queue * msg;
	return (size_t)rpc->max_channels * per_chan;
}

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

uint64_t vk_rpc_cookie(struct vmwkvm_rpc *rpc)
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

void vk_rpc_chan_drop_out(struct vmwkvm_rpc *rpc, struct rpc_chan *c)
{
	vk_rpc_msg_free(rpc, c->out);
	c->out = NULL;
	c->out_off = 0;
	c->recv_started = false;
}

void vk_rpc_chan_drop_in(struct vmwkvm_rpc *rpc, struct rpc_chan *c)
{
	if (c->in)
		vk_rpc_release(rpc, c->in, c->in_len + 1);
	c->in = NULL;
	c->in_len = c->in_got = 0;
	c->send_state = SEND_IDLE;
}

/* A checkpoint interrupted the guest's send: the partial message is dropped. */
void vk_rpc_cpt_drop_send(struct vmwkvm_rpc *rpc, struct rpc_chan *c)
{
	vk_rpc_chan_drop_in(rpc, c);
	c->cpt = false;
}

/* A checkpoint interrupted the guest's receive: it starts again at RECVSIZE. */
void vk_rpc_cpt_restart_recv(struct rpc_chan *c)
{
	c->cpt = false;
	c->recv_started = false;
	c->out_off = 0;
}

void vk_rpc_chan_free(struct vmwkvm_rpc *rpc, uint16_t id)
{
	struct rpc_chan *c = rpc->chans[id];
	if (!c)
		return;
	vk_rpc_chan_drop_in(rpc, c);
	vk_rpc_chan_drop_out(rpc, c);
	while (c->q_head) {
		struct rpc_msg *m = c->q_head;
		c->q_head = m->next;
		vk_rpc_msg_free(rpc, m);
	}
	vk_rpc_release(rpc, c, sizeof(*c));
	rpc->chans[id] = NULL;
	rpc->nopen--;
}

/* Length of the command word of a message. */
size_t vk_rpc_command_word_len(const char *msg, size_t len)
{
	const char *sp = memchr(msg, ' ', len);
	return sp ? (size_t)(sp - msg) : len;
}

/* Caller holds the lock. */
const struct rpc_handler *vk_rpc_find_handler(const struct vmwkvm_rpc *rpc, const char *word, size_t wlen)
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

uint64_t vk_rpc_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct rpc_chan *vk_rpc_chan_get(struct vmwkvm_rpc *rpc, uint32_t id)
{
	return id < rpc->max_channels ? rpc->chans[id] : NULL;
}

/* A complete guest-to-host message: hand it to the work that runs after unlock. */
void vk_rpc_send_complete(struct vmwkvm_rpc *rpc, struct rpc_chan *c, uint16_t id,
			  const struct vmwkvm_call *call, struct rpc_work *w)
{
	if (c->proto == VMWKVM_RPC_PROTO_TCLO) {
		if (c->in_len && rpc->tclo_fn) {
			w->kind = 2;
			w->msg = c->in;
			w->len = c->in_len;
			w->seq = c->last_fetched_seq;
			c->last_fetched_seq = 0; /* one result per fetched command: a second one is untagged */
			w->tclo_fn = rpc->tclo_fn;
			w->tclo_ctx = rpc->tclo_ctx;
			w->id = id;
			w->gen = c->gen;
			c->in = NULL; /* the work owns it now; accounting keeps it until freed */
			c->in_len = c->in_got = 0;
			c->send_state = SEND_BUSY; /* until the result was handed over */
		} else {
			vk_rpc_chan_drop_in(rpc, c);
		}
		return;
	}
	/* RPCI: a new request replaces an unfetched reply */
	vk_rpc_chan_drop_out(rpc, c);
	size_t wlen = vk_rpc_command_word_len(c->in, c->in_len);
	const struct rpc_handler *h = vk_rpc_find_handler(rpc, c->in, wlen);
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

bool vk_rpc_cookie_ok(const struct rpc_chan *c, uint32_t hi, uint32_t lo)
{
	return !c->cookies || (c->ck_hi == hi && c->ck_lo == lo);
}
