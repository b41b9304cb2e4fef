/* Per-VM VMware policy (lib/policy/policy.c) against the kernel model, for each dialect. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dialect_probe.h"
#include "core/internal.h"
#include "kmodel.h"

static struct kmodel *M;
static int SYS = -1;
static int VMFD = -1;
static vmwkvm_vm *VM;

/* ---- log capture ---- */
static char LOG[8192];
static void log_cb(int level, const char *msg, void *ctx)
{
	(void)ctx;
	size_t n = strlen(LOG);
	snprintf(LOG + n, sizeof(LOG) - n, "%d:%s\n", level, msg);
}

#define ASSERT_CONTAINS(hay, needle) ck_assert_msg(strstr((hay), (needle)) != NULL, "'%s' lacks '%s'", (hay), (needle))

struct fixture_opts {
	int kmodel_dialect;
	const char *lib_dialect; /* "auto", "rusin-v2", ... */
	uint32_t single_cap, single_exit;
	uint64_t single_mask; /* 0: default 7 */
	char param;           /* 0: default 'N'; '-' absent */
};

static void start(const struct fixture_opts *o)
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.dialect = o->kmodel_dialect;
	if (o->single_mask)
		c.single_valid_mask = o->single_mask;
	if (o->param)
		c.backdoor_param = o->param == '-' ? 0 : o->param;
	M = kmodel_new(&c);
	ck_assert_ptr_nonnull(M);
	kmodel_install(M);
	struct vmwkvm_proposed_numbers n;
	memset(&n, 0, sizeof(n));
	n.sz = sizeof(n);
	n.rusin_cap_backdoor = 239;
	n.rusin_cap_hypercall = 240;
	n.rusin_cap_nested = 241;
	n.rusin_exit_vmware = 40;
	n.single_cap = o->single_cap;
	n.single_exit = o->single_exit;
	ck_assert_int_eq(vmwkvm_proposed_set(&n), 0);
	SYS = vk_open("/dev/kvm", O_RDWR);
	ck_assert_int_ge(SYS, 0);
	VMFD = vk_ioctl(SYS, KVM_CREATE_VM, 0);
	ck_assert_int_ge(VMFD, 0);
	struct vmwkvm_vm_opts vo;
	memset(&vo, 0, sizeof(vo));
	vo.sz = sizeof(vo);
	vo.kvm_fd = SYS;
	vo.kvm_fd_set = 1;
	vo.dialect = o->lib_dialect;
	ck_assert_int_eq(vmwkvm_vm_new(VMFD, &vo, &VM), 0);
	LOG[0] = '\0';
	vmwkvm_set_log(log_cb, NULL, VMWKVM_LOG_DEBUG);
}

static void stop(void)
{
	vmwkvm_set_log(NULL, NULL, VMWKVM_LOG_ERROR);
	vmwkvm_vm_free(VM);
	VM = NULL;
	kmodel_free(M);
	M = NULL;
	vmwkvm_proposed_set(NULL);
}

/* ENABLE_CAP calls made on the caller's VM fd since log index from. */
static const char *vm_enables(size_t from)
{
	static char buf[2048];
	unsigned long only[] = { KVM_ENABLE_CAP };
	kmodel_log_format_fd(M, from, VMFD, only, 1, buf, sizeof(buf));
	return buf;
}

static struct vmwkvm_vmware_policy get(void)
{
	struct vmwkvm_vmware_policy p;
	memset(&p, 0, sizeof(p));
	p.sz = sizeof(p);
	ck_assert_int_eq(vmwkvm_vm_get_vmware_policy(VM, &p), 0);
	return p;
}

static struct kmodel_vm_state vmstate(void)
{
	struct kmodel_vm_state st;
	ck_assert_int_eq(kmodel_vm_state(M, VMFD, &st), 0);
	return st;
}

#define B VMWKVM_POLICY_BACKDOOR
#define H VMWKVM_POLICY_HYPERCALL
#define N VMWKVM_POLICY_NESTED_BACKDOOR

static const struct fixture_opts RUSIN = { KMODEL_DIALECT_RUSIN_V2, "rusin-v2", 0, 0, 0, 0 };
static const struct fixture_opts SINGLE = { KMODEL_DIALECT_SINGLE_CAP, "auto", 250, 43, 0, 0 };

