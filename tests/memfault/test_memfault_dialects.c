/* The PROPOSED memory-fault exit forms, which no kernel we run implements, against a model:
 *  - KVM Userfault (James Houghton v1-v3): KVM_RUN -1/EFAULT, exit 39 with flag 1<<4 when a
 *    vCPU touches a page whose bit is set in the memslot's userfault bitmap;
 *  - the permission-fault form of the Feb-2025 discussion: a guest write to a page the VMM
 *    mprotect()ed reported as exit 39 with the READ/WRITE/EXEC flags of Anish Moorthy's
 *    series (1<<0, 1<<1, 1<<2).
 * First on a bare fake kvm_run (record mapping, bitmap clearing, unprotecting, custom
 * numbers), then end to end through the kernel model's vCPU (tests/common/kmodel.h): the
 * run hook plays a guest whose access fails until the library resolved it, through
 * vmwkvm_vcpu_run() and vmwkvm_memfault_handle_exit(). The library decodes these forms only
 * when the VMM names their dialect. The permission-fault exit's shape (the faulting page,
 * size 4096, flag WRITE) follows the reference KVM (refkvm/, tests/refkvm/), which
 * implements it on a real KVM_RUN. */
#include <sys/uio.h>

#include "test_memfault_util.h"
#include "kmodel.h"

#define GPA0 0x800000ull
#define UF (1ull << 4)
#define PR (1ull << 0)
#define PW (1ull << 1)
#define PX (1ull << 2)

static vmwkvm_memfault *mf;
static struct kvm_run run;
static uint8_t *mem;
static unsigned long bitmap[1];
static struct mf_log log_;

static void up(uint32_t dialects, uint64_t uf_flag, uint64_t write_flag)
{
	struct vmwkvm_memfault_opts o = { .sz = sizeof(o), .flags = VMWKVM_MF_OPT_NO_UFFD, .dialects = dialects,
					  .userfault_flag = uf_flag, .perm_write_flag = write_flag };
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &mf), 0);
	mem = mf_anon(8 * PG);
	memset(mem, 0, 8 * PG);
	bitmap[0] = 0xff; /* every page "not yet populated" */
	struct vmwkvm_mf_region r = mf_region(GPA0, mem, 8 * PG, VMWKVM_MF_MEM_ANON);
	r.userfault_bitmap = bitmap;
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r), 0);
	mf_log_init(&log_, 0);
	uint32_t access = VMWKVM_MF_ACCESS_ALL & ~(uint32_t)VMWKVM_MF_ACCESS_MINOR;
	if (!(dialects & VMWKVM_MF_DIALECT_KVM_USERFAULT))
		access &= ~(uint32_t)VMWKVM_MF_ACCESS_MISSING;
	struct vmwkvm_mf_range rg = mf_range(GPA0, 8 * PG, access, mf_log_handler, &log_);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
}

static void down(void)
{
	vmwkvm_memfault_free(mf);
	mf = NULL;
	munmap(mem, 8 * PG);
}

/* ------------------------------------------------------------------ fake kvm_run */

START_TEST(userfault_only_under_its_dialect)
{
	up(0, 0, 0);
	struct vmwkvm_mf_record rec;
	mf_fake_memory_fault(&run, GPA0 + 2 * PG, PG, UF);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_uint_eq(log_.recs[0].source, VMWKVM_MF_SRC_MEMORY_FAULT_EXIT);
	ck_assert_uint_eq(bitmap[0], 0xff); /* nothing cleared: the library does not know the form */
	down();
}
END_TEST

START_TEST(userfault_fill_clears_bit)
{
	up(VMWKVM_MF_DIALECT_KVM_USERFAULT, 0, 0);
	static uint8_t page[PG];
	memset(page, 0x7d, sizeof(page));
	log_.kind = VMWKVM_MF_ACT_FILL;
	log_.data = page;
	struct vmwkvm_mf_record rec;
	mf_fake_memory_fault(&run, GPA0 + 2 * PG, PG, UF | VMWKVM_UAPI_MEMORY_EXIT_FLAG_PRIVATE);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	const struct vmwkvm_mf_record *r = &log_.recs[0];
	ck_assert_uint_eq(r->source, VMWKVM_MF_SRC_KVM_USERFAULT);
	ck_assert_uint_eq(r->access, VMWKVM_MF_ACCESS_MISSING);
	ck_assert(r->flags & VMWKVM_MF_FLAG_UNPOPULATED);
	ck_assert(r->flags & VMWKVM_MF_FLAG_PRIVATE);
	ck_assert_ptr_null(r->data);
	ck_assert_uint_eq(r->gpa, GPA0 + 2 * PG);
	ck_assert_int_eq(mem[2 * PG + 9], 0x7d);
	ck_assert_uint_eq(bitmap[0], 0xff & ~(1ul << 2));
	/* RETRY leaves the bit; FAIL reports */
	log_.kind = VMWKVM_MF_ACT_RETRY;
	mf_fake_memory_fault(&run, GPA0 + 5 * PG + 8, 8, UF);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_RETRY);
	ck_assert(bitmap[0] & (1ul << 5));
	log_.kind = VMWKVM_MF_ACT_FAIL;
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_FAILED);
	ck_assert_int_eq(rec.error, -EFAULT);
	ck_assert_uint_eq(rec.source, VMWKVM_MF_SRC_KVM_USERFAULT);
	/* a 2-page fault (huge mapping): both bits */
	log_.kind = VMWKVM_MF_ACT_ZERO;
	mf_fake_memory_fault(&run, GPA0 + 6 * PG, 2 * PG, UF);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_uint_eq(bitmap[0] & 0xc0, 0);
	down();
}
END_TEST

