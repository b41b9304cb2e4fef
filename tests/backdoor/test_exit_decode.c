/* Pure backdoor decoder (vmwkvm_exit_decode_raw): every transport and direction, bad
 * input, HB reassembly with this host's REP OUTSB / REP INSB piece semantics, address-size
 * masking, origin, names. Hand-built kvm_run buffers of 12288 bytes (the host's mmap size). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

#define RUN_SIZE 12288u
#define DATA_OFF 4096u
#define MAGIC VMWKVM_BDOOR_MAGIC

static _Alignas(4096) uint8_t runbuf[RUN_SIZE];
static struct kvm_run *const run = (struct kvm_run *)(void *)runbuf;
static struct vmwkvm_cpu_state cpu;
static struct vmwkvm_decode_env env;
static struct vmwkvm_hb_state hb;
static struct vmwkvm_call call;

static void setup(void)
{
	memset(runbuf, 0, sizeof(runbuf));
	memset(&cpu, 0, sizeof(cpu));
	memset(&hb, 0, sizeof(hb));
	memset(&call, 0xA5, sizeof(call)); /* decode must overwrite everything */
	memset(&env, 0, sizeof(env));
	env.sz = sizeof(env);
	env.run_size = RUN_SIZE;
	cpu.cpl = 0;
	cpu.mode = VMWKVM_MODE_PROT32;
	cpu.addr_bits = 32;
	cpu.regs.rflags = 0x2;
}

static void set_io(uint8_t dir, uint8_t size, uint16_t port, uint32_t count)
{
	run->exit_reason = KVM_EXIT_IO;
	run->io.direction = dir;
	run->io.size = size;
	run->io.port = port;
	run->io.count = count;
	run->io.data_offset = DATA_OFF;
}

static int decode(void)
{
	return vmwkvm_exit_decode_raw(run, &cpu, &env, &hb, &call);
}

/* ------------------------------------------------------------------ LB */

START_TEST(lb_in_getversion_garbage_high_half)
{
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	cpu.regs.rax = 0xFFFFFFFF00000000ull | MAGIC; /* 64-bit guest: high half ignored */
	cpu.regs.rbx = ~(uint64_t)MAGIC;
	cpu.regs.rcx = 0x12345678DEAD000Aull; /* garbage in ECX bits 31:16 and above */
	cpu.regs.rdx = 0x5658;
	cpu.regs.rsi = 1, cpu.regs.rdi = 2, cpu.regs.rbp = 3, cpu.regs.rip = 0x1234;
	cpu.cpl = 3;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.transport, VMWKVM_TRANSPORT_LB);
	ck_assert_uint_eq(call.direction, VMWKVM_DIR_IN);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_NONE);
	ck_assert_uint_eq(call.command, 10);
	ck_assert_uint_eq(call.subcommand, 0xDEAD);
	ck_assert_str_eq(vmwkvm_command_name(call.command), "GETVERSION");
	ck_assert_uint_eq(call.magic_ok, 1);
	ck_assert_uint_eq(call.cpl, 3);
	ck_assert_uint_eq(call.mode, VMWKVM_MODE_PROT32);
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_UNKNOWN);
	ck_assert_uint_eq(call.io_size, 4);
	ck_assert_uint_eq(call.port, 0x5658);
	ck_assert_uint_eq(call.exit_reason, KVM_EXIT_IO);
	ck_assert_uint_eq(call.rax, 0xFFFFFFFF00000000ull | MAGIC);
	ck_assert_uint_eq(call.rcx, 0x12345678DEAD000Aull);
	ck_assert_uint_eq(call.rsi, 1);
	ck_assert_uint_eq(call.rdi, 2);
	ck_assert_uint_eq(call.rbp, 3);
	ck_assert_uint_eq(call.rip, 0x1234);
	ck_assert_uint_eq(call.hb_flags, 0);
	ck_assert_uint_eq(call.hb_count, 0);
	ck_assert_ptr_null(call.hb_data);
	ck_assert_uint_eq(call.hypercall_flags, 0);
	for (int i = 0; i < 5; i++)
		ck_assert_uint_eq(call.reserved[i], 0);
}
END_TEST

START_TEST(lb_command_is_low16_not_low8)
{
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	cpu.regs.rax = MAGIC;
	cpu.regs.rcx = 0x0000010A; /* QEMU's low-8 dispatch would see GETVERSION */
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.command, 0x010A);
	ck_assert_ptr_null(vmwkvm_command_name(call.command));
}
END_TEST

START_TEST(lb_out_is_a_call)
{
	set_io(KVM_EXIT_IO_OUT, 4, 0x5658, 1);
	cpu.regs.rax = MAGIC;
	cpu.regs.rcx = 0x0001001E;
	memcpy(runbuf + DATA_OFF, &(uint32_t){ MAGIC }, 4);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.transport, VMWKVM_TRANSPORT_LB);
	ck_assert_uint_eq(call.direction, VMWKVM_DIR_OUT);
	ck_assert_uint_eq(call.command, 30);
	ck_assert_uint_eq(call.subcommand, 1);
	ck_assert_str_eq(vmwkvm_command_name(30), "MESSAGE");
}
END_TEST