/* ------------------------------------------------------------ rusin-v2 */

START_TEST(rusin_sequences)
{
	start(&RUSIN);
	struct vmwkvm_vmware_policy p = get();
	ck_assert_int_eq(p.dialect, VMWKVM_DIALECT_RUSIN_V2);
	ck_assert_uint_eq(p.flags, 0); /* default: kvm.enable_vmware_backdoor=N */
	ck_assert_uint_eq(p.set_called, 0);
	ck_assert_int_eq(p.module_param, VMWKVM_PARAM_OFF);

	size_t mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H | N), 0);
	ck_assert_str_eq(vm_enables(mark), "vm ENABLE_CAP 239 1 = 0\n"
					   "vm ENABLE_CAP 240 1 = 0\n"
					   "vm ENABLE_CAP 241 1 = 0\n");
	struct kmodel_vm_state st = vmstate();
	ck_assert(st.rusin_backdoor && st.rusin_hypercall && st.rusin_nested);
	p = get();
	ck_assert_uint_eq(p.flags, B | H | N);
	ck_assert_uint_eq(p.confirmed, B | H | N);
	ck_assert_uint_eq(p.hypercall_exit, 40);
	ck_assert_uint_eq(p.set_called, 1);
	ck_assert_uint_eq(VM->hypercall_exit, 40);
	/* the caller's VM received nothing but the enable sequence */
	ck_assert_uint_eq(kmodel_log_count_req(M, mark, KVM_CREATE_VCPU, -1), 1); /* the scratch VM's */
	ASSERT_CONTAINS(LOG, "VMware policy 'backdoor,hypercall,nested' in force (dialect rusin-v2");

	/* a second call replaces the policy: all three caps written again */
	mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B), 0);
	ck_assert_str_eq(vm_enables(mark), "vm ENABLE_CAP 239 1 = 0\n"
					   "vm ENABLE_CAP 240 0 = 0\n"
					   "vm ENABLE_CAP 241 0 = 0\n");
	st = vmstate();
	ck_assert(st.rusin_backdoor && !st.rusin_hypercall && !st.rusin_nested);
	p = get();
	ck_assert_uint_eq(p.flags, B);
	ck_assert_uint_eq(p.hypercall_exit, 0);
	ck_assert_uint_eq(VM->hypercall_exit, 0);

	mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, 0), 0);
	ck_assert_str_eq(vm_enables(mark), "vm ENABLE_CAP 239 0 = 0\n"
					   "vm ENABLE_CAP 240 0 = 0\n"
					   "vm ENABLE_CAP 241 0 = 0\n");
	ck_assert_uint_eq(get().flags, 0);
	stop();
}
END_TEST

START_TEST(rusin_busy_after_first_vcpu)
{
	start(&RUSIN);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B), 0);
	int v = vmwkvm_vm_create_vcpu(VM, 0);
	ck_assert_int_ge(v, 0);
	size_t mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H), -EBUSY);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, 0), -EBUSY);
	ck_assert_uint_eq(kmodel_log_count(M), mark); /* not a single kernel call */
	ck_assert_uint_eq(get().flags, B);
	ASSERT_CONTAINS(LOG, "only change before the first vCPU");
	stop();

	/* a vCPU the VMM announced */
	start(&RUSIN);
	ck_assert_int_eq(vmwkvm_vm_note_vcpu_created(VM), 1);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B), -EBUSY);
	stop();

	/* a vCPU nobody told the library of: the kernel (model) refuses, reported as -EBUSY */
	start(&RUSIN);
	ck_assert_int_ge(vk_ioctl(VMFD, KVM_CREATE_VCPU, 0), 0);
	mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H), -EBUSY);
	ck_assert_str_eq(vm_enables(mark), "vm ENABLE_CAP 239 1 = -EINVAL\n");
	struct kmodel_vm_state st = vmstate();
	ck_assert(!st.rusin_backdoor && !st.rusin_hypercall);
	ck_assert_uint_eq(get().set_called, 0);
	stop();
}
END_TEST

