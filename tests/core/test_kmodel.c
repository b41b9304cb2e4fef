/* The kernel model itself (tests/common/kmodel.h) behaves as specified. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <time.h>

#include "core/internal.h"
#include "kmodel.h"

static struct kmodel *M;

static void setup_with(int dialect)
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.dialect = dialect;
	M = kmodel_new(&c);
	ck_assert_ptr_nonnull(M);
	kmodel_install(M);
}

static void teardown(void)
{
	kmodel_free(M);
	M = NULL;
	ck_assert_ptr_eq(vmwkvm_sys_ops_current(), vmwkvm_sys_default_ops());
}

static int check_ext(int fd, unsigned long cap)
{
	return vk_ioctl(fd, KVM_CHECK_EXTENSION, (void *)(uintptr_t)cap);
}

static int enable(int vm, uint32_t cap, uint64_t a0)
{
	struct kvm_enable_cap ec;
	memset(&ec, 0, sizeof(ec));
	ec.cap = cap;
	ec.args[0] = a0;
	return vk_ioctl(vm, KVM_ENABLE_CAP, &ec);
}

static int new_vm(int *sys)
{
	*sys = vk_open("/dev/kvm", O_RDWR);
	ck_assert_int_ge(*sys, KMODEL_FD_BASE);
	int vm = vk_ioctl(*sys, KVM_CREATE_VM, 0);
	ck_assert_int_ge(vm, KMODEL_FD_BASE);
	return vm;
}

static int new_vcpu(int vm, unsigned long id)
{
	return vk_ioctl(vm, KVM_CREATE_VCPU, (void *)(uintptr_t)id);
}

/* ---------------------------------------------------------------- system fd */

START_TEST(sys_fd_basics)
{
	setup_with(KMODEL_DIALECT_NONE);
	int sys = vk_open("/dev/kvm", O_RDWR);
	ck_assert_int_ge(sys, KMODEL_FD_BASE);
	ck_assert_int_eq(vk_ioctl(sys, KVM_GET_API_VERSION, NULL), 12);
	ck_assert_int_eq(vk_ioctl(sys, KVM_GET_VCPU_MMAP_SIZE, NULL), 12288);
	ck_assert_int_eq(vk_ioctl(sys, KVM_CREATE_VM, (void *)1), -EINVAL);
	ck_assert_int_eq(vk_ioctl(sys, KVM_RUN, NULL), -EINVAL);
	ck_assert_int_eq(vk_open("/dev/userfaultfd", O_RDWR), -ENOENT);
	ck_assert_int_eq(vk_ioctl(3, KVM_GET_API_VERSION, NULL), -EBADF);
	ck_assert_int_eq(vk_close(sys), 0);
	ck_assert_int_eq(vk_ioctl(sys, KVM_GET_API_VERSION, NULL), -EBADF);
	ck_assert_int_eq(vk_close(sys), -EBADF);
	teardown();
}
END_TEST

START_TEST(no_dev_kvm)
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.no_dev_kvm = true;
	M = kmodel_new(&c);
	kmodel_install(M);
	ck_assert_int_eq(vk_open("/dev/kvm", O_RDWR), -ENOENT);
	teardown();
}
END_TEST

START_TEST(default_cap_table_is_this_host)
{
	setup_with(KMODEL_DIALECT_NONE);
	int sys;
	int vm = new_vm(&sys);
	static const struct {
		unsigned cap;
		int val;
	} t[] = { { 74, 7 },   { 188, 1 }, { 189, 1 }, { 201, 0x1000 }, { 231, 1 }, { 232, 1 }, { 233, 0 },
		  { 234, 1 },  { 235, 1 }, { 236, 0 }, { 237, 1 },      { 238, 1 }, { 239, 0 }, { 240, 0 },
		  { 241, 0 },  { 242, 0 }, { 243, 0 }, { 244, 3 },      { 38, 0 },  { 250, 0 }, { 9999, 0 } };
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		ck_assert_msg(check_ext(sys, t[i].cap) == t[i].val, "sys cap %u", t[i].cap);
		ck_assert_msg(check_ext(vm, t[i].cap) == t[i].val, "vm cap %u", t[i].cap);
	}
	/* none dialect: ENABLE_CAP of the proposed numbers fails */
	ck_assert_int_eq(enable(vm, 239, 1), -EINVAL);
	ck_assert_int_eq(enable(vm, 240, 1), -EINVAL);
	ck_assert_int_eq(enable(vm, 241, 1), -EINVAL);
	ck_assert_int_eq(enable(vm, 250, 1), -EINVAL);
	ck_assert_int_eq(enable(sys, 239, 1), -EINVAL);
	/* a lying kernel */
	kmodel_set_cap(M, 239, 1);
	ck_assert_int_eq(check_ext(vm, 239), 1);
	ck_assert_int_eq(enable(vm, 239, 1), -EINVAL);
	kmodel_set_cap(M, 239, -1);
	ck_assert_int_eq(check_ext(vm, 239), 0);
	teardown();
}
END_TEST

