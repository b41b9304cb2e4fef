/**
 * @file vmwkvm/vmwkvm.h
 * @brief The umbrella header of libvmwkvm: include this one.
 *
 * libvmwkvm lets an existing VMM run VMware guests on Linux KVM. It borrows the VMM's
 * file descriptors and fits into its run loop; see the main page of the documentation.
 *
 * | header | capability |
 * |---|---|
 * | vmwkvm/common.h | errors, logging, version |
 * | vmwkvm/dialect.h | proposed uAPI dialects and their numbers |
 * | vmwkvm/vm.h | VM and vCPU handles |
 * | vmwkvm/probe.h | capability probing |
 * | vmwkvm/exit.h | backdoor-exit decoding and completion |
 * | vmwkvm/backdoor.h | backdoor command dispatch |
 * | vmwkvm/rpc.h | GuestRPC message channel (RPCI, TCLO) |
 * | vmwkvm/policy.h | per-VM VMware switches, nested-backdoor policy |
 * | vmwkvm/cpuid.h | VMware hypervisor CPUID leaves |
 * | vmwkvm/memfault.h | memory-fault dispatcher |
 * | vmwkvm/tools.h | VMware Tools host side: RPCI commands, TCLO command API, Tools state |
 */
#ifndef VMWKVM_VMWKVM_H
#define VMWKVM_VMWKVM_H

#include <vmwkvm/version.h>
#include <vmwkvm/common.h>
#include <vmwkvm/dialect.h>
#include <vmwkvm/vm.h>
#include <vmwkvm/probe.h>
#include <vmwkvm/exit.h>
#include <vmwkvm/backdoor.h>
#include <vmwkvm/rpc.h>
#include <vmwkvm/policy.h>
#include <vmwkvm/cpuid.h>
#include <vmwkvm/memfault.h>
#include <vmwkvm/tools.h>

#endif /* VMWKVM_VMWKVM_H */
