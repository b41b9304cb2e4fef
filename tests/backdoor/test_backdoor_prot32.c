/* Real KVM, 32-bit protected mode (guest tests/common/guests/bd_prot32.S): the backdoor test
 * body at CPL0, then at CPL3 (IOPL=3, entered with SYSEXIT): LB IN/OUT, every result
 * register, unknown command, 0x010A, bad magic, wrong size, and HB REP OUTSB / REP INSB
 * of 1, 4, 4095, 4096, 4097 and 65536 bytes, plus 65537-byte transfers (one over the
 * bound) that the library refuses: the guest then sees status 0 in EBX and, for a
 * receive, all-ones bytes. Every call is checked for CPL (0 then 3), 32-bit protected
 * mode and origin. Exits 77 only when /dev/kvm is absent. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "kvm_guest.h"

static const uint32_t sizes[] = { 0, 1, 4, 4095, 4096, 4097, 65536 };

static void check_pass_records(const struct bd_server *s, unsigned base, uint8_t cpl, uint8_t origin,
			       uint32_t size)
{
	unsigned n = BD_LB_CALLS_PER_PASS + (size ? 2 : 0);
	for (unsigned i = 0; i < n; i++) {
		const struct bd_rec *r = &s->recs[base + i];
		ck_assert_msg(r->cpl == cpl, "call %u: cpl %u, expected %u", base + i, r->cpl, cpl);
		ck_assert_uint_eq(r->mode, VMWKVM_MODE_PROT32);
		ck_assert_uint_eq(r->origin, origin);
		if (i < BD_LB_CALLS_PER_PASS) {
			ck_assert_msg(r->command == bd_lb_pass[i].command, "call %u: command 0x%x", base + i, r->command);
			ck_assert_uint_eq(r->transport, VMWKVM_TRANSPORT_LB);
			ck_assert_uint_eq(r->direction, bd_lb_pass[i].direction);
			ck_assert_uint_eq(r->invalid, bd_lb_pass[i].invalid);
		} else {
			ck_assert_uint_eq(r->transport, VMWKVM_TRANSPORT_HB);
			ck_assert_uint_eq(r->direction, i == BD_LB_CALLS_PER_PASS ? VMWKVM_DIR_OUT : VMWKVM_DIR_IN);
			ck_assert_uint_eq(r->hb_total, size);
			ck_assert_uint_eq(r->hb_flags & VMWKVM_HB_FIRST, VMWKVM_HB_FIRST);
		}
	}
}

static void check_pass_results(struct bd_vm *b, uint64_t res, uint32_t size)
{
	ck_assert_uint_eq(bd_peek32(b, res + BD_RES_T1_EAX), 6);
	ck_assert_uint_eq(bd_peek32(b, res + BD_RES_T1_EBX), VMWKVM_BDOOR_MAGIC);
	ck_assert_uint_eq(bd_peek32(b, res + BD_RES_T1_ECX), 2);
	ck_assert_uint_eq(bd_peek32(b, res + BD_RES_T2_EAX), 6);
	ck_assert_uint_eq(bd_peek32(b, res + BD_RES_DONE), BD_DONE_CODE);
	if (!size)
		return;
	ck_assert_uint_eq(bd_peek32(b, res + BD_RES_HBOUT_EBX), 0x00010000);
	ck_assert_uint_eq(bd_peek32(b, res + BD_RES_HBOUT_ECX), 0);
	ck_assert_uint_eq(bd_peek32(b, res + BD_RES_HBOUT_ESI), BD_P32_OUT_GPA + size);
	ck_assert_uint_eq(bd_peek32(b, res + BD_RES_HBIN_EBX), 0x00010000);
	ck_assert_uint_eq(bd_peek32(b, res + BD_RES_HBIN_ECX), 0);
	ck_assert_uint_eq(bd_peek32(b, res + BD_RES_HBIN_EDI), BD_P32_IN_GPA + size);
}

/* Guest memory set-up; returns the host's IN bytes (caller frees). */
static uint8_t *prepare(struct bd_vm *b, uint32_t out_len, uint32_t in_len, uint8_t **src, uint8_t **dst)
{
	*src = kvmh_gpa(&b->h, BD_P32_OUT_GPA, (size_t)out_len + 1);
	*dst = kvmh_gpa(&b->h, BD_P32_IN_GPA, (size_t)in_len + 1);
	ck_assert_ptr_nonnull(*src);
	ck_assert_ptr_nonnull(*dst);
	uint8_t *in_src = malloc((size_t)in_len + 1);
	ck_assert_ptr_nonnull(in_src);
	for (uint32_t i = 0; i < out_len; i++)
		(*src)[i] = bd_pattern(i, 3);
	for (uint32_t i = 0; i < in_len; i++)
		in_src[i] = bd_pattern(i, 4);
	memset(*dst, 0xEE, (size_t)in_len + 1);
	bd_set_params(b, out_len, in_src, in_len);
	return in_src;
}

