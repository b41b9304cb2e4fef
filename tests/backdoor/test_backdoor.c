/* Command dispatcher (vmwkvm_backdoor_handle) driven with synthetic decoded calls: built-in
 * answers register by register, unknown commands, CPL0-only refusal, origin filter, VMM
 * handlers, MESSAGE routing to the channel, options. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

#define MAGIC VMWKVM_BDOOR_MAGIC
#define R_EAX VMWKVM_REPLY_EAX
#define R_EBX VMWKVM_REPLY_EBX
#define R_ECX VMWKVM_REPLY_ECX
#define R_EDX VMWKVM_REPLY_EDX
#define R_ESI VMWKVM_REPLY_ESI
#define R_EDI VMWKVM_REPLY_EDI

static vmwkvm_backdoor *bd;
static struct vmwkvm_reply R;

/* log capture */
static int warns;
static char last_warn[512];

static void on_log(int level, const char *msg, void *ctx)
{
	(void)ctx;
	if (level == VMWKVM_LOG_WARN) {
		warns++;
		strncpy(last_warn, msg, sizeof(last_warn) - 1);
	}
}

static struct vmwkvm_call mkcall(uint16_t cmd, uint8_t origin, uint8_t cpl)
{
	struct vmwkvm_call c;
	memset(&c, 0, sizeof(c));
	c.transport = VMWKVM_TRANSPORT_LB;
	c.direction = VMWKVM_DIR_IN;
	c.command = cmd;
	c.subcommand = 0xFFFF; /* ovt's GETVERSION preload / garbage for plain commands */
	c.magic_ok = 1;
	c.cpl = cpl;
	c.mode = cpl ? VMWKVM_MODE_PROT32 : VMWKVM_MODE_LONG64;
	c.origin = origin;
	c.io_size = 4;
	c.port = VMWKVM_BDOOR_PORT;
	c.rax = MAGIC;
	c.rbx = ~MAGIC & 0xFFFFFFFFu;
	c.rcx = 0xFFFF0000u | cmd;
	c.rdx = VMWKVM_BDOOR_PORT;
	c.rsi = 0x51515151u;
	c.rdi = 0xD1D1D1D1u;
	c.rbp = 0xB0B0B0B0u;
	return c;
}

static int handle(struct vmwkvm_call *c)
{
	memset(&R, 0xCC, sizeof(R));
	return vmwkvm_backdoor_handle(bd, c, &R);
}

static int cmd(uint16_t command)
{
	struct vmwkvm_call c = mkcall(command, VMWKVM_ORIGIN_L1, 0);
	return handle(&c);
}

static void assert_failure(void)
{
	ck_assert_uint_eq(R.set, R_EAX);
	ck_assert_uint_eq(R.eax, 0xFFFFFFFFu);
}

static void mkbd(const struct vmwkvm_backdoor_opts *o)
{
	ck_assert_int_eq(vmwkvm_backdoor_new(o, &bd), 0);
}

static void setup(void)
{
	warns = 0;
	last_warn[0] = 0;
	vmwkvm_set_log(on_log, NULL, VMWKVM_LOG_WARN);
	mkbd(NULL);
}

static void teardown(void)
{
	vmwkvm_backdoor_free(bd);
	bd = NULL;
	vmwkvm_set_log(NULL, NULL, VMWKVM_LOG_ERROR);
}

/* ---- unknown commands ---- */

START_TEST(unknown_command_touches_only_eax)
{
	/* nothing enabled: even GETVERSION is unknown */
	ck_assert_int_eq(cmd(VMWKVM_BDOOR_CMD_GETVERSION), VMWKVM_BACKDOOR_UNSUPPORTED);
	assert_failure();
	/* kvm-unit-tests' illegal command 0xFFF: EBX keeps the preload */
	vmwkvm_backdoor_enable_all_builtins(bd);
	ck_assert_int_eq(cmd(0xFFF), VMWKVM_BACKDOOR_UNSUPPORTED);
	assert_failure();
	ck_assert_int_eq(cmd(0xFFFF), VMWKVM_BACKDOOR_UNSUPPORTED);
	assert_failure();
	ck_assert_int_eq(cmd(1), VMWKVM_BACKDOOR_UNSUPPORTED); /* GETMHZ: known name, no built-in */
	assert_failure();
	ck_assert_int_eq(warns, 0); /* unknown commands are not refusals */
}
END_TEST

START_TEST(invalid_or_no_magic_refused)
{
	vmwkvm_backdoor_enable_all_builtins(bd);
	struct vmwkvm_call c = mkcall(VMWKVM_BDOOR_CMD_GETVERSION, VMWKVM_ORIGIN_L1, 0);
	c.magic_ok = 0;
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_REFUSED);
	assert_failure();
	c = mkcall(VMWKVM_BDOOR_CMD_GETVERSION, VMWKVM_ORIGIN_L1, 0);
	c.invalid = VMWKVM_INVALID_SIZE;
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_REFUSED);
	assert_failure();
	c = mkcall(VMWKVM_BDOOR_CMD_GETVERSION, VMWKVM_ORIGIN_L1, 0);
	c.transport = VMWKVM_TRANSPORT_NONE;
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_REFUSED);
	assert_failure();
}
END_TEST

/* ---- built-ins ---- */

