/*
 * walk_policy.c: ask for the per-VM VMware switches before the first vCPU, read back what
 * is in force, and restrict what nested (L2) user code may call. The documentation shows
 * the parts marked policy, cpuid and filter.
 *
 * On a mainline kernel there is no per-VM switch, so the request fails with -EOPNOTSUPP
 * (unless the global module parameter already gives exactly what was asked) and the VM
 * keeps the kernel's default; with a confirmed proposed dialect it succeeds. Either way the
 * program then proves the ordering rule: once a vCPU exists the policy cannot change
 * (-EBUSY). Exit status 0 on the expected behaviour, 77 when /dev/kvm is absent, 1 otherwise.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <vmwkvm/vmwkvm.h>

static int fail(const char *what, int err)
{
	fprintf(stderr, "walk_policy: %s: %s\n", what, vmwkvm_strerror(err));
	return 1;
}

int main(void)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		if (errno == ENOENT) {
			fprintf(stderr, "walk_policy: skipped: /dev/kvm is absent on this machine\n");
			return 77;
		}
		return fail("open /dev/kvm", -errno);
	}
	int vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm_fd < 0)
		return fail("KVM_CREATE_VM", -errno);
	vmwkvm_vm *vm;
	struct vmwkvm_vm_opts vm_opts = { .sz = sizeof(vm_opts), .kvm_fd = kvm, .kvm_fd_set = 1 };
	int r = vmwkvm_vm_new(vm_fd, &vm_opts, &vm);
	if (r < 0)
		return fail("vmwkvm_vm_new", r);

	//! [policy]
	/* before the first vCPU: backdoor for every CPL, and L0 answers L2 user code */
	r = vmwkvm_vm_set_vmware_policy(vm, VMWKVM_POLICY_BACKDOOR | VMWKVM_POLICY_NESTED_BACKDOOR);
	if (r == -EOPNOTSUPP)
		printf("this kernel cannot do that for one VM (the log callback says why)\n");
	else if (r < 0)
		return fail("vmwkvm_vm_set_vmware_policy", r);

	struct vmwkvm_vmware_policy pol = { .sz = sizeof(pol) };
	vmwkvm_vm_get_vmware_policy(vm, &pol);
	char in_force[64], confirmed[64];
	vmwkvm_policy_flags_format(pol.flags, in_force, sizeof(in_force));
	vmwkvm_policy_flags_format(pol.confirmed, confirmed, sizeof(confirmed));
	printf("dialect %s: in force %s, confirmed by the kernel %s, kvm.enable_vmware_backdoor %s\n",
	       vmwkvm_dialect_name(pol.dialect), in_force, confirmed,
	       pol.module_param == VMWKVM_PARAM_ON ? "Y" : pol.module_param == VMWKVM_PARAM_OFF ? "N" : "?");
	//! [policy]

	int vcpu_fd = vmwkvm_vm_create_vcpu(vm, 0);
	if (vcpu_fd < 0)
		return fail("vmwkvm_vm_create_vcpu", vcpu_fd);
	r = vmwkvm_vm_set_vmware_policy(vm, VMWKVM_POLICY_BACKDOOR);
	int ok = r == -EBUSY;
	printf("policy change after the first vCPU: %s (%s)\n", vmwkvm_strerror(r), ok ? "as expected" : "WRONG");

	//! [cpuid]
	/* present VMware's CPUID leaves: "VMwareVMware", TSC and APIC bus kHz, and a hypercall
	 * transport bit only if the policy above has hypercalls confirmed by the kernel */
	enum { MAX_ENT = 256 };
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + MAX_ENT * sizeof(struct kvm_cpuid_entry2));
	if (!cpuid)
		return fail("calloc", -ENOMEM);
	cpuid->nent = MAX_ENT;
	if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid) < 0)
		return fail("KVM_GET_SUPPORTED_CPUID", -errno);
	struct vmwkvm_cpuid_opts cpuid_opts = {
		.sz = sizeof(cpuid_opts), .cpu_vendor = VMWKVM_CPU_VENDOR_INTEL, /* from the VMM's CPU model */
		.vcpu_fd = vcpu_fd, .vcpu_fd_set = 1,                           /* KVM_GET_TSC_KHZ there */
	};
	r = vmwkvm_cpuid_vmware(vm, cpuid->entries, cpuid->nent, MAX_ENT, &cpuid_opts);
	if (r < 0)
		return fail("vmwkvm_cpuid_vmware", r);
	cpuid->nent = (uint32_t)r;
	if (ioctl(vcpu_fd, KVM_SET_CPUID2, cpuid) < 0)
		return fail("KVM_SET_CPUID2", -errno);
	//! [cpuid]
	free(cpuid);

	//! [filter]
	/* a command table that answers L2 user code only for GETVERSION and the message channel */
	vmwkvm_backdoor *bd;
	r = vmwkvm_backdoor_new(NULL, &bd);
	if (r < 0)
		return fail("vmwkvm_backdoor_new", r);
	vmwkvm_backdoor_enable_all_builtins(bd);
	static const uint16_t l2_user_ok[] = { VMWKVM_BDOOR_CMD_GETVERSION, VMWKVM_BDOOR_CMD_MESSAGE };
	r = vmwkvm_backdoor_filter_allow_only(bd, VMWKVM_BDOOR_FROM_L2_USER, l2_user_ok, 2);
	if (r < 0)
		return fail("vmwkvm_backdoor_filter_allow_only", r);
	//! [filter]
	ok = ok && vmwkvm_backdoor_filter_allowed(bd, VMWKVM_BDOOR_FROM_L2_USER, VMWKVM_BDOOR_CMD_GETHZ) == 0 &&
	     vmwkvm_backdoor_filter_allowed(bd, VMWKVM_BDOOR_FROM_L1_USER, VMWKVM_BDOOR_CMD_GETHZ) == 1;

	vmwkvm_backdoor_free(bd);
	vmwkvm_vm_free(vm);
	close(vcpu_fd);
	close(vm_fd);
	close(kvm);
	return ok ? 0 : 1;
}
