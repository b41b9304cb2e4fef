/* Memory-fault dispatcher on REAL KVM (exit 77 only when /dev/kvm is absent):
 *  - userfaultfd WP faults taken by KVM for vCPU writes, on anonymous and memfd memory:
 *    the handler sees each page (source uffd, the vCPU thread's id), every write lands;
 *  - lazy restore: MISSING faults of vCPU reads answered with COPY (a pattern) and ZEROPAGE;
 *  - mprotect()ed RAM: on hosts whose KVM emulates the access (kvm_pvm here; facts sheet
 *    section 7) a write comes back as KVM_EXIT_MMIO: the library runs the handler, the write
 *    lands, the page stays protected when the handler says ALLOW_ONCE; reads of access-
 *    protected RAM return RAM's bytes. On hosts that run the guest natively the write fails
 *    KVM_RUN with a bare EFAULT instead (no address: section 3.2), which the library must
 *    leave alone: the test checks whichever the kernel does;
 *  - a KVM_MEM_READONLY slot: writes are MMIO exits on every host; they land in RAM.
 * Every run has a watchdog (SIGALRM, no SA_RESTART: KVM_RUN returns EINTR). The userfaultfd
 * cases are left out, with a note, when this process may not use userfaultfd. */
#include "test_memfault_kvm.h"

#define NPAGES 16

static struct mfk k;

static void setup(void)
{
	atomic_store(&mfk_timed_out, 0);
	kvmh_watchdog_arm(60);
}

static void teardown(void)
{
	kvmh_watchdog_disarm();
	mfk_down(&k);
}

/* Keeps every record; answers with `kind` (0: default). */
struct rec_log {
	pthread_mutex_t lock;
	struct vmwkvm_mf_record r[256];
	int n;
	uint32_t kind;
	const uint8_t *fill; /* FILL: page-sized pattern per page: fill + page index * PG */
};

static int rec_handler(vmwkvm_memfault *mf, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
		       void *ctx)
{
	(void)mf;
	struct rec_log *l = ctx;
	pthread_mutex_lock(&l->lock);
	if (l->n < 256)
		l->r[l->n++] = *rec;
	pthread_mutex_unlock(&l->lock);
	if (l->kind)
		act->kind = l->kind;
	if (l->fill)
		act->data = l->fill + (rec->gpa - MFK_DATA_GPA);
	return 0;
}

static void rec_log_init(struct rec_log *l, uint32_t kind)
{
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->lock, NULL);
	l->kind = kind;
}

/* The records are written by the dispatcher's thread: while it runs, read them under the
 * same lock (after vmwkvm_memfault_stop() the join orders them). */
static int rec_log_count(struct rec_log *l)
{
	pthread_mutex_lock(&l->lock);
	int n = l->n;
	pthread_mutex_unlock(&l->lock);
	return n;
}

static bool seen_page(struct rec_log *l, uint64_t gpa, uint32_t access)
{
	bool seen = false;
	pthread_mutex_lock(&l->lock);
	for (int i = 0; i < l->n && !seen; i++)
		seen = l->r[i].gpa == gpa && (l->r[i].access & access);
	pthread_mutex_unlock(&l->lock);
	return seen;
}

/* ------------------------------------------------------------------ userfaultfd WP */

