/*
 * Backdoor exit internals shared by the decoder (exit_decode.c) and the completion
 * (exit_complete.c). Not installed.
 *
 * Facts used (shared/protocol/vmware-backdoor.md, shared/uapi/kvm-uapi-notes.md):
 * - LB: 32-bit IN/OUT on port 0x5658, command = ECX bits 15:0 (never 7:0), sub-command
 *   = ECX bits 31:16; results are 32-bit values written zero-extended; EFLAGS untouched.
 * - HB: REP OUTSB / REP INSB on port 0x5659, byte-sized. KVM delivers string I/O in
 *   pieces. REP OUTSB exits once per byte with RCX already counting that byte (and, on
 *   the last byte, RIP already past the instruction); REP INSB exits in pieces of at most
 *   1 KiB that never cross a guest page, with RCX not yet counting the piece and RIP at
 *   the instruction. RCX is used at the address size (16/32/64 bits).
 * - Hypercall exits of the proposed dialects carry struct vmwkvm_proposed_vmware_exit
 *   (rusin-v2 layout); KVM writes `result` to RAX on re-entry and, with
 *   exception.inject, delivers the exception at the VMCALL instead of skipping it.
 * - After a port IN exit, a register write discards the I/O data's EAX on this host
 *   unless EAX is written too, so an LB IN completion writes EAX in both places.
 */
#ifndef VMWKVM_LIB_BACKDOOR_EXIT_H
#define VMWKVM_LIB_BACKDOOR_EXIT_H

#include "core/internal.h"

#define RUN_FIXED sizeof(struct kvm_run)

/* Bytes of the I/O exit's data area, or false when it does not lie inside the mapping
 * after the fixed part of kvm_run (KVM puts it on the page after kvm_run). */
static inline bool io_data_bounds(const struct kvm_run *run, size_t run_size, uint64_t *off, uint64_t *len)
{
	uint64_t o = run->io.data_offset;
	uint64_t l = (uint64_t)run->io.size * run->io.count;
	*off = o;
	*len = l;
	return o >= RUN_FIXED && o <= run_size && l <= run_size - o;
}

#endif