START_TEST(flag_validation)
{
	start(&RUSIN);
	size_t mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, 1u << 3), -EINVAL);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, 0x80000000u), -EINVAL);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, N), -EINVAL);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, N | H), -EINVAL);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(NULL, B), -EINVAL);
	ck_assert_uint_eq(kmodel_log_count(M), mark);
	ASSERT_CONTAINS(LOG, "nested backdoor needs the backdoor");
	struct vmwkvm_vmware_policy p;
	p.sz = 0;
	ck_assert_int_eq(vmwkvm_vm_get_vmware_policy(VM, &p), -EINVAL);
	ck_assert_int_eq(vmwkvm_vm_get_vmware_policy(NULL, &p), -EINVAL);
	ck_assert_int_eq(vmwkvm_vm_get_vmware_policy(VM, NULL), -EINVAL);
	/* an older, smaller struct is filled up to its size only */
	unsigned char small[sizeof(size_t) + 8];
	memset(small, 0xEE, sizeof(small));
	*(size_t *)(void *)small = sizeof(size_t) + 4;
	ck_assert_int_eq(vmwkvm_vm_get_vmware_policy(VM, (struct vmwkvm_vmware_policy *)(void *)small), 0);
	ck_assert_uint_eq(small[sizeof(size_t) + 4], 0xEE);
	stop();
}
END_TEST

START_TEST(rusin_rollback)
{
	/* from the default (all off): hypercall step fails -> backdoor undone */
	start(&RUSIN);
	ck_assert_int_eq(kmodel_inject_fault_fd(M, VMFD, KVM_ENABLE_CAP, 240, 1, EINTR), 0);
	size_t mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H), -EINTR);
	ck_assert_str_eq(vm_enables(mark), "vm ENABLE_CAP 239 1 = 0\n"
					   "vm ENABLE_CAP 240 1 = -EINTR\n"
					   "vm ENABLE_CAP 239 0 = 0\n");
	struct kmodel_vm_state st = vmstate();
	ck_assert(!st.rusin_backdoor && !st.rusin_hypercall && !st.rusin_nested);
	struct vmwkvm_vmware_policy p = get();
	ck_assert_uint_eq(p.flags, 0);
	ck_assert_uint_eq(p.set_called, 0);
	ck_assert_uint_eq(VM->hypercall_exit, 0);
	stop();

	/* from B|H|N to H: the nested step fails -> the backdoor is switched back on, the
	 * hypercall (unchanged) is left alone */
	start(&RUSIN);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H | N), 0);
	kmodel_inject_fault_fd(M, VMFD, KVM_ENABLE_CAP, 241, 1, ENOMEM);
	mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, H), -ENOMEM);
	ck_assert_str_eq(vm_enables(mark), "vm ENABLE_CAP 239 0 = 0\n"
					   "vm ENABLE_CAP 240 1 = 0\n"
					   "vm ENABLE_CAP 241 0 = -ENOMEM\n"
					   "vm ENABLE_CAP 239 1 = 0\n");
	st = vmstate();
	ck_assert(st.rusin_backdoor && st.rusin_hypercall && st.rusin_nested);
	p = get();
	ck_assert_uint_eq(p.flags, B | H | N);
	ck_assert_uint_eq(p.confirmed, B | H | N);
	ck_assert_uint_eq(VM->hypercall_exit, 40);
	stop();

	/* the undo fails too: report what the kernel really has */
	start(&RUSIN);
	kmodel_inject_fault_fd(M, VMFD, KVM_ENABLE_CAP, 240, 1, EINTR);
	kmodel_inject_fault_fd(M, VMFD, KVM_ENABLE_CAP, 239, 2, EBADF);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H), -EINTR);
	st = vmstate();
	ck_assert(st.rusin_backdoor && !st.rusin_hypercall);
	p = get();
	ck_assert_uint_eq(p.flags, B);
	ck_assert_uint_eq(p.confirmed, B);
	ASSERT_CONTAINS(LOG, "0:VM fd");
	ASSERT_CONTAINS(LOG, "undoing KVM_ENABLE_CAP(239) back to 0 failed");
	stop();

	/* first step fails: nothing to undo */
	start(&RUSIN);
	kmodel_inject_fault_fd(M, VMFD, KVM_ENABLE_CAP, 239, 1, EFAULT);
	mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B), -EFAULT);
	ck_assert_str_eq(vm_enables(mark), "vm ENABLE_CAP 239 1 = -EFAULT\n");
	stop();
}
END_TEST

