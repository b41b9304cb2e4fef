/* Dialect confirmation by behaviour (lib/core/dialect_probe.c) against the kernel model. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "core/dialect_probe.h"
#include "core/internal.h"
#include "kmodel.h"

static struct kmodel *M;
static int SYS = -1;

static void start(int dialect, void (*tweak)(struct kmodel_config *))
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.dialect = dialect;
	if (tweak)
		tweak(&c);
	M = kmodel_new(&c);
	ck_assert_ptr_nonnull(M);
	kmodel_install(M);
	SYS = vk_open("/dev/kvm", O_RDWR);
	ck_assert_int_ge(SYS, 0);
	kmodel_log_clear(M);
}

static void stop(void)
{
	kmodel_free(M);
	M = NULL;
}

/* The library defaults: rusin 239/240/241 exit 40, single-cap unassigned. */
static struct vmwkvm_proposed_numbers nums_default(void)
{
	struct vmwkvm_proposed_numbers n;
	memset(&n, 0, sizeof(n));
	n.sz = sizeof(n);
	n.rusin_cap_backdoor = 239;
	n.rusin_cap_hypercall = 240;
	n.rusin_cap_nested = 241;
	n.rusin_exit_vmware = 40;
	return n;
}

static size_t count(unsigned long req)
{
	return kmodel_log_count_req(M, 0, req, -1);
}

/* Every VM the model created is closed again. */
static void assert_scratch_closed(void)
{
	for (int i = 0; i < kmodel_vm_count(M); i++) {
		struct kmodel_vm_state st;
		ck_assert_int_eq(kmodel_vm_state(M, kmodel_vm_fd(M, i), &st), 0);
		ck_assert_msg(st.closed, "scratch VM %d left open", i);
	}
	size_t made = 0, closed = 0;
	for (size_t i = 0; i < kmodel_log_count(M); i++) {
		struct kmodel_call c;
		kmodel_log_get(M, i, &c);
		if ((c.req == KVM_CREATE_VM || c.req == KVM_CREATE_VCPU) && c.result >= 0)
			made++;
		if (c.req == KMODEL_OP_CLOSE && c.result == 0 && c.fd_kind != KMODEL_FD_SYS)
			closed++;
	}
	ck_assert_uint_eq(closed, made);
}

#define ASSERT_CONTAINS(hay, needle) ck_assert_msg(strstr((hay), (needle)) != NULL, "'%s' lacks '%s'", (hay), (needle))

/* ------------------------------------------------------------ this host */

START_TEST(host_auto_defaults_touch_nothing)
{
	start(KMODEL_DIALECT_NONE, NULL);
	struct vmwkvm_proposed_numbers n = nums_default();
	struct vk_dialect_report r;
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_AUTO, &r), 0);
	ck_assert_int_eq(r.requested, VMWKVM_DIALECT_AUTO);
	ck_assert_int_eq(r.dialect, VMWKVM_DIALECT_NONE);
	ck_assert(!r.confirmed);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_ABSENT);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_ABSENT);
	ck_assert_int_eq(r.nested.state, VK_FEAT_ABSENT);
	ASSERT_CONTAINS(r.backdoor.reason, "239 is KVM_CAP_ARM_WRITABLE_IMP_ID_REGS upstream");
	ASSERT_CONTAINS(r.hypercall.reason, "240 is KVM_CAP_ARM_EL2 upstream");
	ASSERT_CONTAINS(r.nested.reason, "241 is KVM_CAP_ARM_EL2_E2H0 upstream");
	ASSERT_CONTAINS(r.backdoor.reason, "single-cap: no number assigned");
	/* no kernel call at all: colliding numbers are never touched in auto mode */
	ck_assert_uint_eq(kmodel_log_count(M), 0);
	stop();
}
END_TEST