START_TEST(lb_bad_magic)
{
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	cpu.regs.rax = MAGIC ^ 1;
	cpu.regs.rcx = 10;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_MAGIC);
	ck_assert_uint_eq(call.magic_ok, 0);
	ck_assert_uint_eq(call.transport, VMWKVM_TRANSPORT_LB);
	ck_assert_uint_eq(call.command, 10);
	/* the magic in the high half of RAX does not count */
	cpu.regs.rax = (uint64_t)MAGIC << 32;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_MAGIC);
}
END_TEST

START_TEST(lb_wrong_sizes)
{
	static const uint8_t sizes[] = { 1, 2, 3, 8, 0, 255 };
	cpu.regs.rax = MAGIC;
	for (size_t i = 0; i < sizeof(sizes); i++) {
		for (int dir = 0; dir < 2; dir++) {
			set_io((uint8_t)dir, sizes[i], 0x5658, 1);
			ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
			ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_SIZE);
			ck_assert_uint_eq(call.io_size, sizes[i]);
		}
	}
}
END_TEST

START_TEST(lb_string_io)
{
	cpu.regs.rax = MAGIC;
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 2);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_STRING);
	set_io(KVM_EXIT_IO_OUT, 1, 0x5658, 100);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_STRING);
}
END_TEST

START_TEST(lb_bad_direction)
{
	cpu.regs.rax = MAGIC;
	set_io(7, 4, 0x5658, 1);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_DIRECTION);
	ck_assert_uint_eq(call.direction, VMWKVM_DIR_NONE);
}
END_TEST

START_TEST(io_data_out_of_bounds)
{
	static const struct {
		uint64_t off;
		uint8_t size;
		uint32_t count;
	} cases[] = {
		{ RUN_SIZE - 2, 4, 1 },          /* straddles the end */
		{ RUN_SIZE, 4, 1 },              /* just past the end */
		{ RUN_SIZE - 4, 4, 2 },          /* count pushes it out */
		{ 100, 4, 1 },                   /* inside the fixed part of kvm_run */
		{ 0, 4, 1 },
		{ sizeof(struct kvm_run) - 1, 1, 2 },
		{ 0xFFFFFFFFFFFFFFF0ull, 4, 1 }, /* wraps */
		{ DATA_OFF, 255, 0xFFFFFFFFu },  /* size * count overflows 32 bits */
		{ DATA_OFF, 1, RUN_SIZE - DATA_OFF + 1 },
	};
	cpu.regs.rax = MAGIC;
	cpu.regs.rcx = 0xFFFF;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (int hbp = 0; hbp < 2; hbp++) {
			set_io(KVM_EXIT_IO_IN, cases[i].size, hbp ? 0x5659 : 0x5658, cases[i].count);
			run->io.data_offset = cases[i].off;
			ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
			ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_BOUNDS);
			ck_assert_ptr_null(call.hb_data);
		}
	}
	/* the last byte of the mapping is fine */
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	run->io.data_offset = RUN_SIZE - 4;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	/* a smaller mapping bounds it */
	env.run_size = sizeof(struct kvm_run) + 3;
	run->io.data_offset = sizeof(struct kvm_run);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_BOUNDS);
}
END_TEST

START_TEST(not_backdoor)
{
	cpu.regs.rax = MAGIC;
	set_io(KVM_EXIT_IO_IN, 4, 0x5657, 1);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_NOT_BACKDOOR);
	ck_assert_uint_eq(call.transport, VMWKVM_TRANSPORT_NONE);
	ck_assert_uint_eq(call.exit_reason, KVM_EXIT_IO);
	ck_assert_uint_eq(call.magic_ok, 0);
	set_io(KVM_EXIT_IO_OUT, 1, 0x5670, 1); /* balloon port: not ours */
	ck_assert_int_eq(decode(), VMWKVM_EXIT_NOT_BACKDOOR);
	run->exit_reason = KVM_EXIT_HLT;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_NOT_BACKDOOR);
	ck_assert_uint_eq(call.exit_reason, KVM_EXIT_HLT);
	run->exit_reason = KVM_EXIT_MMIO;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_NOT_BACKDOOR);
	/* decoding never writes kvm_run */
	static uint8_t copy[RUN_SIZE];
	memcpy(copy, runbuf, RUN_SIZE);
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	memcpy(copy, runbuf, RUN_SIZE);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_mem_eq(copy, runbuf, RUN_SIZE);
}
END_TEST

