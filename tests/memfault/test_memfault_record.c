/* Memory-fault dispatcher: how each KVM exit maps onto the record (mainline forms), on a
 * fake kvm_run. KVM_EXIT_MEMORY_FAULT counts only with KVM_RUN -1/EFAULT or EHWPOISON;
 * anything else leaves exit_reason stale. The proposed forms are in
 * tests/memfault/test_memfault_dialects.c. */
#include "test_memfault_util.h"

#define GPA0 0x400000ull

static vmwkvm_memfault *mf;
static struct kvm_run run;
static uint8_t *mem;
static struct mf_log log_;

static void setup(void)
{
	struct vmwkvm_memfault_opts o = { .sz = sizeof(o), .flags = VMWKVM_MF_OPT_NO_UFFD };
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &mf), 0);
	mem = mf_anon(4 * PG);
	for (size_t i = 0; i < 4 * PG; i++)
		mem[i] = (uint8_t)i;
	struct vmwkvm_mf_region r = mf_region(GPA0, mem, 4 * PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r), 0);
	mf_log_init(&log_, 0);
	struct vmwkvm_mf_range rg = mf_range(GPA0, 4 * PG, VMWKVM_MF_ACCESS_ALL & ~(uint32_t)(VMWKVM_MF_ACCESS_MISSING | VMWKVM_MF_ACCESS_MINOR),
					     mf_log_handler, &log_);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
}

static void teardown(void)
{
	vmwkvm_memfault_free(mf);
	munmap(mem, 4 * PG);
}

START_TEST(memory_fault_needs_efault_or_hwpoison)
{
	struct vmwkvm_mf_record rec;
	int results[] = { -EFAULT, -EHWPOISON, VMWKVM_RUN_MEMORY_FAULT };
	for (size_t i = 0; i < 3; i++) {
		mf_fake_memory_fault(&run, GPA0 + PG, PG, 0);
		ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), results[i], NULL, &rec),
				 VMWKVM_MF_EXIT_HANDLED);
	}
	ck_assert_int_eq(atomic_load(&log_.n), 3);
	/* stale exit_reason: any other result is not a memory fault */
	int stale[] = { 0, -EINTR, -EAGAIN, -ENOMEM, -EINVAL, 2 };
	for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++) {
		mf_fake_memory_fault(&run, GPA0 + PG, PG, 0);
		ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), stale[i], NULL, &rec),
				 VMWKVM_MF_EXIT_NOT_OURS);
	}
	ck_assert_int_eq(atomic_load(&log_.n), 3);
	/* EFAULT with another exit reason: a bare EFAULT, not attributable */
	mf_fake_memory_fault(&run, GPA0, PG, 0);
	run.exit_reason = KVM_EXIT_MMIO;
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_NOT_OURS);
	ck_assert_int_eq(atomic_load(&log_.n), 3);
}
END_TEST

START_TEST(memory_fault_record_mainline)
{
	struct vmwkvm_mf_record rec;
	mf_fake_memory_fault(&run, GPA0 + 2 * PG + 0x10, 0x20, VMWKVM_UAPI_MEMORY_EXIT_FLAG_PRIVATE);
	vmwkvm_vcpu *fake_vcpu = (vmwkvm_vcpu *)(uintptr_t)0x1234;
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, fake_vcpu, &rec),
			 VMWKVM_MF_EXIT_HANDLED);
	const struct vmwkvm_mf_record *r = &log_.recs[0];
	ck_assert_uint_eq(r->source, VMWKVM_MF_SRC_MEMORY_FAULT_EXIT);
	ck_assert_uint_eq(r->gpa, GPA0 + 2 * PG + 0x10);
	ck_assert_uint_eq(r->size, 0x20);
	ck_assert_uint_eq(r->fault_gpa, GPA0 + 2 * PG + 0x10);
	ck_assert_uint_eq(r->fault_size, 0x20);
	ck_assert_uint_eq(r->access, VMWKVM_MF_ACCESS_READ | VMWKVM_MF_ACCESS_WRITE);
	ck_assert(r->flags & VMWKVM_MF_FLAG_ACCESS_UNKNOWN);
	ck_assert(r->flags & VMWKVM_MF_FLAG_PRIVATE);
	ck_assert_uint_eq(r->raw_flags, VMWKVM_UAPI_MEMORY_EXIT_FLAG_PRIVATE);
	ck_assert_ptr_eq(r->vcpu, fake_vcpu);
	ck_assert_ptr_eq(r->host, mem + 2 * PG + 0x10);
	ck_assert_uint_eq(r->region_gpa, GPA0);
	ck_assert_int_eq(log_.first_bytes[0][0], (uint8_t)(2 * PG + 0x10));
	ck_assert_uint_eq(rec.source, VMWKVM_MF_SRC_MEMORY_FAULT_EXIT);
	ck_assert_uint_eq(rec.size, 0x20);
	/* the proposed bits mean nothing without their dialect: mainline, access unknown */
	mf_fake_memory_fault(&run, GPA0, PG, (1ull << 4) | (1ull << 1));
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_uint_eq(log_.recs[1].source, VMWKVM_MF_SRC_MEMORY_FAULT_EXIT);
	ck_assert(log_.recs[1].flags & VMWKVM_MF_FLAG_ACCESS_UNKNOWN);
}
END_TEST