static void wp_vcpu_writes(bool memfd)
{
	ck_assert_int_eq(mfk_up(&k, NPAGES, memfd, 0, 1), 0);
	memset(k.data, 0x33, k.data_len);
	vmwkvm_memfault *mf = mfk_memfault(VMWKVM_MF_MECH_UFFD_WP, true);
	struct vmwkvm_mf_region reg = mfk_region(&k);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &reg), 0);
	struct rec_log log;
	rec_log_init(&log, 0);
	struct vmwkvm_mf_range rg = { .sz = sizeof(rg), .gpa = MFK_DATA_GPA, .size = k.data_len,
				      .access = VMWKVM_MF_ACCESS_WRITE, .fn = rec_handler, .ctx = &log };
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, MFK_DATA_GPA, k.data_len), VMWKVM_MF_MECH_UFFD_WP);
	ck_assert_int_eq(vmwkvm_memfault_start(mf), 0);

	ck_assert_int_eq(mfk_start(&k, 0, MFK_MODE_WRITE, NPAGES, 2, 0), 0);
	struct mfk_result res;
	int r = mfk_run(&k, 0, mf, NULL, &res);
	ck_assert_msg(r == 0, "%s", k.why);
	ck_assert_int_eq(res.port, MFK_PORT_DONE);
	ck_assert_uint_eq(res.eax, 0x600d);
	ck_assert_int_eq(vmwkvm_memfault_stop(mf), 0);
	/* every write landed, the rest of each page is untouched */
	for (unsigned i = 0; i < NPAGES; i++) {
		uint32_t v;
		memcpy(&v, k.data + i * MFK_PG + 2 * 4, 4);
		ck_assert_uint_eq(v, (2u << 24) | i);
		ck_assert_int_eq(k.data[i * MFK_PG], 0x33);
		ck_assert_msg(seen_page(&log, MFK_DATA_GPA + i * MFK_PG, VMWKVM_MF_ACCESS_WRITE), "page %u not seen", i);
		ck_assert_int_eq(vmwkvm_memfault_protection(mf, MFK_DATA_GPA + i * MFK_PG), VMWKVM_MF_PROT_NONE);
	}
	pid_t me = (pid_t)syscall(SYS_gettid);
	for (int i = 0; i < log.n; i++) {
		ck_assert_uint_eq(log.r[i].source, VMWKVM_MF_SRC_UFFD);
		ck_assert_int_eq(log.r[i].tid, me); /* the vCPU thread took the fault inside KVM */
		ck_assert(log.r[i].flags & VMWKVM_MF_FLAG_PROTECTED);
	}
	/* nothing went through an exit */
	ck_assert_uint_eq(res.mf_handled, 0);
	vmwkvm_memfault_free(mf);
}

START_TEST(wp_vcpu_writes_anon)
{
	wp_vcpu_writes(false);
}
END_TEST

START_TEST(wp_vcpu_writes_memfd)
{
	wp_vcpu_writes(true);
}
END_TEST

/* ------------------------------------------------------------------ lazy restore */

START_TEST(missing_vcpu_reads_copy_and_zero)
{
	ck_assert_int_eq(mfk_up(&k, NPAGES, false, 0, 1), 0);
	vmwkvm_memfault *mf = mfk_memfault(0, true);
	struct vmwkvm_mf_region reg = mfk_region(&k);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &reg), 0);
	static uint8_t pattern[NPAGES * MFK_PG];
	for (unsigned i = 0; i < NPAGES * MFK_PG / 4; i++) {
		uint32_t v = 0xa5000000u | (i / 1024) << 12 | (i % 1024);
		memcpy(pattern + i * 4, &v, 4);
	}
	struct rec_log fill, zero;
	rec_log_init(&fill, VMWKVM_MF_ACT_FILL);
	fill.fill = pattern;
	rec_log_init(&zero, VMWKVM_MF_ACT_ZERO);
	/* first half filled from the pattern, second half zero pages */
	struct vmwkvm_mf_range a = { .sz = sizeof(a), .gpa = MFK_DATA_GPA, .size = NPAGES / 2 * MFK_PG,
				     .access = VMWKVM_MF_ACCESS_MISSING, .fn = rec_handler, .ctx = &fill };
	struct vmwkvm_mf_range b = a;
	b.gpa += NPAGES / 2 * MFK_PG;
	b.ctx = &zero;
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &a), 0);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &b), 0);
	ck_assert_int_eq(vmwkvm_memfault_start(mf), 0);

	unsigned id = 3;
	ck_assert_int_eq(mfk_start(&k, 0, MFK_MODE_SUM, NPAGES, id, 0), 0);
	struct mfk_result res;
	int r = mfk_run(&k, 0, mf, NULL, &res);
	ck_assert_msg(r == 0, "%s", k.why);
	ck_assert_int_eq(res.port, MFK_PORT_DONE);
	uint32_t expect = 0;
	for (unsigned i = 0; i < NPAGES / 2; i++) {
		uint32_t v;
		memcpy(&v, pattern + i * MFK_PG + id * 4, 4);
		expect += v;
	}
	ck_assert_uint_eq(res.eax, expect);
	for (unsigned i = 0; i < NPAGES; i++) {
		struct rec_log *l = i < NPAGES / 2 ? &fill : &zero;
		ck_assert_msg(seen_page(l, MFK_DATA_GPA + i * MFK_PG, VMWKVM_MF_ACCESS_MISSING), "page %u", i);
	}
	ck_assert_int_eq(memcmp(k.data, pattern, NPAGES / 2 * MFK_PG), 0);
	ck_assert_int_eq(k.data[(NPAGES - 1) * MFK_PG + 5], 0);
	/* populated now: a second pass takes no fault */
	int before = rec_log_count(&fill) + rec_log_count(&zero);
	ck_assert_int_eq(mfk_start(&k, 0, MFK_MODE_SUM, NPAGES, id, 0), 0);
	ck_assert_msg(mfk_run(&k, 0, mf, NULL, &res) == 0, "%s", k.why);
	ck_assert_uint_eq(res.eax, expect);
	ck_assert_int_eq(rec_log_count(&fill) + rec_log_count(&zero), before);
	ck_assert_int_eq(vmwkvm_memfault_stop(mf), 0);
	vmwkvm_memfault_free(mf);
}
END_TEST