START_TEST(tdx_exit_40_is_not_ours_without_hypercalls)
{
	struct vmwkvm_proposed_vmware_exit *x = vmwkvm_proposed_run_vmware(run);
	run->exit_reason = 40;
	x->type = 1;
	x->hcall.rax = MAGIC;
	x->hcall.rcx = 10;
	env.hypercall_exit = 0;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_NOT_BACKDOOR);
	ck_assert_uint_eq(call.transport, VMWKVM_TRANSPORT_NONE);
	env.hypercall_exit = 43; /* enabled, but another number */
	ck_assert_int_eq(decode(), VMWKVM_EXIT_NOT_BACKDOOR);
}
END_TEST

START_TEST(bad_arguments)
{
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	ck_assert_int_eq(vmwkvm_exit_decode_raw(NULL, &cpu, &env, &hb, &call), -EINVAL);
	ck_assert_int_eq(vmwkvm_exit_decode_raw(run, NULL, &env, &hb, &call), -EINVAL);
	ck_assert_int_eq(vmwkvm_exit_decode_raw(run, &cpu, NULL, &hb, &call), -EINVAL);
	ck_assert_int_eq(vmwkvm_exit_decode_raw(run, &cpu, &env, NULL, &call), -EINVAL);
	ck_assert_int_eq(vmwkvm_exit_decode_raw(run, &cpu, &env, &hb, NULL), -EINVAL);
	env.sz = 0;
	ck_assert_int_eq(decode(), -EINVAL);
	env.sz = sizeof(size_t); /* no run_size */
	ck_assert_int_eq(decode(), -EINVAL);
	env.sz = sizeof(env);
	env.run_size = sizeof(struct kvm_run) - 1;
	ck_assert_int_eq(decode(), -EINVAL);
	env.run_size = RUN_SIZE;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID); /* bad magic, but decodes */
	/* a larger env from a newer caller: unknown bytes must be zero */
	struct {
		struct vmwkvm_decode_env e;
		uint64_t extra;
	} big;
	memset(&big, 0, sizeof(big));
	big.e = env;
	big.e.sz = sizeof(big);
	ck_assert_int_eq(vmwkvm_exit_decode_raw(run, &cpu, &big.e, &hb, &call), VMWKVM_EXIT_INVALID);
	big.extra = 1;
	ck_assert_int_eq(vmwkvm_exit_decode_raw(run, &cpu, &big.e, &hb, &call), -EINVAL);
	/* an older, shorter env: fields after sz count as zero (hb_max 0 = 65536) */
	struct vmwkvm_decode_env small = env;
	small.sz = offsetof(struct vmwkvm_decode_env, hypercall_exit);
	small.hypercall_exit = 40; /* beyond sz: ignored */
	run->exit_reason = 40;
	vmwkvm_proposed_run_vmware(run)->type = 1;
	ck_assert_int_eq(vmwkvm_exit_decode_raw(run, &cpu, &small, &hb, &call), VMWKVM_EXIT_NOT_BACKDOOR);
}
END_TEST

START_TEST(origin_from_run_flags)
{
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	cpu.regs.rax = MAGIC;
	env.guest_mode_valid = 0;
	run->flags = VMWKVM_UAPI_RUN_X86_GUEST_MODE;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_UNKNOWN);
	env.guest_mode_valid = 1;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_L2);
	run->flags = VMWKVM_UAPI_RUN_X86_SMM | VMWKVM_UAPI_RUN_X86_BUS_LOCK;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_L1);
	run->flags = 0;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_L1);
	/* also on a non-backdoor exit and an invalid one */
	run->flags = VMWKVM_UAPI_RUN_X86_GUEST_MODE;
	cpu.regs.rax = 0;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_L2);
	run->exit_reason = KVM_EXIT_HLT;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_NOT_BACKDOOR);
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_L2);
}
END_TEST

START_TEST(cpl_and_mode_copied_and_sanitised)
{
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	cpu.regs.rax = MAGIC;
	static const uint8_t modes[] = { VMWKVM_MODE_REAL, VMWKVM_MODE_VM86, VMWKVM_MODE_PROT16,
					 VMWKVM_MODE_PROT32, VMWKVM_MODE_LONG64 };
	for (size_t i = 0; i < sizeof(modes); i++) {
		cpu.mode = modes[i];
		cpu.cpl = (uint8_t)(i & 3);
		ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
		ck_assert_uint_eq(call.mode, modes[i]);
		ck_assert_uint_eq(call.cpl, i & 3);
	}
	cpu.mode = 77;
	cpu.cpl = 7;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.mode, VMWKVM_MODE_UNKNOWN);
	ck_assert_uint_eq(call.cpl, 3);
}
END_TEST

/* ------------------------------------------------------------------ HB */

#define REP_RIP 0x2000u
#define REP_LEN 2u /* F3 6E / F3 6C */

static uint8_t pattern(uint64_t i)
{
	return (uint8_t)(i * 7 + 3);
}

/*
 * REP OUTSB of n bytes as this host delivers it: one exit per byte, RCX already counting
 * that byte, RIP past the instruction on the last byte. Checks every piece and the
 * reassembled message.
 */
