/* Hypercall exits of each proposed dialect against the kernel model (tests/common/kmodel.h):
 * decode (GPRs/CPL/mode from the payload, flags), completion (result -> RAX, other
 * registers through sync regs or KVM_SET_REGS, RIP advanced by the kernel), exception
 * injection (RIP not advanced), invalid calls, and the exit-40 collision with
 * KVM_EXIT_TDX on kernels where no VMware hypercall exit was enabled through us. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "kmodel.h"

#define MAGIC VMWKVM_BDOOR_MAGIC
#define RIP0 0x1000u
#define RUSIN_EXIT 40u
#define SINGLE_CAP 250u
#define SINGLE_EXIT 43u

static struct kmodel *m;
static int kvm_fd = -1, vm_fd = -1, vcpu_fd = -1;
static vmwkvm_vm *vm;
static vmwkvm_vcpu *vcpu;
static struct kvm_run *run;
static struct vmwkvm_call call;

/* Bring up a model kernel of @p dialect, a VM (hypercall exit enabled through the
 * dialect's ENABLE_CAP when @p enable) and one vCPU in @p regs_mode. */
static void up(int dialect, int regs_mode, bool enable)
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.dialect = dialect;
	c.single_cap = SINGLE_CAP;
	c.single_exit = SINGLE_EXIT;
	m = kmodel_new(&c);
	ck_assert_ptr_nonnull(m);
	kmodel_install(m);
	struct vmwkvm_proposed_numbers n;
	memset(&n, 0, sizeof(n));
	n.sz = sizeof(n);
	n.rusin_cap_backdoor = 239;
	n.rusin_cap_hypercall = 240;
	n.rusin_cap_nested = 241;
	n.rusin_exit_vmware = RUSIN_EXIT;
	n.single_cap = SINGLE_CAP;
	n.single_exit = SINGLE_EXIT;
	ck_assert_int_eq(vmwkvm_proposed_set(&n), 0);

	kvm_fd = vk_open("/dev/kvm", O_RDWR);
	ck_assert_int_ge(kvm_fd, 0);
	vm_fd = vk_ioctl(kvm_fd, KVM_CREATE_VM, NULL);
	ck_assert_int_ge(vm_fd, 0);
	struct vmwkvm_vm_opts vo;
	memset(&vo, 0, sizeof(vo));
	vo.sz = sizeof(vo);
	vo.kvm_fd = kvm_fd;
	vo.kvm_fd_set = 1;
	vo.dialect = dialect == KMODEL_DIALECT_RUSIN_V2    ? "rusin-v2"
		     : dialect == KMODEL_DIALECT_SINGLE_CAP ? "single-cap"
							    : "none";
	ck_assert_int_eq(vmwkvm_vm_new(vm_fd, &vo, &vm), 0);
	if (enable) {
		/* what the policy layer (issue 5) does for VMWKVM_POLICY_HYPERCALL */
		struct kvm_enable_cap ec;
		memset(&ec, 0, sizeof(ec));
		if (dialect == KMODEL_DIALECT_RUSIN_V2) {
			ec.cap = 240;
			ec.args[0] = 1;
			vm->hypercall_exit = RUSIN_EXIT;
		} else {
			ec.cap = SINGLE_CAP;
			ec.args[0] = VMWKVM_SINGLE_CAP_ENABLE_HYPERCALL;
			vm->hypercall_exit = SINGLE_EXIT;
		}
		ck_assert_int_eq(vk_ioctl(vm_fd, KVM_ENABLE_CAP, &ec), 0);
	}
	vcpu_fd = vmwkvm_vm_create_vcpu(vm, 0);
	ck_assert_int_ge(vcpu_fd, 0);
	struct vmwkvm_vcpu_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.regs_mode = regs_mode;
	ck_assert_int_eq(vmwkvm_vcpu_new(vm, vcpu_fd, NULL, 0, &o, &vcpu), 0);
	run = vmwkvm_vcpu_kvm_run(vcpu);
	ck_assert_ptr_nonnull(run);
}

