/* GuestRPC internals other files may use (the fuzzer and the unit tests). Not installed. */
#ifndef VMWKVM_LIB_BACKDOOR_RPC_H
#define VMWKVM_LIB_BACKDOOR_RPC_H

#include "core/internal.h"

/* ---- GuestRPC accounting (the fuzzer checks allocated <= bound) ---- */
size_t vk_rpc_allocated(const vmwkvm_rpc *rpc); /* bytes held by channels, messages, queues */
size_t vk_rpc_bound(const vmwkvm_rpc *rpc);     /* the most the configured bounds allow */

#endif