static void run_hb_out(uint64_t n, uint8_t addr_bits, uint64_t rcx_high)
{
	uint8_t *msg = malloc(n);
	ck_assert_ptr_nonnull(msg);
	cpu.addr_bits = addr_bits;
	cpu.regs.rax = MAGIC;
	cpu.regs.rbx = 0x00010000; /* MESSAGE, status SUCCESS */
	cpu.regs.rdx = 0x00075659;
	for (uint64_t i = 0; i < n; i++) {
		set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
		runbuf[DATA_OFF] = pattern(i);
		cpu.regs.rcx = rcx_high | (n - 1 - i);
		cpu.regs.rip = (i == n - 1) ? REP_RIP + REP_LEN : REP_RIP;
		int r = decode();
		uint32_t f = (i == 0 ? VMWKVM_HB_FIRST : 0) | (i == n - 1 ? VMWKVM_HB_LAST : 0);
		/* one combined check per piece: ck_assert per field is too slow for 65536 pieces */
		bool ok = r == VMWKVM_EXIT_CALL && call.transport == VMWKVM_TRANSPORT_HB &&
			  call.direction == VMWKVM_DIR_OUT && call.command == 0 && call.subcommand == 1 &&
			  call.hb_offset == i && call.hb_count == 1 && call.hb_total == n &&
			  call.hb_data == runbuf + DATA_OFF && call.hb_flags == f;
		if (!ok)
			ck_abort_msg("OUT piece %llu of %llu: %d (%s) offset %llu count %u total %llu flags %u",
				     (unsigned long long)i, (unsigned long long)n, r, vmwkvm_invalid_reason_name(call.invalid),
				     (unsigned long long)call.hb_offset, call.hb_count, (unsigned long long)call.hb_total,
				     call.hb_flags);
		msg[call.hb_offset] = call.hb_data[0];
	}
	for (uint64_t i = 0; i < n; i++)
		ck_assert_uint_eq(msg[i], pattern(i));
	ck_assert_uint_eq(hb.total, 0); /* idle again */
	free(msg);
}

/* Piece length KVM's emulator uses for REP INSB: up to 1 KiB, not crossing a page. */
static uint32_t ins_piece(uint64_t rdi, uint64_t rcx)
{
	uint64_t in_page = 4096 - (rdi & 4095);
	uint64_t n = in_page < 1024 ? in_page : 1024;
	return (uint32_t)(n < rcx ? n : rcx);
}

/*
 * REP INSB of n bytes into a buffer at rdi0: pieces with RCX not yet counting the piece,
 * RIP at the instruction throughout. The host answers pattern bytes; checks offsets and
 * that the pieces cover the transfer exactly once.
 */
static unsigned run_hb_in(uint64_t n, uint64_t rdi0, uint8_t addr_bits, uint64_t rcx_high)
{
	uint64_t mask = addr_bits == 16 ? 0xFFFF : addr_bits == 32 ? 0xFFFFFFFF : ~0ull;
	uint64_t rcx = n, rdi = rdi0, expect_off = 0;
	unsigned pieces = 0;
	cpu.addr_bits = addr_bits;
	cpu.regs.rax = MAGIC;
	cpu.regs.rbx = 0x00010000;
	cpu.regs.rip = REP_RIP;
	while (rcx) {
		uint32_t cnt = ins_piece(rdi, rcx);
		set_io(KVM_EXIT_IO_IN, 1, 0x5659, cnt);
		cpu.regs.rcx = rcx_high | rcx;
		cpu.regs.rdi = rdi;
		int r = decode();
		uint32_t f = (expect_off == 0 ? VMWKVM_HB_FIRST : 0) | (cnt == rcx ? VMWKVM_HB_LAST : 0);
		bool ok = r == VMWKVM_EXIT_CALL && call.direction == VMWKVM_DIR_IN && call.hb_offset == expect_off &&
			  call.hb_count == cnt && call.hb_total == n && call.hb_flags == f &&
			  call.hb_data == runbuf + DATA_OFF;
		if (!ok)
			ck_abort_msg("IN piece at %llu of %llu: %d (%s) offset %llu count %u total %llu flags %u",
				     (unsigned long long)expect_off, (unsigned long long)n, r,
				     vmwkvm_invalid_reason_name(call.invalid), (unsigned long long)call.hb_offset, call.hb_count,
				     (unsigned long long)call.hb_total, call.hb_flags);
		expect_off += cnt;
		rcx = (rcx - cnt) & mask;
		rdi = (rdi + cnt) & mask;
		pieces++;
	}
	ck_assert_uint_eq(expect_off, n);
	ck_assert_uint_eq(hb.total, 0);
	return pieces;
}

static const uint64_t hb_sizes[] = { 1, 4, 4095, 4096, 4097, 65536 };

START_TEST(hb_out_sizes)
{
	run_hb_out(hb_sizes[_i], 32, 0);
}
END_TEST