START_TEST(rusin_default_from_module_param)
{
	struct fixture_opts o = RUSIN;
	o.param = 'Y';
	start(&o);
	struct vmwkvm_vmware_policy p = get();
	ck_assert_int_eq(p.module_param, VMWKVM_PARAM_ON);
	ck_assert_uint_eq(p.flags, B); /* per-VM default = the module parameter */
	ck_assert_uint_eq(p.confirmed, B);
	/* rollback to the default restores the backdoor */
	kmodel_inject_fault_fd(M, VMFD, KVM_ENABLE_CAP, 240, 1, EINTR);
	size_t mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, H), -EINTR);
	ck_assert_str_eq(vm_enables(mark), "vm ENABLE_CAP 239 0 = 0\n"
					   "vm ENABLE_CAP 240 1 = -EINTR\n"
					   "vm ENABLE_CAP 239 1 = 0\n");
	stop();
}
END_TEST

/* ------------------------------------------------------------ single-cap */

START_TEST(single_sequences)
{
	start(&SINGLE);
	ck_assert_int_eq(vmwkvm_vm_dialect(VM), VMWKVM_DIALECT_SINGLE_CAP);
	size_t mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H), 0);
	ck_assert_str_eq(vm_enables(mark), "vm ENABLE_CAP 250 3 = 0\n");
	ck_assert_uint_eq(vmstate().single_mask, 3);
	struct vmwkvm_vmware_policy p = get();
	ck_assert_uint_eq(p.flags, B | H);
	ck_assert_uint_eq(p.confirmed, B | H);
	ck_assert_uint_eq(p.hypercall_exit, 43);
	ck_assert_int_eq(p.dialect, VMWKVM_DIALECT_SINGLE_CAP);
	/* the whole mask is replaced */
	mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | N), 0);
	ck_assert_str_eq(vm_enables(mark), "vm ENABLE_CAP 250 5 = 0\n");
	ck_assert_uint_eq(vmstate().single_mask, 5);
	ck_assert_uint_eq(get().hypercall_exit, 0);
	/* busy */
	ck_assert_int_ge(vmwkvm_vm_create_vcpu(VM, 0), 0);
	mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B), -EBUSY);
	ck_assert_uint_eq(kmodel_log_count(M), mark);
	ck_assert_uint_eq(vmstate().single_mask, 5);
	stop();
}
END_TEST

START_TEST(single_mask_validation)
{
	struct fixture_opts o = SINGLE;
	o.single_mask = 1; /* this kernel offers only the backdoor */
	start(&o);
	size_t mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H), -EOPNOTSUPP);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | N), -EOPNOTSUPP);
	ck_assert_str_eq(vm_enables(mark), "");
	ASSERT_CONTAINS(LOG, "dialect single-cap: hypercall absent: single-cap: bit 0x2 (hypercall) not in the valid mask 0x1");
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B), 0);
	ck_assert_str_eq(vm_enables(mark), "vm ENABLE_CAP 250 1 = 0\n");
	stop();
}
END_TEST

START_TEST(single_failures_keep_previous)
{
	start(&SINGLE);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H), 0);
	kmodel_inject_fault_fd(M, VMFD, KVM_ENABLE_CAP, 250, 1, EFAULT);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B), -EFAULT);
	ck_assert_uint_eq(vmstate().single_mask, 3);
	struct vmwkvm_vmware_policy p = get();
	ck_assert_uint_eq(p.flags, B | H);
	ck_assert_uint_eq(p.hypercall_exit, 43);
	/* a vCPU created behind the library's back: the kernel refuses, -EBUSY */
	ck_assert_int_ge(vk_ioctl(VMFD, KVM_CREATE_VCPU, 0), 0);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, 0), -EBUSY);
	ck_assert_uint_eq(vmstate().single_mask, 3);
	ASSERT_CONTAINS(LOG, "a vCPU exists that the library was not told of");
	/* the scratch VM probe failing leaves the policy alone and says why */
	stop();
	start(&SINGLE);
	kmodel_inject_fault(M, KVM_CREATE_VM, -1, 1, ENOMEM);
	size_t mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B), -EOPNOTSUPP);
	ck_assert_str_eq(vm_enables(mark), "");
	ASSERT_CONTAINS(LOG, "KVM_CREATE_VM (scratch VM) failed with ENOMEM");
	stop();
}
END_TEST