START_TEST(vcpu_creation_rules)
{
	setup_with(KMODEL_DIALECT_NONE);
	int sys;
	int vm = new_vm(&sys);
	int v0 = new_vcpu(vm, 0);
	ck_assert_int_ge(v0, KMODEL_FD_BASE);
	ck_assert_int_eq(new_vcpu(vm, 0), -EEXIST);
	ck_assert_int_eq(new_vcpu(vm, 1024), -EINVAL);
	ck_assert_int_ge(new_vcpu(vm, 1), KMODEL_FD_BASE);
	ck_assert_int_eq(vk_ioctl(sys, KVM_CREATE_VCPU, 0), -EINVAL);
	ck_assert_int_eq(vk_ioctl(vm, KVM_RUN, NULL), -ENOTTY);
	struct kmodel_vm_state st;
	ck_assert_int_eq(kmodel_vm_state(M, vm, &st), 0);
	ck_assert_uint_eq(st.vcpus, 2);
	ck_assert_int_eq(kmodel_vm_count(M), 1);
	ck_assert_int_eq(kmodel_vm_fd(M, 0), vm);
	ck_assert_int_eq(kmodel_vm_fd(M, 1), -ENOENT);
	ck_assert_int_eq(kmodel_vm_state(M, v0, &st), -EBADF);
	teardown();
}
END_TEST

/* ---------------------------------------------------------------- dialects */

START_TEST(rusin_v2_rules)
{
	setup_with(KMODEL_DIALECT_RUSIN_V2);
	int sys;
	int vm = new_vm(&sys);
	for (unsigned c = 239; c <= 241; c++) {
		ck_assert_int_eq(check_ext(sys, c), 1);
		ck_assert_int_eq(check_ext(vm, c), 1);
	}
	ck_assert_int_eq(enable(vm, 239, 2), -EINVAL);
	ck_assert_int_eq(enable(vm, 240, 3), -EINVAL);
	ck_assert_int_eq(enable(vm, 241, 0x100), -EINVAL);
	struct kvm_enable_cap ec = { .cap = 239, .flags = 1 };
	ec.args[0] = 1;
	ck_assert_int_eq(vk_ioctl(vm, KVM_ENABLE_CAP, &ec), -EINVAL);
	ck_assert_int_eq(enable(vm, 239, 1), 0);
	ck_assert_int_eq(enable(vm, 240, 1), 0);
	ck_assert_int_eq(enable(vm, 241, 1), 0);
	struct kmodel_vm_state st;
	kmodel_vm_state(M, vm, &st);
	ck_assert(st.rusin_backdoor && st.rusin_hypercall && st.rusin_nested);
	ck_assert_int_eq(enable(vm, 239, 0), 0); /* disable allowed in v2 */
	kmodel_vm_state(M, vm, &st);
	ck_assert(!st.rusin_backdoor);
	ck_assert_int_ge(new_vcpu(vm, 0), 0);
	/* after the first vCPU: BACKDOOR refused, HYPERCALL / NESTED not checked (as posted) */
	ck_assert_int_eq(enable(vm, 239, 1), -EINVAL);
	ck_assert_int_eq(enable(vm, 240, 0), 0);
	ck_assert_int_eq(enable(vm, 241, 0), 0);
	kmodel_vm_state(M, vm, &st);
	ck_assert(!st.rusin_backdoor && !st.rusin_hypercall && !st.rusin_nested);
	/* single-cap number means nothing here */
	ck_assert_int_eq(check_ext(vm, 250), 0);
	teardown();
}
END_TEST

START_TEST(rusin_v2_numbers_configurable)
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.dialect = KMODEL_DIALECT_RUSIN_V2;
	c.rusin_cap_backdoor = 300;
	c.rusin_cap_hypercall = 301;
	c.rusin_cap_nested = 302;
	M = kmodel_new(&c);
	kmodel_install(M);
	int sys;
	int vm = new_vm(&sys);
	ck_assert_int_eq(check_ext(vm, 239), 0);
	ck_assert_int_eq(check_ext(vm, 300), 1);
	ck_assert_int_eq(check_ext(vm, 302), 1);
	ck_assert_int_eq(enable(vm, 239, 1), -EINVAL);
	ck_assert_int_eq(enable(vm, 300, 1), 0);
	teardown();
}
END_TEST

START_TEST(single_cap_rules)
{
	setup_with(KMODEL_DIALECT_SINGLE_CAP);
	int sys;
	int vm = new_vm(&sys);
	ck_assert_int_eq(check_ext(sys, 250), 7);
	ck_assert_int_eq(check_ext(vm, 250), 7);
	ck_assert_int_eq(check_ext(vm, 239), 0);
	ck_assert_int_eq(enable(vm, 250, 8), -EINVAL);
	ck_assert_int_eq(enable(vm, 250, 3), 0);
	struct kmodel_vm_state st;
	kmodel_vm_state(M, vm, &st);
	ck_assert_uint_eq(st.single_mask, 3);
	ck_assert_int_eq(enable(vm, 250, 5), 0); /* replaces */
	kmodel_vm_state(M, vm, &st);
	ck_assert_uint_eq(st.single_mask, 5);
	ck_assert_int_eq(enable(vm, 239, 1), -EINVAL);
	ck_assert_int_ge(new_vcpu(vm, 0), 0);
	ck_assert_int_eq(enable(vm, 250, 1), -EINVAL);
	kmodel_vm_state(M, vm, &st);
	ck_assert_uint_eq(st.single_mask, 5);
	teardown();
}
END_TEST