START_TEST(getversion_exact)
{
	ck_assert_int_eq(vmwkvm_backdoor_enable_builtin(bd, VMWKVM_BDOOR_CMD_GETVERSION), 0);
	ck_assert_int_eq(cmd(10), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.set, R_EAX | R_EBX | R_ECX);
	ck_assert_uint_eq(R.eax, 6);
	ck_assert_uint_eq(R.ebx, MAGIC);
	ck_assert_uint_eq(R.ecx, 2); /* ESX, QEMU's default */
	/* from CPL3 (the kvm-unit-tests case) too */
	struct vmwkvm_call c = mkcall(10, VMWKVM_ORIGIN_L1, 3);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.ebx, MAGIC);
	vmwkvm_backdoor_free(bd);
	/* product type 0 ("unset") is a real choice; version override */
	struct vmwkvm_backdoor_opts o = {.sz = sizeof(o), .product_type_set = 1, .product_type = 0, .version = 7};
	mkbd(&o);
	vmwkvm_backdoor_enable_builtin(bd, 10);
	ck_assert_int_eq(cmd(10), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.eax, 7);
	ck_assert_uint_eq(R.ecx, 0);
	vmwkvm_backdoor_free(bd);
	o = (struct vmwkvm_backdoor_opts){.sz = sizeof(o), .product_type_set = 1, .product_type = 4};
	mkbd(&o);
	vmwkvm_backdoor_enable_builtin(bd, 10);
	cmd(10);
	ck_assert_uint_eq(R.eax, 6);
	ck_assert_uint_eq(R.ecx, 4);
}
END_TEST

START_TEST(gethz)
{
	vmwkvm_backdoor_enable_builtin(bd, VMWKVM_BDOOR_CMD_GETHZ);
	/* unknown TSC: EBX = 0xFFFFFFFF means unsupported */
	ck_assert_int_eq(cmd(45), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.set, R_EAX | R_EBX);
	ck_assert_uint_eq(R.ebx, 0xFFFFFFFFu);
	ck_assert_uint_eq(R.eax, 0xFFFFFFFFu);
	vmwkvm_backdoor_free(bd);
	struct vmwkvm_backdoor_opts o = {.sz = sizeof(o), .tsc_hz = 0x123456789ull, .apic_hz = 1000000000u};
	mkbd(&o);
	vmwkvm_backdoor_enable_builtin(bd, 45);
	ck_assert_int_eq(cmd(45), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.set, R_EAX | R_EBX | R_ECX);
	ck_assert_uint_eq(R.eax, 0x23456789u);
	ck_assert_uint_eq(R.ebx, 1);
	ck_assert_uint_eq(R.ecx, 1000000000u);
	vmwkvm_backdoor_free(bd);
	o = (struct vmwkvm_backdoor_opts){.sz = sizeof(o), .tsc_hz = 2400000000ull};
	mkbd(&o);
	vmwkvm_backdoor_enable_builtin(bd, 45);
	cmd(45);
	ck_assert_uint_eq(R.eax, 2400000000u);
	ck_assert_uint_eq(R.ebx, 0);
	ck_assert_uint_eq(R.ecx, 0xFFFFFFFFu); /* APIC bus unknown */
}
END_TEST

static int test_clock(struct vmwkvm_bdoor_time *t, void *ctx)
{
	int *mode = ctx;
	if (*mode < 0)
		return -EIO;
	ck_assert_uint_eq(t->max_lag_us, 250000); /* pre-filled from the options */
	ck_assert_uint_eq(t->interrupt_lag_us, 0);
	t->sec = 0x123456789ull;
	t->usec = *mode ? 1654321 : 654321; /* mode 1: usec overflow is normalised */
	t->interrupt_lag_us = 777;
	return 0;
}

START_TEST(gettimefull_exact)
{
	static int mode;
	mode = 0;
	struct vmwkvm_backdoor_opts o = {.sz = sizeof(o), .clock = test_clock, .clock_ctx = &mode, .max_lag_us = 250000};
	vmwkvm_backdoor_free(bd);
	mkbd(&o);
	vmwkvm_backdoor_enable_builtin(bd, VMWKVM_BDOOR_CMD_GETTIMEFULL);
	vmwkvm_backdoor_enable_builtin(bd, VMWKVM_BDOOR_CMD_GETTIMEFULL_WITH_LAG);
	ck_assert_int_eq(cmd(46), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.set, R_EAX | R_EBX | R_ECX | R_EDX | R_ESI);
	ck_assert_uint_eq(R.eax, MAGIC); /* success = EAX keeps the magic */
	ck_assert_uint_eq(R.esi, 1);
	ck_assert_uint_eq(R.edx, 0x23456789u);
	ck_assert_uint_eq(R.ebx, 654321);
	ck_assert_uint_eq(R.ecx, 250000);
	ck_assert_int_eq(cmd(55), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.set, R_EAX | R_EBX | R_ECX | R_EDX | R_ESI | R_EDI);
	ck_assert_uint_eq(R.eax, MAGIC);
	ck_assert_uint_eq(R.edi, 777);
	mode = 1;
	cmd(55);
	ck_assert_uint_eq(R.edx, 0x2345678Au);
	ck_assert_uint_eq(R.ebx, 654321);
	/* clock failure: EAX != magic, nothing else */
	mode = -1;
	ck_assert_int_eq(cmd(46), VMWKVM_BACKDOOR_UNSUPPORTED);
	assert_failure();
}
END_TEST

