/* VMware CPUID leaves against the kernel model: the hypercall transport bit follows the
 * VM's confirmed policy in each dialect; the TSC frequency comes from KVM_GET_TSC_KHZ. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include <linux/kvm.h>

#include "core/internal.h"
#include "kmodel.h"

static struct kmodel *M;
static int VMFD = -1;
static vmwkvm_vm *VM;

static void start(int kdialect, const char *ldialect, uint32_t single_cap, uint32_t single_exit)
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.dialect = kdialect;
	c.tsc_khz = 2893000;
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
	n.single_cap = single_cap;
	n.single_exit = single_exit;
	ck_assert_int_eq(vmwkvm_proposed_set(&n), 0);
	int sys = vk_open("/dev/kvm", O_RDWR);
	VMFD = vk_ioctl(sys, KVM_CREATE_VM, 0);
	ck_assert_int_ge(VMFD, 0);
	struct vmwkvm_vm_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.kvm_fd = sys;
	o.kvm_fd_set = 1;
	o.dialect = ldialect;
	ck_assert_int_eq(vmwkvm_vm_new(VMFD, &o, &VM), 0);
}

static void stop(void)
{
	vmwkvm_vm_free(VM);
	VM = NULL;
	kmodel_free(M);
	M = NULL;
	vmwkvm_proposed_set(NULL);
}

/* Edit a minimal array; return 0x40000010 (ECX in *ecx, EAX in *eax) or the error. */
static int leaves(uint32_t vendor, uint32_t tsc, int vcpu_fd, uint32_t *eax, uint32_t *ecx)
{
	struct kvm_cpuid_entry2 a[8];
	memset(a, 0, sizeof(a));
	a[0].function = 1;
	struct vmwkvm_cpuid_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.cpu_vendor = vendor;
	o.tsc_khz = tsc;
	if (vcpu_fd >= 0) {
		o.vcpu_fd = vcpu_fd;
		o.vcpu_fd_set = 1;
	}
	struct kvm_cpuid_entry2 before[8];
	memcpy(before, a, sizeof(a));
	int r = vmwkvm_cpuid_vmware(VM, a, 1, 8, &o);
	if (r < 0) {
		ck_assert_mem_eq(a, before, sizeof(a));
		return r;
	}
	ck_assert_int_eq(r, 3);
	for (int i = 0; i < r; i++)
		if (a[i].function == 0x40000010) {
			*eax = a[i].eax;
			*ecx = a[i].ecx;
		}
	ck_assert_uint_eq(a[0].ecx, 0x80000000u);
	return r;
}

#define B VMWKVM_POLICY_BACKDOOR
#define H VMWKVM_POLICY_HYPERCALL

START_TEST(rusin_transport_bit_follows_policy)
{
	uint32_t eax = 0, ecx = 99;
	start(KMODEL_DIALECT_RUSIN_V2, "rusin-v2", 0, 0);
	/* before any policy: the port */
	ck_assert_int_eq(leaves(VMWKVM_CPU_VENDOR_INTEL, 1000, -1, &eax, &ecx), 3);
	ck_assert_uint_eq(ecx, 0);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H), 0);
	ck_assert_int_eq(leaves(VMWKVM_CPU_VENDOR_INTEL, 1000, -1, &eax, &ecx), 3);
	ck_assert_uint_eq(ecx, VMWKVM_CPUID_ECX_VMCALL);
	ck_assert_int_eq(leaves(VMWKVM_CPU_VENDOR_AMD, 1000, -1, &eax, &ecx), 3);
	ck_assert_uint_eq(ecx, VMWKVM_CPUID_ECX_VMMCALL);
	/* hypercalls in force but no vendor: refused, array unchanged */
	ck_assert_int_eq(leaves(VMWKVM_CPU_VENDOR_UNKNOWN, 1000, -1, &eax, &ecx), -EINVAL);
	/* backdoor only: the port again */
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B), 0);
	ck_assert_int_eq(leaves(VMWKVM_CPU_VENDOR_INTEL, 1000, -1, &eax, &ecx), 3);
	ck_assert_uint_eq(ecx, 0);
	stop();
}
END_TEST

START_TEST(rolled_back_policy_gives_no_bit)
{
	uint32_t eax = 0, ecx = 99;
	start(KMODEL_DIALECT_RUSIN_V2, "rusin-v2", 0, 0);
	kmodel_inject_fault_fd(M, VMFD, KVM_ENABLE_CAP, 240, 1, EINTR);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H), -EINTR);
	ck_assert_int_eq(leaves(VMWKVM_CPU_VENDOR_INTEL, 1000, -1, &eax, &ecx), 3);
	ck_assert_uint_eq(ecx, 0);
	stop();
}
END_TEST

