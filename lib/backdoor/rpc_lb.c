/* GuestRPC: the low-bandwidth state machine (open, send size and payload, receive size,
 * payload and status, close), one guest register exchange per call (lock held). */
#include "backdoor/rpc_lb.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint16_t hb_bit(const struct vmwkvm_rpc *rpc)
{
	return rpc->hb ? VMWKVM_RPC_STATUS_HB : 0;
}

/* A full table: close the channel idle longest if it has been idle for rpc->idle_ns and
 * no work of it runs (VMware closes idle channels). Its id, or max_channels. */
static uint32_t reclaim_idle(struct vmwkvm_rpc *rpc, uint64_t now)
{
	uint32_t victim = rpc->max_channels;
	uint64_t oldest = UINT64_MAX;
	for (uint32_t id = 0; id < rpc->max_channels; id++) {
		const struct rpc_chan *c = rpc->chans[id];
		if (c && c->send_state != SEND_BUSY && c->used_ns < oldest) {
			oldest = c->used_ns;
			victim = id;
		}
	}
	if (victim == rpc->max_channels || !rpc->idle_ns || now - oldest < rpc->idle_ns)
		return rpc->max_channels;
	vk_info("rpc: channel %u idle for %llu ms: closed for a new OPEN", victim,
		(unsigned long long)((now - oldest) / 1000000u));
	vk_rpc_chan_free(rpc, (uint16_t)victim);
	return victim;
}

static uint16_t lb_open(struct vmwkvm_rpc *rpc, const struct rpc_regs *g, struct vmwkvm_reply *reply)
{
	uint32_t proto = g->ebx & ~VMWKVM_RPC_FLAG_COOKIE;
	if (proto != VMWKVM_RPC_PROTO_RPCI && proto != VMWKVM_RPC_PROTO_TCLO) {
		vk_debug("rpc: OPEN with unknown protocol 0x%08x", g->ebx);
		return ST_FAIL;
	}
	uint64_t now = vk_rpc_now_ns();
	uint32_t id;
	for (id = 0; id < rpc->max_channels; id++)
		if (!rpc->chans[id])
			break;
	if (id == rpc->max_channels)
		id = reclaim_idle(rpc, now);
	if (id == rpc->max_channels) {
		vk_debug("rpc: OPEN refused: all %u channels in use", rpc->max_channels);
		return ST_FAIL;
	}
	struct rpc_chan *c = vk_rpc_alloc(rpc, sizeof(*c));
	if (!c)
		return ST_FAIL;
	c->used_ns = now;
	c->proto = proto;
	c->open_seq = ++rpc->open_counter;
	c->gen = ++rpc->gen_counter;
	rpc->chans[id] = c;
	rpc->nopen++;
	reply->set |= VMWKVM_REPLY_EDX;
	reply->edx = (id << 16) | (g->edx & 0xFFFFu);
	if (g->ebx & VMWKVM_RPC_FLAG_COOKIE) {
		uint64_t ck = vk_rpc_cookie(rpc);
		c->cookies = true;
		c->ck_hi = (uint32_t)(ck >> 32);
		c->ck_lo = (uint32_t)ck;
		reply->set |= VMWKVM_REPLY_ESI | VMWKVM_REPLY_EDI;
		reply->esi = c->ck_hi;
		reply->edi = c->ck_lo;
	}
	return ST_OK;
}

/* TCLO: a command the guest fetched completely counts as delivered when it goes on to its
 * next step without RECVSTATUS; its result belongs to that command. */
static void tclo_settle_fetched(struct vmwkvm_rpc *rpc, struct rpc_chan *c)
{
	if (c->proto != VMWKVM_RPC_PROTO_TCLO || !c->out || !c->recv_started || c->out_off != c->out->len)
		return;
	if (c->out->seq)
		c->last_fetched_seq = c->out->seq;
	vk_rpc_chan_drop_out(rpc, c);
}