START_TEST(single_cap_mask_configurable)
{
	struct kmodel_config c;
	kmodel_config_init(&c);
	c.dialect = KMODEL_DIALECT_SINGLE_CAP;
	c.single_cap = 260;
	c.single_valid_mask = 3;
	M = kmodel_new(&c);
	kmodel_install(M);
	int sys;
	int vm = new_vm(&sys);
	ck_assert_int_eq(check_ext(vm, 250), 0);
	ck_assert_int_eq(check_ext(vm, 260), 3);
	ck_assert_int_eq(enable(vm, 260, 4), -EINVAL);
	ck_assert_int_eq(enable(vm, 260, 3), 0);
	teardown();
}
END_TEST

START_TEST(mainline_arm_collision)
{
	setup_with(KMODEL_DIALECT_MAINLINE_ARM);
	int sys;
	int vm = new_vm(&sys);
	ck_assert_int_eq(check_ext(vm, 239), 1);
	ck_assert_int_eq(check_ext(vm, 240), 1);
	ck_assert_int_eq(check_ext(sys, 241), 1);
	/* 239 enables an unrelated feature with ANY argument: behaviour check of args must catch it */
	ck_assert_int_eq(enable(vm, 239, 1), 0);
	ck_assert_int_eq(enable(vm, 239, 2), 0);
	ck_assert_int_eq(enable(vm, 240, 1), -EINVAL);
	ck_assert_int_eq(enable(vm, 241, 1), -EINVAL);
	struct kmodel_vm_state st;
	kmodel_vm_state(M, vm, &st);
	ck_assert_uint_eq(st.unrelated_enables, 2);
	ck_assert(!st.rusin_backdoor && !st.rusin_hypercall && st.single_mask == 0);
	teardown();
}
END_TEST

/* ---------------------------------------------------------------- log, faults */

START_TEST(log_records_exact_sequence)
{
	setup_with(KMODEL_DIALECT_RUSIN_V2);
	int sys;
	int vm = new_vm(&sys);
	check_ext(vm, 239);
	enable(vm, 239, 1);
	enable(vm, 240, 2);
	new_vcpu(vm, 0);
	enable(vm, 239, 1);
	char buf[1024];
	size_t n = kmodel_log_format(M, 0, NULL, 0, buf, sizeof(buf));
	const char *want = "sys open /dev/kvm = fd\n"
			   "sys CREATE_VM 0 = fd\n"
			   "vm CHECK_EXTENSION 239 = 1\n"
			   "vm ENABLE_CAP 239 1 = 0\n"
			   "vm ENABLE_CAP 240 2 = -EINVAL\n"
			   "vm CREATE_VCPU 0 = fd\n"
			   "vm ENABLE_CAP 239 1 = -EINVAL\n";
	ck_assert_str_eq(buf, want);
	ck_assert_uint_eq(n, strlen(want));
	unsigned long only[] = { KVM_ENABLE_CAP };
	kmodel_log_format(M, 3, only, 1, buf, sizeof(buf));
	ck_assert_str_eq(buf, "vm ENABLE_CAP 239 1 = 0\nvm ENABLE_CAP 240 2 = -EINVAL\nvm ENABLE_CAP 239 1 = -EINVAL\n");
	ck_assert_uint_eq(kmodel_log_count(M), 7);
	ck_assert_uint_eq(kmodel_log_count_req(M, 0, KVM_ENABLE_CAP, -1), 3);
	ck_assert_uint_eq(kmodel_log_count_req(M, 0, KVM_ENABLE_CAP, 239), 2);
	struct kmodel_call c;
	ck_assert_int_eq(kmodel_log_get(M, 4, &c), 0);
	ck_assert_uint_eq(c.req, KVM_ENABLE_CAP);
	ck_assert_int_eq(c.fd, vm);
	ck_assert_int_eq(c.fd_kind, KMODEL_FD_VM);
	ck_assert_int_eq(c.cap, 240);
	ck_assert_uint_eq(c.arg0, 2);
	ck_assert_int_eq(c.result, -EINVAL);
	ck_assert(!c.injected);
	ck_assert_int_eq(kmodel_log_get(M, 7, &c), -ERANGE);
	/* truncation: NUL-terminated, full length returned */
	char small[10];
	ck_assert_uint_eq(kmodel_log_format(M, 0, NULL, 0, small, sizeof(small)), strlen(want));
	ck_assert_uint_lt(strlen(small), sizeof(small));
	kmodel_log_clear(M);
	ck_assert_uint_eq(kmodel_log_count(M), 0);
	teardown();
}
END_TEST

