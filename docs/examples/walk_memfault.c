/*
 * walk_memfault.c: a lazy snapshot in miniature. The VMM write-protects one page of guest
 * RAM; when the guest writes to it, the handler saves the page as it was, then lets the
 * write through. The documentation shows the parts marked handler, memfault and exit.
 *
 * The real-mode guest stores 0x5A at guest-physical 0x8000 (a page the VMM filled with
 * 0xAA and protected) and halts. The write reaches the handler through userfaultfd (served
 * by the library's thread) or, on hosts whose KVM emulates guest code, as an MMIO exit on
 * protected RAM that the library completes against RAM. Either way the saved copy must hold
 * 0xAA and RAM must hold 0x5A afterwards: no lost write, no torn snapshot.
 *
 * Exit status: 0 when both hold, 77 when /dev/kvm is absent, 1 on any failure. A 10 s
 * watchdog (SIGALRM) bounds every KVM_RUN.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vmwkvm/vmwkvm.h>

#define GUEST_MEM_SIZE 0x10000u
#define GUEST_ENTRY 0x1000u
#define WATCHED_GPA 0x8000u
#define PAGE 4096u

/* mov byte [0x8000], 0x5A; hlt  (16-bit code, DS = 0) */
static const uint8_t guest_code[] = { 0xc6, 0x06, 0x00, 0x80, 0x5a, 0xf4 };

static volatile sig_atomic_t watchdog_fired;

static void on_alarm(int sig)
{
	(void)sig;
	watchdog_fired = 1;
}

static int fail(const char *what, int err)
{
	fprintf(stderr, "walk_memfault: %s: %s\n", what, vmwkvm_strerror(err));
	return 1;
}

/* the snapshot: one saved page and whether it was saved */
/* Written by the handler, which for userfaultfd faults runs on the dispatcher's thread:
 * `saved` is published with release order after the copy, and read with acquire order. */
struct snapshot {
	uint8_t page[PAGE];
	atomic_int saved;
};

//! [handler]
/* Called before the guest's write to a protected page lands: save what is there now (the
 * whole page for a userfaultfd fault, the accessed bytes for an MMIO exit), then let the
 * write through; the page stays unprotected afterwards. */
static int save_before_write(vmwkvm_memfault *mf, const struct vmwkvm_mf_record *rec,
			     struct vmwkvm_mf_action *act, void *ctx)
{
	(void)mf;
	struct snapshot *snap = ctx;
	if (!rec->data || rec->gpa < WATCHED_GPA || rec->gpa + rec->size > WATCHED_GPA + PAGE)
		return -EINVAL; /* not what this handler watches: the access is not let through */
	if (!atomic_load_explicit(&snap->saved, memory_order_relaxed)) {
		memcpy(snap->page + (rec->gpa - WATCHED_GPA), rec->data, rec->size);
		atomic_store_explicit(&snap->saved, 1, memory_order_release);
	}
	act->kind = VMWKVM_MF_ACT_UNPROTECT;
	return 0;
}
//! [handler]