START_TEST(hb_in_sizes)
{
	unsigned p = run_hb_in(hb_sizes[_i], 0x10000, 32, 0);
	/* page-aligned buffer: 4 pieces per page */
	ck_assert_uint_eq(p, (hb_sizes[_i] + 1023) / 1024);
	/* unaligned buffer: pieces stop at page boundaries */
	run_hb_in(hb_sizes[_i], 0x10F00 + 3, 32, 0);
}
END_TEST

START_TEST(hb_in_piece_count_unaligned)
{
	/* 4096 bytes from 0x1F00: 256 to the page end, then 4 x 1024 ... */
	unsigned p = run_hb_in(4096, 0x1F00, 32, 0);
	ck_assert_uint_eq(p, 1 + 3 + 1); /* 256, 1024, 1024, 1024, 768 */
}
END_TEST

START_TEST(hb_over_bound_out)
{
	/* 65537 bytes: refused at the first piece, every later piece too, then idle */
	const uint64_t n = 65537;
	cpu.regs.rax = MAGIC;
	for (uint64_t i = 0; i < n; i++) {
		set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
		cpu.regs.rcx = n - 1 - i;
		cpu.regs.rip = (i == n - 1) ? REP_RIP + REP_LEN : REP_RIP;
		int r = decode();
		if (r != VMWKVM_EXIT_INVALID || call.invalid != VMWKVM_INVALID_HB_LENGTH || call.hb_offset != i ||
		    call.hb_total != n || (i == 0 && call.hb_flags != VMWKVM_HB_FIRST))
			ck_abort_msg("piece %llu: %d invalid %u offset %llu", (unsigned long long)i, r, call.invalid,
				     (unsigned long long)call.hb_offset);
	}
	ck_assert_uint_eq(call.hb_flags, VMWKVM_HB_LAST);
	ck_assert_uint_eq(hb.total, 0);
	run_hb_out(16, 32, 0); /* the next transfer is fine */
}
END_TEST

START_TEST(hb_over_bound_in)
{
	const uint64_t n = 65537;
	uint64_t rcx = n, rdi = 0x20000;
	unsigned pieces = 0;
	cpu.regs.rax = MAGIC;
	cpu.regs.rip = REP_RIP;
	while (rcx) {
		uint32_t cnt = ins_piece(rdi, rcx);
		set_io(KVM_EXIT_IO_IN, 1, 0x5659, cnt);
		cpu.regs.rcx = rcx;
		ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
		ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_LENGTH);
		rcx -= cnt;
		rdi += cnt;
		pieces++;
	}
	ck_assert_uint_eq(pieces, 65);
	ck_assert_uint_eq(call.hb_flags, VMWKVM_HB_LAST);
	run_hb_in(100, 0x1000, 32, 0);
}
END_TEST

START_TEST(hb_custom_bound)
{
	env.hb_max = 100;
	run_hb_out(100, 32, 0);
	set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
	cpu.regs.rcx = 100; /* 101 bytes */
	cpu.regs.rip = REP_RIP;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_LENGTH);
}
END_TEST

START_TEST(hb_address_size_masking)
{
	/* 16-bit: only CX counts */
	run_hb_out(5, 16, 0xABCD0000ull);
	run_hb_in(300, 0xFF00, 16, 0x12340000ull);
	/* 32-bit: only ECX counts */
	run_hb_out(5, 32, 0xFFFFFFFF00000000ull);
	run_hb_in(3000, 0x7000, 32, 0x5500000000ull);
	/* 64-bit: all of RCX counts, so the same garbage makes it far too long */
	cpu.addr_bits = 64;
	set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
	cpu.regs.rcx = 0x100000004ull;
	cpu.regs.rip = REP_RIP;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_LENGTH);
	memset(&hb, 0, sizeof(hb));
	run_hb_out(7, 64, 0);
	/* RCX near 2^64: no overflow in the total */
	memset(&hb, 0, sizeof(hb));
	cpu.addr_bits = 64;
	set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
	cpu.regs.rcx = ~0ull;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_LENGTH);
	memset(&hb, 0, sizeof(hb));
	set_io(KVM_EXIT_IO_IN, 1, 0x5659, 1024);
	cpu.regs.rcx = ~0ull;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_LENGTH);
}
END_TEST

/* Start a 10-byte OUT transfer and feed its first 3 bytes. */
static void start_out10(void)
{
	cpu.regs.rax = MAGIC;
	for (int i = 0; i < 3; i++) {
		set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
		cpu.regs.rcx = 9 - (uint64_t)i;
		cpu.regs.rip = REP_RIP;
		ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	}
}