START_TEST(single_cap_transport_bit)
{
	uint32_t eax = 0, ecx = 99;
	start(KMODEL_DIALECT_SINGLE_CAP, "auto", 250, 43);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H), 0);
	ck_assert_int_eq(leaves(VMWKVM_CPU_VENDOR_INTEL, 1000, -1, &eax, &ecx), 3);
	ck_assert_uint_eq(ecx, VMWKVM_CPUID_ECX_VMCALL);
	stop();
}
END_TEST

START_TEST(none_never_advertises)
{
	uint32_t eax = 0, ecx = 99;
	start(KMODEL_DIALECT_NONE, "auto", 0, 0);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H), -EOPNOTSUPP);
	ck_assert_int_eq(leaves(VMWKVM_CPU_VENDOR_INTEL, 1000, -1, &eax, &ecx), 3);
	ck_assert_uint_eq(ecx, 0);
	ck_assert_int_eq(leaves(VMWKVM_CPU_VENDOR_AMD, 1000, -1, &eax, &ecx), 3);
	ck_assert_uint_eq(ecx, 0);
	stop();
	/* the arm64 collision: nothing enabled, nothing advertised */
	start(KMODEL_DIALECT_MAINLINE_ARM, "auto", 0, 0);
	ck_assert_int_eq(vmwkvm_vm_set_vmware_policy(VM, B | H), -EOPNOTSUPP);
	ck_assert_int_eq(leaves(VMWKVM_CPU_VENDOR_INTEL, 1000, -1, &eax, &ecx), 3);
	ck_assert_uint_eq(ecx, 0);
	stop();
}
END_TEST

START_TEST(tsc_from_kvm)
{
	uint32_t eax = 0, ecx = 0;
	start(KMODEL_DIALECT_NONE, "auto", 0, 0);
	/* the VM fd */
	size_t mark = kmodel_log_count(M);
	ck_assert_int_eq(leaves(0, 0, -1, &eax, &ecx), 3);
	ck_assert_uint_eq(eax, 2893000);
	char buf[256];
	unsigned long only[] = { KVM_GET_TSC_KHZ };
	kmodel_log_format(M, mark, only, 1, buf, sizeof(buf));
	ck_assert_str_eq(buf, "vm GET_TSC_KHZ = 2893000\n");
	/* a vCPU fd */
	int v = vmwkvm_vm_create_vcpu(VM, 0);
	mark = kmodel_log_count(M);
	ck_assert_int_eq(leaves(0, 0, v, &eax, &ecx), 3);
	kmodel_log_format(M, mark, only, 1, buf, sizeof(buf));
	ck_assert_str_eq(buf, "vcpu GET_TSC_KHZ = 2893000\n");
	/* given by the VMM: KVM not asked */
	mark = kmodel_log_count(M);
	ck_assert_int_eq(leaves(0, 1800000, v, &eax, &ecx), 3);
	ck_assert_uint_eq(eax, 1800000);
	ck_assert_uint_eq(kmodel_log_count_req(M, mark, KVM_GET_TSC_KHZ, -1), 0);
	/* KVM fails: the error comes back, array unchanged (checked in leaves()) */
	kmodel_inject_fault(M, KVM_GET_TSC_KHZ, -1, 1, ENOTTY);
	ck_assert_int_eq(leaves(0, 0, -1, &eax, &ecx), -ENOTTY);
	kmodel_inject_fault(M, KVM_GET_TSC_KHZ, -1, 1, EINTR);
	ck_assert_int_eq(leaves(0, 0, v, &eax, &ecx), -EINTR);
	stop();
	/* KVM reports 0 kHz */
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.tsc_khz = 0;
	M = kmodel_new(&c);
	kmodel_install(M);
	int sys = vk_open("/dev/kvm", O_RDWR);
	VMFD = vk_ioctl(sys, KVM_CREATE_VM, 0);
	ck_assert_int_eq(vmwkvm_vm_new(VMFD, NULL, &VM), 0);
	ck_assert_int_eq(leaves(0, 0, -1, &eax, &ecx), -EINVAL);
	stop();
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("policy_cpuid");
	TCase *t = tcase_create("model");
	tcase_add_test(t, rusin_transport_bit_follows_policy);
	tcase_add_test(t, rolled_back_policy_gives_no_bit);
	tcase_add_test(t, single_cap_transport_bit);
	tcase_add_test(t, none_never_advertises);
	tcase_add_test(t, tsc_from_kvm);
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
