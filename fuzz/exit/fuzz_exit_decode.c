/*
 * libFuzzer target for the pure backdoor decoder, vmwkvm_exit_decode_raw().
 *
 * One input = a decoding environment plus a sequence of exits fed to the same per-vCPU
 * HB state, so the fuzzer reaches HB reassembly across many pieces. The kvm_run buffer
 * is malloc()ed with exactly env.run_size bytes, so AddressSanitizer catches any read
 * past the mapping the decoder was told about.
 *
 * Input layout (little endian; short inputs are zero-padded):
 *   header, 8 bytes
 *     [0..1] run_size = sizeof(struct kvm_run) + u16 % (12288 - sizeof(struct kvm_run) + 1)
 *     [2]    bit 0 guest_mode_valid; bits 1-2 hypercall exit: 0 none, 1 = 40, 2 = 43, 3 = [3]
 *     [3]    raw hypercall exit number
 *     [4..7] hb_max = u32 % 131072 (0: the default 65536)
 *   then records of REC bytes, one exit each:
 *     [0]  exit: 0-3 KVM_EXIT_IO, 4 = 40, 5 = 43, 6 = KVM_EXIT_HLT, 7+ = [1]
 *     [2]  io.direction (raw)      [3] size: 0 -> 1, 1 -> 4, 2 -> 2, else raw [1]
 *     [4..5] port: bit 0 of [4] -> 0x5659, bit 1 -> 0x5658, else raw u16
 *     [6..9] count: [6] bit 7 -> raw u32 [6..9], else ([7] | [8] << 8) % 1025
 *     [10] data_offset: 0 -> 4096, 1 -> raw u64 [12..19], else raw u16 [10..11]
 *     [20..21] run flags         [22] addr_bits: 0 -> 16, 1 -> 32, 2 -> 64, else raw
 *     [23] mode (low 3 bits) and cpl (bits 4-7, raw)
 *     [24] rax: 0 -> magic, else raw byte
 *     [25] rcx: bit 0 -> "continue the HB transfer in progress" (RCX computed from the
 *          state the way KVM would report the next piece), else raw u64 [26..33]
 *     [34] rip: bit 0 -> previous RIP, bit 1 -> previous RIP + 2, else raw u32 [35..38]
 *     [39..46] hypercall payload: type [39], longmode [40], cpl [41], EDX flags [42],
 *          RCX u32 [43..46]
 *     [47] rbx high byte
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

#define REC 48
#define MAX_RECS 4096
#define RUN_MAX 12288u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t at(const uint8_t *p, size_t n, size_t i)
{
	return i < n ? p[i] : 0;
}

static uint64_t le(const uint8_t *p, size_t n, size_t i, unsigned bytes)
{
	uint64_t v = 0;
	for (unsigned k = 0; k < bytes; k++)
		v |= (uint64_t)at(p, n, i + k) << (8 * k);
	return v;
}

#define CHECK(c)                                                                                              \
	do {                                                                                                  \
		if (!(c))                                                                                     \
			__builtin_trap();                                                                     \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const size_t fixed = sizeof(struct kvm_run);
	struct vmwkvm_decode_env env;
	memset(&env, 0, sizeof(env));
	env.sz = sizeof(env);
	env.run_size = fixed + le(data, size, 0, 2) % (RUN_MAX - fixed + 1);
	uint8_t f = at(data, size, 2);
	env.guest_mode_valid = f & 1;
	static const uint32_t hx[3] = { 0, 40, 43 };
	env.hypercall_exit = ((f >> 1) & 3) == 3 ? at(data, size, 3) : hx[(f >> 1) & 3];
	env.hb_max = (uint32_t)(le(data, size, 4, 4) % 131072);
	const uint64_t hb_max = env.hb_max ? env.hb_max : 65536;

	uint8_t *buf = malloc(env.run_size);
	if (!buf)
		return 0;
	memset(buf, 0, env.run_size);
	struct kvm_run *run = (struct kvm_run *)(void *)buf;
	struct vmwkvm_hb_state hb;
	memset(&hb, 0, sizeof(hb));
	struct vmwkvm_cpu_state cpu;
	memset(&cpu, 0, sizeof(cpu));
	uint64_t prev_rip = 0x1000;
	/* shadow of the transfer in progress, to check offsets across pieces */
	uint64_t expect_off = 0;
	bool in_transfer = false;

	size_t nrec = size > 8 ? (size - 8 + REC - 1) / REC : 0;
	if (nrec > MAX_RECS)
		nrec = MAX_RECS;
	for (size_t k = 0; k < nrec; k++) {
		const uint8_t *r = data + 8 + k * REC;
		size_t n = size - 8 - k * REC; /* bytes available for this record (may be < REC) */
		uint8_t e = at(r, n, 0);
		static const uint32_t ex[7] = { KVM_EXIT_IO, KVM_EXIT_IO, KVM_EXIT_IO, KVM_EXIT_IO, 40, 43, KVM_EXIT_HLT };
		run->exit_reason = e < 7 ? ex[e] : at(r, n, 1);
		run->io.direction = at(r, n, 2);
		uint8_t sz = at(r, n, 3);
		run->io.size = sz == 0 ? 1 : sz == 1 ? 4 : sz == 2 ? 2 : at(r, n, 1);
		uint8_t ps = at(r, n, 4);
		run->io.port = (ps & 1) ? 0x5659 : (ps & 2) ? 0x5658 : (uint16_t)le(r, n, 4, 2);
		run->io.count = (at(r, n, 6) & 0x80) ? (uint32_t)le(r, n, 6, 4)
						      : (uint32_t)((at(r, n, 7) | (at(r, n, 8) << 8)) % 1025);
		uint8_t dsel = at(r, n, 10);
		run->io.data_offset = dsel == 0 ? 4096 : dsel == 1 ? le(r, n, 12, 8) : le(r, n, 10, 2);
		run->flags = (uint16_t)le(r, n, 20, 2);
		uint8_t ab = at(r, n, 22);
		cpu.addr_bits = ab == 0 ? 16 : ab == 1 ? 32 : ab == 2 ? 64 : ab;
		cpu.mode = at(r, n, 23) & 7;
		cpu.cpl = at(r, n, 23) >> 4;
		cpu.regs.rax = at(r, n, 24) ? at(r, n, 24) : VMWKVM_BDOOR_MAGIC;
		cpu.regs.rbx = 0x00010000u | ((uint64_t)at(r, n, 47) << 56);
		if (at(r, n, 25) & 1) {
			/* what KVM reports for the next piece of the transfer in progress */
			uint64_t remaining = hb.total ? hb.total - hb.done : (uint64_t)run->io.count + (le(r, n, 26, 3));
			bool in = run->io.direction == KVM_EXIT_IO_IN;
			cpu.regs.rcx = in ? remaining : remaining - (remaining ? 1 : 0);
			if (!in)
				run->io.count = 1;
		} else {
			cpu.regs.rcx = le(r, n, 26, 8);
		}
		uint8_t rs = at(r, n, 34);
		cpu.regs.rip = (rs & 1) ? prev_rip : (rs & 2) ? prev_rip + 2 : le(r, n, 35, 4);
		prev_rip = cpu.regs.rip;
		struct vmwkvm_proposed_vmware_exit *x = vmwkvm_proposed_run_vmware(run);
		x->type = at(r, n, 39);
		x->hcall.longmode = at(r, n, 40);
		x->hcall.cpl = at(r, n, 41);
		x->hcall.rax = cpu.regs.rax;
		x->hcall.rdx = at(r, n, 42);
		x->hcall.rcx = le(r, n, 43, 4);

		const bool hb_port_exit = run->exit_reason == KVM_EXIT_IO && run->io.port == 0x5659;
		struct vmwkvm_call call;
		int d = vmwkvm_exit_decode_raw(run, &cpu, &env, &hb, &call);

		/* invariants */
		CHECK(d == VMWKVM_EXIT_NOT_BACKDOOR || d == VMWKVM_EXIT_CALL || d == VMWKVM_EXIT_INVALID);
		CHECK((d == VMWKVM_EXIT_INVALID) == (call.invalid != VMWKVM_INVALID_NONE));
		CHECK(call.invalid <= VMWKVM_INVALID_HB_ABANDONED);
		CHECK(call.exit_reason == run->exit_reason);
		CHECK(call.cpl <= 3 && call.mode <= VMWKVM_MODE_LONG64 && call.origin <= VMWKVM_ORIGIN_L2);
		if (!env.guest_mode_valid)
			CHECK(call.origin == VMWKVM_ORIGIN_UNKNOWN);
		if (d == VMWKVM_EXIT_NOT_BACKDOOR)
			CHECK(call.transport == VMWKVM_TRANSPORT_NONE && !call.hb_data);
		if (call.hb_data) {
			uint8_t *p = call.hb_data;
			CHECK(call.transport == VMWKVM_TRANSPORT_HB);
			CHECK(p >= buf + fixed && p <= buf + env.run_size);
			CHECK(call.hb_count <= (size_t)(buf + env.run_size - p));
			volatile uint8_t sink = 0;
			for (uint32_t i = 0; i < call.hb_count; i++)
				sink ^= p[i]; /* ASan: must stay inside the buffer */
			(void)sink;
		}
		if (d == VMWKVM_EXIT_CALL && call.transport == VMWKVM_TRANSPORT_LB)
			CHECK(call.magic_ok && run->io.size == 4 && run->io.count == 1);
		if (d == VMWKVM_EXIT_CALL && call.transport == VMWKVM_TRANSPORT_HB) {
			CHECK(call.magic_ok && call.hb_count >= 1);
			CHECK(call.hb_total <= hb_max);
			CHECK(call.hb_offset + call.hb_count <= call.hb_total);
			if (call.hb_flags & VMWKVM_HB_FIRST)
				CHECK(call.hb_offset == 0);
			else
				CHECK(in_transfer && call.hb_offset == expect_off);
			if (call.hb_flags & VMWKVM_HB_LAST)
				CHECK(call.hb_offset + call.hb_count == call.hb_total);
		}
		if (d == VMWKVM_EXIT_CALL && call.transport == VMWKVM_TRANSPORT_HYPERCALL) {
			CHECK(call.magic_ok && env.hypercall_exit && run->exit_reason == env.hypercall_exit);
			if (call.hypercall_flags & VMWKVM_HCALL_FLAG_HB)
				CHECK(call.hb_total >= 1 && call.hb_total <= hb_max);
		}
		CHECK(hb.total == 0 || hb.done <= hb.total);
		/* shadow reassembly state (HB port exits only) */
		if (hb_port_exit) {
			if (d == VMWKVM_EXIT_CALL) {
				in_transfer = !(call.hb_flags & VMWKVM_HB_LAST);
				expect_off = call.hb_offset + call.hb_count;
			} else {
				in_transfer = false;
			}
		}
	}
	free(buf);
	return 0;
}
