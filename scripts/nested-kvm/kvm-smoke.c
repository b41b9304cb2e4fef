/* SPDX-License-Identifier: MIT */
/*
 * kvm-smoke: a self-contained check that /dev/kvm inside the nested QEMU guest
 * really runs guest code, and a rough measure of what it costs.
 *
 * Built statically by run-in-qemu.sh (--selftest) and run inside the QEMU guest.
 * It does not use libvmwkvm on purpose: it checks the platform, not the library.
 *
 * Checks (each prints one "ok"/"FAIL" line):
 *   1. real-mode IN EAX,DX from port 0x5658: KVM_EXIT_IO, value delivered in EAX
 *   2. sync regs (KVM_SYNC_X86_REGS): guest registers visible in kvm_run at the exit
 *   3. REP OUTSB of 16 bytes: how many exits, bytes intact
 *   4. REP INSB of 4000 bytes: how many exits, bytes land in guest memory
 *   5. KVM_RUN round trip: N IN exits, average wall time per exit (informational)
 * Exit status: 0 if every check passed, 1 otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE 0x10000u
#define CODE_GPA 0x1000u
#define BUF_GPA 0x3000u
#define MAGIC 0x564D5868u
#define BDOOR_PORT 0x5658u

static int g_kvm = -1;
static int g_failures;

struct vm {
	int fd;
	int vcpu;
	uint8_t *mem;
	struct kvm_run *run;
	size_t run_sz;
};

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void on_alarm(int sig)
{
	(void)sig;
}

static void check(int cond, const char *what)
{
	printf("%s %s\n", cond ? "ok  " : "FAIL", what);
	if (!cond)
		g_failures++;
}

static int vm_create(struct vm *v, const uint8_t *code, size_t code_len)
{
	memset(v, 0, sizeof(*v));
	v->fd = ioctl(g_kvm, KVM_CREATE_VM, 0);
	if (v->fd < 0) {
		perror("KVM_CREATE_VM");
		return -1;
	}
	v->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (v->mem == MAP_FAILED) {
		perror("mmap");
		return -1;
	}
	memcpy(v->mem + CODE_GPA, code, code_len);
	struct kvm_userspace_memory_region r = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE,
		.userspace_addr = (uint64_t)(uintptr_t)v->mem,
	};
	if (ioctl(v->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
		perror("KVM_SET_USER_MEMORY_REGION");
		return -1;
	}
	v->vcpu = ioctl(v->fd, KVM_CREATE_VCPU, 0);
	if (v->vcpu < 0) {
		perror("KVM_CREATE_VCPU");
		return -1;
	}
	int sz = ioctl(g_kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (sz <= 0) {
		perror("KVM_GET_VCPU_MMAP_SIZE");
		return -1;
	}
	v->run_sz = (size_t)sz;
	v->run = mmap(NULL, v->run_sz, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
	if (v->run == MAP_FAILED) {
		perror("mmap kvm_run");
		return -1;
	}
	struct kvm_sregs s;
	if (ioctl(v->vcpu, KVM_GET_SREGS, &s) < 0) {
		perror("KVM_GET_SREGS");
		return -1;
	}
	s.cs.base = 0;
	s.cs.selector = 0;
	if (ioctl(v->vcpu, KVM_SET_SREGS, &s) < 0) {
		perror("KVM_SET_SREGS");
		return -1;
	}
	struct kvm_regs g;
	memset(&g, 0, sizeof(g));
	g.rip = CODE_GPA;
	g.rflags = 2;
	if (ioctl(v->vcpu, KVM_SET_REGS, &g) < 0) {
		perror("KVM_SET_REGS");
		return -1;
	}
	return 0;
}

static void vm_destroy(struct vm *v)
{
	if (v->run && v->run != MAP_FAILED)
		munmap(v->run, v->run_sz);
	if (v->mem && v->mem != MAP_FAILED)
		munmap(v->mem, MEM_SIZE);
	if (v->vcpu > 0)
		close(v->vcpu);
	if (v->fd > 0)
		close(v->fd);
}

static int vm_run(struct vm *v)
{
	alarm(20); /* watchdog: KVM_RUN returns EINTR */
	int r = ioctl(v->vcpu, KVM_RUN, 0);
	int e = errno;
	alarm(0);
	if (r < 0) {
		fprintf(stderr, "KVM_RUN: %s\n", strerror(e));
		return -1;
	}
	return 0;
}

