/*
 * The capability probe against the kernel model (tests/common/kmodel): answers per item,
 * the dialect rules (collisions never touched in auto mode, confirmed dialects verified),
 * overrides through the API and the environment, and every item under injected failures
 * (EINTR, ENOMEM, EBADF, EFAULT): unknown with the ioctl and errno in the reason, no crash,
 * every fd the probe opened closed again (and no heap leak under ASan).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmwkvm/vmwkvm.h>

#include "kmodel.h"
#include "core/sys.h"
#include "core/uapi.h"

static char self_path[4096];
static const int inject_errnos[] = { EINTR, ENOMEM, EBADF, EFAULT };

/* ------------------------------------------------------------------ helpers */

static struct kmodel *model_up(int dialect)
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.dialect = dialect;
	struct kmodel *m = kmodel_new(&c);
	ck_assert_ptr_nonnull(m);
	kmodel_install(m);
	return m;
}

static struct kmodel *model_up_cfg(const struct kmodel_config *c)
{
	struct kmodel *m = kmodel_new(c);
	ck_assert_ptr_nonnull(m);
	kmodel_install(m);
	return m;
}

static void model_down(struct kmodel *m)
{
	kmodel_uninstall();
	kmodel_free(m);
	vmwkvm_proposed_set(NULL);
	vmwkvm_dialect_set_default(VMWKVM_DIALECT_AUTO);
}

static vmwkvm_probe *probe_opts(const struct vmwkvm_probe_opts *o)
{
	vmwkvm_probe *p = NULL;
	ck_assert_int_eq(vmwkvm_probe_new(o, &p), 0);
	ck_assert_ptr_nonnull(p);
	return p;
}

/* A probe with only opts.dialect set. */
static vmwkvm_probe *probe_dialect(const char *dialect)
{
	struct vmwkvm_probe_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.dialect = dialect;
	return probe_opts(&o);
}

static vmwkvm_probe *probe_default(void)
{
	return probe_opts(NULL);
}

static const struct vmwkvm_probe_item *item(const vmwkvm_probe *p, uint32_t id, uint32_t scope)
{
	const struct vmwkvm_probe_item *it = vmwkvm_probe_find(p, id, scope);
	ck_assert_msg(it != NULL, "no item %u in scope %u", id, scope);
	ck_assert_ptr_nonnull(it->reason);
	ck_assert_ptr_nonnull(it->name);
	ck_assert_ptr_nonnull(it->key);
	return it;
}

#define ASSERT_STATE(p_, id_, scope_, st)                                                                   \
	do {                                                                                             \
		const struct vmwkvm_probe_item *it_ = item((p_), (id_), (scope_));                       \
		ck_assert_msg(it_->state == (st), "%s (%s): state %s, expected %s: %s", it_->name,        \
			      vmwkvm_probe_scope_name(it_->scope), vmwkvm_probe_state_name(it_->state),  \
			      vmwkvm_probe_state_name(st), it_->reason);                                 \
	} while (0)

#define ASSERT_REASON_HAS(it, needle) \
	ck_assert_msg(strstr((it)->reason, (needle)) != NULL, "%s: reason '%s' lacks '%s'", (it)->name, (it)->reason, (needle))

static bool is_fd_maker(const struct kmodel_call *c)
{
	return c->req == KMODEL_OP_OPEN || c->req == KVM_CREATE_VM || c->req == KVM_CREATE_VCPU ||
	       c->req == KMODEL_OP_USERFAULTFD || c->req == USERFAULTFD_IOC_NEW;
}

/* Every fd handed out by the model during the log was closed exactly once, and nothing
 * else was closed (except the fds listed in keep, which must stay open). */
static void assert_fds_balanced(struct kmodel *m, const int *keep, size_t nkeep)
{
	size_t n = kmodel_log_count(m);
	int made[512], nmade = 0;
	int closed[512], nclosed = 0;
	for (size_t i = 0; i < n; i++) {
		struct kmodel_call c;
		ck_assert_int_eq(kmodel_log_get(m, i, &c), 0);
		if (is_fd_maker(&c) && c.result >= 0 && nmade < 512)
			made[nmade++] = c.result;
		if (c.req == KMODEL_OP_CLOSE && c.result == 0 && nclosed < 512)
			closed[nclosed++] = c.fd;
	}
	for (int i = 0; i < nmade; i++) {
		int times = 0;
		for (int j = 0; j < nclosed; j++)
			times += closed[j] == made[i];
		ck_assert_msg(times == 1, "fd %d made by the probe was closed %d times", made[i], times);
	}
	for (int j = 0; j < nclosed; j++) {
		bool ours = false;
		for (int i = 0; i < nmade; i++)
			ours |= made[i] == closed[j];
		ck_assert_msg(ours, "the probe closed fd %d that it did not create", closed[j]);
		for (size_t k = 0; k < nkeep; k++)
			ck_assert_msg(closed[j] != keep[k], "the probe closed the caller's fd %d", keep[k]);
	}
}

/* Free p, check that every fd the probe made was closed again, take the model down. */
static void probe_finish(struct kmodel *m, vmwkvm_probe *p)
{
	vmwkvm_probe_free(p);
	assert_fds_balanced(m, NULL, 0);
	model_down(m);
}

static size_t count_cap_touches(struct kmodel *m, long cap)
{
	return kmodel_log_count_req(m, 0, KVM_CHECK_EXTENSION, cap) + kmodel_log_count_req(m, 0, KVM_ENABLE_CAP, cap);
}

static void set_numbers(uint32_t rb, uint32_t rh, uint32_t rn, uint32_t re, uint32_t sc, uint32_t se)
{
	struct vmwkvm_proposed_numbers n;
	memset(&n, 0, sizeof(n));
	n.sz = sizeof(n);
	n.rusin_cap_backdoor = rb;
	n.rusin_cap_hypercall = rh;
	n.rusin_cap_nested = rn;
	n.rusin_exit_vmware = re;
	n.single_cap = sc;
	n.single_exit = se;
	ck_assert_int_eq(vmwkvm_proposed_set(&n), 0);
}

/* ------------------------------------------------------------------ this host, modelled */

