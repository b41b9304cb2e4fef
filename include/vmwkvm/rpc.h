/**
 * @file vmwkvm/rpc.h
 * @brief (being written)
 */
#ifndef VMWKVM_RPC_H
#define VMWKVM_RPC_H

#include <vmwkvm/common.h>
#include <vmwkvm/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_RPC_H */