START_TEST(fault_injection)
{
	setup_with(KMODEL_DIALECT_RUSIN_V2);
	int sys;
	int vm = new_vm(&sys);
	/* the 2nd ENABLE_CAP fails with EINTR, no side effect */
	ck_assert_int_eq(kmodel_inject_fault(M, KVM_ENABLE_CAP, -1, 2, EINTR), 0);
	ck_assert_int_eq(enable(vm, 239, 1), 0);
	ck_assert_int_eq(enable(vm, 240, 1), -EINTR);
	ck_assert_int_eq(enable(vm, 240, 1), 0);
	struct kmodel_call c;
	kmodel_log_get(M, kmodel_log_count(M) - 2, &c);
	ck_assert(c.injected);
	ck_assert_int_eq(c.result, -EINTR);
	/* cap filter + every call */
	ck_assert_int_eq(kmodel_inject_fault(M, KVM_ENABLE_CAP, 241, 0, ENOMEM), 0);
	ck_assert_int_eq(enable(vm, 241, 1), -ENOMEM);
	ck_assert_int_eq(enable(vm, 241, 1), -ENOMEM);
	ck_assert_int_eq(enable(vm, 239, 0), 0);
	struct kmodel_vm_state st;
	kmodel_vm_state(M, vm, &st);
	ck_assert(!st.rusin_nested);
	kmodel_clear_faults(M);
	ck_assert_int_eq(enable(vm, 241, 1), 0);
	/* injected CREATE_VCPU does not create one */
	kmodel_inject_fault(M, KVM_CREATE_VCPU, -1, 1, EFAULT);
	ck_assert_int_eq(new_vcpu(vm, 0), -EFAULT);
	kmodel_vm_state(M, vm, &st);
	ck_assert_uint_eq(st.vcpus, 0);
	/* non-ioctl ops */
	kmodel_inject_fault(M, KMODEL_OP_OPEN, -1, 1, EBADF);
	ck_assert_int_eq(vk_open("/dev/kvm", O_RDWR), -EBADF);
	kmodel_inject_fault(M, KVM_CHECK_EXTENSION, 74, 1, EINTR);
	ck_assert_int_eq(check_ext(vm, 238), 1);
	ck_assert_int_eq(check_ext(vm, 74), -EINTR);
	ck_assert_int_eq(check_ext(vm, 74), 7);
	for (int i = 0; i < 16; i++)
		ck_assert_int_eq(kmodel_inject_fault(M, KVM_RUN, -1, 100, EINTR), 0);
	ck_assert_int_eq(kmodel_inject_fault(M, KVM_RUN, -1, 100, EINTR), -ENOSPC);
	teardown();
}
END_TEST

START_TEST(files_and_uffd)
{
	setup_with(KMODEL_DIALECT_NONE);
	char buf[16];
	const char *p = "/sys/module/kvm/parameters/enable_vmware_backdoor";
	ck_assert_int_eq(vk_read_file(p, buf, sizeof(buf)), 2);
	ck_assert_str_eq(buf, "N\n");
	kmodel_set_backdoor_param(M, 'Y');
	ck_assert_int_eq(vk_read_file(p, buf, sizeof(buf)), 2);
	ck_assert_str_eq(buf, "Y\n");
	kmodel_set_backdoor_param(M, 0);
	ck_assert_int_eq(vk_read_file(p, buf, sizeof(buf)), -ENOENT);
	ck_assert_int_eq(vk_read_file("/proc/sys/vm/unprivileged_userfaultfd", buf, sizeof(buf)), -ENOENT);
	ck_assert_int_eq(kmodel_set_file(M, "/proc/sys/vm/unprivileged_userfaultfd", "0\n"), 0);
	ck_assert_int_eq(vk_read_file("/proc/sys/vm/unprivileged_userfaultfd", buf, 2), 1);
	ck_assert_str_eq(buf, "0");
	ck_assert_int_eq(vk_userfaultfd(0), -ENOSYS);
	teardown();

	struct kmodel_config c;
	kmodel_config_init(&c);
	c.uffd_result = 0;
	M = kmodel_new(&c);
	kmodel_install(M);
	int u = vk_userfaultfd(0);
	ck_assert_int_ge(u, KMODEL_FD_BASE);
	ck_assert_int_eq(vk_ioctl(u, KVM_RUN, NULL), -ENOTTY);
	ck_assert_int_eq((int)vk_read(u, buf, sizeof(buf)), -EAGAIN);
	teardown();
}
END_TEST

/* ---------------------------------------------------------------- vCPU */

