/*
 * refkvm: the per-VM VMware policy through the library against the reference KVM, in
 * both dialects (loop index 0 = rusin-v2, 1 = single-cap). Real counterparts of the model
 * scenarios of tests/model/test_policy.c: enable before the first vCPU, -EBUSY after it
 * (library-created vCPU, and one the VMM created behind the library's back, which the
 * kernel itself refuses), invalid bits, and what the guest sees: a CPL3 backdoor IN
 * reaches the VMM as a call the library decodes and completes; without the policy the
 * guest gets #GP.
 */
#include "refkvm_env.h"

static const char *const dialects[2] = { "rusin-v2", "single-cap" };
static const int dialect_ids[2] = { VMWKVM_DIALECT_RUSIN_V2, VMWKVM_DIALECT_SINGLE_CAP };

START_TEST(enable_before_first_vcpu)
{
	rk_use_refkvm_numbers();
	struct rk_vm v;
	rk_vm_create(&v, dialects[_i]);
	ck_assert_int_eq(vmwkvm_vm_dialect(v.lvm), dialect_ids[_i]);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(v.lvm, VMWKVM_POLICY_ALL + 8), -EINVAL);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(v.lvm, VMWKVM_POLICY_NESTED_BACKDOOR), -EINVAL);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(v.lvm, VMWKVM_POLICY_ALL), 0);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(v.lvm, VMWKVM_POLICY_BACKDOOR), 0);
	struct vmwkvm_vmware_policy p;
	memset(&p, 0, sizeof(p));
	p.sz = sizeof(p);
	ck_assert_int_eq(vmwkvm_vm_get_vmware_policy(v.lvm, &p), 0);
	ck_assert_uint_eq(p.flags, VMWKVM_POLICY_BACKDOOR);
	ck_assert_uint_eq(p.confirmed & VMWKVM_POLICY_BACKDOOR, VMWKVM_POLICY_BACKDOOR);
	ck_assert_int_eq(p.dialect, dialect_ids[_i]);
	ck_assert_uint_eq(p.hypercall_exit, 0);
	/* after the first vCPU: refused by the library before any ioctl */
	int vcpu = vmwkvm_vm_create_vcpu(v.lvm, 0);
	ck_assert_int_ge(vcpu, 0);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(v.lvm, VMWKVM_POLICY_ALL), -EBUSY);
	/* and the kernel agrees: the vCPU-guarded enable is EINVAL now */
	unsigned cap = _i == 0 ? RK_CAP_BACKDOOR : RK_CAP_SINGLE;
	ck_assert_int_eq(rk_enable_cap(v.vm_fd, cap, 1), -EINVAL);
	close(vcpu);
	rk_vm_destroy(&v);
}
END_TEST

START_TEST(vcpu_behind_the_librarys_back)
{
	rk_use_refkvm_numbers();
	struct rk_vm v;
	rk_vm_create(&v, dialects[_i]);
	/* the VMM creates a vCPU without telling the library: the kernel refuses the enable
	 * with EINVAL, which the library reports as -EBUSY and undoes what it had done */
	int vcpu = ioctl(v.vm_fd, KVM_CREATE_VCPU, 0);
	ck_assert_int_ge(vcpu, 0);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(v.lvm, VMWKVM_POLICY_BACKDOOR), -EBUSY);
	struct vmwkvm_vmware_policy p;
	memset(&p, 0, sizeof(p));
	p.sz = sizeof(p);
	ck_assert_int_eq(vmwkvm_vm_get_vmware_policy(v.lvm, &p), 0);
	ck_assert_uint_eq(p.flags, 0);
	close(vcpu);
	rk_vm_destroy(&v);
}
END_TEST

/* loop index: 0/1 = dialect with the backdoor policy, 2/3 = dialect with policy 0 */
START_TEST(cpl3_backdoor_in)
{
	int d = _i & 1;
	bool on = _i < 2;
	rk_use_refkvm_numbers();
	struct rk_vm v;
	rk_vm_create(&v, dialects[d]);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(v.lvm, on ? VMWKVM_POLICY_BACKDOOR : 0), 0);
	rk_vcpu_setup(&v, 3, rk_code_backdoor_in, sizeof(rk_code_backdoor_in));
	ck_assert_int_eq(rk_run(&v), 0);
	struct vmwkvm_call call;
	if (!on) {
		int vec = rk_reported_vector(&v);
		uint32_t eip, err;
		ck_assert_int_eq(vec, 13);
		rk_fault_frame(&v, vec, &eip, &err);
		ck_assert_uint_eq(eip, RK_BACKDOOR_IN_EIP);
		ck_assert_int_eq(vmwkvm_exit_decode(v.lvcpu, &call), VMWKVM_EXIT_NOT_BACKDOOR);
		rk_vm_destroy(&v);
		return;
	}
	ck_assert_uint_eq(v.run->exit_reason, KVM_EXIT_IO);
	ck_assert_int_eq(vmwkvm_exit_decode(v.lvcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.transport, VMWKVM_TRANSPORT_LB);
	ck_assert_uint_eq(call.port, 0x5658);
	ck_assert_uint_eq(call.command, 10);
	ck_assert_uint_eq(call.cpl, 3);
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_L1);
	ck_assert_uint_eq(call.magic_ok, 1);
	struct vmwkvm_reply rep;
	memset(&rep, 0, sizeof(rep));
	rep.set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX;
	rep.eax = 0x12345678;
	rep.ebx = 0x9abcdef0;
	ck_assert_int_eq(vmwkvm_exit_complete(v.lvcpu, &call, &rep), 0);
	ck_assert_int_eq(rk_run(&v), 0);
	/* the ud2 after the IN: the guest saw the answer (the #UD stub changed only AL) */
	ck_assert_int_eq(rk_reported_vector(&v), 6);
	struct kvm_regs r = rk_regs(&v);
	ck_assert_uint_eq((uint32_t)r.rax & 0xffffff00u, 0x12345600u);
	ck_assert_uint_eq((uint32_t)r.rbx, 0x9abcdef0u);
	rk_vm_destroy(&v);
}
END_TEST

int main(void)
{
	rk_require("refkvm/test_refkvm_policy");
	Suite *s = suite_create("refkvm_policy");
	TCase *t = tcase_create("policy");
	tcase_set_timeout(t, 120);
	tcase_add_loop_test(t, enable_before_first_vcpu, 0, 2);
	tcase_add_loop_test(t, vcpu_behind_the_librarys_back, 0, 2);
	tcase_add_loop_test(t, cpl3_backdoor_in, 0, 4);
	suite_add_tcase(s, t);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
