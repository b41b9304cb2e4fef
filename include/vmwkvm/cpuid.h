/**
 * @file vmwkvm/cpuid.h
 * @brief (being written)
 */
#ifndef VMWKVM_CPUID_H
#define VMWKVM_CPUID_H

#include <vmwkvm/common.h>
#include <vmwkvm/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_CPUID_H */