static uint16_t lb_sendsize(struct vmwkvm_rpc *rpc, struct rpc_chan *c, uint16_t id, const struct rpc_regs *g,
			    const struct vmwkvm_call *call, struct rpc_work *w)
{
	if (c->send_state == SEND_BUSY)
		return ST_FAIL;
	/* SENDSIZE (re)starts a send */
	vk_rpc_chan_drop_in(rpc, c);
	c->hb_state = HB_NONE;
	c->cpt = false;
	if (c->proto == VMWKVM_RPC_PROTO_RPCI) {
		vk_rpc_chan_drop_out(rpc, c);
	} else {
		tclo_settle_fetched(rpc, c);
		c->recv_started = false; /* a fetch in part restarts with RECVSIZE */
		c->out_off = 0;
	}
	if (g->ebx > rpc->max_message) {
		vk_debug("rpc: channel %u: SENDSIZE %u over the %u-byte bound", id, g->ebx, rpc->max_message);
		return ST_FAIL;
	}
	c->in = vk_rpc_alloc(rpc, (size_t)g->ebx + 1);
	if (!c->in)
		return ST_FAIL;
	c->in_len = g->ebx;
	c->in_got = 0;
	c->send_state = SEND_COLLECTING;
	if (c->in_len == 0)
		vk_rpc_send_complete(rpc, c, id, call, w);
	return ST_OK | hb_bit(rpc);
}

static uint16_t lb_sendpayload(struct vmwkvm_rpc *rpc, struct rpc_chan *c, uint16_t id, const struct rpc_regs *g,
			       const struct vmwkvm_call *call, struct rpc_work *w)
{
	if (c->send_state != SEND_COLLECTING || c->in_got >= c->in_len || c->hb_state == HB_ACTIVE)
		return ST_FAIL;
	if (c->cpt) {
		vk_rpc_cpt_drop_send(rpc, c);
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
		vk_rpc_send_complete(rpc, c, id, call, w);
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
	tclo_settle_fetched(rpc, c);
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
	if (!(g->ebx & VMWKVM_RPC_STATUS_SUCCESS)) {
		/* the guest gives up on this message: dropped, even if a checkpoint came between */
		vk_rpc_chan_drop_out(rpc, c);
		c->cpt = false;
		return ST_OK;
	}
	if (c->cpt) {
		vk_rpc_cpt_restart_recv(c);
		return ST_CPT;
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
	if (!(g->ebx & VMWKVM_RPC_STATUS_SUCCESS)) {
		/* the guest failed to take the message: dropped, checkpoint or not */
		vk_rpc_chan_drop_out(rpc, c);
		c->cpt = false;
		return ST_OK;
	}
	if (c->cpt) {
		vk_rpc_cpt_restart_recv(c);
		return ST_CPT;
	}
	if (c->out->seq)
		c->last_fetched_seq = c->out->seq;
	vk_rpc_chan_drop_out(rpc, c);
	return ST_OK;
}

uint16_t vk_rpc_lb(struct vmwkvm_rpc *rpc, const struct vmwkvm_call *call, const struct rpc_regs *g,
		       struct vmwkvm_reply *reply, struct rpc_work *w)
{
	uint16_t sub = call->subcommand;
	if (sub == VMWKVM_RPC_OPEN)
		return lb_open(rpc, g, reply);
	uint16_t id = (uint16_t)(g->edx >> 16);
	struct rpc_chan *c = vk_rpc_chan_get(rpc, id);
	if (!c) {
		vk_debug("rpc: subcommand %u on channel %u, which is not open", sub, id);
		return ST_FAIL;
	}
	if (!vk_rpc_cookie_ok(c, g->esi, g->edi)) {
		vk_debug("rpc: channel %u: bad cookie", id);
		return ST_FAIL;
	}
	c->used_ns = vk_rpc_now_ns();
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
		vk_rpc_chan_free(rpc, id);
		return ST_OK;
	default:
		vk_debug("rpc: unknown subcommand %u", sub);
		return ST_FAIL;
	}
}