START_TEST(gettimefull_real_clock)
{
	vmwkvm_backdoor_enable_builtin(bd, VMWKVM_BDOOR_CMD_GETTIMEFULL);
	ck_assert_int_eq(cmd(46), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.eax, MAGIC);
	uint64_t sec = (uint64_t)R.esi << 32 | R.edx;
	ck_assert_uint_gt(sec, 1600000000ull); /* after 2020 */
	ck_assert_uint_lt(R.ebx, 1000000);
	ck_assert_uint_eq(R.ecx, VMWKVM_BDOOR_DEFAULT_MAX_LAG_US);
}
END_TEST

START_TEST(getmemsize_qemu_semantics)
{
	vmwkvm_backdoor_enable_builtin(bd, VMWKVM_BDOOR_CMD_GETMEMSIZE);
	ck_assert_int_eq(cmd(20), VMWKVM_BACKDOOR_UNSUPPORTED); /* size unknown */
	assert_failure();
	vmwkvm_backdoor_free(bd);
	struct vmwkvm_backdoor_opts o = {.sz = sizeof(o), .ram_bytes = (4ull << 30) + (512ull << 20)};
	mkbd(&o);
	vmwkvm_backdoor_enable_builtin(bd, 20);
	ck_assert_int_eq(cmd(20), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.set, R_EAX | R_EBX);
	ck_assert_uint_eq(R.eax, 0x20000000u); /* bytes, truncated to 32 bits */
	ck_assert_uint_eq(R.ebx, 0x1177);
}
END_TEST

START_TEST(getuuid_le_dwords)
{
	vmwkvm_backdoor_enable_builtin(bd, VMWKVM_BDOOR_CMD_GETUUID);
	ck_assert_int_eq(cmd(19), VMWKVM_BACKDOOR_UNSUPPORTED);
	assert_failure();
	vmwkvm_backdoor_free(bd);
	struct vmwkvm_backdoor_opts o = {.sz = sizeof(o), .uuid_set = 1};
	for (int i = 0; i < 16; i++)
		o.uuid[i] = (uint8_t)(0xA0 + i);
	mkbd(&o);
	vmwkvm_backdoor_enable_builtin(bd, 19);
	ck_assert_int_eq(cmd(19), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.set, R_EAX | R_EBX | R_ECX | R_EDX);
	ck_assert_uint_eq(R.eax, 0xA3A2A1A0u);
	ck_assert_uint_eq(R.ebx, 0xA7A6A5A4u);
	ck_assert_uint_eq(R.ecx, 0xABAAA9A8u);
	ck_assert_uint_eq(R.edx, 0xAFAEADACu);
}
END_TEST

START_TEST(get_vcpu_info_bits)
{
	vmwkvm_backdoor_enable_builtin(bd, VMWKVM_BDOOR_CMD_GET_VCPU_INFO);
	ck_assert_int_eq(cmd(68), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.set, R_EAX);
	ck_assert_uint_eq(R.eax, 0);
	vmwkvm_backdoor_free(bd);
	struct vmwkvm_backdoor_opts o = {.sz = sizeof(o),
					 .vcpu_info = VMWKVM_VCPU_INFO_LEGACY_X2APIC_OK | VMWKVM_VCPU_INFO_RESERVED};
	mkbd(&o);
	vmwkvm_backdoor_enable_builtin(bd, 68);
	cmd(68);
	ck_assert_uint_eq(R.eax, 8); /* bit 31 ("not implemented") never set by the built-in */
	/* without the built-in: the protocol's failure answer */
	vmwkvm_backdoor_set_handler(bd, 68, NULL, NULL);
	ck_assert_int_eq(cmd(68), VMWKVM_BACKDOOR_UNSUPPORTED);
	assert_failure();
}
END_TEST

START_TEST(enable_builtin_rules)
{
	ck_assert_int_eq(vmwkvm_backdoor_enable_builtin(bd, 1), -ENOENT);
	ck_assert_int_eq(vmwkvm_backdoor_enable_builtin(bd, 0xFFFF), -ENOENT);
	ck_assert_int_eq(vmwkvm_backdoor_enable_builtin(NULL, 10), -EINVAL);
	ck_assert_int_eq(vmwkvm_backdoor_enable_all_builtins(NULL), -EINVAL);
	static const uint16_t all[] = {10, 19, 20, 30, 45, 46, 55, 68};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		ck_assert_int_eq(vmwkvm_backdoor_enable_builtin(bd, all[i]), 0);
}
END_TEST

/* ---- VMM handlers ---- */

static atomic_int h_calls;
static int h_answer(const struct vmwkvm_call *call, struct vmwkvm_reply *r, void *ctx)
{
	h_calls++;
	ck_assert_uint_eq(r->set, 0); /* handed over zero-filled */
	r->set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EDI;
	r->eax = (uint32_t)(uintptr_t)ctx;
	r->edi = call->command;
	return 0;
}

static int h_fail(const struct vmwkvm_call *call, struct vmwkvm_reply *r, void *ctx)
{
	(void)call;
	(void)ctx;
	h_calls++;
	r->set = VMWKVM_REPLY_EBX; /* ignored: the handler fails */
	r->ebx = 1;
	return -ENOTSUP;
}