/* ------------------------------------------------------------------ mprotect -> MMIO */

START_TEST(mmio_on_protected_ram_write_lands)
{
	ck_assert_int_eq(mfk_up(&k, NPAGES, false, 0, 1), 0);
	memset(k.data, 0x44, k.data_len);
	vmwkvm_memfault *mf = mfk_memfault(VMWKVM_MF_MECH_MPROTECT, false);
	struct vmwkvm_mf_region reg = mfk_region(&k);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &reg), 0);
	struct rec_log keep, dflt;
	rec_log_init(&keep, VMWKVM_MF_ACT_ALLOW_ONCE);
	rec_log_init(&dflt, 0);
	struct vmwkvm_mf_range a = { .sz = sizeof(a), .gpa = MFK_DATA_GPA, .size = NPAGES / 2 * MFK_PG,
				     .access = VMWKVM_MF_ACCESS_WRITE, .fn = rec_handler, .ctx = &keep };
	struct vmwkvm_mf_range b = a;
	b.gpa += NPAGES / 2 * MFK_PG;
	b.ctx = &dflt;
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &a), 0);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &b), 0);
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, MFK_DATA_GPA, k.data_len), VMWKVM_MF_MECH_MPROTECT);

	vmwkvm_vm *vm;
	vmwkvm_vcpu *vcpu;
	struct vmwkvm_vm_opts vo = { .sz = sizeof(vo), .kvm_fd = k.h.kvm_fd, .kvm_fd_set = 1 };
	ck_assert_int_eq(vmwkvm_vm_new(k.h.vm_fd, &vo, &vm), 0);
	struct vmwkvm_vcpu_opts co = { .sz = sizeof(co), .regs_mode = VMWKVM_REGS_IOCTL };
	ck_assert_int_eq(vmwkvm_vcpu_new(vm, k.cpu[0].fd, k.cpu[0].run, k.cpu[0].run_size, &co, &vcpu), 0);

	unsigned id = 1;
	ck_assert_int_eq(mfk_start(&k, 0, MFK_MODE_WRITE, NPAGES, id, 0), 0);
	struct mfk_result res;
	int r = mfk_run(&k, 0, mf, vcpu, &res);
	if (r == -EFAULT && res.mf_handled == 0) {
		/* hardware-run guest: a bare EFAULT, no address; the library left it alone */
		ck_assert_int_eq(res.last_mf, VMWKVM_MF_EXIT_NOT_OURS);
		fprintf(stderr, "NOTE: this host runs the guest natively: a write to mprotect()ed RAM is a bare "
				"KVM_RUN EFAULT, not an MMIO exit (use userfaultfd WP there)\n");
		ck_assert_int_eq(vmwkvm_memfault_unprotect(mf, MFK_DATA_GPA, k.data_len), 0);
		ck_assert_msg(mfk_run(&k, 0, mf, vcpu, &res) == 0, "%s", k.why);
		ck_assert_int_eq(res.port, MFK_PORT_DONE);
	} else {
		ck_assert_msg(r == 0, "%s", k.why);
		ck_assert_int_eq(res.port, MFK_PORT_DONE);
		ck_assert_uint_eq(res.eax, 0x600d);
		/* one MMIO exit per store; the read back of a PROT_READ page does not exit */
		ck_assert_uint_eq(res.mf_handled, NPAGES);
	}
	for (unsigned i = 0; i < NPAGES; i++) {
		uint32_t v;
		memcpy(&v, k.data + i * MFK_PG + id * 4, 4);
		ck_assert_uint_eq(v, (id << 24) | i);
		ck_assert_int_eq(k.data[i * MFK_PG + 100], 0x44);
	}
	if (keep.n) {
		for (int i = 0; i < keep.n; i++) {
			ck_assert_uint_eq(keep.r[i].source, VMWKVM_MF_SRC_MMIO_ON_RAM);
			ck_assert_uint_eq(keep.r[i].size, 4);
			ck_assert_ptr_eq(keep.r[i].vcpu, vcpu);
			ck_assert(keep.r[i].flags & VMWKVM_MF_FLAG_PROTECTED);
		}
		/* ALLOW_ONCE kept the first half protected; the default unprotected the rest */
		ck_assert_int_eq(vmwkvm_memfault_protection(mf, MFK_DATA_GPA), VMWKVM_MF_PROT_WRITE);
		ck_assert_int_eq(vmwkvm_memfault_protection(mf, MFK_DATA_GPA + (NPAGES - 1) * MFK_PG),
				 VMWKVM_MF_PROT_NONE);
	}
	vmwkvm_vcpu_free(vcpu);
	vmwkvm_vm_free(vm);
	vmwkvm_memfault_free(mf);
}
END_TEST

