/* GuestRPC message channel (backdoor command MESSAGE), the public object: creation, reset,
 * checkpoint, RPCI handler registration and the TCLO queues. The transfers are in
 * rpc_handle.c (entry), rpc_lb.c, rpc_hb.c and rpc_rpci.c; the channel layer in
 * rpc_chan.c. Protocol: facts sheet section 3. */
#include "backdoor/rpc_chan.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	rpc->idle_ns = (uint64_t)VMWKVM_RPC_DEFAULT_IDLE_MS * 1000000u;
	rpc->table_bytes = max_ch * sizeof(*rpc->chans);
	atomic_init(&rpc->allocated, 0);
	if (seed) {
		rpc->cookie_det = true;
		rpc->cookie_state = seed;
	}
	*out = rpc;
	return 0;
}

void vmwkvm_rpc_free(vmwkvm_rpc *rpc)
{
	if (!rpc)
		return;
	for (uint32_t i = 0; i < rpc->max_channels; i++)
		vk_rpc_chan_free(rpc, (uint16_t)i);
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
		vk_rpc_chan_free(rpc, (uint16_t)i);
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
	struct rpc_msg *m = vk_rpc_msg_new(rpc, len);
	if (!m)
		return -ENOMEM;
	memcpy(m->data, cmd, len);
	m->data[len] = '\0';
	int r = 0;
	pthread_mutex_lock(&rpc->lock);
	int id = channel == -1 ? oldest_tclo(rpc) : channel;
	struct rpc_chan *c = id >= 0 ? vk_rpc_chan_get(rpc, (uint32_t)id) : NULL;
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
	vk_rpc_msg_free(rpc, m);
	return r;
}

int vmwkvm_rpc_tclo_cancel(vmwkvm_rpc *rpc, int channel, uint64_t seq)
{
	if (!rpc || channel < 0 || channel >= (int)VMWKVM_RPC_MAX_CHANNELS || !seq)
		return -EINVAL;
	int r = -ENOENT;
	struct rpc_msg *gone = NULL;
	pthread_mutex_lock(&rpc->lock);
	struct rpc_chan *c = vk_rpc_chan_get(rpc, (uint32_t)channel);
	if (c && c->proto == VMWKVM_RPC_PROTO_TCLO) {
		if (c->out && c->out->seq == seq)
			r = -EBUSY;
		struct rpc_msg *prev = NULL;
		for (struct rpc_msg *m = r == -ENOENT ? c->q_head : NULL; m; prev = m, m = m->next) {
			if (m->seq != seq)
				continue;
			gone = m;
			if (prev)
				prev->next = m->next;
			else
				c->q_head = m->next;
			if (c->q_tail == m)
				c->q_tail = prev;
			c->q_len--;
			r = 0;
			break;
		}
	}
	pthread_mutex_unlock(&rpc->lock);
	vk_rpc_msg_free(rpc, gone);
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

int vmwkvm_rpc_set_idle_timeout(vmwkvm_rpc *rpc, uint32_t ms)
{
	if (!rpc)
		return -EINVAL;
	pthread_mutex_lock(&rpc->lock);
	rpc->idle_ns = (uint64_t)ms * 1000000u;
	pthread_mutex_unlock(&rpc->lock);
	return 0;
}
