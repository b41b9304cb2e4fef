/*
 * Real KVM: the `none` dialect end to end. On a mainline kernel (this host, CI) no
 * per-VM VMware switch exists, so every per-VM request that would change something fails
 * with -EOPNOTSUPP, no KVM_ENABLE_CAP ever reaches the kernel, and the reported module
 * parameter equals what sysfs says. Exits 77 only when /dev/kvm is absent.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"
#include "kvmh.h"

#define PARAM_PATH "/sys/module/kvm/parameters/enable_vmware_backdoor"
#define B VMWKVM_POLICY_BACKDOOR
#define H VMWKVM_POLICY_HYPERCALL
#define N VMWKVM_POLICY_NESTED_BACKDOOR

/* ---- a counting shim over the real kernel ops: which ENABLE_CAPs reached the kernel ---- */
static unsigned enable_caps;
static unsigned enable_caps_ok;
static int shim_ioctl(void *ctx, int fd, unsigned long req, void *arg)
{
	(void)ctx;
	const struct vmwkvm_sys_ops *real = vmwkvm_sys_default_ops();
	int r = real->ioctl(real->ctx, fd, req, arg);
	if (req == KVM_ENABLE_CAP) {
		enable_caps++;
		if (r >= 0)
			enable_caps_ok++;
	}
	return r;
}
static struct vmwkvm_sys_ops shim;

static void install_shim(void)
{
	shim = *vmwkvm_sys_default_ops();
	shim.ioctl = shim_ioctl;
	vmwkvm_sys_set_ops(&shim);
	enable_caps = enable_caps_ok = 0;
}

/* sysfs, read directly (not through the library): 1 = Y, 0 = N, -errno */
static int sysfs_param(void)
{
	FILE *f = fopen(PARAM_PATH, "r");
	if (!f)
		return -errno;
	int c = fgetc(f);
	fclose(f);
	if (c == 'Y' || c == 'y' || c == '1')
		return 1;
	if (c == 'N' || c == 'n' || c == '0')
		return 0;
	return -EIO;
}

static char LOG[4096];
static void log_cb(int level, const char *msg, void *ctx)
{
	(void)ctx;
	size_t n = strlen(LOG);
	snprintf(LOG + n, sizeof(LOG) - n, "%d:%s\n", level, msg);
}

static void pin_numbers(void)
{
	/* the build defaults, whatever VMWKVM_PROPOSED says in the environment */
	struct vmwkvm_proposed_numbers n;
	memset(&n, 0, sizeof(n));
	n.sz = sizeof(n);
	n.rusin_cap_backdoor = 239;
	n.rusin_cap_hypercall = 240;
	n.rusin_cap_nested = 241;
	n.rusin_exit_vmware = 40;
	ck_assert_int_eq(vmwkvm_proposed_set(&n), 0);
}

static vmwkvm_vm *wrap(struct kvmh *h, const char *dialect)
{
	struct vmwkvm_vm_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.kvm_fd = h->kvm_fd;
	o.kvm_fd_set = 1;
	o.dialect = dialect;
	vmwkvm_vm *vm = NULL;
	ck_assert_int_eq(vmwkvm_vm_new(h->vm_fd, &o, &vm), 0);
	return vm;
}

/* Every request, checked against the parameter. */
static void check_requests(vmwkvm_vm *vm, int param)
{
	static const uint32_t reqs[] = { 0, B, H, B | H, B | N, B | H | N };
	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		uint32_t want_ok = param == 1 ? B : param == 0 ? 0 : 0xffffffffu;
		int expect = reqs[i] == want_ok ? 0 : -EOPNOTSUPP;
		int r = vmwkvm_vm_set_vmware_policy(vm, reqs[i]);
		ck_assert_msg(r == expect, "flags 0x%x: got %d, expected %d (param %d)", reqs[i], r, expect, param);
	}
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(vm, N), -EINVAL);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(vm, 8), -EINVAL);
}