START_TEST(vcpu_mmap_and_regs)
{
	setup_with(KMODEL_DIALECT_NONE);
	int sys;
	int vm = new_vm(&sys);
	int v = new_vcpu(vm, 0);
	void *p = NULL;
	ck_assert_int_eq(vk_mmap(&p, 12288, PROT_READ | PROT_WRITE, MAP_SHARED, v, 0), 0);
	ck_assert_ptr_eq(p, kmodel_vcpu_run_buffer(M, v));
	unsigned char *b = p;
	for (size_t i = 0; i < 12288; i++)
		ck_assert_uint_eq(b[i], 0);
	b[12287] = 1;
	void *q = NULL;
	ck_assert_int_eq(vk_mmap(&q, 12288, PROT_READ, MAP_SHARED, v, 0), 0);
	ck_assert_ptr_eq(q, p);
	ck_assert_int_eq(vk_mmap(&q, 12289, PROT_READ, MAP_SHARED, v, 0), -EINVAL);
	ck_assert_int_eq(vk_mmap(&q, 4096, PROT_READ, MAP_SHARED, v, 4096), -EINVAL);
	ck_assert_int_eq(vk_mmap(&q, 4096, PROT_READ, MAP_SHARED, vm, 0), -ENODEV);
	ck_assert_int_eq(vk_munmap(p, 12288), 0);
	/* anonymous memory goes to the real kernel */
	void *anon = NULL;
	ck_assert_int_eq(vk_mmap(&anon, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), 0);
	((char *)anon)[0] = 1;
	ck_assert_int_eq(vk_munmap(anon, 4096), 0);

	struct kvm_regs r;
	ck_assert_int_eq(vk_ioctl(v, KVM_GET_REGS, &r), 0);
	ck_assert_uint_eq(r.rip, 0xfff0);
	ck_assert_uint_eq(r.rflags, 2);
	struct kvm_sregs s;
	ck_assert_int_eq(vk_ioctl(v, KVM_GET_SREGS, &s), 0);
	ck_assert_uint_eq(s.cr0 & 1, 0);
	ck_assert_uint_eq(s.cs.selector, 0xf000);
	r.rax = 0x1122334455667788ull;
	ck_assert_int_eq(vk_ioctl(v, KVM_SET_REGS, &r), 0);
	struct kvm_regs r2;
	kmodel_vcpu_regs(M, v, &r2);
	ck_assert_uint_eq(r2.rax, 0x1122334455667788ull);
	kmodel_sregs_mode(&s, KMODEL_MODE_LONG64, 3);
	ck_assert_int_eq(vk_ioctl(v, KVM_SET_SREGS, &s), 0);
	struct kvm_sregs s2;
	kmodel_vcpu_sregs(M, v, &s2);
	ck_assert_uint_eq(s2.efer, 0x500);
	ck_assert_uint_eq(s2.ss.dpl, 3);
	ck_assert_int_eq(vk_ioctl(v, KVM_GET_TSC_KHZ, NULL), 2500000);
	ck_assert_int_eq(vk_ioctl(vm, KVM_GET_TSC_KHZ, NULL), 2500000);
	ck_assert_int_eq(vk_ioctl(v, KVM_GET_REGS, NULL), -EFAULT);
	ck_assert_int_eq(vk_ioctl(v, KVM_CHECK_EXTENSION, (void *)74), -EINVAL);
	teardown();
}
END_TEST

struct hook_state {
	int calls;
	unsigned long last_runs;
	int ret;
	uint64_t set_rbx;
};

static int hook(void *ctx, struct kmodel_run_ctx *rc)
{
	struct hook_state *h = ctx;
	h->calls++;
	h->last_runs = rc->runs;
	if (h->set_rbx)
		rc->regs->rbx = h->set_rbx;
	rc->run->exit_reason = KVM_EXIT_IO;
	return h->ret;
}

START_TEST(run_sync_regs_and_hook)
{
	setup_with(KMODEL_DIALECT_NONE);
	int sys;
	int vm = new_vm(&sys);
	int v = new_vcpu(vm, 0);
	struct kvm_run *run = kmodel_vcpu_run_buffer(M, v);
	/* no hook: HLT */
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	ck_assert_uint_eq(run->exit_reason, KVM_EXIT_HLT);
	/* valid_regs: registers copied out on exit */
	run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	ck_assert_uint_eq(run->s.regs.regs.rip, 0xfff0);
	ck_assert_uint_eq(run->s.regs.sregs.cs.selector, 0xf000);
	/* dirty_regs applied on entry and cleared */
	run->s.regs.regs.rcx = 0xabcdef;
	run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	ck_assert_uint_eq(run->kvm_dirty_regs, 0);
	struct kvm_regs r;
	kmodel_vcpu_regs(M, v, &r);
	ck_assert_uint_eq(r.rcx, 0xabcdef);
	/* bad bits */
	run->kvm_dirty_regs = 1u << 5;
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), -EINVAL);
	run->kvm_dirty_regs = 0;
	run->kvm_valid_regs = 1u << 6;
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), -EINVAL);
	run->kvm_valid_regs = KVM_SYNC_X86_REGS;
	/* hook */
	struct hook_state h = { .ret = 0, .set_rbx = 0x77 };
	kmodel_set_run_hook(M, hook, &h);
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	ck_assert_int_eq(h.calls, 1);
	ck_assert_uint_eq(h.last_runs, 4);
	ck_assert_uint_eq(run->exit_reason, KVM_EXIT_IO);
	ck_assert_uint_eq(run->s.regs.regs.rbx, 0x77); /* hook's change visible through sync regs */
	h.ret = -EFAULT;
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), -EFAULT);
	/* immediate_exit: EINTR, hook not called */
	run->immediate_exit = 1;
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), -EINTR);
	ck_assert_uint_eq(run->exit_reason, KVM_EXIT_INTR);
	ck_assert_int_eq(h.calls, 2);
	run->immediate_exit = 0;
	teardown();
}
END_TEST

