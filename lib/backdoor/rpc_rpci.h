/* GuestRPC RPCI reply builder (rpc_rpci.c). Not installed. */
#ifndef VMWKVM_LIB_BACKDOOR_RPC_RPCI_H
#define VMWKVM_LIB_BACKDOOR_RPC_RPCI_H

#include "backdoor/rpc_chan.h"

/* Run an RPCI request (no lock held) and return the reply, or NULL on ENOMEM. */
struct rpc_msg *vk_rpc_run_rpci(struct vmwkvm_rpc *rpc, const struct rpc_work *w);

#endif