static void check_get(vmwkvm_vm *vm, int param)
{
	struct vmwkvm_vmware_policy p;
	memset(&p, 0, sizeof(p));
	p.sz = sizeof(p);
	ck_assert_int_eq(vmwkvm_vm_get_vmware_policy(vm, &p), 0);
	ck_assert_int_eq(p.dialect, VMWKVM_DIALECT_NONE);
	if (param >= 0) {
		ck_assert_int_eq(p.module_param, param);
		ck_assert_int_eq(p.param_err, 0);
		ck_assert_uint_eq(p.flags, param ? B : 0);
		ck_assert_uint_eq(p.confirmed, param ? B : 0);
	} else {
		ck_assert_int_eq(p.module_param, VMWKVM_PARAM_UNKNOWN);
		ck_assert_int_eq(p.param_err, param);
		ck_assert_uint_eq(p.flags, 0);
	}
	ck_assert_uint_eq(p.hypercall_exit, 0);
}

START_TEST(none_path_auto_and_none)
{
	pin_numbers();
	install_shim();
	kvmh_watchdog_arm(60);
	int param = sysfs_param();
	static const char *const dialects[] = { "auto", "none" };
	for (size_t d = 0; d < 2; d++) {
		struct kvmh h;
		memset(&h, 0, sizeof(h));
		struct kvmh_opts ko = { .no_memory = true };
		ck_assert_int_eq(kvmh_vm_create(&h, &ko), 0);
		vmwkvm_vm *vm = wrap(&h, dialects[d]);
		ck_assert_int_eq(vmwkvm_vm_dialect(vm), VMWKVM_DIALECT_NONE);
		LOG[0] = '\0';
		vmwkvm_set_log(log_cb, NULL, VMWKVM_LOG_WARN);
		check_requests(vm, param);
		check_get(vm, param);
		if (param == 0)
			ck_assert_msg(strstr(LOG, "kvm.enable_vmware_backdoor=N") != NULL, "log: %s", LOG);
		vmwkvm_set_log(NULL, NULL, VMWKVM_LOG_ERROR);
		/* after the first vCPU: -EBUSY */
		int vfd = vmwkvm_vm_create_vcpu(vm, 0);
		ck_assert_int_ge(vfd, 0);
		ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(vm, B), -EBUSY);
		check_get(vm, param);
		vmwkvm_vm_free(vm);
		close(vfd);
		kvmh_destroy(&h);
	}
	/* nothing was ever enabled through a proposed number */
	ck_assert_uint_eq(enable_caps, 0);
	kvmh_watchdog_disarm();
	vmwkvm_sys_set_ops(NULL);
	vmwkvm_proposed_set(NULL);
}
END_TEST

/* rusin-v2 asked for explicitly: confirmed absent on a scratch VM, requests fail. */
START_TEST(explicit_rusin_refused)
{
	pin_numbers();
	install_shim();
	kvmh_watchdog_arm(60);
	struct kvmh h;
	memset(&h, 0, sizeof(h));
	struct kvmh_opts ko = { .no_memory = true };
	ck_assert_int_eq(kvmh_vm_create(&h, &ko), 0);
	vmwkvm_vm *vm = wrap(&h, "rusin-v2");
	LOG[0] = '\0';
	vmwkvm_set_log(log_cb, NULL, VMWKVM_LOG_WARN);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(vm, B), -EOPNOTSUPP);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(vm, B | H | N), -EOPNOTSUPP);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(vm, 0), -EOPNOTSUPP);
	vmwkvm_set_log(NULL, NULL, VMWKVM_LOG_ERROR);
	/* the reason names what the kernel answered (section 7: 239..241 check as 0 on x86) */
	ck_assert_msg(strstr(LOG, "rusin-v2") != NULL, "log: %s", LOG);
	ck_assert_uint_eq(enable_caps_ok, 0);
	struct vmwkvm_vmware_policy p;
	memset(&p, 0, sizeof(p));
	p.sz = sizeof(p);
	ck_assert_int_eq(vmwkvm_vm_get_vmware_policy(vm, &p), 0);
	ck_assert_uint_eq(p.set_called, 0);
	ck_assert_uint_eq(p.hypercall_exit, 0);
	vmwkvm_vm_free(vm);
	kvmh_destroy(&h);
	kvmh_watchdog_disarm();
	vmwkvm_sys_set_ops(NULL);
	vmwkvm_proposed_set(NULL);
}
END_TEST

int main(void)
{
	kvmh_skip_unless_kvm("test_policy_none");
	Suite *s = suite_create("policy_none");
	TCase *t = tcase_create("kvm");
	tcase_add_test(t, none_path_auto_and_none);
	tcase_add_test(t, explicit_rusin_refused);
	suite_add_tcase(s, t);
	SRunner *r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	int failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