START_TEST(host_model_items)
{
	struct kmodel *m = model_up(KMODEL_DIALECT_NONE);
	vmwkvm_probe *p = probe_default();
	ck_assert_int_eq(vmwkvm_probe_kvm_usable(p), 1);
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_KVM_API_VERSION, VMWKVM_PROBE_SCOPE_SYSTEM);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_PRESENT);
	ck_assert_int_eq(it->value, 12);
	it = item(p, VMWKVM_PROBE_KVM_VCPU_MMAP_SIZE, VMWKVM_PROBE_SCOPE_SYSTEM);
	ck_assert_int_eq(it->value, KMODEL_RUN_SIZE);
	ASSERT_STATE(p, VMWKVM_PROBE_KVM_VM, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_PRESENT);

	/* caps, both scopes, with the raw values this host answers (kvm-uapi-notes section 7) */
	static const struct {
		uint32_t id;
		uint32_t cap;
		int64_t value;
	} caps[] = {
		{ VMWKVM_PROBE_CAP_SYNC_REGS, 74, 7 },		  { VMWKVM_PROBE_CAP_X86_GUEST_MODE, 238, 1 },
		{ VMWKVM_PROBE_CAP_MEMORY_FAULT_INFO, 232, 1 },	  { VMWKVM_PROBE_CAP_USER_MEMORY2, 231, 1 },
		{ VMWKVM_PROBE_CAP_GUEST_MEMFD, 234, 1 },	  { VMWKVM_PROBE_CAP_EXIT_HYPERCALL, 201, 0x1000 },
		{ VMWKVM_PROBE_CAP_X86_USER_SPACE_MSR, 188, 1 },  { VMWKVM_PROBE_CAP_X86_MSR_FILTER, 189, 1 },
		{ VMWKVM_PROBE_CAP_XEN_HVM, 38, 0 },		  { VMWKVM_PROBE_CAP_VM_TYPES, 235, 1 },
		{ VMWKVM_PROBE_CAP_PRE_FAULT_MEMORY, 236, 0 },	  { VMWKVM_PROBE_CAP_GUEST_MEMFD_FLAGS, 244, 3 },
		{ VMWKVM_PROBE_CAP_MEMORY_ATTRIBUTES, 233, 0 },	  { VMWKVM_PROBE_CAP_CHECK_EXTENSION_VM, 105, 1 },
		{ VMWKVM_PROBE_CAP_IMMEDIATE_EXIT, 136, 1 },	  { VMWKVM_PROBE_CAP_ENABLE_CAP_VM, 98, 1 },
	};
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		for (uint32_t scope = VMWKVM_PROBE_SCOPE_SYSTEM; scope <= VMWKVM_PROBE_SCOPE_VM; scope++) {
			it = item(p, caps[i].id, scope);
			ck_assert_uint_eq(it->number, caps[i].cap);
			ck_assert_uint_eq(it->group, VMWKVM_PROBE_GROUP_CAPS);
			ck_assert_int_eq(it->has_value, 1);
			ck_assert_msg(it->value == caps[i].value, "%s: value %lld", it->name, (long long)it->value);
			ck_assert_int_eq(it->state, caps[i].value ? VMWKVM_PROBE_PRESENT : VMWKVM_PROBE_ABSENT);
			ck_assert_int_eq(it->err, 0);
		}
	}
	/* one system and one VM CHECK_EXTENSION per cap, and the VM ones on a model VM fd */
	ck_assert_uint_ge(kmodel_log_count_req(m, 0, KVM_CHECK_EXTENSION, 74), 2);

	/* VMware: mainline here, parameter N */
	it = item(p, VMWKVM_PROBE_VMWARE_BACKDOOR_PARAM, VMWKVM_PROBE_SCOPE_HOST);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_ABSENT);
	ck_assert_int_eq(it->value, 0);
	it = item(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->value, VMWKVM_DIALECT_NONE);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_PRESENT);
	ASSERT_STATE(p, VMWKVM_PROBE_VMWARE_POLICY_NONE, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_PRESENT);
	ck_assert_int_eq(item(p, VMWKVM_PROBE_VMWARE_POLICY_NONE, VMWKVM_PROBE_SCOPE_VM)->value, 0);
	it = item(p, VMWKVM_PROBE_VMWARE_POLICY_RUSIN_V2, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_ABSENT);
	ASSERT_REASON_HAS(it, "KVM_CAP_ARM_WRITABLE_IMP_ID_REGS");
	it = item(p, VMWKVM_PROBE_VMWARE_POLICY_SINGLE_CAP, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_ABSENT);
	ASSERT_STATE(p, VMWKVM_PROBE_VMWARE_BACKDOOR, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_ABSENT);
	ASSERT_STATE(p, VMWKVM_PROBE_VMWARE_HYPERCALL, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_ABSENT);
	ASSERT_STATE(p, VMWKVM_PROBE_NESTED_BACKDOOR, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_ABSENT);
	ASSERT_STATE(p, VMWKVM_PROBE_NESTED_ORIGIN, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_PRESENT);
	ASSERT_STATE(p, VMWKVM_PROBE_NESTED_VIRT, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_UNKNOWN);
	for (uint32_t id = VMWKVM_PROBE_NESTED_POLICY_NONE; id <= VMWKVM_PROBE_NESTED_POLICY_SINGLE_CAP; id++)
		ASSERT_STATE(p, id, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_ABSENT);

	/* the safety rule: the colliding rusin-v2 numbers were never asked about or enabled */
	ck_assert_uint_eq(count_cap_touches(m, 239), 0);
	ck_assert_uint_eq(count_cap_touches(m, 240), 0);
	ck_assert_uint_eq(count_cap_touches(m, 241), 0);
	ck_assert_uint_eq(kmodel_log_count_req(m, 0, KVM_ENABLE_CAP, -1), 0);

	/* userfaultfd: the model offers none, /dev/userfaultfd and the sysctl file are absent */
	it = item(p, VMWKVM_PROBE_UFFD_SYSCALL, VMWKVM_PROBE_SCOPE_HOST);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_ABSENT);
	ck_assert_int_eq(it->err, -ENOSYS);
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_DEV, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_ABSENT);
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_KERNEL_FAULTS, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_ABSENT);
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_API, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_UNKNOWN);
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_WP_ASYNC, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_UNKNOWN);
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_SYSCTL, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_UNKNOWN);

	/* library */
	it = item(p, VMWKVM_PROBE_LIB_VERSION, VMWKVM_PROBE_SCOPE_LIBRARY);
	ck_assert_int_eq(it->value, (int64_t)vmwkvm_version());
	it = item(p, VMWKVM_PROBE_LIB_RUSIN_CAP_HYPERCALL, VMWKVM_PROBE_SCOPE_LIBRARY);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_ABSENT);
	ASSERT_REASON_HAS(it, "KVM_CAP_ARM_EL2");
	it = item(p, VMWKVM_PROBE_LIB_RUSIN_EXIT_VMWARE, VMWKVM_PROBE_SCOPE_LIBRARY);
	ASSERT_REASON_HAS(it, "KVM_EXIT_TDX");

	/* every item has a unique (id, scope), a known state and a reason */
	size_t n = vmwkvm_probe_count(p);
	ck_assert_uint_gt(n, 60);
	for (size_t i = 0; i < n; i++) {
		const struct vmwkvm_probe_item *a = vmwkvm_probe_item(p, i);
		ck_assert_ptr_nonnull(a);
		ck_assert_uint_le(a->state, VMWKVM_PROBE_PRESENT);
		ck_assert_uint_gt(strlen(a->reason), 5);
		ck_assert_str_ne(vmwkvm_probe_group_name(a->group), "invalid");
		for (size_t j = i + 1; j < n; j++) {
			const struct vmwkvm_probe_item *b = vmwkvm_probe_item(p, j);
			ck_assert_msg(!(a->id == b->id && a->scope == b->scope), "duplicate item %s", a->name);
		}
	}
	ck_assert_ptr_null(vmwkvm_probe_item(p, n));
	vmwkvm_probe_free(p);
	assert_fds_balanced(m, NULL, 0);
	for (int i = 0; i < kmodel_vm_count(m); i++) {
		struct kmodel_vm_state st;
		ck_assert_int_eq(kmodel_vm_state(m, kmodel_vm_fd(m, i), &st), 0);
		ck_assert_msg(st.closed, "scratch VM %d left open", i);
	}
	model_down(m);
}
END_TEST

