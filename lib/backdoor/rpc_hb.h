/* GuestRPC high-bandwidth pieces (rpc_hb.c). Not installed. */
#ifndef VMWKVM_LIB_BACKDOOR_RPC_HB_H
#define VMWKVM_LIB_BACKDOOR_RPC_HB_H

#include "backdoor/rpc_chan.h"

/* One HB call (lock held): answers in reply, leaves work for after the unlock in w. */
void vk_rpc_hb(struct vmwkvm_rpc *rpc, const struct vmwkvm_call *call, const struct rpc_regs *g,
	       struct vmwkvm_reply *reply, struct rpc_work *w);

#endif