static uint8_t *io_data(struct vm *v)
{
	return (uint8_t *)v->run + v->run->io.data_offset;
}

/* 1 + 2 + 5: IN loop. mov dx,0x5658; mov eax,MAGIC; in eax,dx; mov ebx,eax; jmp start */
static void test_in_loop(int iters)
{
	static const uint8_t code[] = {
		0xba, 0x58, 0x56,                         /* mov dx, 0x5658 */
		0x66, 0xb8, 0x68, 0x58, 0x4d, 0x56,       /* mov eax, 0x564d5868 */
		0x66, 0xed,                               /* in eax, dx */
		0x66, 0x89, 0xc3,                         /* mov ebx, eax */
		0xeb, 0xf0,                               /* jmp start */
	};
	struct vm v;
	if (vm_create(&v, code, sizeof(code)) < 0) {
		check(0, "create real-mode VM");
		return;
	}
	v.run->kvm_valid_regs = KVM_SYNC_X86_REGS;
	if (vm_run(&v) < 0) {
		check(0, "first KVM_RUN");
		vm_destroy(&v);
		return;
	}
	check(v.run->exit_reason == KVM_EXIT_IO && v.run->io.direction == KVM_EXIT_IO_IN &&
	      v.run->io.size == 4 && v.run->io.port == BDOOR_PORT && v.run->io.count == 1,
	      "real-mode IN EAX,DX from 0x5658 -> KVM_EXIT_IO in/4/0x5658/1");
	printf("     exit_reason=%u dir=%u size=%u port=0x%x count=%u\n", v.run->exit_reason,
	       v.run->io.direction, v.run->io.size, v.run->io.port, v.run->io.count);
	check(v.run->s.regs.regs.rax == MAGIC && v.run->s.regs.regs.rdx == BDOOR_PORT &&
	      v.run->s.regs.regs.rip == CODE_GPA + 9,
	      "sync regs at the IN exit: rax=magic rdx=port rip=IN");
	printf("     sync rax=0x%llx rdx=0x%llx rip=0x%llx\n",
	       (unsigned long long)v.run->s.regs.regs.rax, (unsigned long long)v.run->s.regs.regs.rdx,
	       (unsigned long long)v.run->s.regs.regs.rip);
	v.run->kvm_valid_regs = 0;

	double t0 = now_s();
	int bad = 0;
	for (int i = 0; i < iters; i++) {
		uint32_t val = 0x1000u + (uint32_t)i;
		memcpy(io_data(&v), &val, 4);
		if (vm_run(&v) < 0 || v.run->exit_reason != KVM_EXIT_IO) {
			bad = 1;
			printf("     iteration %d: exit_reason=%u\n", i, v.run->exit_reason);
			break;
		}
	}
	double t1 = now_s();
	struct kvm_regs g;
	ioctl(v.vcpu, KVM_GET_REGS, &g);
	check(!bad && g.rbx == 0x1000u + (uint32_t)iters - 1, "IN value delivered to EAX (checked via EBX)");
	printf("     rbx=0x%llx expected 0x%x\n", (unsigned long long)g.rbx, 0x1000u + (unsigned)iters - 1);
	if (!bad)
		printf("info KVM_RUN round trip (IN exit): %.1f us average over %d exits\n",
		       (t1 - t0) / iters * 1e6, iters);
	vm_destroy(&v);
}