START_TEST(host_explicit_rusin_absent_by_check_extension)
{
	start(KMODEL_DIALECT_NONE, NULL);
	struct vmwkvm_proposed_numbers n = nums_default();
	struct vk_dialect_report r;
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_RUSIN_V2, &r), 0);
	ck_assert_int_eq(r.dialect, VMWKVM_DIALECT_RUSIN_V2);
	ck_assert(!r.confirmed);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_ABSENT);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_ABSENT);
	ck_assert_int_eq(r.nested.state, VK_FEAT_ABSENT);
	ck_assert_int_eq(r.backdoor.check_value, 0);
	ASSERT_CONTAINS(r.backdoor.reason, "KVM_CHECK_EXTENSION(239) = 0");
	ASSERT_CONTAINS(r.backdoor.reason, "239 is KVM_CAP_ARM_WRITABLE_IMP_ID_REGS upstream");
	ASSERT_CONTAINS(r.hypercall.reason, "KVM_CHECK_EXTENSION(240) = 0");
	ck_assert_uint_eq(count(KVM_ENABLE_CAP), 0);
	ck_assert_uint_eq(count(KVM_CREATE_VM), 1);
	assert_scratch_closed();
	stop();
}
END_TEST

START_TEST(host_explicit_single_and_none)
{
	start(KMODEL_DIALECT_NONE, NULL);
	struct vmwkvm_proposed_numbers n = nums_default();
	struct vk_dialect_report r;
	/* unassigned number: nothing asked */
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_SINGLE_CAP, &r), 0);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_ABSENT);
	ASSERT_CONTAINS(r.reason, "no number assigned");
	ck_assert_uint_eq(kmodel_log_count(M), 0);
	/* assigned: CHECK_EXTENSION answers 0 */
	n.single_cap = 250;
	n.single_exit = 43;
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_SINGLE_CAP, &r), 0);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_ABSENT);
	ASSERT_CONTAINS(r.hypercall.reason, "KVM_CHECK_EXTENSION(250) = 0");
	ck_assert_uint_eq(count(KVM_ENABLE_CAP), 0);
	/* none */
	kmodel_log_clear(M);
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_NONE, &r), 0);
	ck_assert_int_eq(r.dialect, VMWKVM_DIALECT_NONE);
	ck_assert_int_eq(r.nested.state, VK_FEAT_ABSENT);
	ASSERT_CONTAINS(r.backdoor.reason, "kvm.enable_vmware_backdoor");
	ck_assert_uint_eq(kmodel_log_count(M), 0);
	/* bad arguments */
	ck_assert_int_eq(vk_dialect_probe(SYS, NULL, VMWKVM_DIALECT_NONE, &r), -EINVAL);
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_NONE, NULL), -EINVAL);
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, 7, &r), -EINVAL);
	stop();
}
END_TEST

static void rusin300(struct kmodel_config *c)
{
	c->rusin_cap_backdoor = 300;
	c->rusin_cap_hypercall = 301;
	c->rusin_cap_nested = 302;
	c->rusin_exit = 50;
}

/* A kernel that answers CHECK_EXTENSION but does not behave: never trusted. */
START_TEST(lying_check_extension_is_not_trusted)
{
	start(KMODEL_DIALECT_NONE, NULL);
	kmodel_set_cap(M, 300, 1);
	kmodel_set_cap(M, 301, 1);
	kmodel_set_cap(M, 302, 1);
	struct vmwkvm_proposed_numbers n = nums_default();
	n.rusin_cap_backdoor = 300;
	n.rusin_cap_hypercall = 301;
	n.rusin_cap_nested = 302;
	struct vk_dialect_report r;
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_AUTO, &r), 0);
	ck_assert_int_eq(r.dialect, VMWKVM_DIALECT_NONE);
	ck_assert(!r.confirmed);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_ABSENT);
	ASSERT_CONTAINS(r.backdoor.reason, "KVM_ENABLE_CAP(300, 0x1) before any vCPU refused with EINVAL");
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_ABSENT);
	/* a kernel whose cap accepts anything after vCPUs exist is not the proposal either */
	stop();
}
END_TEST

/* ------------------------------------------------------------ rusin-v2 kernel */

