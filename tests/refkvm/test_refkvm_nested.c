/*
 * refkvm: the nested backdoor. A tiny L1 (CPL0, 32-bit, paging on with one 4 MiB page)
 * turns on EFER.SVME and VMRUNs an L2 that does a backdoor IN at CPL3 and then VMMCALL. L1
 * intercepts #GP, VMMCALL and VMRUN and reports each #VMEXIT code on port 0x81.
 * With the nested policy (BACKDOOR | NESTED_BACKDOOR) L0 (our VMM, through the library)
 * gets the IN: the library decodes a call whose origin is L2 (KVM_RUN_X86_GUEST_MODE) at
 * CPL3, completes it, and L2 sees the answer before its VMMCALL reaches L1. With the
 * backdoor alone, L1 gets the #GP (#VMEXIT 0x4d). Loop: bit 0 dialect, bit 1 nested off.
 */
#include "refkvm_env.h"

static const char *const dialects[2] = { "rusin-v2", "single-cap" };

/* L1: EFER.SVME; VM_HSAVE_PA = 0xd000; vmrun 0xc000; out 0x81, low byte of the exit code; hlt */
static const uint8_t code_l1[] = {
	0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, 0x32, 0x0d, 0x00, 0x10, 0x00, 0x00, 0x0f, 0x30,
	0xb9, 0x17, 0x01, 0x01, 0xc0, 0xb8, 0x00, 0xd0, 0x00, 0x00, 0x31, 0xd2, 0x0f, 0x30,
	0xb8, 0x00, 0xc0, 0x00, 0x00, 0x0f, 0x01, 0xd8,
	0xa1, 0x70, 0xc0, 0x00, 0x00, 0xe6, RK_L1_PORT, 0xf4,
};
/* L2 at CPL3: mov eax,MAGIC; mov ecx,10; mov edx,0x5658; in eax,dx; vmmcall */
static const uint8_t code_l2[] = { 0xb8, 0x68, 0x58, 0x4d, 0x56, 0xb9, 10, 0, 0, 0,
				   0xba, 0x58, 0x56, 0, 0, 0xed, 0x0f, 0x01, 0xd9 };

static void vmcb_seg(uint8_t *m, uint32_t at, uint16_t sel, uint16_t attrib, uint32_t limit, uint64_t base)
{
	memcpy(m + at, &sel, 2);
	memcpy(m + at + 2, &attrib, 2);
	rk_put32(m, at + 4, limit);
	rk_put64(m, at + 8, base);
}

static void setup_l1_l2(struct rk_vm *v)
{
	uint8_t *m = v->mem;
	/* KVM runs SVM instructions only with paging on */
	rk_put32(m, 0xe000, 0x87);
	struct kvm_sregs s;
	ck_assert_int_eq(ioctl(v->vcpu_fd, KVM_GET_SREGS, &s), 0);
	s.cr3 = 0xe000;
	s.cr4 |= 0x10;
	s.cr0 |= 0x80000000u;
	ck_assert_int_eq(ioctl(v->vcpu_fd, KVM_SET_SREGS, &s), 0);
	/* CPUID with SVM, as KVM offers it */
	static struct {
		struct kvm_cpuid2 c;
		struct kvm_cpuid_entry2 e[256];
	} cp;
	memset(&cp, 0, sizeof(cp));
	cp.c.nent = 256;
	ck_assert_int_eq(ioctl(v->kvm_fd, KVM_GET_SUPPORTED_CPUID, &cp), 0);
	bool svm = false;
	for (unsigned i = 0; i < cp.c.nent; i++)
		if (cp.e[i].function == 0x80000001 && (cp.e[i].ecx & (1u << 2)))
			svm = true;
	ck_assert_msg(svm, "KVM offers no SVM to its guests (kvm_amd.nested=0?)");
	ck_assert_int_eq(ioctl(v->vcpu_fd, KVM_SET_CPUID2, &cp), 0);

	memcpy(m + 0x9000, code_l2, sizeof(code_l2));
	memset(m + 0xc000, 0, 0x1000);
	rk_put32(m, 0xc008, 1u << 13);             /* intercept #GP */
	rk_put32(m, 0xc010, (1u << 0) | (1u << 1)); /* intercept VMRUN, VMMCALL */
	rk_put32(m, 0xc058, 1);                    /* ASID */
	vmcb_seg(m, 0xc400, 0x23, 0xcf3, 0xffffffff, 0);
	vmcb_seg(m, 0xc410, 0x1b, 0xcfb, 0xffffffff, 0);
	vmcb_seg(m, 0xc420, 0x23, 0xcf3, 0xffffffff, 0);
	vmcb_seg(m, 0xc430, 0x23, 0xcf3, 0xffffffff, 0);
	vmcb_seg(m, 0xc440, 0x23, 0xcf3, 0xffffffff, 0);
	vmcb_seg(m, 0xc450, 0x23, 0xcf3, 0xffffffff, 0);
	vmcb_seg(m, 0xc460, 0, 0, 0x2f, 0x1000);         /* gdtr */
	vmcb_seg(m, 0xc480, 0, 0, 32 * 8 - 1, 0x2000);   /* idtr */
	vmcb_seg(m, 0xc490, 0x28, 0x089, 103, 0x3000);   /* tr */
	m[0xc4cb] = 3;                                   /* cpl */
	rk_put64(m, 0xc4d0, 0x1000);                     /* efer.SVME */
	rk_put64(m, 0xc558, 0x11);                       /* cr0 */
	rk_put64(m, 0xc560, 0x400);                      /* dr7 */
	rk_put64(m, 0xc568, 0xffff0ff0);                 /* dr6 */
	rk_put64(m, 0xc570, 2);                          /* rflags */
	rk_put64(m, 0xc578, 0x9000);                     /* rip */
	rk_put64(m, 0xc5d8, 0xa000);                     /* rsp */
	rk_put64(m, 0xc668, 0x0007040600070406ull);      /* g_pat */
}