START_TEST(userfault_custom_flag_number)
{
	up(VMWKVM_MF_DIALECT_KVM_USERFAULT, 1ull << 9, 0);
	struct vmwkvm_mf_record rec;
	mf_fake_memory_fault(&run, GPA0, PG, UF); /* the default bit means nothing now */
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_uint_eq(log_.recs[0].source, VMWKVM_MF_SRC_MEMORY_FAULT_EXIT);
	ck_assert_uint_eq(bitmap[0], 0xff);
	mf_fake_memory_fault(&run, GPA0, PG, 1ull << 9);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_uint_eq(log_.recs[1].source, VMWKVM_MF_SRC_KVM_USERFAULT);
	ck_assert_uint_eq(bitmap[0], 0xfe);
	down();
}
END_TEST

START_TEST(perm_fault_access_and_unprotect)
{
	up(VMWKVM_MF_DIALECT_PERM_FAULT, 0, 0);
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0, 4 * PG), VMWKVM_MF_MECH_MPROTECT);
	struct vmwkvm_mf_record rec;
	uint64_t flags[] = { PW, PR, PX, PR | PW };
	uint32_t access[] = { VMWKVM_MF_ACCESS_WRITE, VMWKVM_MF_ACCESS_READ, VMWKVM_MF_ACCESS_EXEC,
			      VMWKVM_MF_ACCESS_READ | VMWKVM_MF_ACCESS_WRITE };
	log_.kind = VMWKVM_MF_ACT_RETRY;
	for (int i = 0; i < 4; i++) {
		mf_fake_memory_fault(&run, GPA0 + PG + 4, 4, flags[i]);
		ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec),
				 VMWKVM_MF_EXIT_RETRY);
		ck_assert_uint_eq(log_.recs[i].source, VMWKVM_MF_SRC_PERM_FAULT);
		ck_assert_uint_eq(log_.recs[i].access, access[i]);
		ck_assert(log_.recs[i].flags & VMWKVM_MF_FLAG_PROTECTED);
		ck_assert(!(log_.recs[i].flags & VMWKVM_MF_FLAG_ACCESS_UNKNOWN));
	}
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + PG), VMWKVM_MF_PROT_WRITE);
	/* ALLOW_ONCE cannot keep the protection when the CPU retries: unprotected */
	log_.kind = VMWKVM_MF_ACT_ALLOW_ONCE;
	mf_fake_memory_fault(&run, GPA0 + PG + 4, 4, PW);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + PG), VMWKVM_MF_PROT_NONE);
	mem[PG + 4] = 1; /* writable for real */
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + 2 * PG), VMWKVM_MF_PROT_WRITE);
	/* FILL writes behind the protection, then unprotects */
	static uint8_t data[16];
	memset(data, 0x42, sizeof(data));
	log_.kind = VMWKVM_MF_ACT_FILL;
	log_.data = data;
	mf_fake_memory_fault(&run, GPA0 + 2 * PG, 16, PW);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(mem[2 * PG + 15], 0x42);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + 2 * PG), VMWKVM_MF_PROT_NONE);
	/* no R/W/X flag: the plain mainline form */
	mf_fake_memory_fault(&run, GPA0 + 3 * PG, 8, 0);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_uint_eq(rec.source, VMWKVM_MF_SRC_MEMORY_FAULT_EXIT);
	down();
}
END_TEST

