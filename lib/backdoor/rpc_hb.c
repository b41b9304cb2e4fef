/* GuestRPC: high-bandwidth pieces (a whole message in one string I/O transfer), lock held. */
#include "backdoor/rpc_hb.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
			vk_rpc_cpt_drop_send(rpc, c);
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
		vk_rpc_cpt_drop_send(rpc, c);
		hb_fail(c, ST_CPT);
		return false;
	}
	if (call->hb_offset != c->in_got || call->hb_count > c->in_len - c->in_got ||
	    (call->hb_count && !call->hb_data)) {
		vk_rpc_chan_drop_in(rpc, c);
		hb_fail(c, ST_FAIL);
		return false;
	}
	if (call->hb_count)
		memcpy(c->in + c->in_got, call->hb_data, call->hb_count);
	c->in_got += call->hb_count;
	if (last) {
		c->hb_state = HB_NONE;
		if (c->in_got != c->in_len) {
			vk_rpc_chan_drop_in(rpc, c);
			*status = ST_FAIL;
			return true;
		}
		c->in[c->in_len] = '\0';
		vk_rpc_send_complete(rpc, c, id, call, w);
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
			vk_rpc_cpt_restart_recv(c);
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
		vk_rpc_cpt_restart_recv(c);
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

void vk_rpc_hb(struct vmwkvm_rpc *rpc, const struct vmwkvm_call *call, const struct rpc_regs *g,
		   struct vmwkvm_reply *reply, struct rpc_work *w)
{
	bool in = call->direction == VMWKVM_DIR_IN;
	bool last = call->hb_flags & VMWKVM_HB_LAST;
	uint16_t id = (uint16_t)(g->edx >> 16);
	struct rpc_chan *c = vk_rpc_chan_get(rpc, id);
	uint16_t status = ST_FAIL;
	bool done = false;
	if (c && !(in ? vk_rpc_cookie_ok(c, g->esi, g->ebp) : vk_rpc_cookie_ok(c, g->ebp, g->edi))) {
		/* not the channel's owner: fail this piece without touching the channel */
		vk_debug("rpc: channel %u: bad cookie on an HB piece", id);
		c = NULL;
	} else if (!c) {
		vk_debug("rpc: HB piece on channel %u, which is not open", id);
	} else {
		c->used_ns = vk_rpc_now_ns();
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