START_TEST(memory_fault_outside_or_across_ram)
{
	struct vmwkvm_mf_record rec;
	mf_fake_memory_fault(&run, GPA0 - PG, PG, 0);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_NOT_OURS);
	mf_fake_memory_fault(&run, 0xffffffffffff0000ull, 0x20000, 0); /* wraps */
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_NOT_OURS);
	ck_assert_int_eq(atomic_load(&log_.n), 0);
	/* a range running off the end of RAM: the RAM part, marked truncated */
	mf_fake_memory_fault(&run, GPA0 + 3 * PG, 2 * PG, 0);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_uint_eq(log_.recs[0].size, PG);
	ck_assert(log_.recs[0].flags & VMWKVM_MF_FLAG_TRUNCATED);
	/* size 0 is read as one byte */
	mf_fake_memory_fault(&run, GPA0 + 5, 0, 0);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_uint_eq(log_.recs[1].size, 1);
}
END_TEST

/* rec->data promises readable bytes of the whole record: a fault spanning pages of which
 * one in the middle is access-protected (PROT_NONE) gets no data pointer. */
START_TEST(memory_fault_data_null_when_a_page_is_unreadable)
{
	ck_assert_int_eq(vmwkvm_memfault_protect(mf, GPA0 + PG, PG, VMWKVM_MF_PROT_ACCESS), VMWKVM_MF_MECH_MPROTECT);
	struct vmwkvm_mf_record rec;
	mf_fake_memory_fault(&run, GPA0 + 0x10, 3 * PG - 0x20, 0);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(atomic_load(&log_.n), 1);
	ck_assert_ptr_null(log_.recs[0].data);
	/* the default action lifted the protection: the same fault now has its bytes */
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + PG), VMWKVM_MF_PROT_NONE);
	mf_fake_memory_fault(&run, GPA0 + 0x10, 3 * PG - 0x20, 0);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_ptr_eq(log_.recs[1].data, mem + 0x10);
}
END_TEST

/* A mainline memory fault no handler covers is the VMM's (guest_memfd conversions). */
START_TEST(memory_fault_unhandled_is_vmm_business)
{
	ck_assert_int_eq(vmwkvm_memfault_remove_range(mf, GPA0, 4 * PG), 0);
	struct vmwkvm_mf_range rg = mf_range(GPA0, PG, VMWKVM_MF_ACCESS_WRITE, mf_log_handler, &log_);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	struct vmwkvm_mf_record rec;
	mf_fake_memory_fault(&run, GPA0 + 2 * PG, PG, VMWKVM_UAPI_MEMORY_EXIT_FLAG_PRIVATE);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_NOT_OURS);
	/* covered by a handler that fails: FAILED with the handler's error */
	log_.ret = -ENXIO;
	mf_fake_memory_fault(&run, GPA0, 8, 0);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EHWPOISON, NULL, &rec),
			 VMWKVM_MF_EXIT_FAILED);
	ck_assert_int_eq(rec.error, -ENXIO);
	ck_assert_uint_eq(rec.gpa, GPA0);
	ck_assert_uint_eq(rec.size, 8);
}
END_TEST

