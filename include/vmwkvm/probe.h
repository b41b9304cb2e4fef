/**
 * @file vmwkvm/probe.h
 * @brief (being written)
 */
#ifndef VMWKVM_PROBE_H
#define VMWKVM_PROBE_H

#include <vmwkvm/common.h>
#include <vmwkvm/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_PROBE_H */
