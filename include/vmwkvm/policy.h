/**
 * @file vmwkvm/policy.h
 * @brief (being written)
 */
#ifndef VMWKVM_POLICY_H
#define VMWKVM_POLICY_H

#include <vmwkvm/common.h>
#include <vmwkvm/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_POLICY_H */