START_TEST(no_dev_kvm)
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.no_dev_kvm = true;
	c.backdoor_param = 0; /* sysfs file absent too */
	struct kmodel *m = model_up_cfg(&c);
	vmwkvm_probe *p = probe_default();
	ck_assert_int_eq(vmwkvm_probe_kvm_usable(p), 0);
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_KVM_DEVICE, VMWKVM_PROBE_SCOPE_HOST);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_ABSENT);
	ck_assert_int_eq(it->err, -ENOENT);
	for (uint32_t id = VMWKVM_PROBE_CAP_SYNC_REGS; id <= VMWKVM_PROBE_CAP_ENABLE_CAP_VM; id++) {
		ASSERT_STATE(p, id, VMWKVM_PROBE_SCOPE_SYSTEM, VMWKVM_PROBE_UNKNOWN);
		ASSERT_STATE(p, id, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_UNKNOWN);
		ASSERT_REASON_HAS(item(p, id, VMWKVM_PROBE_SCOPE_SYSTEM), "ENOENT");
	}
	ASSERT_STATE(p, VMWKVM_PROBE_KVM_API_VERSION, VMWKVM_PROBE_SCOPE_SYSTEM, VMWKVM_PROBE_UNKNOWN);
	ASSERT_STATE(p, VMWKVM_PROBE_VMWARE_BACKDOOR_PARAM, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_UNKNOWN);
	ASSERT_STATE(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_UNKNOWN);
	ASSERT_STATE(p, VMWKVM_PROBE_VMWARE_POLICY_NONE, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_UNKNOWN);
	probe_finish(m, p);
}
END_TEST

START_TEST(backdoor_param_on)
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.backdoor_param = 'Y';
	struct kmodel *m = model_up_cfg(&c);
	vmwkvm_probe *p = probe_default();
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_VMWARE_BACKDOOR_PARAM, VMWKVM_PROBE_SCOPE_HOST);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_PRESENT);
	ck_assert_int_eq(it->value, 1);
	/* mainline can give exactly the backdoor, through the parameter, for every VM */
	it = item(p, VMWKVM_PROBE_VMWARE_POLICY_NONE, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_PRESENT);
	ck_assert_int_eq(it->value, VMWKVM_PROBE_ALLOW_BACKDOOR);
	ASSERT_STATE(p, VMWKVM_PROBE_VMWARE_BACKDOOR, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_PRESENT);
	ASSERT_STATE(p, VMWKVM_PROBE_VMWARE_HYPERCALL, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_ABSENT);
	vmwkvm_probe_free(p);
	model_down(m);
}
END_TEST

/* ------------------------------------------------------------------ dialects */

START_TEST(rusin_colliding_numbers_untouched_in_auto)
{
	/* a kernel that really implements rusin-v2 at 239..241: auto still refuses the numbers */
	struct kmodel *m = model_up(KMODEL_DIALECT_RUSIN_V2);
	vmwkvm_probe *p = probe_default();
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_VMWARE_POLICY_RUSIN_V2, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_ABSENT);
	ASSERT_REASON_HAS(it, "239");
	it = item(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->value, VMWKVM_DIALECT_NONE);
	ck_assert_uint_eq(count_cap_touches(m, 239), 0);
	ck_assert_uint_eq(count_cap_touches(m, 240), 0);
	ck_assert_uint_eq(count_cap_touches(m, 241), 0);
	probe_finish(m, p);
}
END_TEST

START_TEST(rusin_requested_explicitly_is_confirmed)
{
	struct kmodel *m = model_up(KMODEL_DIALECT_RUSIN_V2);
	vmwkvm_probe *p = probe_dialect("rusin-v2");
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_VMWARE_POLICY_RUSIN_V2, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_msg(it->state == VMWKVM_PROBE_PRESENT, "rusin-v2: %s", it->reason);
	ck_assert_int_eq(it->value, VMWKVM_PROBE_ALLOW_BACKDOOR | VMWKVM_PROBE_ALLOW_HYPERCALL | VMWKVM_PROBE_ALLOW_NESTED);
	it = item(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->value, VMWKVM_DIALECT_RUSIN_V2);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_PRESENT);
	ASSERT_REASON_HAS(it, "verified");
	ASSERT_STATE(p, VMWKVM_PROBE_NESTED_POLICY_RUSIN_V2, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_PRESENT);
	ASSERT_STATE(p, VMWKVM_PROBE_NESTED_BACKDOOR, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_PRESENT);
	/* a fresh VM under rusin-v2: backdoor follows the parameter (N), hypercalls off */
	ASSERT_STATE(p, VMWKVM_PROBE_VMWARE_BACKDOOR, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_ABSENT);
	ASSERT_STATE(p, VMWKVM_PROBE_VMWARE_HYPERCALL, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_ABSENT);
	/* the behaviour checks ran on scratch VMs only, all closed */
	ck_assert_uint_gt(kmodel_log_count_req(m, 0, KVM_ENABLE_CAP, 239), 0);
	probe_finish(m, p);
}
END_TEST

