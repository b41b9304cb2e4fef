/*
 * refkvm: permission-fault memory exits through the library's memory-fault dispatcher.
 * The VM opts in (refkvm cap 904); the VMM write-protects a RAM page with mprotect()
 * through vmwkvm_memfault_write_protect(); the guest's store fails KVM_RUN with EFAULT and
 * RK_EXIT_MEMORY_FAULT naming the page and the write; vmwkvm_memfault_handle_exit() runs
 * the handler, which unprotects; re-entering repeats the store and it lands (no write
 * lost). Loop: 0 = the library decodes the perm-fault dialect (access WRITE, source
 * PERM_FAULT), 1 = mainline decoding only (source MEMORY_FAULT_EXIT, access unknown).
 * Without the VM's opt-in the kernel gives mainline's bare EFAULT, which is not ours.
 */
#include "refkvm_env.h"

struct seen {
	int n;
	struct vmwkvm_mf_record r;
};

static int handler(vmwkvm_memfault *mf, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act, void *ctx)
{
	(void)mf;
	struct seen *s = ctx;
	s->n++;
	s->r = *rec;
	act->kind = VMWKVM_MF_ACT_UNPROTECT;
	return 0;
}

static vmwkvm_memfault *setup_mf(struct rk_vm *v, bool perm_dialect, struct seen *seen)
{
	vmwkvm_memfault *mf = NULL;
	struct vmwkvm_memfault_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.mechanism = VMWKVM_MF_MECH_MPROTECT;
	o.flags = VMWKVM_MF_OPT_NO_UFFD;
	o.dialects = perm_dialect ? VMWKVM_MF_DIALECT_PERM_FAULT : 0;
	ck_assert_int_eq(vmwkvm_memfault_new(v->lvm, &o, &mf), 0);
	struct vmwkvm_mf_region reg;
	memset(&reg, 0, sizeof(reg));
	reg.sz = sizeof(reg);
	reg.gpa = RK_PERM_GPA;
	reg.size = 0x1000;
	reg.host = v->perm;
	reg.kind = VMWKVM_MF_MEM_SHMEM;
	reg.flags = VMWKVM_MF_REGION_NO_ALIAS;
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &reg), 0);
	struct vmwkvm_mf_range rg;
	memset(&rg, 0, sizeof(rg));
	rg.sz = sizeof(rg);
	rg.gpa = RK_PERM_GPA;
	rg.size = 0x1000;
	rg.access = VMWKVM_MF_ACCESS_READ | VMWKVM_MF_ACCESS_WRITE | VMWKVM_MF_ACCESS_EXEC;
	rg.fn = handler;
	rg.ctx = seen;
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	return mf;
}

START_TEST(perm_fault_through_dispatcher)
{
	bool perm_dialect = _i == 0;
	struct rk_vm v;
	rk_vm_create(&v, "none");
	ck_assert_int_eq(rk_enable_cap(v.vm_fd, RK_CAP_PERM, 1), 0);
	struct seen seen;
	memset(&seen, 0, sizeof(seen));
	vmwkvm_memfault *mf = setup_mf(&v, perm_dialect, &seen);
	memset(v.perm, 0x11, 0x1000); /* populated, then protected */
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, RK_PERM_GPA, 0x1000), VMWKVM_MF_MECH_MPROTECT);
	rk_vcpu_setup(&v, 0, rk_code_perm_write, sizeof(rk_code_perm_write));

	int r = rk_run(&v);
	ck_assert_int_eq(r, VMWKVM_RUN_MEMORY_FAULT);
	ck_assert_uint_eq(v.run->exit_reason, RK_EXIT_MEMORY_FAULT);
	ck_assert_uint_eq(RK_MEMORY_FAULT(v.run)->gpa, RK_PERM_GPA);
	ck_assert_uint_eq(RK_MEMORY_FAULT(v.run)->size, 0x1000);
	ck_assert_uint_eq(RK_MEMORY_FAULT(v.run)->flags, 1u << 1); /* write */
	ck_assert_uint_eq(rk_regs(&v).rip, 0x4000);            /* the store was not retired */
	struct vmwkvm_mf_record rec;
	ck_assert_int_eq(vmwkvm_memfault_handle_exit(mf, v.lvcpu, r, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(seen.n, 1);
	ck_assert_uint_eq(seen.r.gpa, RK_PERM_GPA);
	ck_assert_uint_eq(seen.r.fault_gpa, RK_PERM_GPA);
	ck_assert_ptr_eq(seen.r.vcpu, v.lvcpu);
	ck_assert_uint_eq(seen.r.raw_flags, 1u << 1);
	if (perm_dialect) {
		ck_assert_uint_eq(seen.r.source, VMWKVM_MF_SRC_PERM_FAULT);
		ck_assert_uint_eq(seen.r.access, VMWKVM_MF_ACCESS_WRITE);
	} else {
		ck_assert_uint_eq(seen.r.source, VMWKVM_MF_SRC_MEMORY_FAULT_EXIT);
		ck_assert_uint_eq(seen.r.access & (VMWKVM_MF_ACCESS_READ | VMWKVM_MF_ACCESS_WRITE),
				  VMWKVM_MF_ACCESS_READ | VMWKVM_MF_ACCESS_WRITE);
		ck_assert(seen.r.flags & VMWKVM_MF_FLAG_ACCESS_UNKNOWN);
	}
	ck_assert(seen.r.flags & VMWKVM_MF_FLAG_PROTECTED);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, RK_PERM_GPA), VMWKVM_MF_PROT_NONE);
	/* re-enter: the store runs again and lands; the guest reads it back */
	ck_assert_int_eq(rk_run(&v), 0);
	ck_assert_int_eq(rk_reported_vector(&v), 6);
	ck_assert_uint_eq(rk_get32(v.perm, 0x10), 0xcafef00du);
	ck_assert_uint_eq((uint32_t)rk_regs(&v).rax & 0xffffff00u, 0xcafef000u);
	ck_assert_int_eq(v.perm[0x14], 0x11);
	vmwkvm_memfault_free(mf);
	rk_vm_destroy(&v);
}
END_TEST

START_TEST(no_optin_bare_efault)
{
	struct rk_vm v;
	rk_vm_create(&v, "none");
	struct seen seen;
	memset(&seen, 0, sizeof(seen));
	vmwkvm_memfault *mf = setup_mf(&v, true, &seen);
	memset(v.perm, 0x11, 0x1000);
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, RK_PERM_GPA, 0x1000), VMWKVM_MF_MECH_MPROTECT);
	rk_vcpu_setup(&v, 0, rk_code_perm_write, sizeof(rk_code_perm_write));
	int r = rk_run(&v);
	ck_assert_int_eq(r, -EFAULT);
	ck_assert_uint_ne(v.run->exit_reason, RK_EXIT_MEMORY_FAULT);
	ck_assert_int_eq(vmwkvm_memfault_handle_exit(mf, v.lvcpu, r, NULL), VMWKVM_MF_EXIT_NOT_OURS);
	ck_assert_int_eq(seen.n, 0);
	vmwkvm_memfault_free(mf);
	rk_vm_destroy(&v);
}
END_TEST

int main(void)
{
	rk_require("refkvm/test_refkvm_memfault");
	Suite *s = suite_create("refkvm_memfault");
	TCase *t = tcase_create("memfault");
	tcase_set_timeout(t, 120);
	tcase_add_loop_test(t, perm_fault_through_dispatcher, 0, 2);
	tcase_add_test(t, no_optin_bare_efault);
	suite_add_tcase(s, t);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