START_TEST(rusin_confirmed_exact_sequence)
{
	start(KMODEL_DIALECT_RUSIN_V2, NULL);
	struct vmwkvm_proposed_numbers n = nums_default();
	struct vk_dialect_report r;
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_RUSIN_V2, &r), 0);
	ck_assert(r.confirmed);
	ck_assert_int_eq(r.dialect, VMWKVM_DIALECT_RUSIN_V2);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_PRESENT);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_PRESENT);
	ck_assert_int_eq(r.nested.state, VK_FEAT_PRESENT);
	ck_assert_uint_eq(r.hypercall_exit, 40);
	ck_assert_uint_eq(r.backdoor.cap, 239);
	ck_assert_uint_eq(r.nested.cap, 241);
	ck_assert_int_eq(r.err, 0);
	/* explicit request: the collision is noted, not hidden */
	ASSERT_CONTAINS(r.hypercall.reason, "240 is KVM_CAP_ARM_EL2 upstream");
	char buf[2048];
	kmodel_log_format(M, 0, NULL, 0, buf, sizeof(buf));
	ck_assert_str_eq(buf, "sys CREATE_VM 0 = fd\n"
			      "vm CHECK_EXTENSION 239 = 1\n"
			      "vm CHECK_EXTENSION 240 = 1\n"
			      "vm CHECK_EXTENSION 241 = 1\n"
			      "vm ENABLE_CAP 239 2 = -EINVAL\n"
			      "vm ENABLE_CAP 239 1 = 0\n"
			      "vm ENABLE_CAP 240 2 = -EINVAL\n"
			      "vm ENABLE_CAP 240 1 = 0\n"
			      "vm ENABLE_CAP 241 2 = -EINVAL\n"
			      "vm ENABLE_CAP 241 1 = 0\n"
			      "vm CREATE_VCPU 0 = fd\n"
			      "vm ENABLE_CAP 239 1 = -EINVAL\n"
			      "vcpu close = 0\n"
			      "vm close = 0\n");
	assert_scratch_closed();
	stop();
}
END_TEST

START_TEST(rusin_default_numbers_not_used_in_auto)
{
	start(KMODEL_DIALECT_RUSIN_V2, NULL);
	struct vmwkvm_proposed_numbers n = nums_default();
	struct vk_dialect_report r;
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_AUTO, &r), 0);
	ck_assert_int_eq(r.dialect, VMWKVM_DIALECT_NONE);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_ABSENT);
	ck_assert_uint_eq(kmodel_log_count(M), 0);
	stop();
}
END_TEST

START_TEST(rusin_overridden_numbers_confirmed_in_auto)
{
	start(KMODEL_DIALECT_RUSIN_V2, rusin300);
	struct vmwkvm_proposed_numbers n = nums_default();
	n.rusin_cap_backdoor = 300;
	n.rusin_cap_hypercall = 301;
	n.rusin_cap_nested = 302;
	n.rusin_exit_vmware = 50;
	struct vk_dialect_report r;
	ck_assert_int_eq(vk_dialect_probe(-1, &n, VMWKVM_DIALECT_AUTO, &r), 0);
	ck_assert_int_eq(r.requested, VMWKVM_DIALECT_AUTO);
	ck_assert_int_eq(r.dialect, VMWKVM_DIALECT_RUSIN_V2);
	ck_assert(r.confirmed);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_PRESENT);
	ck_assert_uint_eq(r.hypercall_exit, 50);
	ck_assert_ptr_null(strstr(r.backdoor.reason, "upstream"));
	/* kvm_fd -1: the probe opened /dev/kvm itself and closed it */
	char buf[256];
	unsigned long oc[] = { KMODEL_OP_OPEN };
	kmodel_log_format(M, 0, oc, 1, buf, sizeof(buf));
	ck_assert_str_eq(buf, "sys open /dev/kvm = fd\n");
	struct kmodel_call c;
	kmodel_log_get(M, kmodel_log_count(M) - 1, &c);
	ck_assert_uint_eq(c.req, KMODEL_OP_CLOSE);
	ck_assert_int_eq(c.fd_kind, KMODEL_FD_SYS);
	stop();
}
END_TEST

/* Free cap numbers but the exit left at 40 (KVM_EXIT_TDX upstream): auto mode confirms the
 * backdoor but never the hypercall exit, and enables nothing through 301; asked for by name,
 * the same numbers are examined. */
