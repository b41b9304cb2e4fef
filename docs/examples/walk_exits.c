/*
 * walk_exits.c: the smallest complete VMM run loop with libvmwkvm. The documentation's
 * main page and guide-exits.md show pieces of this file (between snippet markers), so
 * what they show is code that compiles and runs.
 *
 * A 16-bit real-mode guest asks GETVERSION through the backdoor port 0x5658 the way
 * VMware Tools checks for its hypervisor (EBX preloaded with ~magic, ECX high half
 * 0xFFFF). KVM turns the IN into KVM_EXIT_IO; the library decodes it, the command table
 * answers it, the library completes it, and the guest halts. The program then checks the
 * registers the guest saw.
 *
 * Exit status: 0 when the guest saw the right answer, 77 when /dev/kvm is absent (the
 * test is skipped), 1 on any failure. A 10 s watchdog (SIGALRM) bounds every KVM_RUN.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vmwkvm/vmwkvm.h>

#define GUEST_MEM_SIZE 0x10000u
#define GUEST_ENTRY 0x1000u

/* mov eax, magic; mov ebx, ~magic; mov ecx, 0xFFFF000A (GETVERSION); mov dx, 0x5658;
 * in eax, dx; hlt  (16-bit code: 0x66 selects the 32-bit operand size) */
static const uint8_t guest_code[] = {
	0x66, 0xb8, 0x68, 0x58, 0x4d, 0x56,
	0x66, 0xbb, 0x97, 0xa7, 0xb2, 0xa9,
	0x66, 0xb9, 0x0a, 0x00, 0xff, 0xff,
	0xba, 0x58, 0x56,
	0x66, 0xed,
	0xf4,
};

static volatile sig_atomic_t watchdog_fired;

static void on_alarm(int sig)
{
	(void)sig;
	watchdog_fired = 1; /* KVM_RUN returns EINTR */
}

//! [log]
static void log_to_stderr(int level, const char *msg, void *ctx)
{
	(void)ctx;
	static const char *const names[] = { "error", "warn", "info", "debug" };
	fprintf(stderr, "libvmwkvm %s: %s\n", (level >= 0 && level <= 3) ? names[level] : "?", msg);
}
//! [log]

static int fail(const char *what, int err)
{
	fprintf(stderr, "walk_exits: %s: %s\n", what, vmwkvm_strerror(err));
	return 1;
}

/* Real mode with CS base 0, so that IP = GUEST_ENTRY is the guest-physical entry. */
static int setup_real_mode(int vcpu_fd)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
		return -errno;
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) < 0)
		return -errno;
	memset(&regs, 0, sizeof(regs));
	regs.rip = GUEST_ENTRY;
	regs.rflags = 0x2;
	if (ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0)
		return -errno;
	return 0;
}