START_TEST(vmm_handlers_and_default)
{
	h_calls = 0;
	vmwkvm_backdoor_enable_all_builtins(bd);
	/* a VMM handler replaces the built-in */
	ck_assert_int_eq(vmwkvm_backdoor_set_handler(bd, 10, h_answer, (void *)(uintptr_t)0x1234), 0);
	ck_assert_int_eq(cmd(10), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.set, R_EAX | R_EDI);
	ck_assert_uint_eq(R.eax, 0x1234);
	ck_assert_uint_eq(R.edi, 10);
	/* removing it leaves the command unhandled (the built-in is not restored) */
	vmwkvm_backdoor_set_handler(bd, 10, NULL, NULL);
	ck_assert_int_eq(cmd(10), VMWKVM_BACKDOOR_UNSUPPORTED);
	vmwkvm_backdoor_enable_builtin(bd, 10);
	cmd(10);
	ck_assert_uint_eq(R.eax, 6);
	/* commands above 255 */
	ck_assert_int_eq(vmwkvm_backdoor_set_handler(bd, 0x1234, h_answer, (void *)(uintptr_t)7), 0);
	ck_assert_int_eq(vmwkvm_backdoor_set_handler(bd, 0xFFFF, h_answer, (void *)(uintptr_t)8), 0);
	for (uint16_t c = 300; c < 320; c++)
		vmwkvm_backdoor_set_handler(bd, c, h_answer, (void *)(uintptr_t)c);
	ck_assert_int_eq(cmd(0x1234), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.eax, 7);
	ck_assert_int_eq(cmd(0xFFFF), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.eax, 8);
	cmd(311);
	ck_assert_uint_eq(R.eax, 311);
	vmwkvm_backdoor_set_handler(bd, 0x1234, NULL, NULL);
	ck_assert_int_eq(cmd(0x1234), VMWKVM_BACKDOOR_UNSUPPORTED);
	cmd(319);
	ck_assert_uint_eq(R.eax, 319);
	/* default handler for everything without a handler */
	ck_assert_int_eq(vmwkvm_backdoor_set_default(bd, h_answer, (void *)(uintptr_t)99), 0);
	ck_assert_int_eq(cmd(0x1234), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.eax, 99);
	cmd(10);
	ck_assert_uint_eq(R.eax, 6); /* built-ins still first */
	vmwkvm_backdoor_set_default(bd, NULL, NULL);
	ck_assert_int_eq(cmd(0x1234), VMWKVM_BACKDOOR_UNSUPPORTED);
	/* a failing handler gives the failure answer, whatever it wrote */
	vmwkvm_backdoor_set_handler(bd, 100, h_fail, NULL);
	ck_assert_int_eq(cmd(100), VMWKVM_BACKDOOR_UNSUPPORTED);
	assert_failure();
	ck_assert_int_eq(vmwkvm_backdoor_set_handler(NULL, 1, h_fail, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_backdoor_set_default(NULL, h_fail, NULL), -EINVAL);
}
END_TEST

/* ---- CPL0-only ---- */

START_TEST(cpl0_only_refused_from_user)
{
	static const uint16_t cpl0[] = {2, 18, 28, 37, 48, 49, 50, 54, 62, 64, 65, 69, 70, 71,
					73, 74, 75, 76, 77, 78, 79, 80, 85, 91, 92, 93, 103};
	int n = 0;
	for (unsigned c = 0; c < 0x10000; c++)
		n += vmwkvm_backdoor_cpl0_only((uint16_t)c);
	ck_assert_int_eq(n, (int)(sizeof(cpl0) / sizeof(cpl0[0])));
	for (size_t i = 0; i < sizeof(cpl0) / sizeof(cpl0[0]); i++)
		ck_assert(vmwkvm_backdoor_cpl0_only(cpl0[i]));
	h_calls = 0;
	vmwkvm_backdoor_set_handler(bd, VMWKVM_BDOOR_CMD_STEALCLOCK, h_answer, (void *)(uintptr_t)1);
	vmwkvm_backdoor_set_handler(bd, VMWKVM_BDOOR_CMD_MKS_GUEST_STATS, h_answer, (void *)(uintptr_t)1);
	for (uint8_t cpl = 1; cpl <= 3; cpl++) {
		struct vmwkvm_call c = mkcall(VMWKVM_BDOOR_CMD_STEALCLOCK, VMWKVM_ORIGIN_L1, cpl);
		ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_REFUSED);
		assert_failure();
	}
	struct vmwkvm_call c = mkcall(VMWKVM_BDOOR_CMD_MKS_GUEST_STATS, VMWKVM_ORIGIN_L2, 3);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_REFUSED);
	ck_assert_int_eq(h_calls, 0);
	ck_assert_int_eq(warns, 4);
	ck_assert_ptr_nonnull(strstr(last_warn, "CPL0-only"));
	/* the default handler cannot bypass it either */
	vmwkvm_backdoor_set_default(bd, h_answer, NULL);
	c = mkcall(2, VMWKVM_ORIGIN_UNKNOWN, 3);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_REFUSED);
	ck_assert_int_eq(h_calls, 0);
	/* CPL0 reaches the handler */
	c = mkcall(VMWKVM_BDOOR_CMD_STEALCLOCK, VMWKVM_ORIGIN_L1, 0);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_int_eq(h_calls, 1);
}
END_TEST

/* ---- origin filter ---- */