START_TEST(rusin_on_mainline_arm_never_enables)
{
	/* 239..241 answer as the arm64 caps: even when requested, rusin-v2 is not confirmed,
	 * and in auto mode nothing is touched at all */
	struct kmodel *m = model_up(KMODEL_DIALECT_MAINLINE_ARM);
	vmwkvm_probe *p = probe_default();
	ASSERT_STATE(p, VMWKVM_PROBE_VMWARE_POLICY_RUSIN_V2, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_ABSENT);
	ck_assert_uint_eq(kmodel_log_count_req(m, 0, KVM_ENABLE_CAP, -1), 0);
	vmwkvm_probe_free(p);
	for (int i = 0; i < kmodel_vm_count(m); i++) {
		struct kmodel_vm_state st;
		ck_assert_int_eq(kmodel_vm_state(m, kmodel_vm_fd(m, i), &st), 0);
		ck_assert_uint_eq(st.unrelated_enables, 0);
	}
	p = probe_dialect("rusin-v2");
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->value, VMWKVM_DIALECT_RUSIN_V2);
	ck_assert_int_ne(it->state, VMWKVM_PROBE_PRESENT);
	ck_assert_int_ne(item(p, VMWKVM_PROBE_VMWARE_POLICY_RUSIN_V2, VMWKVM_PROBE_SCOPE_VM)->state, VMWKVM_PROBE_PRESENT);
	probe_finish(m, p);
}
END_TEST

START_TEST(rusin_own_numbers_auto)
{
	/* a kernel built with non-colliding numbers, told to the library through the API */
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.dialect = KMODEL_DIALECT_RUSIN_V2;
	c.rusin_cap_backdoor = 300;
	c.rusin_cap_hypercall = 301;
	c.rusin_cap_nested = 302;
	c.rusin_exit = 60;
	struct kmodel *m = model_up_cfg(&c);
	set_numbers(300, 301, 302, 60, 0, 0);
	vmwkvm_probe *p = probe_default();
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_msg(it->value == VMWKVM_DIALECT_RUSIN_V2 && it->state == VMWKVM_PROBE_PRESENT, "%s", it->reason);
	ck_assert_int_eq(item(p, VMWKVM_PROBE_VMWARE_POLICY_RUSIN_V2, VMWKVM_PROBE_SCOPE_VM)->value, 7);
	it = item(p, VMWKVM_PROBE_LIB_RUSIN_CAP_BACKDOOR, VMWKVM_PROBE_SCOPE_LIBRARY);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_PRESENT);
	ck_assert_int_eq(it->value, 300);
	probe_finish(m, p);
}
END_TEST

START_TEST(single_cap_auto)
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.dialect = KMODEL_DIALECT_SINGLE_CAP;
	c.single_cap = 250;
	c.single_exit = 43;
	struct kmodel *m = model_up_cfg(&c);
	set_numbers(239, 240, 241, 40, 250, 43);
	vmwkvm_probe *p = probe_default();
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_msg(it->value == VMWKVM_DIALECT_SINGLE_CAP && it->state == VMWKVM_PROBE_PRESENT, "%s", it->reason);
	it = item(p, VMWKVM_PROBE_VMWARE_POLICY_SINGLE_CAP, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_PRESENT);
	ck_assert_int_eq(it->value, 7);
	ASSERT_STATE(p, VMWKVM_PROBE_NESTED_BACKDOOR, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_PRESENT);
	/* rusin-v2's colliding numbers still untouched */
	ck_assert_uint_eq(count_cap_touches(m, 239), 0);
	vmwkvm_probe_free(p);

	/* a kernel whose mask lacks NESTED: the policy says so */
	model_down(m);
	c.single_valid_mask = 3;
	m = model_up_cfg(&c);
	set_numbers(239, 240, 241, 40, 250, 43);
	p = probe_default();
	it = item(p, VMWKVM_PROBE_VMWARE_POLICY_SINGLE_CAP, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_PRESENT);
	ck_assert_int_eq(it->value, VMWKVM_PROBE_ALLOW_BACKDOOR | VMWKVM_PROBE_ALLOW_HYPERCALL);
	ASSERT_STATE(p, VMWKVM_PROBE_NESTED_POLICY_SINGLE_CAP, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_ABSENT);
	probe_finish(m, p);
}
END_TEST

START_TEST(dialect_default_via_api)
{
	struct kmodel *m = model_up(KMODEL_DIALECT_RUSIN_V2);
	ck_assert_int_eq(vmwkvm_dialect_set_default(VMWKVM_DIALECT_RUSIN_V2), 0);
	vmwkvm_probe *p = probe_default();
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->value, VMWKVM_DIALECT_RUSIN_V2);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_PRESENT);
	it = item(p, VMWKVM_PROBE_LIB_DIALECT_DEFAULT, VMWKVM_PROBE_SCOPE_LIBRARY);
	ck_assert_int_eq(it->value, VMWKVM_DIALECT_RUSIN_V2);
	vmwkvm_probe_free(p);
	/* opts.dialect wins over the default */
	p = probe_dialect("none");
	ck_assert_int_eq(item(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_SCOPE_VM)->value, VMWKVM_DIALECT_NONE);
	vmwkvm_probe_free(p);
	model_down(m);
}
END_TEST

/* ------------------------------------------------------------------ the caller's fds and handle */