static void down(void)
{
	vmwkvm_vcpu_free(vcpu);
	vmwkvm_vm_free(vm);
	vcpu = NULL;
	vm = NULL;
	if (vcpu_fd >= 0)
		vk_close(vcpu_fd);
	if (vm_fd >= 0)
		vk_close(vm_fd);
	if (kvm_fd >= 0)
		vk_close(kvm_fd);
	vcpu_fd = vm_fd = kvm_fd = -1;
	kmodel_free(m);
	m = NULL;
	vmwkvm_proposed_set(NULL);
}

/* Guest state: mode/CPL and registers with garbage in every high half. */
static void guest(int mode, unsigned cpl, uint64_t rax, uint64_t rcx, uint64_t rdx)
{
	struct kvm_sregs s;
	kmodel_sregs_mode(&s, mode, cpl);
	ck_assert_int_eq(kmodel_vcpu_set_sregs(m, vcpu_fd, &s), 0);
	struct kvm_regs r;
	memset(&r, 0, sizeof(r));
	r.rax = rax;
	r.rbx = 0xB0B0B0B000000000ull | (uint32_t)~MAGIC;
	r.rcx = rcx;
	r.rdx = rdx;
	r.rsi = 0x5151515100000011ull;
	r.rdi = 0xD1D1D1D100000022ull;
	r.rbp = 0xBBBBBBBB12345678ull;
	r.rsp = 0x8000;
	r.r9 = 9;
	r.rip = RIP0;
	r.rflags = 0x202;
	ck_assert_int_eq(kmodel_vcpu_set_regs(m, vcpu_fd, &r), 0);
}

static struct kvm_regs regs_now(void)
{
	struct kvm_regs r;
	ck_assert_int_eq(kmodel_vcpu_regs(m, vcpu_fd, &r), 0);
	return r;
}

static void vmcall_exit(void)
{
	ck_assert_int_eq(kmodel_vcpu_vmcall(m, vcpu_fd), 0);
	ck_assert_int_eq(vmwkvm_vcpu_run(vcpu), 0);
}

static size_t vcpu_ioctls_since(size_t from)
{
	size_t n = kmodel_log_count(m), k = 0;
	for (size_t i = from; i < n; i++) {
		struct kmodel_call c;
		ck_assert_int_eq(kmodel_log_get(m, i, &c), 0);
		if (c.fd_kind == KMODEL_FD_VCPU)
			k++;
	}
	return k;
}

/* _i encodes (dialect, regs mode) */
static int dialect_of(int i)
{
	return (i & 1) ? KMODEL_DIALECT_SINGLE_CAP : KMODEL_DIALECT_RUSIN_V2;
}
static int mode_of(int i)
{
	return (i & 2) ? VMWKVM_REGS_IOCTL : VMWKVM_REGS_SYNC;
}
static uint32_t exit_of(int i)
{
	return (i & 1) ? SINGLE_EXIT : RUSIN_EXIT;
}

START_TEST(getversion_roundtrip)
{
	up(dialect_of(_i), mode_of(_i), true);
	guest(KMODEL_MODE_PROT32, 3, MAGIC, 0xFFFF000A, 0);
	vmcall_exit();
	ck_assert_uint_eq(run->exit_reason, exit_of(_i));
	size_t mark = kmodel_log_count(m);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.transport, VMWKVM_TRANSPORT_HYPERCALL);
	ck_assert_uint_eq(call.command, 10);
	ck_assert_uint_eq(call.subcommand, 0xFFFF);
	ck_assert_uint_eq(call.cpl, 3);
	ck_assert_uint_eq(call.mode, VMWKVM_MODE_PROT32);
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_L1);
	ck_assert_uint_eq(call.rbx, (uint32_t)~MAGIC); /* 32-bit outside long mode */
	ck_assert_uint_eq(call.rbp, 0x12345678);
	ck_assert_uint_eq(call.rip, RIP0);
	ck_assert_uint_eq(call.exit_reason, exit_of(_i));
	struct vmwkvm_reply r;
	memset(&r, 0, sizeof(r));
	r.set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX | VMWKVM_REPLY_ECX;
	r.eax = 6, r.ebx = MAGIC, r.ecx = 2;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	/* sync regs: no ioctl at all; ioctl mode: GET_REGS, GET_SREGS, SET_REGS */
	ck_assert_uint_eq(vcpu_ioctls_since(mark), mode_of(_i) == VMWKVM_REGS_SYNC ? 0 : 3);
	ck_assert_int_eq(kmodel_vcpu_pending_hypercall(m, vcpu_fd), 1);
	ck_assert_int_eq(vmwkvm_vcpu_run(vcpu), 0);
	ck_assert_uint_eq(run->exit_reason, KVM_EXIT_HLT);
	struct kvm_regs g = regs_now();
	ck_assert_uint_eq(g.rax, 6);
	ck_assert_uint_eq(g.rbx, MAGIC);
	ck_assert_uint_eq(g.rcx, 2);
	ck_assert_uint_eq(g.rdx, 0);
	ck_assert_uint_eq(g.rsi, 0x5151515100000011ull); /* untouched: all 64 bits */
	ck_assert_uint_eq(g.rbp, 0xBBBBBBBB12345678ull);
	ck_assert_uint_eq(g.r9, 9);
	ck_assert_uint_eq(g.rip, RIP0 + 3);
	ck_assert_uint_eq(g.rflags, 0x202);
	struct kmodel_exception e;
	ck_assert_int_eq(kmodel_vcpu_take_exception(m, vcpu_fd, &e), 0);
	down();
}
END_TEST