START_TEST(origin_classes)
{
	ck_assert_uint_eq(vmwkvm_backdoor_from(VMWKVM_ORIGIN_L1, 0), VMWKVM_BDOOR_FROM_L1_CPL0);
	ck_assert_uint_eq(vmwkvm_backdoor_from(VMWKVM_ORIGIN_L1, 3), VMWKVM_BDOOR_FROM_L1_USER);
	ck_assert_uint_eq(vmwkvm_backdoor_from(VMWKVM_ORIGIN_L1, 1), VMWKVM_BDOOR_FROM_L1_USER);
	ck_assert_uint_eq(vmwkvm_backdoor_from(VMWKVM_ORIGIN_L2, 0), VMWKVM_BDOOR_FROM_L2_CPL0);
	ck_assert_uint_eq(vmwkvm_backdoor_from(VMWKVM_ORIGIN_L2, 3), VMWKVM_BDOOR_FROM_L2_USER);
	ck_assert_uint_eq(vmwkvm_backdoor_from(VMWKVM_ORIGIN_UNKNOWN, 0), VMWKVM_BDOOR_FROM_UNKNOWN_CPL0);
	ck_assert_uint_eq(vmwkvm_backdoor_from(VMWKVM_ORIGIN_UNKNOWN, 2), VMWKVM_BDOOR_FROM_UNKNOWN_USER);
	ck_assert_uint_eq(vmwkvm_backdoor_from(77, 0), VMWKVM_BDOOR_FROM_UNKNOWN_CPL0);
}
END_TEST

static struct vmwkvm_call hb_piece(uint8_t origin, uint8_t cpl, uint8_t flags)
{
	struct vmwkvm_call c = mkcall(0, origin, cpl);
	c.transport = VMWKVM_TRANSPORT_HB;
	c.direction = VMWKVM_DIR_OUT;
	c.command = 0;
	c.subcommand = 1;
	c.io_size = 1;
	c.port = VMWKVM_BDOORHB_PORT;
	c.rbx = 0x00010000u;
	c.rdx = VMWKVM_BDOORHB_PORT;
	c.hb_total = 4;
	c.hb_count = 2;
	c.hb_offset = (flags & VMWKVM_HB_FIRST) ? 0 : 2;
	c.hb_flags = flags;
	static uint8_t data[4] = {'a', 'b', 'c', 'd'};
	c.hb_data = data + c.hb_offset;
	return c;
}

START_TEST(origin_filter_l2_user)
{
	vmwkvm_rpc *rpc;
	ck_assert_int_eq(vmwkvm_rpc_new(NULL, &rpc), 0);
	vmwkvm_backdoor_enable_all_builtins(bd);
	vmwkvm_backdoor_set_rpc(bd, rpc);
	/* only GETVERSION and the message channel from L2 CPL3 */
	static const uint16_t allow[] = {VMWKVM_BDOOR_CMD_GETVERSION, VMWKVM_BDOOR_CMD_MESSAGE};
	ck_assert_int_eq(vmwkvm_backdoor_filter_allow_only(bd, VMWKVM_BDOOR_FROM_L2_USER, allow, 2), 0);
	struct vmwkvm_call c = mkcall(VMWKVM_BDOOR_CMD_GETHZ, VMWKVM_ORIGIN_L2, 3);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_REFUSED);
	assert_failure();
	ck_assert_int_eq(warns, 1);
	ck_assert_ptr_nonnull(strstr(last_warn, "origin filter"));
	ck_assert_ptr_nonnull(strstr(last_warn, "GETHZ"));
	ck_assert_ptr_nonnull(strstr(last_warn, "L2 user"));
	/* unknown commands from L2 user are refusals too (not "unsupported") */
	c = mkcall(0x4321, VMWKVM_ORIGIN_L2, 3);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_REFUSED);
	/* the other classes are untouched */
	c = mkcall(VMWKVM_BDOOR_CMD_GETHZ, VMWKVM_ORIGIN_L2, 0);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_ANSWERED);
	c = mkcall(VMWKVM_BDOOR_CMD_GETHZ, VMWKVM_ORIGIN_L1, 3);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_ANSWERED);
	c = mkcall(VMWKVM_BDOOR_CMD_GETHZ, VMWKVM_ORIGIN_UNKNOWN, 3);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_ANSWERED);
	/* allowed ones get through from L2 user */
	c = mkcall(VMWKVM_BDOOR_CMD_GETVERSION, VMWKVM_ORIGIN_L2, 3);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.ebx, MAGIC);
	c = mkcall(VMWKVM_BDOOR_CMD_MESSAGE, VMWKVM_ORIGIN_L2, 3);
	c.subcommand = VMWKVM_RPC_OPEN;
	c.rbx = VMWKVM_RPC_PROTO_RPCI;
	c.rcx = 0x1E;
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.ecx, 0x00010000u);
	/* HB pieces count as MESSAGE: the channel answers them (status 0 here: no SENDSIZE) */
	c = hb_piece(VMWKVM_ORIGIN_L2, 3, VMWKVM_HB_FIRST);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.set, 0);
	c = hb_piece(VMWKVM_ORIGIN_L2, 3, VMWKVM_HB_LAST);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.set, R_EBX);
	/* refusing MESSAGE refuses HB pieces: status 0 in EBX at the last piece, nothing else */
	ck_assert_int_eq(vmwkvm_backdoor_filter_set(bd, VMWKVM_BDOOR_FROM_L2_USER, VMWKVM_BDOOR_CMD_MESSAGE, false), 0);
	c = hb_piece(VMWKVM_ORIGIN_L2, 3, VMWKVM_HB_FIRST);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_REFUSED);
	ck_assert_uint_eq(R.set, 0);
	c = hb_piece(VMWKVM_ORIGIN_L2, 3, VMWKVM_HB_LAST);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_REFUSED);
	ck_assert_uint_eq(R.set, R_EBX);
	ck_assert_uint_eq(R.ebx, 0);
	c = hb_piece(VMWKVM_ORIGIN_L2, 3, VMWKVM_HB_FIRST | VMWKVM_HB_LAST);
	c.direction = VMWKVM_DIR_IN;
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_REFUSED);
	ck_assert_ptr_null(R.hb_data); /* REP INSB reads zeroes */
	/* queries */
	ck_assert_int_eq(vmwkvm_backdoor_filter_allowed(bd, VMWKVM_BDOOR_FROM_L2_USER, 10), 1);
	ck_assert_int_eq(vmwkvm_backdoor_filter_allowed(bd, VMWKVM_BDOOR_FROM_L2_USER, 30), 0);
	ck_assert_int_eq(vmwkvm_backdoor_filter_allowed(bd, VMWKVM_BDOOR_FROM_L2_USER, 45), 0);
	ck_assert_int_eq(vmwkvm_backdoor_filter_allowed(bd, VMWKVM_BDOOR_FROM_L2_CPL0, 45), 1);
	ck_assert_int_eq(vmwkvm_backdoor_filter_allowed(bd, VMWKVM_BDOOR_FROM_L2, 45), -EINVAL);
	ck_assert_int_eq(vmwkvm_backdoor_filter_allowed(bd, 0, 45), -EINVAL);
	ck_assert_int_eq(vmwkvm_backdoor_filter_allowed(bd, 0x40, 45), -EINVAL);
	/* allow again */
	vmwkvm_backdoor_filter_set(bd, VMWKVM_BDOOR_FROM_L2, VMWKVM_BDOOR_CMD_GETHZ, true);
	c = mkcall(VMWKVM_BDOOR_CMD_GETHZ, VMWKVM_ORIGIN_L2, 3);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_int_eq(vmwkvm_backdoor_filter_set(bd, 0x80, 10, false), -EINVAL);
	ck_assert_int_eq(vmwkvm_backdoor_filter_allow_only(bd, 0x80, allow, 2), -EINVAL);
	ck_assert_int_eq(vmwkvm_backdoor_filter_allow_only(bd, VMWKVM_BDOOR_FROM_L1, NULL, 1), -EINVAL);
	/* refuse everything from unknown-level user code */
	ck_assert_int_eq(vmwkvm_backdoor_filter_allow_only(bd, VMWKVM_BDOOR_FROM_UNKNOWN_USER, NULL, 0), 0);
	c = mkcall(VMWKVM_BDOOR_CMD_GETVERSION, VMWKVM_ORIGIN_UNKNOWN, 3);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_REFUSED);
	vmwkvm_backdoor_free(bd);
	bd = NULL;
	ck_assert_int_eq(vmwkvm_rpc_reset(rpc), 1);
	vmwkvm_rpc_free(rpc);
	mkbd(NULL);
}
END_TEST

