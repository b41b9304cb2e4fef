/*
 * The probe and the exits it promises, on the real /dev/kvm:
 * - every capability the probe reports equals KVM_CHECK_EXTENSION asked directly, on the
 *   system fd and on a VM fd (the caller's, and the probe's own scratch VM); API version,
 *   vCPU mmap size, the module parameter and userfaultfd agree with direct questions;
 * - sync regs are usable: with kvm_valid_regs set, a tiny real-mode guest's registers appear
 *   in kvm_run at its exit, and a register written through kvm_dirty_regs reaches the guest;
 * - a real-mode `in eax,dx` from port 0x5658 gives the KVM_EXIT_IO the library expects
 *   (in, size 4, port 0x5658, count 1), which vmwkvm_exit_decode() takes as a backdoor call,
 *   and vmwkvm_exit_complete() puts the answer in the guest's EAX.
 * Exits 77 only when /dev/kvm is absent. Every KVM_RUN is under an alarm() watchdog.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <vmwkvm/vmwkvm.h>

#include "kvmh.h"

#define WATCHDOG_SECONDS 20

static const struct {
	uint32_t id;
	uint32_t cap;
} caps[] = {
	{ VMWKVM_PROBE_CAP_SYNC_REGS, 74 },	     { VMWKVM_PROBE_CAP_X86_GUEST_MODE, 238 },
	{ VMWKVM_PROBE_CAP_MEMORY_FAULT_INFO, 232 }, { VMWKVM_PROBE_CAP_USER_MEMORY2, 231 },
	{ VMWKVM_PROBE_CAP_GUEST_MEMFD, 234 },	     { VMWKVM_PROBE_CAP_EXIT_HYPERCALL, 201 },
	{ VMWKVM_PROBE_CAP_X86_USER_SPACE_MSR, 188 }, { VMWKVM_PROBE_CAP_X86_MSR_FILTER, 189 },
	{ VMWKVM_PROBE_CAP_XEN_HVM, 38 },	     { VMWKVM_PROBE_CAP_VM_TYPES, 235 },
	{ VMWKVM_PROBE_CAP_PRE_FAULT_MEMORY, 236 },  { VMWKVM_PROBE_CAP_GUEST_MEMFD_FLAGS, 244 },
	{ VMWKVM_PROBE_CAP_MEMORY_ATTRIBUTES, 233 }, { VMWKVM_PROBE_CAP_CHECK_EXTENSION_VM, 105 },
	{ VMWKVM_PROBE_CAP_IMMEDIATE_EXIT, 136 },    { VMWKVM_PROBE_CAP_ENABLE_CAP_VM, 98 },
};

static const struct vmwkvm_probe_item *item(const vmwkvm_probe *p, uint32_t id, uint32_t scope)
{
	const struct vmwkvm_probe_item *it = vmwkvm_probe_find(p, id, scope);
	ck_assert_msg(it != NULL, "probe has no item %u/%u", id, scope);
	return it;
}

static void expect_cap(const vmwkvm_probe *p, uint32_t id, uint32_t scope, int direct)
{
	const struct vmwkvm_probe_item *it = item(p, id, scope);
	ck_assert_msg(direct >= 0, "direct KVM_CHECK_EXTENSION(%u) failed: %s", it->number, strerror(-direct));
	ck_assert_msg(it->has_value && it->value == direct, "%s (%s): probe %lld, kernel %d: %s", it->name,
		      vmwkvm_probe_scope_name(scope), (long long)it->value, direct, it->reason);
	ck_assert_int_eq(it->state, direct ? VMWKVM_PROBE_PRESENT : VMWKVM_PROBE_ABSENT);
}

static int check_ext(int fd, uint32_t cap)
{
	int r = ioctl(fd, KVM_CHECK_EXTENSION, (unsigned long)cap);
	return r < 0 ? -errno : r;
}

START_TEST(probe_agrees_with_kernel)
{
	struct kvmh h;
	ck_assert_int_eq(kvmh_vm_create(&h, NULL), 0);

	/* the caller's fds */
	struct vmwkvm_probe_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.kvm_fd = h.kvm_fd;
	o.kvm_fd_set = 1;
	o.vm_fd = h.vm_fd;
	o.vm_fd_set = 1;
	vmwkvm_probe *p = NULL;
	ck_assert_int_eq(vmwkvm_probe_new(&o, &p), 0);
	ck_assert_int_eq(vmwkvm_probe_kvm_usable(p), 1);
	const struct vmwkvm_probe_item *it = item(p, VMWKVM_PROBE_KVM_API_VERSION, VMWKVM_PROBE_SCOPE_SYSTEM);
	ck_assert_int_eq(it->value, ioctl(h.kvm_fd, KVM_GET_API_VERSION, 0));
	it = item(p, VMWKVM_PROBE_KVM_VCPU_MMAP_SIZE, VMWKVM_PROBE_SCOPE_SYSTEM);
	ck_assert_int_eq(it->value, ioctl(h.kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0));
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		expect_cap(p, caps[i].id, VMWKVM_PROBE_SCOPE_SYSTEM, check_ext(h.kvm_fd, caps[i].cap));
		expect_cap(p, caps[i].id, VMWKVM_PROBE_SCOPE_VM, check_ext(h.vm_fd, caps[i].cap));
	}
	vmwkvm_probe_free(p);

	/* the probe's own scratch VM answers like ours */
	ck_assert_int_eq(vmwkvm_probe_new(NULL, &p), 0);
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
		expect_cap(p, caps[i].id, VMWKVM_PROBE_SCOPE_VM, check_ext(h.vm_fd, caps[i].cap));

	/* kvm.enable_vmware_backdoor as sysfs says */
	char buf[8] = { 0 };
	int fd = open("/sys/module/kvm/parameters/enable_vmware_backdoor", O_RDONLY | O_CLOEXEC);
	it = item(p, VMWKVM_PROBE_VMWARE_BACKDOOR_PARAM, VMWKVM_PROBE_SCOPE_HOST);
	if (fd >= 0) {
		ck_assert_int_gt(read(fd, buf, sizeof(buf) - 1), 0);
		close(fd);
		ck_assert_int_eq(it->state, buf[0] == 'Y' ? VMWKVM_PROBE_PRESENT : VMWKVM_PROBE_ABSENT);
	} else {
		ck_assert_int_eq(it->state, VMWKVM_PROBE_UNKNOWN);
	}

	/* on a mainline kernel the posted rusin-v2 numbers are never trusted */
	it = item(p, VMWKVM_PROBE_VMWARE_POLICY_RUSIN_V2, VMWKVM_PROBE_SCOPE_VM);
	struct vmwkvm_proposed_numbers n;
	memset(&n, 0, sizeof(n));
	n.sz = sizeof(n);
	vmwkvm_proposed_get(&n);
	if (vmwkvm_mainline_cap_name(n.rusin_cap_backdoor))
		ck_assert_int_eq(it->state, VMWKVM_PROBE_ABSENT);

	/* userfaultfd(2) as the kernel answers it */
	long u = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int ue = u < 0 ? errno : 0;
	if (u >= 0)
		close((int)u);
	it = item(p, VMWKVM_PROBE_UFFD_SYSCALL, VMWKVM_PROBE_SCOPE_HOST);
	if (ue == 0)
		ck_assert_int_eq(it->state, VMWKVM_PROBE_PRESENT);
	else
		ck_assert_int_eq(it->err, -ue);
	vmwkvm_probe_free(p);
	kvmh_destroy(&h);
}
END_TEST