START_TEST(caller_fds_and_handle)
{
	struct kmodel *m = model_up(KMODEL_DIALECT_NONE);
	int kfd = vk_open("/dev/kvm", O_RDWR);
	ck_assert_int_ge(kfd, 0);
	int vfd = vk_ioctl(kfd, KVM_CREATE_VM, (void *)0);
	ck_assert_int_ge(vfd, 0);
	kmodel_log_clear(m);

	struct vmwkvm_probe_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.kvm_fd = kfd;
	o.kvm_fd_set = 1;
	o.vm_fd = vfd;
	o.vm_fd_set = 1;
	vmwkvm_probe *p = probe_opts(&o);
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_KVM_DEVICE, VMWKVM_PROBE_SCOPE_HOST);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_PRESENT);
	ck_assert_int_eq(it->value, kfd);
	it = item(p, VMWKVM_PROBE_KVM_VM, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->value, vfd);
	ASSERT_STATE(p, VMWKVM_PROBE_CAP_SYNC_REGS, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_PRESENT);
	/* nothing enabled on the caller's VM, its fds stay open */
	for (size_t i = 0; i < kmodel_log_count(m); i++) {
		struct kmodel_call c;
		kmodel_log_get(m, i, &c);
		ck_assert_msg(!(c.fd == vfd && c.req != KVM_CHECK_EXTENSION), "probe made %s on the caller's VM",
			      kmodel_req_name(c.req));
	}
	vmwkvm_probe_free(p);
	int keep[2] = { kfd, vfd };
	assert_fds_balanced(m, keep, 2);

	/* with a library VM handle */
	vmwkvm_vm *vm = NULL;
	struct vmwkvm_vm_opts vo;
	memset(&vo, 0, sizeof(vo));
	vo.sz = sizeof(vo);
	vo.kvm_fd = kfd;
	vo.kvm_fd_set = 1;
	ck_assert_int_eq(vmwkvm_vm_new(vfd, &vo, &vm), 0);
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.vm = vm;
	p = probe_opts(&o);
	it = item(p, VMWKVM_PROBE_KVM_VM, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->value, vfd);
	ASSERT_REASON_HAS(it, "handle");
	ck_assert_int_eq(item(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_SCOPE_VM)->value, vmwkvm_vm_dialect(vm));
	vmwkvm_probe_free(p);
	vmwkvm_vm_free(vm);
	vk_close(vfd);
	vk_close(kfd);
	model_down(m);
}
END_TEST

START_TEST(flags_no_scratch_no_uffd)
{
	struct kmodel *m = model_up(KMODEL_DIALECT_RUSIN_V2);
	struct vmwkvm_probe_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.flags = VMWKVM_PROBE_F_NO_SCRATCH_VM | VMWKVM_PROBE_F_NO_USERFAULTFD;
	o.dialect = "rusin-v2";
	vmwkvm_probe *p = probe_opts(&o);
	ck_assert_uint_eq(kmodel_log_count_req(m, 0, KVM_CREATE_VM, -1), 0);
	ck_assert_uint_eq(kmodel_log_count_req(m, 0, KMODEL_OP_USERFAULTFD, -1), 0);
	ASSERT_STATE(p, VMWKVM_PROBE_KVM_VM, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_UNKNOWN);
	ASSERT_STATE(p, VMWKVM_PROBE_CAP_SYNC_REGS, VMWKVM_PROBE_SCOPE_SYSTEM, VMWKVM_PROBE_PRESENT);
	ASSERT_STATE(p, VMWKVM_PROBE_CAP_SYNC_REGS, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_UNKNOWN);
	ASSERT_STATE(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_UNKNOWN);
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_API, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_UNKNOWN);
	probe_finish(m, p);
}
END_TEST

START_TEST(bad_options)
{
	vmwkvm_probe *p = (vmwkvm_probe *)(uintptr_t)1;
	ck_assert_int_eq(vmwkvm_probe_new(NULL, NULL), -EINVAL);
	struct vmwkvm_probe_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = 2;
	ck_assert_int_eq(vmwkvm_probe_new(&o, &p), -EINVAL);
	ck_assert_ptr_null(p);
	o.sz = sizeof(o);
	o.flags = 1u << 31;
	ck_assert_int_eq(vmwkvm_probe_new(&o, &p), -EINVAL);
	o.flags = 0;
	o.reserved[2] = 1;
	ck_assert_int_eq(vmwkvm_probe_new(&o, &p), -EINVAL);
	o.reserved[2] = 0;
	o.reserved0 = 1;
	ck_assert_int_eq(vmwkvm_probe_new(&o, &p), -EINVAL);
	o.reserved0 = 0;
	o.dialect = "klingon";
	ck_assert_int_eq(vmwkvm_probe_new(&o, &p), -EINVAL);
	o.dialect = NULL;
	o.vm_fd_set = 1;
	o.vm_fd = -1;
	ck_assert_int_eq(vmwkvm_probe_new(&o, &p), -EINVAL);
	o.vm_fd_set = 0;
	o.kvm_fd_set = 1;
	o.kvm_fd = -5;
	ck_assert_int_eq(vmwkvm_probe_new(&o, &p), -EINVAL);
	/* accessors on NULL */
	ck_assert_uint_eq(vmwkvm_probe_count(NULL), 0);
	errno = 0;
	ck_assert_ptr_null(vmwkvm_probe_item(NULL, 0));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_ptr_null(vmwkvm_probe_find(NULL, 0, 0));
	ck_assert_int_eq(vmwkvm_probe_kvm_usable(NULL), -EINVAL);
	vmwkvm_probe_free(NULL);
	ck_assert_str_eq(vmwkvm_probe_state_name(VMWKVM_PROBE_UNKNOWN), "unknown");
	ck_assert_str_eq(vmwkvm_probe_state_name(VMWKVM_PROBE_ABSENT), "absent");
	ck_assert_str_eq(vmwkvm_probe_state_name(VMWKVM_PROBE_PRESENT), "present");
	ck_assert_str_eq(vmwkvm_probe_state_name(9), "invalid");
	ck_assert_str_eq(vmwkvm_probe_scope_name(VMWKVM_PROBE_SCOPE_HOST), "host");
	ck_assert_str_eq(vmwkvm_probe_scope_name(9), "invalid");
	ck_assert_str_eq(vmwkvm_probe_group_name(VMWKVM_PROBE_GROUP_USERFAULTFD), "userfaultfd");
	ck_assert_str_eq(vmwkvm_probe_group_name(9), "invalid");
	ck_assert_str_eq(vmwkvm_errno_name(-EINTR), "EINTR");
	ck_assert_str_eq(vmwkvm_errno_name(EFAULT), "EFAULT");
	ck_assert_str_eq(vmwkvm_errno_name(4095), "E?");
}
END_TEST

/* ------------------------------------------------------------------ fault injection */