/* A refused or unsupported MESSAGE must not leave the guest's own ECX in place: its high
 * half is the sub-command, and SENDSIZE (1) / RECVSIZE (3) would read as SUCCESS(|DORECV). */
START_TEST(refused_message_answers_status_zero)
{
	static const uint16_t allow[] = {VMWKVM_BDOOR_CMD_GETVERSION};
	ck_assert_int_eq(vmwkvm_backdoor_filter_allow_only(bd, VMWKVM_BDOOR_FROM_L2_USER, allow, 1), 0);
	for (uint16_t sub = 0; sub <= 6; sub++) {
		struct vmwkvm_call c = mkcall(VMWKVM_BDOOR_CMD_MESSAGE, VMWKVM_ORIGIN_L2, 3);
		c.subcommand = sub;
		c.rcx = ((uint32_t)sub << 16) | VMWKVM_BDOOR_CMD_MESSAGE;
		ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_REFUSED);
		ck_assert_uint_eq(R.set, R_EAX | R_ECX);
		ck_assert_uint_eq(R.eax, 0xFFFFFFFFu);
		ck_assert_uint_eq(R.ecx, 0);
		/* no channel attached: unsupported, same answer */
		c.origin = VMWKVM_ORIGIN_L1;
		ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_UNSUPPORTED);
		ck_assert_uint_eq(R.set, R_EAX | R_ECX);
		ck_assert_uint_eq(R.ecx, 0);
	}
	/* other commands keep the plain failure answer */
	struct vmwkvm_call c = mkcall(0x4321, VMWKVM_ORIGIN_L1, 0);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_UNSUPPORTED);
	ck_assert_uint_eq(R.set, R_EAX);
}
END_TEST

START_TEST(refusal_log_rate_limited)
{
	vmwkvm_backdoor_filter_set(bd, VMWKVM_BDOOR_FROM_ALL, 10, false);
	for (int i = 0; i < 2048; i++) {
		ck_assert_int_eq(cmd(10), VMWKVM_BACKDOOR_REFUSED);
		assert_failure();
	}
	/* the first 16, then every 1024th */
	ck_assert_int_eq(warns, 16 + 2);
	ck_assert_ptr_nonnull(strstr(last_warn, "2048 refusals"));
}
END_TEST

/* ---- MESSAGE routing ---- */