START_TEST(long_mode_zero_extension)
{
	up(dialect_of(_i), mode_of(_i), true);
	guest(KMODEL_MODE_LONG64, 0, MAGIC, 0xABCDEF000000000Aull, 0x7777777700000000ull);
	vmcall_exit();
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.mode, VMWKVM_MODE_LONG64);
	ck_assert_uint_eq(call.cpl, 0);
	ck_assert_uint_eq(call.command, 10);
	ck_assert_uint_eq(call.subcommand, 0);
	ck_assert_uint_eq(call.rcx, 0xABCDEF000000000Aull); /* full 64 bits in long mode */
	struct vmwkvm_reply r;
	memset(&r, 0, sizeof(r));
	r.set = VMWKVM_REPLY_EBX | VMWKVM_REPLY_ESI;
	r.ebx = MAGIC;
	r.esi = 0xFFFFFFFF;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	ck_assert_int_eq(vmwkvm_vcpu_run(vcpu), 0);
	struct kvm_regs g = regs_now();
	ck_assert_uint_eq(g.rax, MAGIC); /* EAX not in the reply: RAX kept */
	ck_assert_uint_eq(g.rbx, MAGIC);
	ck_assert_uint_eq(g.rsi, 0xFFFFFFFFull);
	ck_assert_uint_eq(g.rcx, 0xABCDEF000000000Aull);
	ck_assert_uint_eq(g.rdx, 0x7777777700000000ull);
	ck_assert_uint_eq(g.rip, RIP0 + 3);
	down();
}
END_TEST

START_TEST(inject_page_fault)
{
	up(dialect_of(_i), mode_of(_i), true);
	guest(KMODEL_MODE_LONG64, 3, MAGIC, 0x5B, 0);
	vmcall_exit();
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_str_eq(vmwkvm_command_name(call.command), "STEALCLOCK");
	struct vmwkvm_reply r;
	memset(&r, 0, sizeof(r));
	r.set = VMWKVM_REPLY_INJECT;
	r.vector = 14;
	r.error_code = 0x7;
	r.address = 0xFFFF8000DEAD0000ull; /* bits 63:32 must survive */
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	ck_assert_int_eq(vmwkvm_vcpu_run(vcpu), 0);
	struct kmodel_exception e;
	ck_assert_int_eq(kmodel_vcpu_take_exception(m, vcpu_fd, &e), 1);
	ck_assert_uint_eq(e.vector, 14);
	ck_assert_uint_eq(e.error_code, 7);
	ck_assert_uint_eq(e.address, 0xFFFF8000DEAD0000ull);
	struct kvm_regs g = regs_now();
	ck_assert_uint_eq(g.rip, RIP0); /* fault at the VMCALL */
	ck_assert_uint_eq(g.rax, MAGIC);
	down();
}
END_TEST

