/* GuestRPC low-bandwidth state machine (rpc_lb.c). Not installed. */
#ifndef VMWKVM_LIB_BACKDOOR_RPC_LB_H
#define VMWKVM_LIB_BACKDOOR_RPC_LB_H

#include "backdoor/rpc_chan.h"

/* One LB call (lock held): answers in reply, leaves work for after the unlock in w;
 * returns the status for ECX's high half. */
uint16_t vk_rpc_lb(struct vmwkvm_rpc *rpc, const struct vmwkvm_call *call, const struct rpc_regs *g,
		   struct vmwkvm_reply *reply, struct rpc_work *w);

#endif