START_TEST(mmio_on_access_protected_ram_reads_ram)
{
	ck_assert_int_eq(mfk_up(&k, NPAGES, true, 0, 1), 0);
	unsigned id = 5;
	uint32_t expect = 0;
	for (unsigned i = 0; i < NPAGES; i++) {
		uint32_t v = 0x01010101u * (i + 1);
		memcpy(k.data + i * MFK_PG + id * 4, &v, 4);
		expect += v;
	}
	vmwkvm_memfault *mf = mfk_memfault(VMWKVM_MF_MECH_MPROTECT, false);
	struct vmwkvm_mf_region reg = mfk_region(&k);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &reg), 0);
	struct rec_log log;
	rec_log_init(&log, VMWKVM_MF_ACT_ALLOW_ONCE);
	struct vmwkvm_mf_range a = { .sz = sizeof(a), .gpa = MFK_DATA_GPA, .size = k.data_len,
				     .access = VMWKVM_MF_ACCESS_READ, .fn = rec_handler, .ctx = &log };
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &a), 0);
	ck_assert_int_eq(vmwkvm_memfault_protect(mf, MFK_DATA_GPA, k.data_len, VMWKVM_MF_PROT_ACCESS),
			 VMWKVM_MF_MECH_MPROTECT);
	ck_assert_int_eq(mfk_start(&k, 0, MFK_MODE_SUM, NPAGES, id, 0), 0);
	struct mfk_result res;
	int r = mfk_run(&k, 0, mf, NULL, &res);
	if (r == -EFAULT && res.mf_handled == 0) {
		ck_assert_int_eq(res.last_mf, VMWKVM_MF_EXIT_NOT_OURS);
		fprintf(stderr, "NOTE: native guest execution: reads of PROT_NONE RAM are bare EFAULTs here\n");
	} else {
		ck_assert_msg(r == 0, "%s", k.why);
		ck_assert_uint_eq(res.eax, expect); /* RAM's bytes, not garbage */
		ck_assert_int_eq(log.n, NPAGES);
		for (int i = 0; i < log.n; i++) {
			ck_assert_uint_eq(log.r[i].access, VMWKVM_MF_ACCESS_READ);
			ck_assert_uint_eq(log.r[i].source, VMWKVM_MF_SRC_MMIO_ON_RAM);
		}
		ck_assert_int_eq(vmwkvm_memfault_protection(mf, MFK_DATA_GPA), VMWKVM_MF_PROT_ACCESS);
	}
	ck_assert_int_eq(vmwkvm_memfault_unprotect(mf, MFK_DATA_GPA, k.data_len), 0);
	vmwkvm_memfault_free(mf);
}
END_TEST