START_TEST(perm_fault_custom_numbers_and_both_dialects)
{
	up(VMWKVM_MF_DIALECT_PERM_FAULT | VMWKVM_MF_DIALECT_KVM_USERFAULT, 0, 1ull << 12);
	struct vmwkvm_mf_record rec;
	mf_fake_memory_fault(&run, GPA0, 4, 1ull << 12);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_uint_eq(rec.source, VMWKVM_MF_SRC_PERM_FAULT);
	ck_assert_uint_eq(rec.access, VMWKVM_MF_ACCESS_WRITE);
	/* USERFAULT wins when its bit is set */
	mf_fake_memory_fault(&run, GPA0 + PG, 4, UF | PR);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EFAULT, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_uint_eq(rec.source, VMWKVM_MF_SRC_KVM_USERFAULT);
	/* a stale exit (KVM_RUN -EINTR) is never decoded, whatever the dialect */
	mf_fake_memory_fault(&run, GPA0, 4, 1ull << 12);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EINTR, NULL, &rec), VMWKVM_MF_EXIT_NOT_OURS);
	down();
}
END_TEST

/* ------------------------------------------------------------------ through the kernel model */

static struct kmodel *km;
static int kvm_fd = -1, vm_fd = -1, vcpu_fd = -1;
static vmwkvm_vm *vm;
static vmwkvm_vcpu *vcpu;

/* The modelled guest: one access at GPA with the given width. */
struct guest {
	uint64_t gpa;
	uint32_t value;
	bool write;
	bool perm_mode; /* true: permission-fault kernel; false: KVM Userfault kernel */
	int steps;      /* KVM_RUN calls that produced a fault */
	uint32_t seen;  /* value the guest read */
};

/* Can this process write the page (no FOLL_FORCE: honours mprotect)? */
static bool host_writable(void *addr, uint32_t v)
{
	struct iovec local = { .iov_base = &v, .iov_len = 4 };
	struct iovec remote = { .iov_base = addr, .iov_len = 4 };
	return process_vm_writev(getpid(), &local, 1, &remote, 1, 0) == 4;
}

static int guest_hook(void *ctx, struct kmodel_run_ctx *rc)
{
	struct guest *g = ctx;
	struct vmwkvm_uapi_memory_fault *m = vmwkvm_uapi_run_memory_fault(rc->run);
	uint8_t *host = mem + (g->gpa - GPA0);
	if (!g->perm_mode) {
		unsigned page = (unsigned)((g->gpa - GPA0) / PG);
		unsigned long bits = __atomic_load_n(&bitmap[0], __ATOMIC_ACQUIRE);
		if (bits & (1ul << page)) {
			g->steps++;
			rc->run->exit_reason = VMWKVM_UAPI_EXIT_MEMORY_FAULT;
			m->flags = UF;
			m->gpa = g->gpa & ~(PG - 1);
			m->size = PG;
			return -EFAULT;
		}
		memcpy(&g->seen, host, 4);
	} else if (g->write) {
		if (!host_writable(host, g->value)) {
			g->steps++;
			rc->run->exit_reason = VMWKVM_UAPI_EXIT_MEMORY_FAULT;
			m->flags = PW;
			/* as the reference KVM (refkvm/) reports it: the faulting page, not the
			 * access (a stage-2 fault does not tell KVM the access width) */
			m->gpa = g->gpa & ~(PG - 1);
			m->size = PG;
			return -EFAULT;
		}
	}
	rc->run->exit_reason = KVM_EXIT_HLT;
	return 0;
}

static void model_up(void)
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	km = kmodel_new(&c);
	ck_assert_ptr_nonnull(km);
	kmodel_install(km);
	kvm_fd = vk_open("/dev/kvm", O_RDWR);
	ck_assert_int_ge(kvm_fd, 0);
	vm_fd = vk_ioctl(kvm_fd, KVM_CREATE_VM, NULL);
	ck_assert_int_ge(vm_fd, 0);
	struct vmwkvm_vm_opts vo = { .sz = sizeof(vo), .kvm_fd = kvm_fd, .kvm_fd_set = 1, .dialect = "none" };
	ck_assert_int_eq(vmwkvm_vm_new(vm_fd, &vo, &vm), 0);
	vcpu_fd = vmwkvm_vm_create_vcpu(vm, 0);
	ck_assert_int_ge(vcpu_fd, 0);
	ck_assert_int_eq(vmwkvm_vcpu_new(vm, vcpu_fd, NULL, 0, NULL, &vcpu), 0);
}

static void model_down(void)
{
	vmwkvm_vcpu_free(vcpu);
	vmwkvm_vm_free(vm);
	vk_close(vcpu_fd);
	vk_close(vm_fd);
	vk_close(kvm_fd);
	kmodel_uninstall();
	kmodel_free(km);
}

