/*
 * refkvm: VMware hypercalls (VMMCALL with the magic) forwarded by the reference KVM,
 * decoded and completed by the library: from CPL0 and CPL3, in both dialects, with a
 * result in RAX (RIP moves on) and with an injected #GP / #UD / #PF (the fault is taken at
 * the VMMCALL). Also the real counterpart of the model's exit-number rules: a hypercall
 * exit of a VM whose policy did not enable hypercalls through the library is not decoded
 * as VMware, and in auto mode a proposed exit number that mainline owns (40, KVM_EXIT_TDX)
 * is never used even though the kernel's caps are confirmed.
 *
 * Loop index of the main test: bit 0 dialect (rusin-v2, single-cap), bit 1 CPL (0, 3),
 * bits 2-3 injection (none, #GP, #UD, #PF).
 */
#include "refkvm_env.h"

static const char *const dialects[2] = { "rusin-v2", "single-cap" };

START_TEST(hypercall_complete_or_inject)
{
	int d = _i & 1;
	unsigned cpl = (_i & 2) ? 3 : 0;
	static const int vectors[4] = { -1, 13, 6, 14 };
	int inject = vectors[(_i >> 2) & 3];
	rk_use_refkvm_numbers();
	struct rk_vm v;
	rk_vm_create(&v, dialects[d]);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(v.lvm, VMWKVM_POLICY_HYPERCALL), 0);
	struct vmwkvm_vmware_policy p;
	memset(&p, 0, sizeof(p));
	p.sz = sizeof(p);
	ck_assert_int_eq(vmwkvm_vm_get_vmware_policy(v.lvm, &p), 0);
	ck_assert_uint_eq(p.hypercall_exit, d == 0 ? RK_EXIT_RUSIN : RK_EXIT_SINGLE);
	rk_vcpu_setup(&v, cpl, rk_code_hcall, sizeof(rk_code_hcall));
	ck_assert_int_eq(rk_run(&v), 0);
	ck_assert_uint_eq(v.run->exit_reason, d == 0 ? RK_EXIT_RUSIN : RK_EXIT_SINGLE);
	struct vmwkvm_call call;
	ck_assert_int_eq(vmwkvm_exit_decode(v.lvcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.transport, VMWKVM_TRANSPORT_HYPERCALL);
	ck_assert_uint_eq(call.cpl, cpl);
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_L1);
	ck_assert_uint_eq(call.magic_ok, 1);
	ck_assert_uint_eq(call.command, 0x22);
	ck_assert_uint_eq(call.rbx, 0x11);
	ck_assert_uint_eq(call.rdx, 0x330000);
	ck_assert_uint_eq(call.hypercall_flags, 0);
	ck_assert_uint_eq(call.rsi, 0x44);
	ck_assert_uint_eq(call.rdi, 0x55);
	ck_assert_uint_eq(call.rbp, 0x66);
	struct vmwkvm_reply rep;
	memset(&rep, 0, sizeof(rep));
	rep.set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX;
	rep.eax = 0x0defaced;
	rep.ebx = 0x77;
	if (inject >= 0) {
		rep.set |= VMWKVM_REPLY_INJECT;
		rep.vector = (uint8_t)inject;
		rep.error_code = 0x42;
		rep.address = 0x1234000;
	}
	ck_assert_int_eq(vmwkvm_exit_complete(v.lvcpu, &call, &rep), 0);
	ck_assert_int_eq(rk_run(&v), 0);
	int vec = rk_reported_vector(&v);
	uint32_t eip = 0, err = 0;
	ck_assert_int_ge(vec, 0);
	rk_fault_frame(&v, vec, &eip, &err);
	struct kvm_regs r = rk_regs(&v);
	/* the handler stub changed only AL */
	ck_assert_uint_eq((uint32_t)r.rax & 0xffffff00u, 0x0defac00u);
	ck_assert_uint_eq((uint32_t)r.rbx, 0x77);
	if (inject < 0) {
		ck_assert_int_eq(vec, 6); /* the ud2 after the VMMCALL */
		ck_assert_uint_eq(eip, RK_HCALL_NEXT_EIP);
	} else {
		ck_assert_int_eq(vec, inject);
		ck_assert_uint_eq(eip, RK_HCALL_EIP);
		if (inject != 6)
			ck_assert_uint_eq(err, 0x42);
		if (inject == 14) {
			struct kvm_sregs s;
			ck_assert_int_eq(ioctl(v.vcpu_fd, KVM_GET_SREGS, &s), 0);
			ck_assert_uint_eq(s.cr2, 0x1234000);
		}
	}
	rk_vm_destroy(&v);
}
END_TEST