/* One ioctl kind failing always: the items it feeds are unknown with the errno; nothing leaks. */
START_TEST(fail_every_check_extension)
{
	int e = inject_errnos[_i];
	struct kmodel *m = model_up(KMODEL_DIALECT_NONE);
	ck_assert_int_eq(kmodel_inject_fault(m, KVM_CHECK_EXTENSION, -1, 0, e), 0);
	vmwkvm_probe *p = probe_default();
	for (uint32_t id = VMWKVM_PROBE_CAP_SYNC_REGS; id <= VMWKVM_PROBE_CAP_ENABLE_CAP_VM; id++) {
		for (uint32_t scope = VMWKVM_PROBE_SCOPE_SYSTEM; scope <= VMWKVM_PROBE_SCOPE_VM; scope++) {
			const struct vmwkvm_probe_item *it = item(p, id, scope);
			ck_assert_msg(it->state == VMWKVM_PROBE_UNKNOWN, "%s: %s", it->name, it->reason);
			ck_assert_int_eq(it->err, -e);
			ck_assert_int_eq(it->has_value, 0);
			ASSERT_REASON_HAS(it, "KVM_CHECK_EXTENSION");
			ASSERT_REASON_HAS(it, vmwkvm_errno_name(e));
		}
	}
	/* origin reporting depends on cap 238: unknown too */
	ASSERT_STATE(p, VMWKVM_PROBE_NESTED_ORIGIN, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_UNKNOWN);
	probe_finish(m, p);
}
END_TEST

START_TEST(fail_system_ioctls)
{
	int e = inject_errnos[_i];
	struct kmodel *m = model_up(KMODEL_DIALECT_NONE);
	ck_assert_int_eq(kmodel_inject_fault(m, KVM_GET_API_VERSION, -1, 0, e), 0);
	ck_assert_int_eq(kmodel_inject_fault(m, KVM_GET_VCPU_MMAP_SIZE, -1, 0, e), 0);
	vmwkvm_probe *p = probe_default();
	ck_assert_int_eq(vmwkvm_probe_kvm_usable(p), 0);
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_KVM_API_VERSION, VMWKVM_PROBE_SCOPE_SYSTEM);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_UNKNOWN);
	ck_assert_int_eq(it->err, -e);
	ASSERT_REASON_HAS(it, "KVM_GET_API_VERSION");
	it = item(p, VMWKVM_PROBE_KVM_VCPU_MMAP_SIZE, VMWKVM_PROBE_SCOPE_SYSTEM);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_UNKNOWN);
	ASSERT_REASON_HAS(it, vmwkvm_errno_name(e));
	/* none is not claimed as verified on a kernel that does not answer its API version */
	ck_assert_int_ne(item(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_SCOPE_VM)->state, VMWKVM_PROBE_PRESENT);
	probe_finish(m, p);
}
END_TEST

START_TEST(fail_create_vm)
{
	int e = inject_errnos[_i];
	struct kmodel *m = model_up(KMODEL_DIALECT_RUSIN_V2);
	ck_assert_int_eq(kmodel_inject_fault(m, KVM_CREATE_VM, -1, 0, e), 0);
	vmwkvm_probe *p = probe_dialect("rusin-v2");
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_KVM_VM, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_UNKNOWN);
	ck_assert_int_eq(it->err, -e);
	it = item(p, VMWKVM_PROBE_CAP_SYNC_REGS, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_UNKNOWN);
	ASSERT_REASON_HAS(it, "KVM_CREATE_VM");
	ASSERT_REASON_HAS(it, vmwkvm_errno_name(e));
	/* the dialect could not be confirmed: unknown, never present */
	it = item(p, VMWKVM_PROBE_VMWARE_POLICY_RUSIN_V2, VMWKVM_PROBE_SCOPE_VM);
	ck_assert_msg(it->state == VMWKVM_PROBE_UNKNOWN, "%s", it->reason);
	ASSERT_REASON_HAS(it, vmwkvm_errno_name(e));
	ASSERT_STATE(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_SCOPE_VM, VMWKVM_PROBE_UNKNOWN);
	probe_finish(m, p);
}
END_TEST

START_TEST(fail_open_and_read_file)
{
	int e = inject_errnos[_i];
	struct kmodel *m = model_up(KMODEL_DIALECT_NONE);
	ck_assert_int_eq(kmodel_inject_fault(m, KMODEL_OP_OPEN, -1, 1, e), 0); /* the first open: /dev/kvm */
	ck_assert_int_eq(kmodel_inject_fault(m, KMODEL_OP_READ_FILE, -1, 0, e), 0);
	vmwkvm_probe *p = probe_default();
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_KVM_DEVICE, VMWKVM_PROBE_SCOPE_HOST);
	/* a failure that is not "no such device" is not "absent" */
	ck_assert_int_eq(it->state, VMWKVM_PROBE_UNKNOWN);
	ck_assert_int_eq(it->err, -e);
	ck_assert_int_eq(vmwkvm_probe_kvm_usable(p), 0);
	it = item(p, VMWKVM_PROBE_VMWARE_BACKDOOR_PARAM, VMWKVM_PROBE_SCOPE_HOST);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_UNKNOWN);
	ck_assert_int_eq(it->err, -e);
	ASSERT_REASON_HAS(it, vmwkvm_errno_name(e));
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_SYSCTL, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_UNKNOWN);
	ASSERT_REASON_HAS(item(p, VMWKVM_PROBE_UFFD_SYSCTL, VMWKVM_PROBE_SCOPE_HOST), vmwkvm_errno_name(e));
	probe_finish(m, p);
}
END_TEST

/*
 * The sweep: record a clean probe (with rusin-v2 requested, so the behaviour checks run),
 * then for every ioctl call in it, fail exactly that call (by request, cap and occurrence)
 * with each errno. Every run must finish, report at least one item unknown with that errno
 * in err and reason, report no proposed dialect as verified unless the failed call was
 * outside its checks, and close every fd it opened.
 */