START_TEST(colliding_exit_number_not_used_in_auto)
{
	start(KMODEL_DIALECT_RUSIN_V2, rusin300);
	struct vmwkvm_proposed_numbers n = nums_default();
	n.rusin_cap_backdoor = 300;
	n.rusin_cap_hypercall = 301;
	n.rusin_cap_nested = 302;
	n.rusin_exit_vmware = 40;
	struct vk_dialect_report r;
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_AUTO, &r), 0);
	ck_assert(r.confirmed);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_PRESENT);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_ABSENT);
	ASSERT_CONTAINS(r.hypercall.reason, "KVM_EXIT_TDX");
	ck_assert_uint_eq(kmodel_log_count_req(M, 0, KVM_ENABLE_CAP, 301), 0);
	kmodel_log_clear(M);
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_RUSIN_V2, &r), 0);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_PRESENT);
	stop();
}
END_TEST

static void single43_at_tdx(struct kmodel_config *c)
{
	c->single_exit = 40;
}

START_TEST(single_colliding_exit_not_used_in_auto)
{
	start(KMODEL_DIALECT_SINGLE_CAP, single43_at_tdx);
	struct vmwkvm_proposed_numbers n = nums_default();
	n.single_cap = 250;
	n.single_exit = 40;
	struct vk_dialect_report r;
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_AUTO, &r), 0);
	ck_assert(r.confirmed);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_PRESENT);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_ABSENT);
	ASSERT_CONTAINS(r.hypercall.reason, "KVM_EXIT_TDX");
	stop();
}
END_TEST

START_TEST(rusin_missing_exit_number)
{
	start(KMODEL_DIALECT_RUSIN_V2, NULL);
	struct vmwkvm_proposed_numbers n = nums_default();
	n.rusin_exit_vmware = 0;
	struct vk_dialect_report r;
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_RUSIN_V2, &r), 0);
	ck_assert(r.confirmed);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_PRESENT);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_ABSENT);
	ASSERT_CONTAINS(r.hypercall.reason, "no exit reason assigned");
	ck_assert_uint_eq(kmodel_log_count_req(M, 0, KVM_ENABLE_CAP, 240), 0);
	stop();
}
END_TEST

/* ------------------------------------------------------------ single-cap kernel */

static void mask1(struct kmodel_config *c)
{
	c->single_valid_mask = 1;
}

START_TEST(single_confirmed_in_auto)
{
	start(KMODEL_DIALECT_SINGLE_CAP, NULL);
	struct vmwkvm_proposed_numbers n = nums_default();
	n.single_cap = 250;
	n.single_exit = 43;
	struct vk_dialect_report r;
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_AUTO, &r), 0);
	ck_assert_int_eq(r.dialect, VMWKVM_DIALECT_SINGLE_CAP);
	ck_assert(r.confirmed);
	ck_assert_uint_eq(r.valid_mask, 7);
	ck_assert_uint_eq(r.hypercall_exit, 43);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_PRESENT);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_PRESENT);
	ck_assert_int_eq(r.nested.state, VK_FEAT_PRESENT);
	char buf[1024];
	kmodel_log_format(M, 0, NULL, 0, buf, sizeof(buf));
	ck_assert_str_eq(buf, "sys CREATE_VM 0 = fd\n"
			      "vm CHECK_EXTENSION 250 = 7\n"
			      "vm ENABLE_CAP 250 9223372036854775808 = -EINVAL\n"
			      "vm ENABLE_CAP 250 1 = 0\n"
			      "vm CREATE_VCPU 0 = fd\n"
			      "vm ENABLE_CAP 250 1 = -EINVAL\n"
			      "vcpu close = 0\n"
			      "vm close = 0\n");
	/* rusin-v2 was not examined: single-cap was confirmed first */
	ck_assert_uint_eq(kmodel_log_count_req(M, 0, KVM_CHECK_EXTENSION, 239), 0);
	stop();
}
END_TEST

