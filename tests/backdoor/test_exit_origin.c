/* Origin of each decoded call on a vCPU (issue 5): L1/L2 from KVM_RUN_X86_GUEST_MODE when
 * the kernel has KVM_CAP_X86_GUEST_MODE (238), "unknown" without it; CPL and operating
 * mode from the segment registers (sync regs or KVM_GET_SREGS). The kernel model produces
 * the LB exit through a run hook, so the L2 flag can be set synthetically. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "kmodel.h"

#define MAGIC VMWKVM_BDOOR_MAGIC

static struct kmodel *m;
static int kvm_fd = -1, vm_fd = -1, vcpu_fd = -1;
static vmwkvm_vm *vm;
static vmwkvm_vcpu *vcpu;
static struct vmwkvm_call call;

struct hook_cfg {
	bool l2;
	int mode;
	unsigned cpl;
	bool vm86;
};
static struct hook_cfg hc;

/* The guest executes IN EAX,DX on port 0x5658 with the magic; L2 per hc. */
static int lb_hook(void *ctx, struct kmodel_run_ctx *rc)
{
	(void)ctx;
	struct kvm_run *run = rc->run;
	run->exit_reason = KVM_EXIT_IO;
	run->io.direction = KVM_EXIT_IO_IN;
	run->io.size = 4;
	run->io.port = 0x5658;
	run->io.count = 1;
	run->io.data_offset = 4096;
	if (hc.l2)
		run->flags |= VMWKVM_UAPI_RUN_X86_GUEST_MODE;
	kmodel_sregs_mode(rc->sregs, hc.mode, hc.cpl);
	rc->regs->rax = MAGIC;
	rc->regs->rcx = 0x0000001E;
	rc->regs->rflags = 0x202 | (hc.vm86 ? (1u << 17) : 0);
	return 0;
}

static void up(bool cap238, int regs_mode)
{
	m = kmodel_new(NULL);
	ck_assert_ptr_nonnull(m);
	if (!cap238)
		kmodel_set_cap(m, VMWKVM_UAPI_CAP_X86_GUEST_MODE, 0);
	kmodel_install(m);
	kmodel_set_run_hook(m, lb_hook, NULL);
	kvm_fd = vk_open("/dev/kvm", O_RDWR);
	ck_assert_int_ge(kvm_fd, 0);
	vm_fd = vk_ioctl(kvm_fd, KVM_CREATE_VM, NULL);
	ck_assert_int_ge(vm_fd, 0);
	struct vmwkvm_vm_opts vo;
	memset(&vo, 0, sizeof(vo));
	vo.sz = sizeof(vo);
	vo.kvm_fd = kvm_fd;
	vo.kvm_fd_set = 1;
	vo.dialect = "none";
	ck_assert_int_eq(vmwkvm_vm_new(vm_fd, &vo, &vm), 0);
	vcpu_fd = vmwkvm_vm_create_vcpu(vm, 0);
	ck_assert_int_ge(vcpu_fd, 0);
	struct vmwkvm_vcpu_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.regs_mode = regs_mode;
	ck_assert_int_eq(vmwkvm_vcpu_new(vm, vcpu_fd, NULL, 0, &o, &vcpu), 0);
}

static void down(void)
{
	vmwkvm_vcpu_free(vcpu);
	vmwkvm_vm_free(vm);
	vk_close(vcpu_fd);
	vk_close(vm_fd);
	vk_close(kvm_fd);
	kmodel_free(m);
	vcpu = NULL, vm = NULL, m = NULL;
}

static void call_once(void)
{
	ck_assert_int_eq(vmwkvm_vcpu_run(vcpu), 0);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.command, 30);
}

START_TEST(origin_l1_l2_unknown)
{
	int mode = (_i & 1) ? VMWKVM_REGS_IOCTL : VMWKVM_REGS_SYNC;
	up(true, mode);
	hc = (struct hook_cfg){ .l2 = false, .mode = KMODEL_MODE_PROT32, .cpl = 3 };
	call_once();
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_L1);
	hc.l2 = true;
	call_once();
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_L2);
	ck_assert_uint_eq(call.cpl, 3);
	ck_assert_uint_eq(call.mode, VMWKVM_MODE_PROT32);
	down();
	/* a kernel without cap 238: the flag is not trusted */
	up(false, mode);
	hc.l2 = true;
	call_once();
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_UNKNOWN);
	hc.l2 = false;
	call_once();
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_UNKNOWN);
	down();
}
END_TEST

START_TEST(cpl_and_mode)
{
	static const struct {
		int kmode;
		unsigned cpl;
		bool vm86;
		uint8_t mode, want_cpl;
	} cases[] = {
		{ KMODEL_MODE_REAL, 0, false, VMWKVM_MODE_REAL, 0 },
		{ KMODEL_MODE_PROT32, 0, false, VMWKVM_MODE_PROT32, 0 },
		{ KMODEL_MODE_PROT32, 3, false, VMWKVM_MODE_PROT32, 3 },
		{ KMODEL_MODE_LONG64, 0, false, VMWKVM_MODE_LONG64, 0 },
		{ KMODEL_MODE_LONG64, 3, false, VMWKVM_MODE_LONG64, 3 },
		{ KMODEL_MODE_VM86, 3, true, VMWKVM_MODE_VM86, 3 },
	};
	int mode = (_i & 1) ? VMWKVM_REGS_IOCTL : VMWKVM_REGS_SYNC;
	up(true, mode);
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		hc = (struct hook_cfg){ .mode = cases[k].kmode, .cpl = cases[k].cpl, .vm86 = cases[k].vm86 };
		call_once();
		ck_assert_msg(call.mode == cases[k].mode, "case %zu: mode %u", k, call.mode);
		ck_assert_msg(call.cpl == cases[k].want_cpl, "case %zu: cpl %u", k, call.cpl);
	}
	down();
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("exit_origin");
	TCase *t = tcase_create("origin");
	tcase_add_loop_test(t, origin_l1_l2_unknown, 0, 2);
	tcase_add_loop_test(t, cpl_and_mode, 0, 2);
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