START_TEST(inject_gp_and_bad_vectors)
{
	up(dialect_of(_i), mode_of(_i), true);
	guest(KMODEL_MODE_PROT32, 3, MAGIC, 85, 0); /* MKS_GUEST_STATS, CPL0-only, from CPL3 */
	vmcall_exit();
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	struct vmwkvm_reply r;
	memset(&r, 0, sizeof(r));
	r.set = VMWKVM_REPLY_INJECT;
	static const uint8_t bad[] = { 2, 15, 22, 27, 31, 32, 200 };
	for (size_t k = 0; k < sizeof(bad); k++) {
		r.vector = bad[k];
		ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), -EINVAL);
	}
	r.vector = 13;
	r.error_code = 0;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	ck_assert_int_eq(vmwkvm_vcpu_run(vcpu), 0);
	struct kmodel_exception e;
	ck_assert_int_eq(kmodel_vcpu_take_exception(m, vcpu_fd, &e), 1);
	ck_assert_uint_eq(e.vector, 13);
	ck_assert_uint_eq(regs_now().rip, RIP0);
	/* the next call completes normally again (exception fields reset) */
	guest(KMODEL_MODE_PROT32, 3, MAGIC, 10, 0);
	vmcall_exit();
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, NULL), 0);
	ck_assert_int_eq(vmwkvm_vcpu_run(vcpu), 0);
	ck_assert_int_eq(kmodel_vcpu_take_exception(m, vcpu_fd, &e), 0);
	ck_assert_uint_eq(regs_now().rax, 0xFFFFFFFFu);
	ck_assert_uint_eq(regs_now().rip, RIP0 + 3);
	down();
}
END_TEST

START_TEST(bad_magic)
{
	up(dialect_of(_i), mode_of(_i), true);
	guest(KMODEL_MODE_PROT32, 3, 1 /* a KVM PV hypercall number */, 10, 0);
	vmcall_exit();
	if (dialect_of(_i) == KMODEL_DIALECT_RUSIN_V2) {
		/* rusin-v2 forwards every VMCALL: invalid, answered "no backdoor" */
		ck_assert_uint_eq(run->exit_reason, RUSIN_EXIT);
		ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_INVALID);
		ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_MAGIC);
		ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, NULL), -EINVAL);
		ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
		ck_assert_int_eq(vmwkvm_vcpu_run(vcpu), 0);
		struct kvm_regs g = regs_now();
		ck_assert_uint_eq(g.rax, 0xFFFFFFFFu);
		ck_assert_uint_eq(g.rbx, 0xB0B0B0B000000000ull | (uint32_t)~MAGIC);
		ck_assert_uint_eq(g.rip, RIP0 + 3);
	} else {
		/* single-cap forwards only the magic: mainline answers -KVM_EPERM at CPL3 */
		ck_assert_uint_eq(run->exit_reason, KVM_EXIT_HLT);
		ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_NOT_BACKDOOR);
		ck_assert_uint_eq(regs_now().rax, 0xFFFFFFFFu);
	}
	down();
}
END_TEST

START_TEST(hb_flags)
{
	up(dialect_of(_i), mode_of(_i), true);
	guest(KMODEL_MODE_LONG64, 0, MAGIC, 26, 0x00050003);
	vmcall_exit();
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.hypercall_flags, VMWKVM_HCALL_FLAG_HB | VMWKVM_HCALL_FLAG_WRITE);
	ck_assert_uint_eq(call.direction, VMWKVM_DIR_OUT);
	ck_assert_uint_eq(call.hb_total, 26);
	ck_assert_uint_eq(call.command, (uint16_t)~MAGIC); /* HB command from EBX */
	/* a receive flag with an over-long buffer */
	down();
	up(dialect_of(_i), mode_of(_i), true);
	guest(KMODEL_MODE_LONG64, 0, MAGIC, 65537, 0x00050001);
	vmcall_exit();
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_LENGTH);
	ck_assert_uint_eq(call.direction, VMWKVM_DIR_IN);
	ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
	ck_assert_int_eq(vmwkvm_vcpu_run(vcpu), 0);
	ck_assert_uint_eq(regs_now().rax, 0xFFFFFFFFu);
	down();
}
END_TEST