static int setup_vcpu_mode(int vm, int mode, unsigned cpl, int *vfd)
{
	int v = new_vcpu(vm, 0);
	ck_assert_int_ge(v, 0);
	struct kvm_sregs s;
	kmodel_sregs_mode(&s, mode, cpl);
	kmodel_vcpu_set_sregs(M, v, &s);
	struct kvm_regs r;
	memset(&r, 0, sizeof(r));
	r.rax = 0xdead0000564D5868ull;
	r.rbx = 0x1111111122222222ull;
	r.rcx = 0x333333330000000Aull;
	r.rdx = 0x4444444400005658ull;
	r.rsi = 0x5555555566666666ull;
	r.rdi = 0x7777777788888888ull;
	r.rbp = 0x99999999aaaaaaaaull;
	r.rip = 0x1000;
	r.rflags = 2;
	kmodel_vcpu_set_regs(M, v, &r);
	*vfd = v;
	return v;
}

START_TEST(rusin_hypercall_exit_and_completion)
{
	setup_with(KMODEL_DIALECT_RUSIN_V2);
	int sys;
	int vm = new_vm(&sys);
	ck_assert_int_eq(enable(vm, 240, 1), 0);
	int v;
	setup_vcpu_mode(vm, KMODEL_MODE_PROT32, 3, &v);
	struct kvm_run *run = kmodel_vcpu_run_buffer(M, v);
	memset((char *)run + 32, 0xA5, 104); /* stale bytes must be zeroed by the model */
	ck_assert_int_eq(kmodel_vcpu_vmcall(M, v), 0);
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	ck_assert_uint_eq(run->exit_reason, 40);
	const struct vmwkvm_proposed_vmware_exit *x = vmwkvm_proposed_run_vmware(run);
	ck_assert_uint_eq(x->type, 1);
	ck_assert_uint_eq(x->pad1, 0);
	ck_assert_uint_eq(x->hcall.longmode, 0);
	ck_assert_uint_eq(x->hcall.cpl, 3);
	ck_assert_uint_eq(x->hcall.rax, 0x564D5868u);
	ck_assert_uint_eq(x->hcall.rbx, 0x22222222u);
	ck_assert_uint_eq(x->hcall.rcx, 0x0000000Au);
	ck_assert_uint_eq(x->hcall.rdx, 0x00005658u);
	ck_assert_uint_eq(x->hcall.rsi, 0x66666666u);
	ck_assert_uint_eq(x->hcall.rdi, 0x88888888u);
	ck_assert_uint_eq(x->hcall.rbp, 0xaaaaaaaau);
	ck_assert_uint_eq(x->hcall.result, 0);
	ck_assert_uint_eq(x->hcall.exception.inject, 0);
	ck_assert_uint_eq(x->hcall.exception.vector, 0);
	ck_assert_uint_eq(x->hcall.exception.error_code, 0);
	ck_assert_uint_eq(x->hcall.exception.address, 0);
	ck_assert_int_eq(kmodel_vcpu_pending_hypercall(M, v), 1);
	/* completion: RAX := result (32-bit outside long mode), RIP += 3 */
	vmwkvm_proposed_run_vmware(run)->hcall.result = 0xffffffff00000006ull;
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	ck_assert_uint_eq(run->exit_reason, KVM_EXIT_HLT);
	ck_assert_int_eq(kmodel_vcpu_pending_hypercall(M, v), 0);
	struct kvm_regs r;
	kmodel_vcpu_regs(M, v, &r);
	ck_assert_uint_eq(r.rax, 6);
	ck_assert_uint_eq(r.rip, 0x1003);
	ck_assert_uint_eq(r.rbx, 0x1111111122222222ull); /* only RAX written back */
	ck_assert_int_eq(kmodel_vcpu_take_exception(M, v, NULL), 0);
	/* exception injection: RIP not advanced */
	kmodel_vcpu_vmcall(M, v);
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	ck_assert_uint_eq(run->exit_reason, 40);
	struct vmwkvm_proposed_vmware_exit *w = vmwkvm_proposed_run_vmware(run);
	w->hcall.result = 0x1234;
	w->hcall.exception.inject = 1;
	w->hcall.exception.vector = 14;
	w->hcall.exception.error_code = 6;
	w->hcall.exception.address = 0xfffff000deadb000ull;
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	kmodel_vcpu_regs(M, v, &r);
	ck_assert_uint_eq(r.rip, 0x1003);
	ck_assert_uint_eq(r.rax, 0x1234);
	struct kmodel_exception e;
	ck_assert_int_eq(kmodel_vcpu_take_exception(M, v, &e), 1);
	ck_assert_uint_eq(e.vector, 14);
	ck_assert_uint_eq(e.error_code, 6);
	ck_assert_uint_eq(e.address, 0xfffff000deadb000ull);
	ck_assert_int_eq(kmodel_vcpu_take_exception(M, v, &e), 0);
	teardown();
}
END_TEST