int main(void)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		if (errno == ENOENT) {
			fprintf(stderr, "walk_exits: skipped: /dev/kvm is absent on this machine\n");
			return 77;
		}
		return fail("open /dev/kvm", -errno);
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm; /* no SA_RESTART: KVM_RUN must return EINTR */
	sigaction(SIGALRM, &sa, NULL);

	/* The VMM's own VM, memory and vCPU, created as any KVM VMM does. */
	int vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm_fd < 0)
		return fail("KVM_CREATE_VM", -errno);
	uint8_t *mem = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return fail("mmap guest memory", -errno);
	memcpy(mem + GUEST_ENTRY, guest_code, sizeof(guest_code));
	struct kvm_userspace_memory_region slot = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = GUEST_MEM_SIZE, .userspace_addr = (uintptr_t)mem,
	};
	if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
		return fail("KVM_SET_USER_MEMORY_REGION", -errno);

	vmwkvm_set_log(log_to_stderr, NULL, VMWKVM_LOG_WARN);

	//! [handles]
	/* Wrap the VMM's VM: the library borrows the fd and never closes it. */
	vmwkvm_vm *vm;
	struct vmwkvm_vm_opts vm_opts = { .sz = sizeof(vm_opts), .kvm_fd = kvm, .kvm_fd_set = 1 };
	int r = vmwkvm_vm_new(vm_fd, &vm_opts, &vm);
	if (r < 0)
		return fail("vmwkvm_vm_new", r);

	/* Create the vCPU through the library so that it knows a vCPU exists (policy rule). */
	int vcpu_fd = vmwkvm_vm_create_vcpu(vm, 0);
	if (vcpu_fd < 0)
		return fail("vmwkvm_vm_create_vcpu", vcpu_fd);

	/* The VMM maps kvm_run as usual and lends the mapping to the library. */
	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < 0)
		return fail("KVM_GET_VCPU_MMAP_SIZE", -errno);
	struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, 0);
	if (run == MAP_FAILED)
		return fail("mmap kvm_run", -errno);
	vmwkvm_vcpu *vcpu;
	r = vmwkvm_vcpu_new(vm, vcpu_fd, run, (size_t)run_size, NULL, &vcpu);
	if (r < 0)
		return fail("vmwkvm_vcpu_new", r);
	//! [handles]

	r = setup_real_mode(vcpu_fd);
	if (r < 0)
		return fail("real-mode setup", r);

	//! [service]
	/* One command table per VM, shared by its vCPU threads. */
	vmwkvm_backdoor *bd;
	r = vmwkvm_backdoor_new(NULL, &bd);
	if (r < 0)
		return fail("vmwkvm_backdoor_new", r);
	vmwkvm_backdoor_enable_builtin(bd, VMWKVM_BDOOR_CMD_GETVERSION); /* EAX=6, EBX=magic, ECX=2 */
	//! [service]

	alarm(10);
	//! [loop]
	for (;;) {
		r = vmwkvm_vcpu_run(vcpu); /* or the VMM's own ioctl(vcpu_fd, KVM_RUN, 0) */
		if (r < 0)
			return fail(watchdog_fired ? "guest did not halt within 10 s" : "KVM_RUN", r);

		struct vmwkvm_call call;
		int kind = vmwkvm_exit_decode(vcpu, &call);
		if (kind < 0)
			return fail("vmwkvm_exit_decode", kind);
		if (kind == VMWKVM_EXIT_CALL) {
			struct vmwkvm_reply reply;
			vmwkvm_backdoor_handle(bd, &call, &reply); /* or the VMM's own answer */
			r = vmwkvm_exit_complete(vcpu, &call, &reply);
			if (r < 0)
				return fail("vmwkvm_exit_complete", r);
			continue; /* re-enter: the guest's IN finishes with the reply */
		}
		if (kind == VMWKVM_EXIT_INVALID) {
			/* a malformed access to a backdoor port: answer it as the protocol says */
			r = vmwkvm_exit_complete_invalid(vcpu, &call);
			if (r < 0)
				return fail("vmwkvm_exit_complete_invalid", r);
			continue;
		}
		/* VMWKVM_EXIT_NOT_BACKDOOR: the VMM's own exit handling, untouched by the library */
		if (run->exit_reason == KVM_EXIT_HLT)
			break;
		fprintf(stderr, "walk_exits: unexpected exit reason %u\n", run->exit_reason);
		return 1;
	}
	//! [loop]
	alarm(0);

	struct kvm_regs regs;
	if (ioctl(vcpu_fd, KVM_GET_REGS, &regs) < 0)
		return fail("KVM_GET_REGS", -errno);
	uint32_t eax = (uint32_t)regs.rax, ebx = (uint32_t)regs.rbx, ecx = (uint32_t)regs.rcx;
	int ok = eax == VMWKVM_BDOOR_VERSION && ebx == VMWKVM_BDOOR_MAGIC && ecx == VMWKVM_BDOOR_PRODUCT_ESX;
	printf("guest saw GETVERSION: EAX=%u EBX=0x%08x ECX=%u (%s)\n", eax, ebx, ecx, ok ? "correct" : "WRONG");

	//! [cleanup]
	vmwkvm_backdoor_free(bd);
	vmwkvm_vcpu_free(vcpu); /* before its VM; the fds stay open */
	vmwkvm_vm_free(vm);
	//! [cleanup]
	munmap(run, (size_t)run_size);
	close(vcpu_fd);
	close(vm_fd);
	munmap(mem, GUEST_MEM_SIZE);
	close(kvm);
	return ok ? 0 : 1;
}