/* KVM_MEM_READONLY: guest writes are MMIO exits on every host (KVM's documented rule). */
START_TEST(readonly_slot_write_lands)
{
	ck_assert_int_eq(mfk_up(&k, NPAGES, false, KVM_MEM_READONLY, 1), 0);
	memset(k.data, 0x55, k.data_len);
	vmwkvm_memfault *mf = mfk_memfault(0, false);
	struct vmwkvm_mf_region reg = mfk_region(&k);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &reg), 0);
	struct rec_log log;
	rec_log_init(&log, 0);
	struct vmwkvm_mf_range a = { .sz = sizeof(a), .gpa = MFK_DATA_GPA, .size = k.data_len,
				     .access = VMWKVM_MF_ACCESS_WRITE, .fn = rec_handler, .ctx = &log };
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &a), 0);
	unsigned id = 7;
	ck_assert_int_eq(mfk_start(&k, 0, MFK_MODE_WRITE, NPAGES, id, 0), 0);
	struct mfk_result res;
	ck_assert_msg(mfk_run(&k, 0, mf, NULL, &res) == 0, "%s", k.why);
	ck_assert_int_eq(res.port, MFK_PORT_DONE);
	ck_assert_uint_eq(res.eax, 0x600d); /* the read back saw the write */
	ck_assert_int_eq(log.n, NPAGES);
	for (unsigned i = 0; i < NPAGES; i++) {
		uint32_t v;
		memcpy(&v, k.data + i * MFK_PG + id * 4, 4);
		ck_assert_uint_eq(v, (id << 24) | i);
		ck_assert_uint_eq(log.r[i].gpa, MFK_DATA_GPA + i * MFK_PG + id * 4);
		ck_assert_uint_eq(log.r[i].source, VMWKVM_MF_SRC_MMIO_ON_RAM);
	}
	vmwkvm_memfault_free(mf);
}
END_TEST

static Suite *suite(bool uffd)
{
	Suite *s = suite_create("memfault-kvm");
	if (uffd) {
		TCase *u = tcase_create("uffd");
		tcase_add_checked_fixture(u, setup, teardown);
		tcase_set_timeout(u, 120);
		tcase_add_test(u, wp_vcpu_writes_anon);
		tcase_add_test(u, wp_vcpu_writes_memfd);
		tcase_add_test(u, missing_vcpu_reads_copy_and_zero);
		suite_add_tcase(s, u);
	}
	TCase *m = tcase_create("mmio");
	tcase_add_checked_fixture(m, setup, teardown);
	tcase_set_timeout(m, 120);
	tcase_add_test(m, mmio_on_protected_ram_write_lands);
	tcase_add_test(m, mmio_on_access_protected_ram_reads_ram);
	tcase_add_test(m, readonly_slot_write_lands);
	suite_add_tcase(s, m);
	return s;
}

int main(void)
{
	kvmh_skip_unless_kvm("memfault-kvm");
	SRunner *sr = srunner_create(suite(mfk_uffd_permitted()));
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