START_TEST(rusin_hypercall_long_mode_and_sync_regs)
{
	setup_with(KMODEL_DIALECT_RUSIN_V2);
	int sys;
	int vm = new_vm(&sys);
	ck_assert_int_eq(enable(vm, 240, 1), 0);
	int v;
	setup_vcpu_mode(vm, KMODEL_MODE_LONG64, 0, &v);
	struct kvm_run *run = kmodel_vcpu_run_buffer(M, v);
	run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
	kmodel_vcpu_vmcall(M, v);
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	const struct vmwkvm_proposed_vmware_exit *x = vmwkvm_proposed_run_vmware(run);
	ck_assert_uint_eq(x->hcall.longmode, 1);
	ck_assert_uint_eq(x->hcall.cpl, 0);
	ck_assert_uint_eq(x->hcall.rax, 0xdead0000564D5868ull);
	ck_assert_uint_eq(x->hcall.rbp, 0x99999999aaaaaaaaull);
	ck_assert_uint_eq(run->s.regs.regs.rip, 0x1000);
	/* userspace writes RBX through sync regs and RAX through result; result wins for RAX */
	run->s.regs.regs.rbx = 0x564D5868;
	run->s.regs.regs.rax = 1;
	run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
	vmwkvm_proposed_run_vmware(run)->hcall.result = 0x8000000000000006ull;
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	ck_assert_uint_eq(run->s.regs.regs.rax, 0x8000000000000006ull);
	ck_assert_uint_eq(run->s.regs.regs.rbx, 0x564D5868);
	ck_assert_uint_eq(run->s.regs.regs.rip, 0x1003);
	teardown();
}
END_TEST

START_TEST(vmcall_not_forwarded_is_mainline)
{
	/* rusin-v2 with HYPERCALL not enabled */
	setup_with(KMODEL_DIALECT_RUSIN_V2);
	int sys;
	int vm = new_vm(&sys);
	int v;
	setup_vcpu_mode(vm, KMODEL_MODE_PROT32, 0, &v);
	struct kvm_run *run = kmodel_vcpu_run_buffer(M, v);
	kmodel_vcpu_vmcall(M, v);
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	ck_assert_uint_eq(run->exit_reason, KVM_EXIT_HLT);
	struct kvm_regs r;
	kmodel_vcpu_regs(M, v, &r);
	ck_assert_uint_eq(r.rax, 0xfffffc18u); /* -1000, 32-bit */
	ck_assert_uint_eq(r.rip, 0x1003);
	teardown();

	setup_with(KMODEL_DIALECT_NONE);
	vm = new_vm(&sys);
	setup_vcpu_mode(vm, KMODEL_MODE_LONG64, 3, &v);
	kmodel_vcpu_vmcall(M, v);
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	kmodel_vcpu_regs(M, v, &r);
	ck_assert_uint_eq(r.rax, UINT64_MAX); /* -KVM_EPERM at CPL3 */
	ck_assert_uint_eq(r.rip, 0x1003);
	/* hook returning VMCALL, not forwarded: HLT */
	struct hook_state h = { .ret = KMODEL_RUN_VMCALL };
	kmodel_set_run_hook(M, hook, &h);
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	ck_assert_uint_eq(kmodel_vcpu_run_buffer(M, v)->exit_reason, KVM_EXIT_HLT);
	kmodel_vcpu_regs(M, v, &r);
	ck_assert_uint_eq(r.rip, 0x1006);
	teardown();
}
END_TEST

START_TEST(single_cap_hypercall_magic_only)
{
	setup_with(KMODEL_DIALECT_SINGLE_CAP);
	int sys;
	int vm = new_vm(&sys);
	ck_assert_int_eq(enable(vm, 250, 3), 0);
	int v;
	setup_vcpu_mode(vm, KMODEL_MODE_REAL, 0, &v);
	struct kvm_run *run = kmodel_vcpu_run_buffer(M, v);
	struct hook_state h = { .ret = KMODEL_RUN_VMCALL };
	kmodel_set_run_hook(M, hook, &h);
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	ck_assert_uint_eq(run->exit_reason, 43);
	const struct vmwkvm_proposed_vmware_exit *x = vmwkvm_proposed_run_vmware(run);
	ck_assert_uint_eq(x->hcall.cpl, 0);
	ck_assert_uint_eq(x->hcall.longmode, 0);
	ck_assert_uint_eq(x->hcall.rax, 0x564D5868u);
	vmwkvm_proposed_run_vmware(run)->hcall.result = 6;
	kmodel_set_run_hook(M, NULL, NULL);
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	struct kvm_regs r;
	kmodel_vcpu_regs(M, v, &r);
	ck_assert_uint_eq(r.rax, 6);
	ck_assert_uint_eq(r.rip, 0x1003);
	/* a VMCALL without the magic takes the KVM path */
	r.rax = 1;
	kmodel_vcpu_set_regs(M, v, &r);
	kmodel_vcpu_vmcall(M, v);
	ck_assert_int_eq(vk_ioctl(v, KVM_RUN, NULL), 0);
	ck_assert_uint_eq(run->exit_reason, KVM_EXIT_HLT);
	kmodel_vcpu_regs(M, v, &r);
	ck_assert_uint_eq(r.rax, 0xfffffc18u);
	teardown();
}
END_TEST