START_TEST(sweep_each_ioctl)
{
	int e = inject_errnos[_i];
	struct kmodel *m = model_up(KMODEL_DIALECT_RUSIN_V2);
	vmwkvm_probe *p = probe_dialect("rusin-v2");
	vmwkvm_probe_free(p);
	size_t n = kmodel_log_count(m);
	struct kmodel_call calls[400];
	size_t ncalls = 0;
	for (size_t i = 0; i < n && ncalls < 400; i++) {
		struct kmodel_call c;
		kmodel_log_get(m, i, &c);
		if (c.req >= KMODEL_OP_OPEN && c.req <= KMODEL_OP_READ)
			continue; /* ioctls only */
		calls[ncalls++] = c;
	}
	model_down(m);
	ck_assert_uint_gt(ncalls, 30);
	for (size_t k = 0; k < ncalls; k++) {
		/* occurrence of this (req, cap) among the calls before it */
		unsigned nth = 1;
		for (size_t j = 0; j < k; j++)
			nth += calls[j].req == calls[k].req && calls[j].cap == calls[k].cap;
		m = model_up(KMODEL_DIALECT_RUSIN_V2);
		ck_assert_int_eq(kmodel_inject_fault(m, calls[k].req, calls[k].cap, nth, e), 0);
		p = probe_dialect("rusin-v2");
		bool found = false;
		for (size_t i = 0; i < vmwkvm_probe_count(p); i++) {
			const struct vmwkvm_probe_item *it = vmwkvm_probe_item(p, i);
			if (it->state == VMWKVM_PROBE_UNKNOWN && strstr(it->reason, vmwkvm_errno_name(e)))
				found = true;
		}
		ck_assert_msg(found, "failing %s (cap %ld, #%u) with %s: no item reports it",
			      kmodel_req_name(calls[k].req), calls[k].cap, nth, vmwkvm_errno_name(e));
		vmwkvm_probe_free(p);
		assert_fds_balanced(m, NULL, 0);
		model_down(m);
	}
}
END_TEST

/* ------------------------------------------------------------------ userfaultfd through a wrapper */

/* The model hands out uffd fds whose ioctls fail; this wrapper answers UFFDIO_API for them
 * like this host (features 0x1ffff) and serves /dev/userfaultfd, so the feature items and
 * their failures can be tested. */
static const struct vmwkvm_sys_ops *inner;
static uint64_t wrap_features = 0x1ffff;
static int wrap_api_err;
static int wrap_dev_fd = -1;

static int wrap_ioctl(void *ctx, int fd, unsigned long req, void *arg)
{
	(void)ctx;
	if (req == UFFDIO_API) {
		if (wrap_api_err)
			return -wrap_api_err;
		struct uffdio_api *a = arg;
		if (a->api != UFFD_API)
			return -EINVAL;
		a->features = wrap_features;
		a->ioctls = 0x8000000000000003ull;
		return 0;
	}
	if (req == USERFAULTFD_IOC_NEW && fd == wrap_dev_fd)
		return inner->userfaultfd(inner->ctx, (int)(uintptr_t)arg);
	return inner->ioctl(inner->ctx, fd, req, arg);
}

static int wrap_open(void *ctx, const char *path, int flags)
{
	(void)ctx;
	int r = inner->open(inner->ctx, path, flags);
	if (strcmp(path, "/dev/userfaultfd") == 0 && r >= 0)
		wrap_dev_fd = r;
	return r;
}

START_TEST(uffd_features)
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.uffd_result = 0;
	struct kmodel *m = model_up_cfg(&c);
	ck_assert_int_eq(kmodel_set_file(m, "/proc/sys/vm/unprivileged_userfaultfd", "0\n"), 0);
	ck_assert_int_eq(kmodel_set_file(m, "/dev/userfaultfd", ""), 0);
	inner = vmwkvm_sys_ops_current();
	struct vmwkvm_sys_ops w = *inner;
	w.ioctl = wrap_ioctl;
	w.open = wrap_open;
	vmwkvm_sys_set_ops(&w);

	wrap_features = 0x1ffff;
	wrap_api_err = 0;
	vmwkvm_probe *p = probe_default();
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_UFFD_API, VMWKVM_PROBE_SCOPE_HOST);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_PRESENT);
	ck_assert_int_eq(it->value, 0x1ffff);
	for (uint32_t id = VMWKVM_PROBE_UFFD_WP; id <= VMWKVM_PROBE_UFFD_MOVE; id++)
		ASSERT_STATE(p, id, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_PRESENT);
	ck_assert_uint_eq(item(p, VMWKVM_PROBE_UFFD_WP_ASYNC, VMWKVM_PROBE_SCOPE_HOST)->number, 15);
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_SYSCALL, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_PRESENT);
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_DEV, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_PRESENT);
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_KERNEL_FAULTS, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_PRESENT);
	it = item(p, VMWKVM_PROBE_UFFD_SYSCTL, VMWKVM_PROBE_SCOPE_HOST);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_ABSENT);
	ck_assert_int_eq(it->value, 0);
	vmwkvm_probe_free(p);
	assert_fds_balanced(m, NULL, 0);

	/* an older kernel: no WP_UNPOPULATED, WP_ASYNC, MOVE */
	kmodel_log_clear(m);
	wrap_features = 0x1fff;
	p = probe_default();
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_WP, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_PRESENT);
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_WP_UNPOPULATED, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_ABSENT);
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_WP_ASYNC, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_ABSENT);
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_MOVE, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_ABSENT);
	vmwkvm_probe_free(p);

	/* UFFDIO_API failing with each errno: every feature unknown with the reason */
	for (size_t i = 0; i < sizeof(inject_errnos) / sizeof(inject_errnos[0]); i++) {
		kmodel_log_clear(m);
		wrap_api_err = inject_errnos[i];
		p = probe_default();
		it = item(p, VMWKVM_PROBE_UFFD_API, VMWKVM_PROBE_SCOPE_HOST);
		ck_assert_int_eq(it->state, VMWKVM_PROBE_UNKNOWN);
		ck_assert_int_eq(it->err, -inject_errnos[i]);
		for (uint32_t id = VMWKVM_PROBE_UFFD_WP; id <= VMWKVM_PROBE_UFFD_MOVE; id++) {
			it = item(p, id, VMWKVM_PROBE_SCOPE_HOST);
			ck_assert_int_eq(it->state, VMWKVM_PROBE_UNKNOWN);
			ASSERT_REASON_HAS(it, "UFFDIO_API");
			ASSERT_REASON_HAS(it, vmwkvm_errno_name(inject_errnos[i]));
		}
		vmwkvm_probe_free(p);
		assert_fds_balanced(m, NULL, 0);
	}
	wrap_api_err = 0;

	/* userfaultfd(2) refused (EPERM) but /dev/userfaultfd works: kernel faults still trappable */
	kmodel_log_clear(m);
	ck_assert_int_eq(kmodel_inject_fault(m, KMODEL_OP_USERFAULTFD, -1, 1, EPERM), 0);
	p = probe_default();
	it = item(p, VMWKVM_PROBE_UFFD_SYSCALL, VMWKVM_PROBE_SCOPE_HOST);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_ABSENT);
	ASSERT_REASON_HAS(it, "CAP_SYS_PTRACE");
	it = item(p, VMWKVM_PROBE_UFFD_KERNEL_FAULTS, VMWKVM_PROBE_SCOPE_HOST);
	ck_assert_int_eq(it->state, VMWKVM_PROBE_PRESENT);
	ASSERT_REASON_HAS(it, "/dev/userfaultfd");
	vmwkvm_probe_free(p);

	/* userfaultfd(2) interrupted, /dev/userfaultfd absent: cannot tell */
	kmodel_set_file(m, "/dev/userfaultfd", NULL);
	kmodel_clear_faults(m);
	ck_assert_int_eq(kmodel_inject_fault(m, KMODEL_OP_USERFAULTFD, -1, 1, EINTR), 0);
	p = probe_default();
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_SYSCALL, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_UNKNOWN);
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_DEV, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_ABSENT);
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_KERNEL_FAULTS, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_UNKNOWN);
	/* the user-mode-only fd still gives the features */
	ASSERT_STATE(p, VMWKVM_PROBE_UFFD_API, VMWKVM_PROBE_SCOPE_HOST, VMWKVM_PROBE_PRESENT);
	vmwkvm_probe_free(p);

	vmwkvm_sys_set_ops(inner);
	model_down(m);
}
END_TEST