START_TEST(mmio_record)
{
	struct vmwkvm_mf_record rec;
	uint16_t v = 0xbeef;
	mf_fake_mmio(&run, GPA0 + 0x123, 2, true, &v);
	vmwkvm_vcpu *fake_vcpu = (vmwkvm_vcpu *)(uintptr_t)0x5678;
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), 0, fake_vcpu, &rec), VMWKVM_MF_EXIT_HANDLED);
	const struct vmwkvm_mf_record *r = &log_.recs[0];
	ck_assert_uint_eq(r->source, VMWKVM_MF_SRC_MMIO_ON_RAM);
	ck_assert_uint_eq(r->access, VMWKVM_MF_ACCESS_WRITE);
	ck_assert_uint_eq(r->gpa, GPA0 + 0x123);
	ck_assert_uint_eq(r->size, 2);
	ck_assert_ptr_eq(r->vcpu, fake_vcpu);
	ck_assert_ptr_eq(r->host, mem + 0x123);
	ck_assert_uint_eq(r->raw_flags, 1);
	ck_assert_int_eq(log_.first_bytes[0][0], 0x23); /* the bytes before the write */
	ck_assert(!(r->flags & VMWKVM_MF_FLAG_PROTECTED));
	ck_assert_int_eq(memcmp(mem + 0x123, &v, 2), 0);
	mf_fake_mmio(&run, GPA0 + 0x200, 8, false, NULL);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), 0, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_uint_eq(log_.recs[1].access, VMWKVM_MF_ACCESS_READ);
	ck_assert_int_eq(memcmp(run.mmio.data, mem + 0x200, 8), 0);
	struct vmwkvm_mf_stats st = { .sz = sizeof(st) };
	ck_assert_int_eq(vmwkvm_memfault_stats(mf, &st), 0);
	ck_assert_uint_eq(st.faults[VMWKVM_MF_SRC_MMIO_ON_RAM], 2);
	ck_assert_uint_eq(st.handler_calls, 2);
}
END_TEST

/* Unhandled parts take opts.default_action. */
START_TEST(default_action_option)
{
	vmwkvm_memfault *m;
	struct vmwkvm_memfault_opts o = { .sz = sizeof(o), .flags = VMWKVM_MF_OPT_NO_UFFD,
					  .default_action = VMWKVM_MF_ACT_FAIL };
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &m), 0);
	uint8_t *x = mf_anon(PG);
	struct vmwkvm_mf_region r = mf_region(GPA0, x, PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(m, &r), 0);
	struct vmwkvm_mf_record rec;
	uint32_t v = 1;
	mf_fake_mmio(&run, GPA0, 4, true, &v);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(m, &run, sizeof(run), 0, NULL, &rec), VMWKVM_MF_EXIT_FAILED);
	ck_assert_int_eq(rec.error, -EFAULT);
	ck_assert_int_eq(x[0], 0);
	vmwkvm_memfault_free(m);
	o.default_action = VMWKVM_MF_ACT_RETRY;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &m), 0);
	ck_assert_int_eq(vmwkvm_memfault_add_region(m, &r), 0);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(m, &run, sizeof(run), 0, NULL, &rec), VMWKVM_MF_EXIT_RETRY);
	vmwkvm_memfault_free(m);
	munmap(x, PG);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("memfault-record");
	TCase *t = tcase_create("mainline");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, memory_fault_needs_efault_or_hwpoison);
	tcase_add_test(t, memory_fault_record_mainline);
	tcase_add_test(t, memory_fault_outside_or_across_ram);
	tcase_add_test(t, memory_fault_data_null_when_a_page_is_unreadable);
	tcase_add_test(t, memory_fault_unhandled_is_vmm_business);
	tcase_add_test(t, mmio_record);
	tcase_add_test(t, default_action_option);
	suite_add_tcase(s, t);
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