static int setup_real_mode(int vcpu_fd)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
		return -errno;
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	sregs.ds.base = 0;
	sregs.ds.selector = 0;
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
			fprintf(stderr, "walk_memfault: skipped: /dev/kvm is absent on this machine\n");
			return 77;
		}
		return fail("open /dev/kvm", -errno);
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);

	int vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm_fd < 0)
		return fail("KVM_CREATE_VM", -errno);
	uint8_t *ram = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ram == MAP_FAILED)
		return fail("mmap guest memory", -errno);
	memcpy(ram + GUEST_ENTRY, guest_code, sizeof(guest_code));
	memset(ram + WATCHED_GPA, 0xaa, PAGE);
	struct kvm_userspace_memory_region slot = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = GUEST_MEM_SIZE, .userspace_addr = (uintptr_t)ram,
	};
	if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
		return fail("KVM_SET_USER_MEMORY_REGION", -errno);

	vmwkvm_vm *vm;
	struct vmwkvm_vm_opts vm_opts = { .sz = sizeof(vm_opts), .kvm_fd = kvm, .kvm_fd_set = 1 };
	int r = vmwkvm_vm_new(vm_fd, &vm_opts, &vm);
	if (r < 0)
		return fail("vmwkvm_vm_new", r);
	int vcpu_fd = vmwkvm_vm_create_vcpu(vm, 0);
	if (vcpu_fd < 0)
		return fail("vmwkvm_vm_create_vcpu", vcpu_fd);
	vmwkvm_vcpu *vcpu;
	r = vmwkvm_vcpu_new(vm, vcpu_fd, NULL, 0, NULL, &vcpu);
	if (r < 0)
		return fail("vmwkvm_vcpu_new", r);
	struct kvm_run *run = vmwkvm_vcpu_kvm_run(vcpu);
	r = setup_real_mode(vcpu_fd);
	if (r < 0)
		return fail("real-mode setup", r);

	static struct snapshot snap;
	//! [memfault]
	/* one dispatcher per VM: it opens a userfaultfd that also sees KVM's own faults */
	vmwkvm_memfault *mf;
	r = vmwkvm_memfault_new(vm, NULL, &mf);
	if (r < 0)
		return fail("vmwkvm_memfault_new", r);

	/* guest RAM, as given to KVM_SET_USER_MEMORY_REGION */
	struct vmwkvm_mf_region region = {
		.sz = sizeof(region), .gpa = 0, .size = GUEST_MEM_SIZE, .host = ram, .kind = VMWKVM_MF_MEM_ANON,
	};
	r = vmwkvm_memfault_add_region(mf, &region);
	if (r < 0)
		return fail("vmwkvm_memfault_add_region", r);

	/* a handler for writes to one page, then the protection that makes them fault */
	struct vmwkvm_mf_range range = {
		.sz = sizeof(range), .gpa = WATCHED_GPA, .size = PAGE, .access = VMWKVM_MF_ACCESS_WRITE,
		.fn = save_before_write, .ctx = &snap,
	};
	r = vmwkvm_memfault_add_range(mf, &range);
	if (r < 0)
		return fail("vmwkvm_memfault_add_range", r);
	r = vmwkvm_memfault_write_protect(mf, WATCHED_GPA, PAGE);
	if (r < 0)
		return fail("vmwkvm_memfault_write_protect", r);
	printf("write protection by %s\n", r == VMWKVM_MF_MECH_UFFD_WP ? "userfaultfd" : "mprotect");

	/* userfaultfd faults are served by a library thread (or: poll vmwkvm_memfault_fd()
	 * in the VMM's loop and call vmwkvm_memfault_dispatch()) */
	if (r == VMWKVM_MF_MECH_UFFD_WP) {
		r = vmwkvm_memfault_start(mf);
		if (r < 0)
			return fail("vmwkvm_memfault_start", r);
	}
	//! [memfault]

	alarm(10);
	for (;;) {
		//! [exit]
		r = vmwkvm_vcpu_run(vcpu);
		/* memory-fault exits and MMIO exits that hit protected RAM are the dispatcher's */
		int m = vmwkvm_memfault_handle_exit(mf, vcpu, r, NULL);
		if (m == VMWKVM_MF_EXIT_HANDLED)
			continue;
		if (m == VMWKVM_MF_EXIT_RETRY || m == VMWKVM_MF_EXIT_FAILED || m < 0)
			return fail("memory fault not resolved", m < 0 ? m : -EFAULT);
		/* VMWKVM_MF_EXIT_NOT_OURS: the VMM's own exit handling */
		//! [exit]
		if (r < 0)
			return fail(watchdog_fired ? "guest did not halt within 10 s" : "KVM_RUN", r);
		if (run->exit_reason == KVM_EXIT_HLT)
			break;
		fprintf(stderr, "walk_memfault: unexpected exit reason %u\n", run->exit_reason);
		return 1;
	}
	alarm(0);

	int ok = atomic_load_explicit(&snap.saved, memory_order_acquire) && snap.page[0] == 0xaa &&
		 ram[WATCHED_GPA] == 0x5a;
	printf("saved copy holds 0x%02x (want 0xaa), RAM holds 0x%02x (want 0x5a): %s\n", snap.page[0],
	       ram[WATCHED_GPA], ok ? "correct" : "WRONG");

	vmwkvm_memfault_free(mf); /* stops the thread, unregisters, restores protections */
	vmwkvm_vcpu_free(vcpu);
	vmwkvm_vm_free(vm);
	close(vcpu_fd);
	close(vm_fd);
	munmap(ram, GUEST_MEM_SIZE);
	close(kvm);
	return ok ? 0 : 1;
}