/* The kernel forwards (hypercalls enabled with a raw ioctl), the library's policy says no
 * hypercalls: exit 90 is not decoded as VMware. */
START_TEST(exit_not_decoded_without_policy)
{
	rk_use_refkvm_numbers();
	struct rk_vm v;
	rk_vm_create(&v, "rusin-v2");
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(v.lvm, VMWKVM_POLICY_BACKDOOR), 0);
	ck_assert_int_eq(rk_enable_cap(v.vm_fd, RK_CAP_HYPERCALL, 1), 0);
	rk_vcpu_setup(&v, 0, rk_code_hcall, sizeof(rk_code_hcall));
	ck_assert_int_eq(rk_run(&v), 0);
	ck_assert_uint_eq(v.run->exit_reason, RK_EXIT_RUSIN);
	struct vmwkvm_call call;
	ck_assert_int_eq(vmwkvm_exit_decode(v.lvcpu, &call), VMWKVM_EXIT_NOT_BACKDOOR);
	rk_vm_destroy(&v);
}
END_TEST

/* Auto mode with rusin-v2's exit set to 40 (KVM_EXIT_TDX upstream) and no single-cap number:
 * the backdoor caps are confirmed on the real kernel, but the hypercall path is refused and
 * the VM's guest keeps mainline behaviour (VMMCALL returns -KVM_ENOSYS in the guest). */
START_TEST(tdx_exit_number_never_used_in_auto)
{
	struct vmwkvm_proposed_numbers n;
	rk_numbers(&n);
	n.rusin_exit_vmware = 40;
	n.single_cap = 0;
	n.single_exit = 0;
	ck_assert_int_eq(vmwkvm_proposed_set(&n), 0);
	struct rk_vm v;
	rk_vm_create(&v, "auto");
	ck_assert_int_eq(vmwkvm_vm_dialect(v.lvm), VMWKVM_DIALECT_RUSIN_V2);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(v.lvm, VMWKVM_POLICY_HYPERCALL), -EOPNOTSUPP);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(v.lvm, VMWKVM_POLICY_BACKDOOR), 0);
	rk_vcpu_setup(&v, 0, rk_code_hcall, sizeof(rk_code_hcall));
	ck_assert_int_eq(rk_run(&v), 0);
	/* not forwarded: the guest went on to its ud2 with -KVM_ENOSYS (-1000) in EAX */
	ck_assert_int_eq(rk_reported_vector(&v), 6);
	struct kvm_regs r = rk_regs(&v);
	ck_assert_uint_eq((uint32_t)r.rax & 0xffffff00u, 0xfffffc00u);
	rk_vm_destroy(&v);
	/* and the arm64-owned numbers 239-241 are never touched in auto mode */
	rk_numbers(&n);
	n.rusin_cap_backdoor = 239;
	n.rusin_cap_hypercall = 240;
	n.rusin_cap_nested = 241;
	n.single_cap = 0;
	ck_assert_int_eq(vmwkvm_proposed_set(&n), 0);
	rk_vm_create(&v, "auto");
	ck_assert_int_eq(vmwkvm_vm_dialect(v.lvm), VMWKVM_DIALECT_NONE);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(v.lvm, VMWKVM_POLICY_BACKDOOR), -EOPNOTSUPP);
	rk_vm_destroy(&v);
}
END_TEST

int main(void)
{
	rk_require("refkvm/test_refkvm_hypercall");
	Suite *s = suite_create("refkvm_hypercall");
	TCase *t = tcase_create("hypercall");
	tcase_set_timeout(t, 120);
	tcase_add_loop_test(t, hypercall_complete_or_inject, 0, 16);
	tcase_add_test(t, exit_not_decoded_without_policy);
	tcase_add_test(t, tdx_exit_number_never_used_in_auto);
	suite_add_tcase(s, t);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