START_TEST(l2_cpl3_backdoor)
{
	int d = _i & 1;
	bool nested = !(_i & 2);
	rk_use_refkvm_numbers();
	struct rk_vm v;
	rk_vm_create(&v, dialects[d]);
	uint32_t pol = VMWKVM_POLICY_BACKDOOR | (nested ? VMWKVM_POLICY_NESTED_BACKDOOR : 0);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(v.lvm, pol), 0);
	rk_vcpu_setup(&v, 0, code_l1, sizeof(code_l1));
	setup_l1_l2(&v);
	ck_assert_int_eq(rk_run(&v), 0);
	ck_assert_msg(rk_reported_vector(&v) < 0, "L1 took exception %d", rk_reported_vector(&v));
	ck_assert_uint_eq(v.run->exit_reason, KVM_EXIT_IO);
	struct vmwkvm_call call;
	if (!nested) {
		/* L1 got the #GP as #VMEXIT 0x4d; its report is not a backdoor call */
		ck_assert_uint_eq(v.run->io.port, RK_L1_PORT);
		ck_assert_uint_eq(*rk_io_data(&v), 0x4d);
		ck_assert_uint_eq(rk_get64(v.mem, 0xc070), 0x4d);
		ck_assert_uint_eq(v.run->flags & RK_RUN_X86_GUEST_MODE, 0);
		ck_assert_int_eq(vmwkvm_exit_decode(v.lvcpu, &call), VMWKVM_EXIT_NOT_BACKDOOR);
		rk_vm_destroy(&v);
		return;
	}
	ck_assert_uint_eq(v.run->io.port, 0x5658);
	ck_assert_uint_ne(v.run->flags & RK_RUN_X86_GUEST_MODE, 0);
	ck_assert_int_eq(vmwkvm_exit_decode(v.lvcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_L2);
	ck_assert_uint_eq(call.cpl, 3);
	ck_assert_uint_eq(call.command, 10);
	struct vmwkvm_reply rep;
	memset(&rep, 0, sizeof(rep));
	rep.set = VMWKVM_REPLY_EAX;
	rep.eax = 0x0badcafe;
	ck_assert_int_eq(vmwkvm_exit_complete(v.lvcpu, &call, &rep), 0);
	ck_assert_int_eq(rk_run(&v), 0);
	/* L2 went on to its VMMCALL, which L1 intercepts (#VMEXIT 0x81) */
	ck_assert_uint_eq(v.run->exit_reason, KVM_EXIT_IO);
	ck_assert_uint_eq(v.run->io.port, RK_L1_PORT);
	ck_assert_uint_eq(*rk_io_data(&v), 0x81);
	ck_assert_uint_eq(v.run->flags & RK_RUN_X86_GUEST_MODE, 0);
	ck_assert_uint_eq((uint32_t)rk_get64(v.mem, 0xc5f8), 0x0badcafe); /* L2's RAX in the VMCB */
	rk_vm_destroy(&v);
}
END_TEST

int main(void)
{
	rk_require("refkvm/test_refkvm_nested");
	Suite *s = suite_create("refkvm_nested");
	TCase *t = tcase_create("nested");
	tcase_set_timeout(t, 120);
	tcase_add_loop_test(t, l2_cpl3_backdoor, 0, 4);
	suite_add_tcase(s, t);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