/* 3: mov si,0x3000; mov cx,16; mov dx,0x5659; cld; rep outsb; hlt */
static void test_outsb(void)
{
	static const uint8_t code[] = {
		0xbe, 0x00, 0x30, 0xb9, 0x10, 0x00, 0xba, 0x59, 0x56, 0xfc, 0xf3, 0x6e, 0xf4,
	};
	struct vm v;
	if (vm_create(&v, code, sizeof(code)) < 0) {
		check(0, "create OUTSB VM");
		return;
	}
	for (int i = 0; i < 16; i++)
		v.mem[BUF_GPA + i] = (uint8_t)(0xa0 + i);
	uint8_t got[64];
	unsigned n = 0, exits = 0;
	for (;;) {
		if (vm_run(&v) < 0)
			break;
		if (v.run->exit_reason == KVM_EXIT_HLT)
			break;
		if (v.run->exit_reason != KVM_EXIT_IO || v.run->io.direction != KVM_EXIT_IO_OUT ||
		    v.run->io.size != 1) {
			printf("     unexpected exit %u\n", v.run->exit_reason);
			break;
		}
		exits++;
		for (unsigned i = 0; i < v.run->io.count && n < sizeof(got); i++)
			got[n++] = io_data(&v)[i];
	}
	int same = n == 16;
	for (unsigned i = 0; same && i < 16; i++)
		same = got[i] == (uint8_t)(0xa0 + i);
	check(same && v.run->exit_reason == KVM_EXIT_HLT, "REP OUTSB 16 bytes arrive intact, then HLT");
	printf("info REP OUTSB 16 bytes: %u exits\n", exits);
	vm_destroy(&v);
}

/* 4: mov di,0x3000; mov cx,4000; mov dx,0x5659; cld; rep insb; hlt */
static void test_insb(void)
{
	static const uint8_t code[] = {
		0xbf, 0x00, 0x30, 0xb9, 0xa0, 0x0f, 0xba, 0x59, 0x56, 0xfc, 0xf3, 0x6c, 0xf4,
	};
	struct vm v;
	if (vm_create(&v, code, sizeof(code)) < 0) {
		check(0, "create INSB VM");
		return;
	}
	unsigned n = 0, exits = 0, maxpiece = 0;
	for (;;) {
		if (vm_run(&v) < 0)
			break;
		if (v.run->exit_reason == KVM_EXIT_HLT)
			break;
		if (v.run->exit_reason != KVM_EXIT_IO || v.run->io.direction != KVM_EXIT_IO_IN ||
		    v.run->io.size != 1) {
			printf("     unexpected exit %u\n", v.run->exit_reason);
			break;
		}
		exits++;
		if (v.run->io.count > maxpiece)
			maxpiece = v.run->io.count;
		for (unsigned i = 0; i < v.run->io.count; i++)
			io_data(&v)[i] = (uint8_t)(n++ * 7u);
	}
	int same = n == 4000;
	for (unsigned i = 0; same && i < 4000; i++)
		same = v.mem[BUF_GPA + i] == (uint8_t)(i * 7u);
	check(same && v.run->exit_reason == KVM_EXIT_HLT, "REP INSB 4000 bytes land in guest memory, then HLT");
	printf("info REP INSB 4000 bytes: %u exits, largest piece %u bytes\n", exits, maxpiece);
	vm_destroy(&v);
}

int main(int argc, char **argv)
{
	int iters = argc > 1 ? atoi(argv[1]) : 2000;
	if (iters < 1)
		iters = 1;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);

	g_kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (g_kvm < 0) {
		perror("open /dev/kvm");
		return 1;
	}
	printf("info KVM_GET_API_VERSION=%d SYNC_REGS=%d\n", ioctl(g_kvm, KVM_GET_API_VERSION, 0),
	       ioctl(g_kvm, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS));
	test_in_loop(iters);
	test_outsb();
	test_insb();
	printf("kvm-smoke: %s (%d failure%s)\n", g_failures ? "FAILED" : "passed", g_failures,
	       g_failures == 1 ? "" : "s");
	return g_failures ? 1 : 0;
}