/* ------------------------------------------------------------ collisions, none */

START_TEST(mainline_arm_collision_auto)
{
	start(&(struct fixture_opts){ KMODEL_DIALECT_MAINLINE_ARM, "auto", 0, 0, 0, 0 });
	ck_assert_int_eq(vmwkvm_vm_dialect(VM), VMWKVM_DIALECT_NONE);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, H), -EOPNOTSUPP);
	ASSERT_CONTAINS(LOG, "240 is KVM_CAP_ARM_EL2 upstream");
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | N), -EOPNOTSUPP);
	ASSERT_CONTAINS(LOG, "239 is KVM_CAP_ARM_WRITABLE_IMP_ID_REGS upstream");
	ASSERT_CONTAINS(LOG, "241 is KVM_CAP_ARM_EL2_E2H0 upstream");
	/* over the whole life of the VM: no ENABLE_CAP anywhere, not even CHECK_EXTENSION of 239-241 */
	ck_assert_uint_eq(kmodel_log_count_req(M, 0, KVM_ENABLE_CAP, -1), 0);
	for (long c = 239; c <= 241; c++)
		ck_assert_uint_eq(kmodel_log_count_req(M, 0, KVM_CHECK_EXTENSION, c), 0);
	struct kmodel_vm_state st = vmstate();
	ck_assert_uint_eq(st.unrelated_enables, 0);
	struct vmwkvm_vmware_policy p = get();
	ck_assert_uint_eq(p.flags, 0);
	ck_assert_uint_eq(p.hypercall_exit, 0);
	stop();
}
END_TEST

START_TEST(mainline_arm_explicit_rusin_refused)
{
	start(&(struct fixture_opts){ KMODEL_DIALECT_MAINLINE_ARM, "rusin-v2", 0, 0, 0, 0 });
	size_t mark = kmodel_log_count(M);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B), -EOPNOTSUPP);
	ck_assert_str_eq(vm_enables(mark), ""); /* only the scratch VM saw 239 */
	ck_assert_uint_eq(vmstate().unrelated_enables, 0);
	ASSERT_CONTAINS(LOG, "accepted an invalid value");
	stop();
}
END_TEST

START_TEST(none_dialect_rules)
{
	/* this host: parameter N */
	start(&(struct fixture_opts){ KMODEL_DIALECT_NONE, "auto", 0, 0, 0, 0 });
	ck_assert_int_eq(vmwkvm_vm_dialect(VM), VMWKVM_DIALECT_NONE);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B), -EOPNOTSUPP);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H), -EOPNOTSUPP);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, H), -EOPNOTSUPP);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | N), -EOPNOTSUPP);
	ASSERT_CONTAINS(LOG, "dialect none");
	ASSERT_CONTAINS(LOG, "kvm.enable_vmware_backdoor=N");
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, 0), 0); /* exactly what is in force */
	ck_assert_uint_eq(kmodel_log_count_req(M, 0, KVM_ENABLE_CAP, -1), 0);
	struct vmwkvm_vmware_policy p = get();
	ck_assert_int_eq(p.module_param, VMWKVM_PARAM_OFF);
	ck_assert_int_eq(p.param_err, 0);
	ck_assert_uint_eq(p.flags, 0);
	ck_assert_int_eq(p.dialect, VMWKVM_DIALECT_NONE);
	stop();

	/* parameter Y: the backdoor is already on for every VM */
	start(&(struct fixture_opts){ KMODEL_DIALECT_NONE, "none", 0, 0, 0, 'Y' });
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B), 0);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, 0), -EOPNOTSUPP);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | N), -EOPNOTSUPP);
	p = get();
	ck_assert_int_eq(p.module_param, VMWKVM_PARAM_ON);
	ck_assert_uint_eq(p.flags, B);
	ck_assert_uint_eq(p.confirmed, B);
	ck_assert_uint_eq(kmodel_log_count_req(M, 0, KVM_ENABLE_CAP, -1), 0);
	ck_assert_uint_eq(kmodel_log_count_req(M, 0, KVM_CREATE_VM, -1), 1); /* only ours */
	stop();

	/* parameter absent */
	start(&(struct fixture_opts){ KMODEL_DIALECT_NONE, "none", 0, 0, 0, '-' });
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, 0), -EOPNOTSUPP);
	ASSERT_CONTAINS(LOG, "kvm.enable_vmware_backdoor unreadable");
	p = get();
	ck_assert_int_eq(p.module_param, VMWKVM_PARAM_UNKNOWN);
	ck_assert_int_eq(p.param_err, -ENOENT);
	ck_assert_uint_eq(p.flags, 0);
	ck_assert_uint_eq(p.confirmed, 0);
	stop();

	/* rusin-v2 requested explicitly on this host: every request fails */
	start(&(struct fixture_opts){ KMODEL_DIALECT_NONE, "rusin-v2", 0, 0, 0, 0 });
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B), -EOPNOTSUPP);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, 0), -EOPNOTSUPP);
	ASSERT_CONTAINS(LOG, "KVM_CHECK_EXTENSION(239) = 0");
	ck_assert_uint_eq(kmodel_log_count_req(M, 0, KVM_ENABLE_CAP, -1), 0);
	stop();
}
END_TEST