/* Run the vCPU, letting the library handle memory faults, until the guest halts. */
static int run_guest(struct vmwkvm_mf_record *last)
{
	for (int i = 0; i < 16; i++) {
		int r = vmwkvm_vcpu_run(vcpu);
		int h = vmwkvm_memfault_handle_exit(mf, vcpu, r, last);
		if (h == VMWKVM_MF_EXIT_NOT_OURS) {
			ck_assert_int_eq(r, 0);
			ck_assert_uint_eq(vmwkvm_vcpu_kvm_run(vcpu)->exit_reason, KVM_EXIT_HLT);
			return i;
		}
		ck_assert_int_eq(r, VMWKVM_RUN_MEMORY_FAULT);
		ck_assert_int_eq(h, VMWKVM_MF_EXIT_HANDLED);
	}
	ck_abort_msg("guest did not halt");
	return -1;
}

START_TEST(model_userfault_lazy_fill)
{
	up(VMWKVM_MF_DIALECT_KVM_USERFAULT, 0, 0);
	model_up();
	static uint8_t page[PG];
	for (size_t i = 0; i < PG; i += 4)
		*(uint32_t *)(void *)(page + i) = 0xabcd0000u + (uint32_t)i;
	log_.kind = VMWKVM_MF_ACT_FILL;
	log_.data = page;
	struct guest g = { .gpa = GPA0 + 3 * PG + 0x40, .perm_mode = false };
	kmodel_set_run_hook(km, guest_hook, &g);
	struct vmwkvm_mf_record last;
	ck_assert_int_eq(run_guest(&last), 1);
	ck_assert_int_eq(g.steps, 1);
	ck_assert_uint_eq(g.seen, 0xabcd0040u);
	ck_assert_uint_eq(log_.recs[0].source, VMWKVM_MF_SRC_KVM_USERFAULT);
	ck_assert_ptr_eq(log_.recs[0].vcpu, vcpu);
	ck_assert(!(bitmap[0] & (1ul << 3)));
	/* again: the bit is clear, no fault */
	g.seen = 0;
	ck_assert_int_eq(run_guest(&last), 0);
	ck_assert_uint_eq(g.seen, 0xabcd0040u);
	model_down();
	down();
}
END_TEST

START_TEST(model_perm_fault_write_lands)
{
	up(VMWKVM_MF_DIALECT_PERM_FAULT, 0, 0);
	model_up();
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0, 8 * PG), VMWKVM_MF_MECH_MPROTECT);
	struct guest g = { .gpa = GPA0 + 5 * PG + 12, .value = 0x600dcafe, .write = true, .perm_mode = true };
	kmodel_set_run_hook(km, guest_hook, &g);
	struct vmwkvm_mf_record last;
	ck_assert_int_eq(run_guest(&last), 1);
	ck_assert_int_eq(g.steps, 1);
	ck_assert_uint_eq(*(uint32_t *)(void *)(mem + 5 * PG + 12), 0x600dcafe);
	ck_assert_uint_eq(log_.recs[0].source, VMWKVM_MF_SRC_PERM_FAULT);
	ck_assert_uint_eq(log_.recs[0].access, VMWKVM_MF_ACCESS_WRITE);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + 5 * PG), VMWKVM_MF_PROT_NONE);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + 4 * PG), VMWKVM_MF_PROT_WRITE);
	/* the same kernel with the dialect not named: the exit is not the library's to resolve */
	model_down();
	down();
	up(0, 0, 0);
	ck_assert_int_eq(vmwkvm_memfault_remove_range(mf, GPA0, 8 * PG), 0);
	model_up();
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0, 8 * PG), VMWKVM_MF_MECH_MPROTECT);
	g.steps = 0;
	kmodel_set_run_hook(km, guest_hook, &g);
	int r = vmwkvm_vcpu_run(vcpu);
	ck_assert_int_eq(r, VMWKVM_RUN_MEMORY_FAULT);
	ck_assert_int_eq(vmwkvm_memfault_handle_exit(mf, vcpu, r, &last), VMWKVM_MF_EXIT_NOT_OURS);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + 5 * PG), VMWKVM_MF_PROT_WRITE);
	ck_assert_int_eq(vmwkvm_memfault_unprotect(mf, GPA0, 8 * PG), 0);
	model_down();
	down();
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("memfault-dialects");
	TCase *f = tcase_create("fake-run");
	tcase_add_test(f, userfault_only_under_its_dialect);
	tcase_add_test(f, userfault_fill_clears_bit);
	tcase_add_test(f, userfault_custom_flag_number);
	tcase_add_test(f, perm_fault_access_and_unprotect);
	tcase_add_test(f, perm_fault_custom_numbers_and_both_dialects);
	suite_add_tcase(s, f);
	TCase *k = tcase_create("kmodel");
	tcase_add_test(k, model_userfault_lazy_fill);
	tcase_add_test(k, model_perm_fault_write_lands);
	suite_add_tcase(s, k);
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