START_TEST(single_partial_mask)
{
	start(KMODEL_DIALECT_SINGLE_CAP, mask1);
	struct vmwkvm_proposed_numbers n = nums_default();
	n.single_cap = 250;
	n.single_exit = 43;
	struct vk_dialect_report r;
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_SINGLE_CAP, &r), 0);
	ck_assert(r.confirmed);
	ck_assert_uint_eq(r.valid_mask, 1);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_PRESENT);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_ABSENT);
	ck_assert_int_eq(r.nested.state, VK_FEAT_ABSENT);
	ASSERT_CONTAINS(r.hypercall.reason, "not in the valid mask 0x1");
	/* no exit number: hypercall absent even with the bit */
	stop();
	start(KMODEL_DIALECT_SINGLE_CAP, NULL);
	n.single_exit = 0;
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_SINGLE_CAP, &r), 0);
	ck_assert(r.confirmed);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_ABSENT);
	ASSERT_CONTAINS(r.hypercall.reason, "no exit reason assigned");
	ck_assert_int_eq(r.nested.state, VK_FEAT_PRESENT);
	stop();
}
END_TEST

/* ------------------------------------------------------------ arm64 collision */

START_TEST(mainline_arm_auto_never_touches)
{
	start(KMODEL_DIALECT_MAINLINE_ARM, NULL);
	struct vmwkvm_proposed_numbers n = nums_default();
	struct vk_dialect_report r;
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_AUTO, &r), 0);
	ck_assert_int_eq(r.dialect, VMWKVM_DIALECT_NONE);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_ABSENT);
	ASSERT_CONTAINS(r.hypercall.reason, "240 is KVM_CAP_ARM_EL2 upstream");
	ck_assert_uint_eq(kmodel_log_count(M), 0);
	stop();
}
END_TEST

START_TEST(mainline_arm_explicit_is_caught_by_behaviour)
{
	start(KMODEL_DIALECT_MAINLINE_ARM, NULL);
	struct vmwkvm_proposed_numbers n = nums_default();
	struct vk_dialect_report r;
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_RUSIN_V2, &r), 0);
	ck_assert(!r.confirmed);
	/* CHECK_EXTENSION answered 1 for all three, yet none is accepted */
	ck_assert_int_eq(r.backdoor.check_value, 1);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_ABSENT);
	ASSERT_CONTAINS(r.backdoor.reason, "accepted an invalid value");
	ASSERT_CONTAINS(r.backdoor.reason, "239 is KVM_CAP_ARM_WRITABLE_IMP_ID_REGS upstream");
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_ABSENT);
	ck_assert_int_eq(r.nested.state, VK_FEAT_ABSENT);
	/* the unrelated feature was touched only on the scratch VM, which is gone */
	assert_scratch_closed();
	stop();
}
END_TEST

/* ------------------------------------------------------------ faults */