/* ------------------------------------------------------------------ environment, in fresh processes */

#define CHILD_CHECK(cond)                \
	do {                             \
		if (!(cond))             \
			return __LINE__; \
	} while (0)

static int child_probe_dialect(int want_dialect, int want_state)
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.dialect = KMODEL_DIALECT_SINGLE_CAP;
	c.single_cap = 250;
	c.single_exit = 43;
	struct kmodel *m = kmodel_new(&c);
	CHILD_CHECK(m != NULL);
	kmodel_install(m);
	vmwkvm_probe *p = NULL;
	CHILD_CHECK(vmwkvm_probe_new(NULL, &p) == 0);
	const struct vmwkvm_probe_item *it = vmwkvm_probe_find(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_SCOPE_VM);
	CHILD_CHECK(it != NULL);
	CHILD_CHECK(it->value == want_dialect);
	CHILD_CHECK((int)it->state == want_state);
	vmwkvm_probe_free(p);
	kmodel_uninstall();
	kmodel_free(m);
	return 0;
}

static int child_env_single(void)
{
	/* VMWKVM_PROPOSED=single.cap=250,single.exit=43: auto confirms single-cap */
	return child_probe_dialect(VMWKVM_DIALECT_SINGLE_CAP, VMWKVM_PROBE_PRESENT);
}

static int child_env_none(void)
{
	/* same kernel, VMWKVM_DIALECT=none: the VMM asked for mainline behaviour */
	return child_probe_dialect(VMWKVM_DIALECT_NONE, VMWKVM_PROBE_PRESENT);
}

static int child_env_unset(void)
{
	/* no numbers: single-cap has none by default, so auto stays on none */
	return child_probe_dialect(VMWKVM_DIALECT_NONE, VMWKVM_PROBE_PRESENT);
}

static const struct {
	const char *name;
	int (*fn)(void);
} child_cases[] = {
	{ "env_single", child_env_single },
	{ "env_none", child_env_none },
	{ "env_unset", child_env_unset },
};

static int run_child(const char *name, const char *const *env)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char *argv[] = { self_path, (char *)"--child", (char *)name, NULL };
		execve(self_path, argv, (char *const *)env);
		_exit(127);
	}
	int st = 0;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st), "child %s died (status 0x%x)", name, st);
	return WEXITSTATUS(st);
}

START_TEST(env_overrides)
{
	const char *env1[] = { "VMWKVM_PROPOSED=single.cap=250,single.exit=43", NULL };
	int rc = run_child("env_single", env1);
	ck_assert_msg(rc == 0, "env_single failed at line %d", rc);
	const char *env2[] = { "VMWKVM_PROPOSED=single.cap=250,single.exit=43", "VMWKVM_DIALECT=none", NULL };
	rc = run_child("env_none", env2);
	ck_assert_msg(rc == 0, "env_none failed at line %d", rc);
	const char *env3[] = { NULL };
	rc = run_child("env_unset", env3);
	ck_assert_msg(rc == 0, "env_unset failed at line %d", rc);
}
END_TEST

static Suite *probe_suite(void)
{
	Suite *s = suite_create("probe-model");
	TCase *tc = tcase_create("items");
	tcase_add_test(tc, host_model_items);
	tcase_add_test(tc, no_dev_kvm);
	tcase_add_test(tc, backdoor_param_on);
	tcase_add_test(tc, caller_fds_and_handle);
	tcase_add_test(tc, flags_no_scratch_no_uffd);
	tcase_add_test(tc, bad_options);
	tcase_add_test(tc, uffd_features);
	suite_add_tcase(s, tc);
	tc = tcase_create("dialects");
	tcase_add_test(tc, rusin_colliding_numbers_untouched_in_auto);
	tcase_add_test(tc, rusin_requested_explicitly_is_confirmed);
	tcase_add_test(tc, rusin_on_mainline_arm_never_enables);
	tcase_add_test(tc, rusin_own_numbers_auto);
	tcase_add_test(tc, single_cap_auto);
	tcase_add_test(tc, dialect_default_via_api);
	tcase_add_test(tc, env_overrides);
	suite_add_tcase(s, tc);
	tc = tcase_create("faults");
	int ne = (int)(sizeof(inject_errnos) / sizeof(inject_errnos[0]));
	tcase_add_loop_test(tc, fail_every_check_extension, 0, ne);
	tcase_add_loop_test(tc, fail_system_ioctls, 0, ne);
	tcase_add_loop_test(tc, fail_create_vm, 0, ne);
	tcase_add_loop_test(tc, fail_open_and_read_file, 0, ne);
	tcase_add_loop_test(tc, sweep_each_ioctl, 0, ne);
	suite_add_tcase(s, tc);
	return s;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--child") == 0) {
		for (size_t i = 0; i < sizeof(child_cases) / sizeof(child_cases[0]); i++)
			if (strcmp(child_cases[i].name, argv[2]) == 0)
				return child_cases[i].fn();
		return 126;
	}
	ssize_t n = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
	if (n <= 0)
		return 99;
	self_path[n] = '\0';
	unsetenv("VMWKVM_PROPOSED");
	unsetenv("VMWKVM_DIALECT");
	SRunner *sr = srunner_create(probe_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