/* ------------------------------------------------------------ hypercalls end to end */

static void hypercall_roundtrip(const struct fixture_opts *o, uint32_t exit_reason)
{
	start(o);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H), 0);
	int vfd = vmwkvm_vm_create_vcpu(VM, 0);
	ck_assert_int_ge(vfd, 0);
	vmwkvm_vcpu *vc = NULL;
	ck_assert_int_eq(vmwkvm_vcpu_new(VM, vfd, NULL, 0, NULL, &vc), 0);
	/* guest: 32-bit CPL3, GETVERSION by VMCALL */
	struct kvm_sregs s;
	kmodel_sregs_mode(&s, KMODEL_MODE_PROT32, 3);
	kmodel_vcpu_set_sregs(M, vfd, &s);
	struct kvm_regs r;
	memset(&r, 0, sizeof(r));
	r.rax = VMWKVM_BDOOR_MAGIC;
	r.rbx = ~(uint64_t)VMWKVM_BDOOR_MAGIC & 0xffffffffu;
	r.rcx = 0xffff000a;
	r.rdx = 0;
	r.rbp = 0x1234;
	r.rip = 0x2000;
	r.rflags = 2;
	kmodel_vcpu_set_regs(M, vfd, &r);
	kmodel_vcpu_vmcall(M, vfd);
	ck_assert_int_eq(vmwkvm_vcpu_run(vc), 0);
	ck_assert_uint_eq(vmwkvm_vcpu_kvm_run(vc)->exit_reason, exit_reason);
	struct vmwkvm_call call;
	ck_assert_int_eq(vmwkvm_exit_decode(vc, &call), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.transport, VMWKVM_TRANSPORT_HYPERCALL);
	ck_assert_uint_eq(call.command, 10);
	ck_assert_uint_eq(call.cpl, 3);
	struct vmwkvm_reply rep;
	memset(&rep, 0, sizeof(rep));
	rep.set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX | VMWKVM_REPLY_ECX;
	rep.eax = 6;
	rep.ebx = VMWKVM_BDOOR_MAGIC;
	rep.ecx = 2;
	ck_assert_int_eq(vmwkvm_exit_complete(vc, &call, &rep), 0);
	ck_assert_int_eq(vmwkvm_vcpu_run(vc), 0);
	/* what the guest sees */
	kmodel_vcpu_regs(M, vfd, &r);
	ck_assert_uint_eq(r.rax, 6);
	ck_assert_uint_eq(r.rbx, VMWKVM_BDOOR_MAGIC);
	ck_assert_uint_eq(r.rcx, 2);
	ck_assert_uint_eq(r.rbp, 0x1234);
	ck_assert_uint_eq(r.rip, 0x2003);
	vmwkvm_vcpu_free(vc);
	stop();
}

START_TEST(rusin_hypercall_end_to_end)
{
	hypercall_roundtrip(&RUSIN, 40);
}
END_TEST

START_TEST(single_hypercall_end_to_end)
{
	hypercall_roundtrip(&SINGLE, 43);
}
END_TEST