START_TEST(sync_regs_usable)
{
	struct kvmh h;
	char desc[160];
	ck_assert_int_eq(kvmh_vm_create(&h, NULL), 0);
	int sync = check_ext(h.vm_fd, 74);
	ck_assert_msg(sync >= 0 && (sync & (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS)) ==
					(KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS),
		      "KVM_CAP_SYNC_REGS = %d lacks REGS|SREGS", sync);
	ck_assert_int_gt(kvmh_load_guest(&h, "realmode_sync_regs", 0x1000), 0);
	ck_assert_int_eq(kvmh_vcpu_create(&h), 0);
	ck_assert_int_eq(kvmh_setup_real_mode(&h, 0x1000), 0);

	/* the library picks sync regs for this vCPU */
	vmwkvm_vm *vm = NULL;
	ck_assert_int_eq(vmwkvm_vm_new(h.vm_fd, NULL, &vm), 0);
	vmwkvm_vcpu *vcpu = NULL;
	ck_assert_int_eq(vmwkvm_vcpu_new(vm, h.vcpu_fd, h.run, h.run_size, NULL, &vcpu), 0);
	ck_assert_int_eq(vmwkvm_vcpu_regs_mode(vcpu), VMWKVM_REGS_SYNC);
	ck_assert_uint_eq(h.run->kvm_valid_regs & (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS),
			  KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS);

	kvmh_watchdog_arm(WATCHDOG_SECONDS);
	ck_assert_int_eq(kvmh_run_until_exit(&h, 1000), 0);
	ck_assert_msg(h.run->exit_reason == KVM_EXIT_IO && h.run->io.direction == KVM_EXIT_IO_OUT &&
			      h.run->io.port == 0x11 && h.run->io.size == 1,
		      "first exit: %s", kvmh_describe_exit(&h, desc, sizeof(desc)));
	uint8_t *d = kvmh_io_data(&h);
	ck_assert_ptr_nonnull(d);
	ck_assert_uint_eq(d[0], 0x42);
	/* the registers are in kvm_run, without KVM_GET_REGS */
	const struct kvm_regs *r = &h.run->s.regs.regs;
	ck_assert_uint_eq(r->rbx & 0xffffffffu, 0x0BADF00Du);
	ck_assert_uint_eq(r->rcx & 0xffffffffu, 0x12345678u);
	ck_assert_uint_eq(r->rdx & 0xffffffffu, 0x00005A5Au);
	ck_assert_uint_eq(r->rsi & 0xffffffffu, 0xDEADBEEFu);
	ck_assert_uint_eq(r->rdi & 0xffffffffu, 0xCAFEF00Du);
	ck_assert_uint_eq(r->rbp & 0xffffffffu, 0x600DF00Du);
	ck_assert_uint_eq(r->rax & 0xffu, 0x42);
	ck_assert_uint_eq(h.run->s.regs.sregs.cr0 & 1u, 0); /* real mode */
	ck_assert_uint_eq(h.run->s.regs.sregs.cs.selector, 0);
	/* and they match KVM_GET_REGS */
	struct kvm_regs gr;
	ck_assert_int_eq(kvmh_get_regs(&h, &gr), 0);
	ck_assert_uint_eq(gr.rbx, r->rbx);
	ck_assert_uint_eq(gr.rsi, r->rsi);

	/* write EBX through kvm_dirty_regs: the guest echoes it on port 0x12 */
	h.run->s.regs.regs.rbx = 0x13579BDFu;
	h.run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
	ck_assert_int_eq(kvmh_run_until_exit(&h, 1000), 0);
	ck_assert_msg(h.run->exit_reason == KVM_EXIT_IO && h.run->io.direction == KVM_EXIT_IO_OUT &&
			      h.run->io.port == 0x12 && h.run->io.size == 4,
		      "second exit: %s", kvmh_describe_exit(&h, desc, sizeof(desc)));
	d = kvmh_io_data(&h);
	ck_assert_ptr_nonnull(d);
	uint32_t v;
	memcpy(&v, d, 4);
	ck_assert_uint_eq(v, 0x13579BDFu);
	ck_assert_int_eq(kvmh_run_until_exit(&h, 1000), 0);
	ck_assert_msg(h.run->exit_reason == KVM_EXIT_HLT, "third exit: %s", kvmh_describe_exit(&h, desc, sizeof(desc)));
	kvmh_watchdog_disarm();
	ck_assert(!kvmh_watchdog_fired());
	vmwkvm_vcpu_free(vcpu);
	vmwkvm_vm_free(vm);
	kvmh_destroy(&h);
}
END_TEST

