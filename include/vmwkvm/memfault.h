/**
 * @file vmwkvm/memfault.h
 * @brief (being written)
 */
#ifndef VMWKVM_MEMFAULT_H
#define VMWKVM_MEMFAULT_H

#include <vmwkvm/common.h>
#include <vmwkvm/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_MEMFAULT_H */