START_TEST(faults_make_unverified)
{
	struct vmwkvm_proposed_numbers n = nums_default();
	struct vk_dialect_report r;
	/* no scratch VM */
	start(KMODEL_DIALECT_RUSIN_V2, NULL);
	kmodel_inject_fault(M, KVM_CREATE_VM, -1, 1, EINTR);
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_RUSIN_V2, &r), 0);
	ck_assert(!r.confirmed);
	ck_assert_int_eq(r.err, -EINTR);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_UNVERIFIED);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_UNVERIFIED);
	ASSERT_CONTAINS(r.backdoor.reason, "KVM_CREATE_VM (scratch VM) failed with EINTR");
	stop();
	/* no scratch vCPU: the only-before-vCPUs rule cannot be checked */
	start(KMODEL_DIALECT_RUSIN_V2, NULL);
	kmodel_inject_fault(M, KVM_CREATE_VCPU, -1, 1, ENOMEM);
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_RUSIN_V2, &r), 0);
	ck_assert(!r.confirmed);
	ck_assert_int_eq(r.err, -ENOMEM);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_UNVERIFIED);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_UNVERIFIED);
	ASSERT_CONTAINS(r.backdoor.reason, "KVM_CREATE_VCPU on the scratch VM failed with ENOMEM");
	assert_scratch_closed();
	stop();
	/* CHECK_EXTENSION interrupted */
	start(KMODEL_DIALECT_RUSIN_V2, NULL);
	kmodel_inject_fault(M, KVM_CHECK_EXTENSION, 239, 1, EINTR);
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_RUSIN_V2, &r), 0);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_UNVERIFIED);
	ck_assert_int_eq(r.backdoor.check_value, -EINTR);
	ck_assert_int_eq(r.hypercall.state, VK_FEAT_UNVERIFIED); /* contract holds, dialect unconfirmed */
	ck_assert_uint_eq(kmodel_log_count_req(M, 0, KVM_ENABLE_CAP, 239), 0);
	stop();
	/* ENABLE_CAP failing with EFAULT instead of EINVAL */
	start(KMODEL_DIALECT_SINGLE_CAP, NULL);
	n.single_cap = 250;
	n.single_exit = 43;
	kmodel_inject_fault(M, KVM_ENABLE_CAP, 250, 1, EFAULT);
	ck_assert_int_eq(vk_dialect_probe(SYS, &n, VMWKVM_DIALECT_SINGLE_CAP, &r), 0);
	ck_assert(!r.confirmed);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_UNVERIFIED);
	ASSERT_CONTAINS(r.backdoor.reason, "failed with EFAULT instead of EINVAL");
	stop();
	/* no /dev/kvm at all */
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.dialect = KMODEL_DIALECT_SINGLE_CAP;
	c.no_dev_kvm = true;
	M = kmodel_new(&c);
	kmodel_install(M);
	ck_assert_int_eq(vk_dialect_probe(-1, &n, VMWKVM_DIALECT_AUTO, &r), 0);
	ck_assert_int_eq(r.dialect, VMWKVM_DIALECT_NONE);
	ck_assert_int_eq(r.backdoor.state, VK_FEAT_UNVERIFIED);
	ck_assert_int_eq(r.err, -ENOENT);
	ASSERT_CONTAINS(r.backdoor.reason, "open(/dev/kvm) failed with ENOENT");
	stop();
}
END_TEST

START_TEST(backdoor_param)
{
	start(KMODEL_DIALECT_NONE, NULL);
	ck_assert_int_eq(vk_vmware_backdoor_param(), 0);
	kmodel_set_backdoor_param(M, 'Y');
	ck_assert_int_eq(vk_vmware_backdoor_param(), 1);
	kmodel_set_backdoor_param(M, 0);
	ck_assert_int_eq(vk_vmware_backdoor_param(), -ENOENT);
	kmodel_set_file(M, VK_VMWARE_BACKDOOR_PARAM_PATH, "maybe\n");
	ck_assert_int_eq(vk_vmware_backdoor_param(), -EIO);
	kmodel_set_file(M, VK_VMWARE_BACKDOOR_PARAM_PATH, NULL);
	kmodel_set_backdoor_param(M, 'N');
	kmodel_inject_fault(M, KMODEL_OP_READ_FILE, -1, 1, EACCES);
	ck_assert_int_eq(vk_vmware_backdoor_param(), -EACCES);
	ck_assert_str_eq(vk_feat_state_name(VK_FEAT_UNVERIFIED), "unverified");
	ck_assert_str_eq(vk_feat_state_name(9), "invalid");
	stop();
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("dialect_probe");
	TCase *t = tcase_create("probe");
	tcase_add_test(t, host_auto_defaults_touch_nothing);
	tcase_add_test(t, host_explicit_rusin_absent_by_check_extension);
	tcase_add_test(t, host_explicit_single_and_none);
	tcase_add_test(t, lying_check_extension_is_not_trusted);
	tcase_add_test(t, rusin_confirmed_exact_sequence);
	tcase_add_test(t, rusin_default_numbers_not_used_in_auto);
	tcase_add_test(t, rusin_overridden_numbers_confirmed_in_auto);
	tcase_add_test(t, rusin_missing_exit_number);
	tcase_add_test(t, colliding_exit_number_not_used_in_auto);
	tcase_add_test(t, single_colliding_exit_not_used_in_auto);
	tcase_add_test(t, single_confirmed_in_auto);
	tcase_add_test(t, single_partial_mask);
	tcase_add_test(t, mainline_arm_auto_never_touches);
	tcase_add_test(t, mainline_arm_explicit_is_caught_by_behaviour);
	tcase_add_test(t, faults_make_unverified);
	tcase_add_test(t, backdoor_param);
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