START_TEST(backdoor_in_exit)
{
	struct kvmh h;
	char desc[160];
	ck_assert_int_eq(kvmh_vm_create(&h, NULL), 0);
	ck_assert_int_gt(kvmh_load_guest(&h, "realmode_bdoor_in", 0x1000), 0);
	vmwkvm_vm *vm = NULL;
	ck_assert_int_eq(vmwkvm_vm_new(h.vm_fd, NULL, &vm), 0);
	int vfd = vmwkvm_vm_create_vcpu(vm, 0);
	ck_assert_int_ge(vfd, 0);
	ck_assert_int_eq(kvmh_vcpu_attach(&h, vfd), 0);
	ck_assert_int_eq(kvmh_setup_real_mode(&h, 0x1000), 0);
	vmwkvm_vcpu *vcpu = NULL;
	ck_assert_int_eq(vmwkvm_vcpu_new(vm, h.vcpu_fd, h.run, h.run_size, NULL, &vcpu), 0);

	kvmh_watchdog_arm(WATCHDOG_SECONDS);
	ck_assert_int_eq(kvmh_run_until_exit(&h, 1000), 0);
	/* exactly the exit the library expects for an LB call */
	ck_assert_msg(h.run->exit_reason == KVM_EXIT_IO, "exit: %s", kvmh_describe_exit(&h, desc, sizeof(desc)));
	ck_assert_uint_eq(h.run->io.direction, KVM_EXIT_IO_IN);
	ck_assert_uint_eq(h.run->io.size, 4);
	ck_assert_uint_eq(h.run->io.port, 0x5658);
	ck_assert_uint_eq(h.run->io.count, 1);
	ck_assert_ptr_nonnull(kvmh_io_data(&h));
	struct kvm_regs gr;
	ck_assert_int_eq(kvmh_get_regs(&h, &gr), 0);
	ck_assert_uint_eq(gr.rax & 0xffffffffu, VMWKVM_BDOOR_MAGIC);
	ck_assert_uint_eq(gr.rcx & 0xffffu, 10);
	ck_assert_uint_eq(gr.rdx & 0xffffu, VMWKVM_BDOOR_PORT);

	/* the library decodes it as a backdoor call from real mode, CPL 0 */
	struct vmwkvm_call call;
	memset(&call, 0, sizeof(call));
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.transport, VMWKVM_TRANSPORT_LB);
	ck_assert_uint_eq(call.direction, VMWKVM_DIR_IN);
	ck_assert_uint_eq(call.port, VMWKVM_BDOOR_PORT);
	ck_assert_uint_eq(call.io_size, 4);
	ck_assert_uint_eq(call.command, 10);
	ck_assert_uint_eq(call.magic_ok, 1);
	ck_assert_uint_eq(call.mode, VMWKVM_MODE_REAL);
	ck_assert_uint_eq(call.cpl, 0);

	/* answer EAX = 6 (GETVERSION's version): the guest reports what it got on port 0x10 */
	struct vmwkvm_reply reply;
	memset(&reply, 0, sizeof(reply));
	reply.set = VMWKVM_REPLY_EAX;
	reply.eax = 6;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &reply), 0);
	ck_assert_int_eq(kvmh_run_until_exit(&h, 1000), 0);
	ck_assert_msg(h.run->exit_reason == KVM_EXIT_IO && h.run->io.direction == KVM_EXIT_IO_OUT &&
			      h.run->io.port == 0x10 && h.run->io.size == 4,
		      "second exit: %s", kvmh_describe_exit(&h, desc, sizeof(desc)));
	uint32_t got;
	memcpy(&got, kvmh_io_data(&h), 4);
	ck_assert_uint_eq(got, 6);
	/* not a backdoor port: the library leaves it to the VMM */
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_NOT_BACKDOOR);
	ck_assert_int_eq(kvmh_run_until_exit(&h, 1000), 0);
	ck_assert_msg(h.run->exit_reason == KVM_EXIT_HLT, "third exit: %s", kvmh_describe_exit(&h, desc, sizeof(desc)));
	kvmh_watchdog_disarm();
	ck_assert(!kvmh_watchdog_fired());
	vmwkvm_vcpu_free(vcpu);
	vmwkvm_vm_free(vm);
	kvmh_destroy(&h);
}
END_TEST

int main(void)
{
	kvmh_skip_unless_kvm("kvm/test_probe_real");
	Suite *s = suite_create("probe-real");
	TCase *tc = tcase_create("real");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, probe_agrees_with_kernel);
	tcase_add_test(tc, sync_regs_usable);
	tcase_add_test(tc, backdoor_in_exit);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