START_TEST(hb_sequence_direction_change)
{
	start_out10();
	/* an IN piece breaks in: out of sequence, and so is the rest of that IN transfer */
	set_io(KVM_EXIT_IO_IN, 1, 0x5659, 4);
	cpu.regs.rcx = 8;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_SEQUENCE);
	ck_assert_uint_eq(call.hb_flags, VMWKVM_HB_FIRST);
	set_io(KVM_EXIT_IO_IN, 1, 0x5659, 4);
	cpu.regs.rcx = 4;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_SEQUENCE);
	ck_assert_uint_eq(call.hb_flags, VMWKVM_HB_LAST);
	ck_assert_uint_eq(hb.total, 0);
	run_hb_out(3, 32, 0);
}
END_TEST

START_TEST(hb_sequence_rip_change)
{
	start_out10();
	set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
	cpu.regs.rcx = 6;
	cpu.regs.rip = REP_RIP + 0x40;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_SEQUENCE);
	/* the last byte of an OUT may sit up to 15 bytes past the REP; further is not allowed */
	memset(&hb, 0, sizeof(hb));
	start_out10();
	for (uint64_t left = 6; left > 0; left--) {
		set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
		cpu.regs.rcx = left;
		ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	}
	set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
	cpu.regs.rcx = 0;
	cpu.regs.rip = REP_RIP + 16;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_SEQUENCE);
	/* an IN piece must keep its RIP, even the last one */
	memset(&hb, 0, sizeof(hb));
	set_io(KVM_EXIT_IO_IN, 1, 0x5659, 4);
	cpu.regs.rcx = 8;
	cpu.regs.rip = REP_RIP;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	set_io(KVM_EXIT_IO_IN, 1, 0x5659, 4);
	cpu.regs.rcx = 4;
	cpu.regs.rip = REP_RIP + 2;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_SEQUENCE);
}
END_TEST

START_TEST(hb_sequence_count_jump)
{
	start_out10();
	set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
	cpu.regs.rcx = 3; /* expected 6 */
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_SEQUENCE);
	ck_assert_uint_eq(call.hb_total, 4);
	/* the broken-in transfer is discarded to its end */
	for (uint64_t left = 2;; left--) {
		set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
		cpu.regs.rcx = left;
		cpu.regs.rip = left ? REP_RIP : REP_RIP + 2;
		ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
		ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_SEQUENCE);
		if (!left)
			break;
	}
	ck_assert_uint_eq(hb.total, 0);
}
END_TEST

START_TEST(hb_magic_lost_mid_transfer)
{
	start_out10();
	set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
	cpu.regs.rcx = 6;
	cpu.regs.rax = 0;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_SEQUENCE);
	cpu.regs.rax = MAGIC;
	set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
	cpu.regs.rcx = 5;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_SEQUENCE);
}
END_TEST

START_TEST(hb_bad_magic)
{
	cpu.regs.rax = 0x12345678;
	for (uint64_t left = 2;; left--) {
		set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
		cpu.regs.rcx = left;
		cpu.regs.rip = left ? REP_RIP : REP_RIP + 2;
		ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
		ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_MAGIC);
		ck_assert_uint_eq(call.magic_ok, 0);
		if (!left)
			break;
	}
	ck_assert_uint_eq(hb.total, 0);
}
END_TEST

START_TEST(hb_lb_calls_interleave)
{
	/* an LB call (e.g. from an interrupt handler) between two HB pieces changes nothing */
	start_out10();
	struct vmwkvm_hb_state saved = hb;
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	cpu.regs.rcx = 40;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	run->exit_reason = KVM_EXIT_HLT;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_NOT_BACKDOOR);
	ck_assert_mem_eq(&saved, &hb, sizeof(hb));
	for (uint64_t left = 6;; left--) {
		set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
		cpu.regs.rcx = left;
		cpu.regs.rip = left ? REP_RIP : REP_RIP + 2;
		ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
		ck_assert_uint_eq(call.hb_offset, 9 - left);
		if (!left)
			break;
	}
	ck_assert_uint_eq(call.hb_flags, VMWKVM_HB_LAST);
}
END_TEST

START_TEST(hb_malformed_pieces)
{
	cpu.regs.rax = MAGIC;
	/* word-sized string I/O on the HB port */
	start_out10();
	set_io(KVM_EXIT_IO_OUT, 2, 0x5659, 1);
	cpu.regs.rcx = 6;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_SIZE);
	ck_assert_uint_eq(hb.total, 0); /* transfer in progress dropped */
	set_io(KVM_EXIT_IO_IN, 4, 0x5659, 1);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_SIZE);
	/* IN with RCX not covering the piece: no REP INSB (plain IN AL,DX or INSB) */
	set_io(KVM_EXIT_IO_IN, 1, 0x5659, 1);
	cpu.regs.rcx = 0;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_STRING);
	set_io(KVM_EXIT_IO_IN, 1, 0x5659, 100);
	cpu.regs.rcx = 99;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_STRING);
	/* empty */
	set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 0);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_LENGTH);
	/* bad direction */
	set_io(9, 1, 0x5659, 1);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_DIRECTION);
}
END_TEST