START_TEST(message_routed_to_rpc)
{
	vmwkvm_backdoor_enable_builtin(bd, VMWKVM_BDOOR_CMD_MESSAGE);
	struct vmwkvm_call c = mkcall(VMWKVM_BDOOR_CMD_MESSAGE, VMWKVM_ORIGIN_L1, 3);
	c.subcommand = VMWKVM_RPC_OPEN;
	c.rbx = VMWKVM_RPC_PROTO_RPCI | VMWKVM_RPC_FLAG_COOKIE;
	c.rcx = 0x1E;
	/* no channel attached: failure answer, with MESSAGE's status 0 in ECX */
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_UNSUPPORTED);
	ck_assert_uint_eq(R.set, R_EAX | R_ECX);
	ck_assert_uint_eq(R.eax, 0xFFFFFFFFu);
	ck_assert_uint_eq(R.ecx, 0);
	vmwkvm_rpc *rpc;
	ck_assert_int_eq(vmwkvm_rpc_new(NULL, &rpc), 0);
	ck_assert_int_eq(vmwkvm_backdoor_set_rpc(bd, rpc), 0);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.set, R_ECX | R_EDX | R_ESI | R_EDI);
	ck_assert_uint_eq(R.ecx, 0x00010000u);
	uint32_t hi = R.esi, lo = R.edi;
	/* SENDSIZE 0 -> "0 Unknown command" waits; RECVSIZE through the dispatcher */
	c.subcommand = VMWKVM_RPC_SENDSIZE;
	c.rbx = 0;
	c.rsi = hi;
	c.rdi = lo;
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.ecx, 0x00810000u);
	c.subcommand = VMWKVM_RPC_RECVSIZE;
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.ecx, 0x00830000u);
	ck_assert_uint_eq(R.ebx, 17);
	/* a protocol failure is still an answer of the channel (ECX = 0), not EAX = -1 */
	c.rdi = lo ^ 1;
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.set, R_ECX);
	ck_assert_uint_eq(R.ecx, 0);
	/* HB by hypercall (EDX flags HB|WRITE) is refused by the channel: EBX status 0 */
	struct vmwkvm_call h = mkcall(0, VMWKVM_ORIGIN_L1, 3);
	h.transport = VMWKVM_TRANSPORT_HYPERCALL;
	h.rbx = 0x00010000u;
	h.rdx = 0x0003u;
	ck_assert_int_eq(handle(&h), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.set, R_EBX);
	ck_assert_uint_eq(R.ebx, 0);
	/* detached again */
	vmwkvm_backdoor_set_rpc(bd, NULL);
	ck_assert_int_eq(handle(&c), VMWKVM_BACKDOOR_UNSUPPORTED);
	vmwkvm_rpc_free(rpc);
}
END_TEST

/* ---- names, options, API errors ---- */

START_TEST(command_from_name)
{
	ck_assert_int_eq(vmwkvm_backdoor_command_from_name("GETVERSION"), 10);
	ck_assert_int_eq(vmwkvm_backdoor_command_from_name("getversion"), 10);
	ck_assert_int_eq(vmwkvm_backdoor_command_from_name("MESSAGE"), 30);
	ck_assert_int_eq(vmwkvm_backdoor_command_from_name("GET_VCPU_INFO"), 68);
	ck_assert_int_eq(vmwkvm_backdoor_command_from_name("GET_FWTRCLOG_MASK"), 104);
	ck_assert_int_eq(vmwkvm_backdoor_command_from_name("30"), 30);
	ck_assert_int_eq(vmwkvm_backdoor_command_from_name("0x1e"), 30);
	ck_assert_int_eq(vmwkvm_backdoor_command_from_name("65535"), 65535);
	ck_assert_int_eq(vmwkvm_backdoor_command_from_name("65536"), -ENOENT);
	ck_assert_int_eq(vmwkvm_backdoor_command_from_name("12abc"), -ENOENT);
	ck_assert_int_eq(vmwkvm_backdoor_command_from_name("NOSUCH"), -ENOENT);
	ck_assert_int_eq(vmwkvm_backdoor_command_from_name(""), -ENOENT);
	ck_assert_int_eq(vmwkvm_backdoor_command_from_name(NULL), -EINVAL);
}
END_TEST