START_TEST(no_hypercall_policy_no_decode)
{
	start(&RUSIN);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B), 0);
	int vfd = vmwkvm_vm_create_vcpu(VM, 0);
	vmwkvm_vcpu *vc = NULL;
	ck_assert_int_eq(vmwkvm_vcpu_new(VM, vfd, NULL, 0, NULL, &vc), 0);
	/* an exit 40 that the kernel did not produce for VMware (e.g. TDX) is not ours */
	struct kvm_run *run = vmwkvm_vcpu_kvm_run(vc);
	run->exit_reason = 40;
	struct vmwkvm_call call;
	ck_assert_int_eq(vmwkvm_exit_decode(vc, &call), VMWKVM_EXIT_NOT_BACKDOOR);
	/* the guest's VMCALL fails the mainline way */
	struct kvm_sregs s;
	kmodel_sregs_mode(&s, KMODEL_MODE_LONG64, 0);
	kmodel_vcpu_set_sregs(M, vfd, &s);
	kmodel_vcpu_vmcall(M, vfd);
	ck_assert_int_eq(vmwkvm_vcpu_run(vc), 0);
	ck_assert_uint_eq(run->exit_reason, KVM_EXIT_HLT);
	ck_assert_uint_eq(run->s.regs.regs.rax, (uint64_t)-1000);
	vmwkvm_vcpu_free(vc);
	stop();
}
END_TEST

START_TEST(flags_text)
{
	char b[64];
	ck_assert_int_eq(vmwkvm_policy_flags_format(0, b, sizeof(b)), 4);
	ck_assert_str_eq(b, "none");
	vmwkvm_policy_flags_format(B | H | N, b, sizeof(b));
	ck_assert_str_eq(b, "backdoor,hypercall,nested");
	vmwkvm_policy_flags_format(H | 0x10, b, sizeof(b));
	ck_assert_str_eq(b, "hypercall,0x10");
	ck_assert_int_eq(vmwkvm_policy_flags_format(B, b, 4), 8);
	ck_assert_str_eq(b, "bac");
	ck_assert_int_eq(vmwkvm_policy_flags_format(B, NULL, 4), -EINVAL);
	uint32_t f = 99;
	ck_assert_int_eq(vmwkvm_policy_flags_parse("backdoor,nested", &f), 0);
	ck_assert_uint_eq(f, B | N);
	ck_assert_int_eq(vmwkvm_policy_flags_parse("hypercall", &f), 0);
	ck_assert_uint_eq(f, H);
	ck_assert_int_eq(vmwkvm_policy_flags_parse("none", &f), 0);
	ck_assert_uint_eq(f, 0);
	ck_assert_int_eq(vmwkvm_policy_flags_parse("backdoor,,nested", &f), -EINVAL);
	ck_assert_int_eq(vmwkvm_policy_flags_parse("backdoor,", &f), -EINVAL);
	ck_assert_int_eq(vmwkvm_policy_flags_parse("", &f), -EINVAL);
	ck_assert_int_eq(vmwkvm_policy_flags_parse("backdoors", &f), -EINVAL);
	ck_assert_int_eq(vmwkvm_policy_flags_parse(NULL, &f), -EINVAL);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("policy");
	TCase *t = tcase_create("model");
	tcase_add_test(t, rusin_sequences);
	tcase_add_test(t, rusin_busy_after_first_vcpu);
	tcase_add_test(t, flag_validation);
	tcase_add_test(t, rusin_rollback);
	tcase_add_test(t, rusin_default_from_module_param);
	tcase_add_test(t, single_sequences);
	tcase_add_test(t, single_mask_validation);
	tcase_add_test(t, single_failures_keep_previous);
	tcase_add_test(t, mainline_arm_collision_auto);
	tcase_add_test(t, mainline_arm_explicit_rusin_refused);
	tcase_add_test(t, none_dialect_rules);
	tcase_add_test(t, rusin_hypercall_end_to_end);
	tcase_add_test(t, single_hypercall_end_to_end);
	tcase_add_test(t, no_hypercall_policy_no_decode);
	tcase_add_test(t, flags_text);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *r = srunner_create(suite());
	srunner_run_all(r, CK_NORMAL);
	int failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