START_TEST(hb_command_from_ebx)
{
	cpu.regs.rax = MAGIC;
	cpu.regs.rbx = 0xFFFF0001; /* VASSERT, odd status */
	cpu.regs.rcx = 0;
	set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.command, 1);
	ck_assert_uint_eq(call.subcommand, 0xFFFF);
	ck_assert_uint_eq(call.hb_flags, VMWKVM_HB_FIRST | VMWKVM_HB_LAST);
}
END_TEST

/* ------------------------------------------------------------------ hypercall */

static struct vmwkvm_proposed_vmware_exit *hcall(uint32_t exit_nr, uint32_t longmode, uint32_t cpl)
{
	struct vmwkvm_proposed_vmware_exit *x = vmwkvm_proposed_run_vmware(run);
	run->exit_reason = exit_nr;
	env.hypercall_exit = exit_nr;
	env.hypercall_dialect = VMWKVM_DIALECT_RUSIN_V2;
	x->type = VMWKVM_PROPOSED_VMWARE_EXIT_HCALL;
	x->hcall.longmode = longmode;
	x->hcall.cpl = cpl;
	x->hcall.rax = MAGIC;
	x->hcall.rbx = 0x11;
	x->hcall.rcx = 0xBEEF000A;
	x->hcall.rdx = 0;
	x->hcall.rsi = 0x22;
	x->hcall.rdi = 0x33;
	x->hcall.rbp = 0x44;
	return x;
}

START_TEST(hypercall_lb)
{
	cpu.mode = VMWKVM_MODE_PROT32;
	cpu.regs.rax = 1; /* the payload, not the register file, is authoritative */
	cpu.regs.rip = 0x5000;
	hcall(40, 0, 3);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.transport, VMWKVM_TRANSPORT_HYPERCALL);
	ck_assert_uint_eq(call.direction, VMWKVM_DIR_NONE);
	ck_assert_uint_eq(call.command, 10);
	ck_assert_uint_eq(call.subcommand, 0xBEEF);
	ck_assert_uint_eq(call.cpl, 3);
	ck_assert_uint_eq(call.mode, VMWKVM_MODE_PROT32);
	ck_assert_uint_eq(call.rax, MAGIC);
	ck_assert_uint_eq(call.rbx, 0x11);
	ck_assert_uint_eq(call.rsi, 0x22);
	ck_assert_uint_eq(call.rdi, 0x33);
	ck_assert_uint_eq(call.rbp, 0x44);
	ck_assert_uint_eq(call.rip, 0x5000);
	ck_assert_uint_eq(call.exit_reason, 40);
	ck_assert_uint_eq(call.hypercall_flags, 0);
	ck_assert_uint_eq(call.port, 0);
	/* long mode from the payload */
	cpu.mode = VMWKVM_MODE_LONG64;
	hcall(43, 1, 0);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.mode, VMWKVM_MODE_LONG64);
	ck_assert_uint_eq(call.cpl, 0);
	/* CS.L set but the payload says not long mode: compatibility mode */
	hcall(43, 0, 3);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.mode, VMWKVM_MODE_PROT32);
}
END_TEST

START_TEST(hypercall_hb_flags)
{
	struct vmwkvm_proposed_vmware_exit *x = hcall(40, 1, 3);
	x->hcall.rdx = 0x00070003; /* channel 7, HB write */
	x->hcall.rbx = 0x00010000;
	x->hcall.rcx = 26;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.hypercall_flags, VMWKVM_HCALL_FLAG_HB | VMWKVM_HCALL_FLAG_WRITE);
	ck_assert_uint_eq(call.direction, VMWKVM_DIR_OUT);
	ck_assert_uint_eq(call.command, 0);
	ck_assert_uint_eq(call.subcommand, 1);
	ck_assert_uint_eq(call.hb_total, 26);
	ck_assert_uint_eq(call.hb_count, 0);
	ck_assert_ptr_null(call.hb_data);
	x->hcall.rdx = 0x00070001; /* HB read */
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.direction, VMWKVM_DIR_IN);
	x->hcall.rdx = 0x00070002; /* WRITE without HB */
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_DIRECTION);
	x->hcall.rdx = 3;
	x->hcall.rcx = 65537;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_LENGTH);
	x->hcall.rcx = 0;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_LENGTH);
	x->hcall.rcx = 65536;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	/* outside long mode only ECX counts */
	x->hcall.longmode = 0;
	x->hcall.rcx = 0x100000010ull;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.hb_total, 16);
	/* hypercalls never touch the HB port state */
	ck_assert_uint_eq(hb.total, 0);
}
END_TEST

START_TEST(hypercall_invalid)
{
	struct vmwkvm_proposed_vmware_exit *x = hcall(40, 0, 0);
	x->hcall.rax = 0; /* KVM's rusin-v2 forwards every VMCALL, whatever RAX */
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_MAGIC);
	ck_assert_uint_eq(call.transport, VMWKVM_TRANSPORT_HYPERCALL);
	x = hcall(40, 0, 0);
	x->type = 2;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HYPERCALL);
	x->type = 0;
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HYPERCALL);
	x = hcall(40, 0, 4);
	ck_assert_int_eq(decode(), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HYPERCALL);
}
END_TEST