static void run_prot32(uint32_t size, int regs_mode)
{
	struct bd_vm b;
	ck_assert_int_eq(bd_vm_up(&b, "bd_prot32", true, regs_mode), 0);
	uint8_t *src, *dst;
	uint8_t *in_src = prepare(&b, size, size, &src, &dst);
	struct bd_server s;
	ck_assert_int_eq(bd_server_init(&s, &b, in_src, size), 0);

	struct bd_ioctl_counts n;
	int r = bd_serve_counted(&b, &s, 400000, 120, &n);
	ck_assert_msg(r == 0, "size %u regs mode %d: bd_serve %d, guest check 0x%x, %s", size, regs_mode, r, s.fail_code,
		      s.err);

	check_pass_results(&b, BD_RES_PASS0, size);
	check_pass_results(&b, BD_RES_PASS1, size);
	unsigned per_pass = BD_LB_CALLS_PER_PASS + (size ? 2 : 0);
	ck_assert_uint_eq(s.nrec, 2 * per_pass);
	check_pass_records(&s, 0, 0, bd_expected_origin(&b), size);
	check_pass_records(&s, per_pass, 3, bd_expected_origin(&b), size);
	ck_assert_uint_eq(s.n_invalid, 4);
	if (size) {
		ck_assert_uint_eq(s.out_transfers, 2);
		ck_assert_uint_eq(s.out_total, size);
		ck_assert_uint_eq(s.out_got, 2ull * size);
		ck_assert_mem_eq(s.out_buf, src, size);
		ck_assert_uint_eq(s.in_transfers, 2);
		ck_assert_uint_eq(s.in_given, 2ull * size);
		ck_assert_mem_eq(dst, in_src, size);
		ck_assert_uint_eq(dst[size], 0xEE);
	}
	struct kvm_regs g;
	ck_assert_int_eq(kvmh_get_regs(&b.h, &g), 0);
	ck_assert_uint_eq(g.rax, BD_DONE_CODE);
	struct kvm_sregs sr;
	ck_assert_int_eq(kvmh_get_sregs(&b.h, &sr), 0);
	ck_assert_uint_eq(sr.cs.selector & 3, 3); /* still in ring 3 */
	if (regs_mode == VMWKVM_REGS_SYNC)
		ck_assert_uint_eq(n.get_regs + n.set_regs + n.get_sregs + n.other, 0);
	else
		ck_assert_uint_eq(n.get_regs, s.n_exits - 1);
	bd_server_fini(&s);
	free(in_src);
	bd_vm_down(&b);
}

START_TEST(prot32_sync)
{
	run_prot32(sizes[_i], VMWKVM_REGS_SYNC);
}
END_TEST

START_TEST(prot32_ioctl)
{
	run_prot32(sizes[_i], VMWKVM_REGS_IOCTL);
}
END_TEST

/* One over the bound: the library refuses the transfer at its first piece. The guest's
 * EBX check then fails at the CPL0 pass, which is the expected outcome. */
START_TEST(prot32_over_bound)
{
	const uint32_t big = 65537;
	const bool send = _i == 0;
	struct bd_vm b;
	ck_assert_int_eq(bd_vm_up(&b, "bd_prot32", true, VMWKVM_REGS_SYNC), 0);
	uint8_t *src, *dst;
	uint8_t *in_src = prepare(&b, send ? big : 0, send ? 0 : big, &src, &dst);
	struct bd_server s;
	ck_assert_int_eq(bd_server_init(&s, &b, in_src, send ? 0 : big), 0);
	kvmh_watchdog_arm(120);
	int r = bd_serve(&b, &s, 400000);
	kvmh_watchdog_disarm();
	ck_assert_msg(r == 1, "bd_serve %d (%s)", r, s.err);
	const uint64_t res = BD_RES_PASS0;
	if (send) {
		ck_assert_uint_eq(s.fail_code, res + 0x61); /* EBX != SUCCESS */
		ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_HBOUT_EBX), 0); /* status cleared */
		ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_HBOUT_ECX), 0); /* the REP completed */
		ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_HBOUT_ESI), BD_P32_OUT_GPA + big);
		ck_assert_uint_eq(s.out_transfers, 0);
		ck_assert_uint_eq(s.out_got, 0);
		ck_assert_uint_eq(s.n_invalid, 2 + big); /* every byte refused */
	} else {
		ck_assert_uint_eq(s.fail_code, res + 0x71);
		ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_HBIN_EBX), 0);
		ck_assert_uint_eq(bd_peek32(&b, res + BD_RES_HBIN_ECX), 0);
		ck_assert_uint_eq(s.in_transfers, 0);
		for (uint32_t i = 0; i < big; i++)
			ck_assert_msg(dst[i] == 0xFF, "byte %u = 0x%02x", i, dst[i]);
		ck_assert_uint_eq(dst[big], 0xEE);
	}
	const struct bd_rec *hr = &s.recs[BD_LB_CALLS_PER_PASS];
	ck_assert_uint_eq(s.nrec, BD_LB_CALLS_PER_PASS + 1);
	ck_assert_uint_eq(hr->transport, VMWKVM_TRANSPORT_HB);
	ck_assert_uint_eq(hr->invalid, VMWKVM_INVALID_HB_LENGTH);
	ck_assert_uint_eq(hr->hb_total, big);
	bd_server_fini(&s);
	free(in_src);
	bd_vm_down(&b);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("backdoor_prot32");
	TCase *t = tcase_create("prot32");
	tcase_set_timeout(t, 280);
	tcase_add_loop_test(t, prot32_sync, 0, sizeof(sizes) / sizeof(sizes[0]));
	tcase_add_loop_test(t, prot32_ioctl, 5, 6); /* 4097 bytes */
	tcase_add_loop_test(t, prot32_over_bound, 0, 2);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	kvmh_skip_unless_kvm("kvm/test_backdoor_prot32");
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
