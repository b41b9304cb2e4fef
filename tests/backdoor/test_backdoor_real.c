/* Real KVM, 16-bit real mode (guest tests/common/guests/bd_real.S): LB IN and OUT
 * (GETVERSION with garbage in ECX bits 31:16, all six result registers, unknown command,
 * 0x010A vs low-8 dispatch, bad magic, wrong size) and HB REP OUTSB / REP INSB of 1, 4,
 * 4095, 4096 and 4097 bytes with garbage in ECX bits 31:16 (16-bit address size: only CX
 * counts), handled through vmwkvm_exit_decode/complete in sync-regs and ioctl mode.
 * The guest checks every register it gets back and reports on port 0xF4/0xF5; the host
 * checks the recorded calls (CPL 0, real mode, origin), the stored results, the bytes on
 * both sides and the ioctls the library made. Exits 77 only when /dev/kvm is absent. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "kvm_guest.h"

static const uint32_t sizes[] = { 0, 1, 4, 4095, 4096, 4097 };

static void check_lb_records(const struct bd_server *s, unsigned base, uint8_t cpl, uint8_t mode, uint8_t origin)
{
	for (unsigned i = 0; i < BD_LB_CALLS_PER_PASS; i++) {
		const struct bd_rec *r = &s->recs[base + i];
		ck_assert_msg(r->command == bd_lb_pass[i].command, "call %u: command 0x%x", base + i, r->command);
		ck_assert_uint_eq(r->transport, VMWKVM_TRANSPORT_LB);
		ck_assert_uint_eq(r->direction, bd_lb_pass[i].direction);
		ck_assert_uint_eq(r->invalid, bd_lb_pass[i].invalid);
		ck_assert_uint_eq(r->cpl, cpl);
		ck_assert_uint_eq(r->mode, mode);
		ck_assert_uint_eq(r->origin, origin);
	}
}

static void run_real(uint32_t size, int regs_mode)
{
	struct bd_vm b;
	ck_assert_int_eq(bd_vm_up(&b, "bd_real", false, regs_mode), 0);
	uint8_t *src = kvmh_gpa(&b.h, BD_REAL_OUT_GPA, size + 1);
	uint8_t *dst = kvmh_gpa(&b.h, BD_REAL_IN_GPA, size + 1);
	ck_assert_ptr_nonnull(src);
	ck_assert_ptr_nonnull(dst);
	uint8_t *in_src = malloc(size + 1);
	ck_assert_ptr_nonnull(in_src);
	for (uint32_t i = 0; i < size; i++) {
		src[i] = bd_pattern(i, 1);
		in_src[i] = bd_pattern(i, 2);
	}
	memset(dst, 0xEE, size + 1);
	bd_set_params(&b, size, in_src, size);
	struct bd_server s;
	ck_assert_int_eq(bd_server_init(&s, &b, in_src, size), 0);

	struct bd_ioctl_counts n;
	int r = bd_serve_counted(&b, &s, 200000, 60, &n);
	ck_assert_msg(r == 0, "size %u regs mode %d: bd_serve %d, guest check 0x%x, %s", size, regs_mode, r, s.fail_code,
		      s.err);

	/* what the guest stored */
	const uint64_t res = BD_RES_PASS0;
	ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_T1_EAX), 6);
	ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_T1_EBX), VMWKVM_BDOOR_MAGIC);
	ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_T1_ECX), 2);
	ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_T2_EAX), 6);
	ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_DONE), BD_DONE_CODE);
	/* the calls as the library decoded them: CPL0, real mode, L1 (cap 238) */
	unsigned nlb = BD_LB_CALLS_PER_PASS;
	ck_assert_uint_eq(s.nrec, nlb + (size ? 2 : 0));
	check_lb_records(&s, 0, 0, VMWKVM_MODE_REAL, bd_expected_origin(&b));
	ck_assert_uint_eq(s.n_invalid, 2);
	if (size) {
		ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_HBOUT_EBX), 0x00010000);
		ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_HBOUT_ECX), BD_REAL_ECX_HIGH);
		ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_HBOUT_ESI), size);
		ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_HBIN_EBX), 0x00010000);
		ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_HBIN_ECX), BD_REAL_ECX_HIGH);
		ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_HBIN_EDI), BD_REAL_IN_OFF + size);
		/* send: the host got exactly the guest's bytes, as one transfer */
		ck_assert_uint_eq(s.out_transfers, 1);
		ck_assert_uint_eq(s.out_total, size);
		ck_assert_uint_eq(s.out_got, size);
		ck_assert_mem_eq(s.out_buf, src, size);
		/* receive: guest memory holds the host's bytes and nothing beyond */
		ck_assert_uint_eq(s.in_transfers, 1);
		ck_assert_uint_eq(s.in_given, size);
		ck_assert_mem_eq(dst, in_src, size);
		ck_assert_uint_eq(dst[size], 0xEE);
		const struct bd_rec *ho = &s.recs[nlb], *hi = &s.recs[nlb + 1];
		ck_assert_uint_eq(ho->transport, VMWKVM_TRANSPORT_HB);
		ck_assert_uint_eq(ho->direction, VMWKVM_DIR_OUT);
		ck_assert_uint_eq(ho->hb_total, size);
		ck_assert_uint_eq(ho->command, 0);
		ck_assert_uint_eq(hi->direction, VMWKVM_DIR_IN);
		ck_assert_uint_eq(hi->hb_total, size);
		ck_assert_uint_eq(hi->cpl, 0);
		ck_assert_uint_eq(hi->mode, VMWKVM_MODE_REAL);
	}
	/* final registers: the guest's report */
	struct kvm_regs g;
	ck_assert_int_eq(kvmh_get_regs(&b.h, &g), 0);
	ck_assert_uint_eq(g.rax, BD_DONE_CODE);
	/* ioctls the library made besides KVM_RUN */
	unsigned backdoor_exits = s.n_exits - 1; /* all but the report */
	if (regs_mode == VMWKVM_REGS_SYNC) {
		ck_assert_uint_eq(n.get_regs + n.set_regs + n.get_sregs + n.other, 0);
	} else {
		ck_assert_uint_eq(n.get_regs, backdoor_exits);
		ck_assert_uint_eq(n.get_sregs, backdoor_exits);
		ck_assert_uint_le(n.set_regs, backdoor_exits);
	}
	bd_server_fini(&s);
	free(in_src);
	bd_vm_down(&b);
}

START_TEST(real_mode_sync)
{
	run_real(sizes[_i], VMWKVM_REGS_SYNC);
}
END_TEST

START_TEST(real_mode_ioctl)
{
	run_real(sizes[_i], VMWKVM_REGS_IOCTL);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("backdoor_real");
	TCase *t = tcase_create("real");
	tcase_set_timeout(t, 240);
	tcase_add_loop_test(t, real_mode_sync, 0, sizeof(sizes) / sizeof(sizes[0]));
	tcase_add_loop_test(t, real_mode_ioctl, 1, 2);                               /* 1 byte */
	tcase_add_loop_test(t, real_mode_ioctl, 5, 6);                               /* 4097 bytes */
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	kvmh_skip_unless_kvm("kvm/test_backdoor_real");
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