START_TEST(other_dialects_exit_is_not_ours)
{
	/* a rusin-v2 VM sees exit 43 (single-cap's number) and the other way round */
	up(dialect_of(_i), mode_of(_i), true);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_NOT_BACKDOOR); /* nothing ran yet */
	run->exit_reason = (_i & 1) ? RUSIN_EXIT : SINGLE_EXIT;
	struct vmwkvm_proposed_vmware_exit *x = vmwkvm_proposed_run_vmware(run);
	x->type = 1;
	x->hcall.rax = MAGIC;
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_NOT_BACKDOOR);
	down();
}
END_TEST

/* ------------------------------------------------------------------ exit 40 = KVM_EXIT_TDX */

/* run hook: the kernel reports exit 40 with bytes that even look like a VMware payload */
static int tdx_hook(void *ctx, struct kmodel_run_ctx *rc)
{
	(void)ctx;
	rc->run->exit_reason = VMWKVM_UAPI_EXIT_TDX;
	struct vmwkvm_proposed_vmware_exit *x = vmwkvm_proposed_run_vmware(rc->run);
	memset(x, 0, sizeof(*x));
	x->type = 1;
	x->hcall.rax = MAGIC;
	x->hcall.rcx = 10;
	return 0;
}

static const int tdx_dialects[] = { KMODEL_DIALECT_NONE, KMODEL_DIALECT_MAINLINE_ARM, KMODEL_DIALECT_RUSIN_V2,
				    KMODEL_DIALECT_SINGLE_CAP };

START_TEST(tdx_collision)
{
	int d = tdx_dialects[_i / 2];
	int mode = (_i & 1) ? VMWKVM_REGS_IOCTL : VMWKVM_REGS_SYNC;
	up(d, mode, false); /* no hypercall exit enabled through the library */
	ck_assert_uint_eq(vm->hypercall_exit, 0);
	kmodel_set_run_hook(m, tdx_hook, NULL);
	ck_assert_int_eq(vmwkvm_vcpu_run(vcpu), 0);
	ck_assert_uint_eq(run->exit_reason, 40);
	static uint8_t before[KMODEL_RUN_SIZE];
	memcpy(before, run, KMODEL_RUN_SIZE);
	size_t mark = kmodel_log_count(m);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_NOT_BACKDOOR);
	ck_assert_uint_eq(call.transport, VMWKVM_TRANSPORT_NONE);
	ck_assert_uint_eq(call.exit_reason, 40);
	ck_assert_uint_eq(vcpu_ioctls_since(mark), 0); /* not even a register read */
	ck_assert_mem_eq(before, run, KMODEL_RUN_SIZE);  /* left untouched */
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, NULL), -EINVAL);
	ck_assert_mem_eq(before, run, KMODEL_RUN_SIZE);
	kmodel_set_run_hook(m, NULL, NULL);
	/* a VMware VMCALL on such a VM gets mainline's answer and never reaches us */
	guest(KMODEL_MODE_PROT32, 0, MAGIC, 10, 0);
	vmcall_exit();
	ck_assert_uint_eq(run->exit_reason, KVM_EXIT_HLT);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_NOT_BACKDOOR);
	ck_assert_uint_eq(regs_now().rax, (uint32_t)-1000); /* -KVM_ENOSYS at CPL0 */
	down();
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("exit_hypercall");
	TCase *t = tcase_create("dialects");
	/* _i: bit 0 = dialect (rusin-v2 / single-cap), bit 1 = regs mode (sync / ioctl) */
	tcase_add_loop_test(t, getversion_roundtrip, 0, 4);
	tcase_add_loop_test(t, long_mode_zero_extension, 0, 4);
	tcase_add_loop_test(t, inject_page_fault, 0, 4);
	tcase_add_loop_test(t, inject_gp_and_bad_vectors, 0, 4);
	tcase_add_loop_test(t, bad_magic, 0, 4);
	tcase_add_loop_test(t, hb_flags, 0, 4);
	tcase_add_loop_test(t, other_dialects_exit_is_not_ours, 0, 4);
	suite_add_tcase(s, t);
	TCase *x = tcase_create("tdx");
	tcase_add_loop_test(x, tdx_collision, 0, 2 * (int)(sizeof(tdx_dialects) / sizeof(tdx_dialects[0])));
	suite_add_tcase(s, x);
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
