/**
 * @file vmwkvm/backdoor.h
 * @brief (being written)
 */
#ifndef VMWKVM_BACKDOOR_H
#define VMWKVM_BACKDOOR_H

#include <vmwkvm/common.h>
#include <vmwkvm/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_BACKDOOR_H */
