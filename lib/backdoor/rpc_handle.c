/* GuestRPC entry point: vmwkvm_rpc_handle() decodes one MESSAGE call, runs the LB or HB
 * state machine under the lock and the work it leaves (an RPCI handler, a TCLO result)
 * after the lock is dropped. */
#include "backdoor/rpc_chan.h"
#include "backdoor/rpc_hb.h"
#include "backdoor/rpc_lb.h"
#include "backdoor/rpc_rpci.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
		pthread_mutex_lock(&rpc->lock);
		struct rpc_chan *c = vk_rpc_chan_get(rpc, w->id);
		if (c && c->gen == w->gen && c->send_state == SEND_BUSY)
			c->send_state = SEND_IDLE; /* the channel takes the guest's next message */
		pthread_mutex_unlock(&rpc->lock);
	} else if (w->kind == 1) {
		struct rpc_msg *m = vk_rpc_run_rpci(rpc, w);
		pthread_mutex_lock(&rpc->lock);
		struct rpc_chan *c = vk_rpc_chan_get(rpc, w->id);
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
		vk_rpc_msg_free(rpc, m);
	}
	if (w->msg)
		vk_rpc_release(rpc, w->msg, w->len + 1);
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
		vk_rpc_hb(rpc, call, &g, reply, &w);
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
		uint16_t st = vk_rpc_lb(rpc, call, &g, reply, &w);
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