/* ------------------------------------------------------------------ names */

START_TEST(names)
{
	ck_assert_str_eq(vmwkvm_command_name(1), "GETMHZ");
	ck_assert_str_eq(vmwkvm_command_name(10), "GETVERSION");
	ck_assert_str_eq(vmwkvm_command_name(19), "GETUUID");
	ck_assert_str_eq(vmwkvm_command_name(30), "MESSAGE");
	ck_assert_str_eq(vmwkvm_command_name(45), "GETHZ");
	ck_assert_str_eq(vmwkvm_command_name(55), "GETTIMEFULL_WITH_LAG");
	ck_assert_str_eq(vmwkvm_command_name(68), "GET_VCPU_INFO");
	ck_assert_str_eq(vmwkvm_command_name(91), "STEALCLOCK");
	ck_assert_str_eq(vmwkvm_command_name(100), "GETBUILDNUM");
	ck_assert_str_eq(vmwkvm_command_name(104), "GET_FWTRCLOG_MASK");
	ck_assert_ptr_null(vmwkvm_command_name(0));
	ck_assert_ptr_null(vmwkvm_command_name(21)); /* retired */
	ck_assert_ptr_null(vmwkvm_command_name(105));
	ck_assert_ptr_null(vmwkvm_command_name(0xFFFF));
	ck_assert_ptr_null(vmwkvm_command_name(0x010A));
	for (uint32_t r = 0; r <= VMWKVM_INVALID_HB_ABANDONED; r++) {
		const char *n = vmwkvm_invalid_reason_name(r);
		ck_assert_ptr_nonnull(n);
		ck_assert_str_ne(n, "unknown");
	}
	ck_assert_str_eq(vmwkvm_invalid_reason_name(VMWKVM_INVALID_MAGIC), "bad magic");
	ck_assert_str_eq(vmwkvm_invalid_reason_name(10), "unknown");
	ck_assert_str_eq(vmwkvm_invalid_reason_name(0xFFFFFFFFu), "unknown");
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("exit_decode");
	TCase *lb = tcase_create("lb");
	tcase_add_checked_fixture(lb, setup, NULL);
	tcase_add_test(lb, lb_in_getversion_garbage_high_half);
	tcase_add_test(lb, lb_command_is_low16_not_low8);
	tcase_add_test(lb, lb_out_is_a_call);
	tcase_add_test(lb, lb_bad_magic);
	tcase_add_test(lb, lb_wrong_sizes);
	tcase_add_test(lb, lb_string_io);
	tcase_add_test(lb, lb_bad_direction);
	tcase_add_test(lb, io_data_out_of_bounds);
	tcase_add_test(lb, not_backdoor);
	tcase_add_test(lb, tdx_exit_40_is_not_ours_without_hypercalls);
	tcase_add_test(lb, bad_arguments);
	tcase_add_test(lb, origin_from_run_flags);
	tcase_add_test(lb, cpl_and_mode_copied_and_sanitised);
	suite_add_tcase(s, lb);

	TCase *h = tcase_create("hb");
	tcase_set_timeout(h, 60); /* 65536-piece transfers; the machine may be loaded */
	tcase_add_checked_fixture(h, setup, NULL);
	tcase_add_loop_test(h, hb_out_sizes, 0, sizeof(hb_sizes) / sizeof(hb_sizes[0]));
	tcase_add_loop_test(h, hb_in_sizes, 0, sizeof(hb_sizes) / sizeof(hb_sizes[0]));
	tcase_add_test(h, hb_in_piece_count_unaligned);
	tcase_add_test(h, hb_over_bound_out);
	tcase_add_test(h, hb_over_bound_in);
	tcase_add_test(h, hb_custom_bound);
	tcase_add_test(h, hb_address_size_masking);
	tcase_add_test(h, hb_sequence_direction_change);
	tcase_add_test(h, hb_sequence_rip_change);
	tcase_add_test(h, hb_sequence_count_jump);
	tcase_add_test(h, hb_magic_lost_mid_transfer);
	tcase_add_test(h, hb_bad_magic);
	tcase_add_test(h, hb_lb_calls_interleave);
	tcase_add_test(h, hb_malformed_pieces);
	tcase_add_test(h, hb_command_from_ebx);
	suite_add_tcase(s, h);

	TCase *hc = tcase_create("hypercall");
	tcase_add_checked_fixture(hc, setup, NULL);
	tcase_add_test(hc, hypercall_lb);
	tcase_add_test(hc, hypercall_hb_flags);
	tcase_add_test(hc, hypercall_invalid);
	tcase_add_test(hc, names);
	suite_add_tcase(s, hc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