/* The library's own calls reach the model. */
START_TEST(library_through_model)
{
	setup_with(KMODEL_DIALECT_NONE);
	int sys;
	int vm = new_vm(&sys);
	struct vmwkvm_vm_opts o = { .sz = sizeof(o), .kvm_fd = sys, .kvm_fd_set = 1, .dialect = "none" };
	vmwkvm_vm *h = NULL;
	ck_assert_int_eq(vmwkvm_vm_new(vm, &o, &h), 0);
	int v = vmwkvm_vm_create_vcpu(h, 0);
	ck_assert_int_ge(v, KMODEL_FD_BASE);
	ck_assert_int_eq(vmwkvm_vm_vcpu_count(h), 1);
	vmwkvm_vcpu *vc = NULL;
	ck_assert_int_eq(vmwkvm_vcpu_new(h, v, NULL, 0, NULL, &vc), 0);
	ck_assert_int_eq(vmwkvm_vcpu_regs_mode(vc), VMWKVM_REGS_SYNC);
	ck_assert_ptr_eq(vmwkvm_vcpu_kvm_run(vc), kmodel_vcpu_run_buffer(M, v));
	ck_assert_int_eq(vmwkvm_vcpu_run(vc), 0);
	ck_assert_uint_eq(vmwkvm_vcpu_kvm_run(vc)->exit_reason, KVM_EXIT_HLT);
	ck_assert_uint_eq(vmwkvm_vcpu_kvm_run(vc)->s.regs.regs.rip, 0xfff0);
	vmwkvm_vcpu_free(vc);
	vmwkvm_vm_free(h);
	struct kmodel_vm_state st;
	kmodel_vm_state(M, vm, &st);
	ck_assert_uint_eq(st.vcpus, 1);
	teardown();
}
END_TEST

/* Two threads wrapping vCPUs of a VM that was given no /dev/kvm fd: the library opens
 * /dev/kvm once (for KVM_GET_VCPU_MMAP_SIZE) and keeps it; concurrent calls must not
 * both open it (one fd would leak, and vm->kvm_fd is read under the VM lock elsewhere). */
static const struct vmwkvm_sys_ops *model_ops;
static atomic_int kvm_opens;
static int counting_open(void *ctx, const char *path, int flags)
{
	if (strcmp(path, "/dev/kvm") == 0 && atomic_fetch_add(&kvm_opens, 1) == 0) {
		/* give a second caller the chance to arrive (bounded: never needed to pass) */
		for (int i = 0; i < 200 && atomic_load(&kvm_opens) < 2; i++) {
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
		}
	}
	return model_ops->open(ctx, path, flags);
}

struct vcpu_new_arg {
	vmwkvm_vm *vm;
	int fd;
	vmwkvm_vcpu *vc;
	int r;
};

static void *vcpu_new_main(void *p)
{
	struct vcpu_new_arg *a = p;
	a->r = vmwkvm_vcpu_new(a->vm, a->fd, NULL, 0, NULL, &a->vc);
	return NULL;
}

START_TEST(concurrent_vcpu_new_opens_kvm_once)
{
	setup_with(KMODEL_DIALECT_NONE);
	int sys;
	int vm = new_vm(&sys);
	struct vmwkvm_vm_opts o = { .sz = sizeof(o), .dialect = "none" }; /* no kvm fd given */
	vmwkvm_vm *h = NULL;
	ck_assert_int_eq(vmwkvm_vm_new(vm, &o, &h), 0);
	struct vcpu_new_arg a[2];
	for (int i = 0; i < 2; i++) {
		memset(&a[i], 0, sizeof(a[i]));
		a[i].vm = h;
		a[i].fd = vmwkvm_vm_create_vcpu(h, (unsigned long)i);
		ck_assert_int_ge(a[i].fd, KMODEL_FD_BASE);
	}
	model_ops = vmwkvm_sys_ops_current();
	struct vmwkvm_sys_ops ops = *model_ops;
	ops.open = counting_open;
	atomic_store(&kvm_opens, 0);
	vmwkvm_sys_set_ops(&ops);
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, vcpu_new_main, &a[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	vmwkvm_sys_set_ops(model_ops);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(a[i].r, 0);
		ck_assert_ptr_eq(vmwkvm_vcpu_kvm_run(a[i].vc), kmodel_vcpu_run_buffer(M, a[i].fd));
	}
	int opens = atomic_load(&kvm_opens);
	ck_assert_int_eq(opens, 1);
	for (int i = 0; i < 2; i++)
		vmwkvm_vcpu_free(a[i].vc);
	vmwkvm_vm_free(h);
	teardown();
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("kmodel");
	TCase *t = tcase_create("model");
	tcase_add_test(t, sys_fd_basics);
	tcase_add_test(t, no_dev_kvm);
	tcase_add_test(t, default_cap_table_is_this_host);
	tcase_add_test(t, vcpu_creation_rules);
	tcase_add_test(t, rusin_v2_rules);
	tcase_add_test(t, rusin_v2_numbers_configurable);
	tcase_add_test(t, single_cap_rules);
	tcase_add_test(t, single_cap_mask_configurable);
	tcase_add_test(t, mainline_arm_collision);
	tcase_add_test(t, log_records_exact_sequence);
	tcase_add_test(t, fault_injection);
	tcase_add_test(t, files_and_uffd);
	tcase_add_test(t, vcpu_mmap_and_regs);
	tcase_add_test(t, run_sync_regs_and_hook);
	tcase_add_test(t, rusin_hypercall_exit_and_completion);
	tcase_add_test(t, rusin_hypercall_long_mode_and_sync_regs);
	tcase_add_test(t, vmcall_not_forwarded_is_mainline);
	tcase_add_test(t, single_cap_hypercall_magic_only);
	tcase_add_test(t, library_through_model);
	tcase_add_test(t, concurrent_vcpu_new_opens_kvm_once);
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