START_TEST(options_and_errors)
{
	vmwkvm_backdoor *x;
	struct vmwkvm_backdoor_opts o = {.sz = sizeof(o)};
	o.reserved[0] = 1;
	ck_assert_int_eq(vmwkvm_backdoor_new(&o, &x), -EINVAL);
	o = (struct vmwkvm_backdoor_opts){.sz = sizeof(o)};
	o.pad0[1] = 1;
	ck_assert_int_eq(vmwkvm_backdoor_new(&o, &x), -EINVAL);
	o = (struct vmwkvm_backdoor_opts){.sz = 2};
	ck_assert_int_eq(vmwkvm_backdoor_new(&o, &x), -EINVAL);
	ck_assert_int_eq(vmwkvm_backdoor_new(NULL, NULL), -EINVAL);
	/* a longer struct from a newer caller: unknown tail must be zero */
	struct {
		struct vmwkvm_backdoor_opts o;
		uint64_t extra;
	} big = {.o = {.sz = sizeof(big)}, .extra = 0};
	ck_assert_int_eq(vmwkvm_backdoor_new(&big.o, &x), 0);
	vmwkvm_backdoor_free(x);
	big.extra = 1;
	ck_assert_int_eq(vmwkvm_backdoor_new(&big.o, &x), -EINVAL);
	/* a shorter struct from an older caller: only what it has is read */
	struct vmwkvm_backdoor_opts shortopts = {.sz = offsetof(struct vmwkvm_backdoor_opts, uuid_set),
						 .version = 9};
	ck_assert_int_eq(vmwkvm_backdoor_new(&shortopts, &x), 0);
	vmwkvm_backdoor_enable_builtin(x, 10);
	struct vmwkvm_call c = mkcall(10, VMWKVM_ORIGIN_L1, 0);
	struct vmwkvm_reply r;
	ck_assert_int_eq(vmwkvm_backdoor_handle(x, &c, &r), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(r.eax, 9);
	vmwkvm_backdoor_free(x);
	/* NULL arguments */
	ck_assert_int_eq(vmwkvm_backdoor_handle(NULL, &c, &r), -EINVAL);
	ck_assert_uint_eq(r.set, R_EAX);
	ck_assert_uint_eq(r.eax, 0xFFFFFFFFu);
	ck_assert_int_eq(vmwkvm_backdoor_handle(bd, NULL, &r), -EINVAL);
	ck_assert_int_eq(vmwkvm_backdoor_handle(bd, &c, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_backdoor_handle_exit(NULL, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_backdoor_handle_exit(bd, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_backdoor_set_rpc(NULL, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_backdoor_filter_set(NULL, 1, 1, true), -EINVAL);
	ck_assert_int_eq(vmwkvm_backdoor_filter_allowed(NULL, 1, 1), -EINVAL);
	vmwkvm_backdoor_free(NULL);
}
END_TEST

/* ---- concurrency: vCPU threads dispatch while the VMM reconfigures ---- */

static atomic_int stop_flag;

static void *dispatch_worker(void *arg)
{
	(void)arg;
	long bad = 0, n = 0;
	while (!atomic_load(&stop_flag) || n < 1000) {
		struct vmwkvm_call c = mkcall(n % 2 ? 10 : 300, n % 3 ? VMWKVM_ORIGIN_L2 : VMWKVM_ORIGIN_L1, 3);
		struct vmwkvm_reply r;
		int res = vmwkvm_backdoor_handle(bd, &c, &r);
		if (res == VMWKVM_BACKDOOR_ANSWERED) {
			if (c.command == 10 && !(r.eax == 6 && r.ebx == MAGIC && r.set == (R_EAX | R_EBX | R_ECX)))
				bad++;
			if (c.command == 300 && !(r.set == (R_EAX | R_EDI) && r.eax == 300))
				bad++;
		} else if (res == VMWKVM_BACKDOOR_UNSUPPORTED || res == VMWKVM_BACKDOOR_REFUSED) {
			if (r.set != R_EAX || r.eax != 0xFFFFFFFFu)
				bad++;
		} else {
			bad++;
		}
		n++;
	}
	return (void *)bad;
}

START_TEST(dispatch_while_reconfiguring)
{
	vmwkvm_set_log(NULL, NULL, VMWKVM_LOG_ERROR);
	vmwkvm_backdoor_enable_builtin(bd, 10);
	atomic_store(&stop_flag, 0);
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, dispatch_worker, NULL), 0);
	static const uint16_t only[] = {10};
	for (int i = 0; i < 300; i++) {
		vmwkvm_backdoor_set_handler(bd, 300, i % 2 ? h_answer : NULL, (void *)(uintptr_t)300);
		vmwkvm_backdoor_filter_set(bd, VMWKVM_BDOOR_FROM_L2_USER, 10, i % 3 != 0);
		if (i % 50 == 0)
			vmwkvm_backdoor_filter_allow_only(bd, VMWKVM_BDOOR_FROM_L2_USER, only, 1);
		vmwkvm_backdoor_set_default(bd, i % 5 ? NULL : h_fail, NULL);
	}
	atomic_store(&stop_flag, 1);
	for (int i = 0; i < 4; i++) {
		void *ret;
		pthread_join(t[i], &ret);
		ck_assert_ptr_null(ret);
	}
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("backdoor");
	TCase *b = tcase_create("builtins");
	tcase_add_checked_fixture(b, setup, teardown);
	tcase_add_test(b, unknown_command_touches_only_eax);
	tcase_add_test(b, invalid_or_no_magic_refused);
	tcase_add_test(b, getversion_exact);
	tcase_add_test(b, gethz);
	tcase_add_test(b, gettimefull_exact);
	tcase_add_test(b, gettimefull_real_clock);
	tcase_add_test(b, getmemsize_qemu_semantics);
	tcase_add_test(b, getuuid_le_dwords);
	tcase_add_test(b, get_vcpu_info_bits);
	tcase_add_test(b, enable_builtin_rules);
	suite_add_tcase(s, b);

	TCase *h = tcase_create("handlers");
	tcase_add_checked_fixture(h, setup, teardown);
	tcase_add_test(h, vmm_handlers_and_default);
	tcase_add_test(h, message_routed_to_rpc);
	tcase_add_test(h, command_from_name);
	tcase_add_test(h, options_and_errors);
	suite_add_tcase(s, h);

	TCase *f = tcase_create("filter");
	tcase_add_checked_fixture(f, setup, teardown);
	tcase_add_test(f, cpl0_only_refused_from_user);
	tcase_add_test(f, origin_classes);
	tcase_add_test(f, origin_filter_l2_user);
	tcase_add_test(f, refused_message_answers_status_zero);
	tcase_add_test(f, refusal_log_rate_limited);
	tcase_add_test(f, dispatch_while_reconfiguring);
	suite_add_tcase(s, f);
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
