/*
 * vmwkvm-bench-backdoor: what the library adds to a VMware backdoor round trip.
 *
 * 1. Microbenchmark, no KVM needed: CPU cost of vmwkvm_exit_decode() +
 *    vmwkvm_exit_complete() for an LB GETVERSION exit in sync-regs mode, on a kvm_run
 *    buffer refilled each iteration as KVM would leave it, against the same answer written
 *    by hand (check the magic and command, write EAX to the I/O data and EAX/EBX/ECX to
 *    the sync regs). The sys layer is a fake that counts any ioctl (there must be none).
 * 2. Real KVM (skipped without /dev/kvm): a real-mode guest (bench_guest.S) makes N
 *    GETVERSION calls, each answered
 *      (a) by a bare loop that only re-enters KVM_RUN and sets the answer through sync
 *          regs by hand (the floor), and
 *      (b) through the library: vmwkvm_vcpu_run + vmwkvm_exit_decode + vmwkvm_exit_complete
 *          in sync-regs mode (and, for reference, in ioctl mode),
 *    alternating (a) and (b) for R rounds on fresh VMs; the median per-call time of each
 *    is reported. Ioctls are counted: (a) counts its own; (b) wraps the library's sys layer
 *    (vmwkvm_sys_set_ops() around vmwkvm_sys_default_ops()).
 *
 * The last line is `backdoor_rtt floor_ns=<n> lib_ns=<n> ratio=<lib/floor>`. Without
 * /dev/kvm the last line is `backdoor_rtt skipped: ...` and the exit status is 0 (the
 * microbenchmark still ran). Exit status 1 on any error.
 *
 * Usage: vmwkvm-bench-backdoor [--calls N] [--rounds R] [--micro-iters M]
 */
#include "core/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAGIC VMWKVM_BDOOR_MAGIC
#define RUN_SIZE_FAKE 12288u
#define MEM_SIZE (1u << 20)
#define ENTRY 0x1000u
#define PARAM_N 0x700u

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ------------------------------------------------------------------ sys layers */

static unsigned long n_run, n_other;

static int counting_ioctl(void *ctx, int fd, unsigned long req, void *arg)
{
	(void)ctx;
	if (req == KVM_RUN)
		n_run++;
	else
		n_other++;
	const struct vmwkvm_sys_ops *d = vmwkvm_sys_default_ops();
	return d->ioctl(d->ctx, fd, req, arg);
}

static int fake_ioctl(void *ctx, int fd, unsigned long req, void *arg)
{
	(void)ctx, (void)fd;
	if (req == KVM_CHECK_EXTENSION) {
		unsigned long cap = (unsigned long)(uintptr_t)arg;
		return cap == KVM_CAP_SYNC_REGS ? 7 : cap == VMWKVM_UAPI_CAP_X86_GUEST_MODE ? 1 : 0;
	}
	n_other++;
	return -ENOTTY;
}

/* ------------------------------------------------------------------ microbenchmark */

static inline void fill_exit(struct kvm_run *run)
{
	run->exit_reason = KVM_EXIT_IO;
	run->io.direction = KVM_EXIT_IO_IN;
	run->io.size = 4;
	run->io.port = 0x5658;
	run->io.count = 1;
	run->io.data_offset = 4096;
	run->s.regs.regs.rax = MAGIC;
	run->s.regs.regs.rbx = ~(uint64_t)MAGIC;
	run->s.regs.regs.rcx = 0xFFFF000A;
	run->kvm_dirty_regs = 0;
}

static inline void by_hand(struct kvm_run *run)
{
	struct kvm_regs *r = &run->s.regs.regs;
	if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x5658 && (uint32_t)r->rax == MAGIC &&
	    (uint16_t)r->rcx == 10 && run->io.data_offset + 4 <= RUN_SIZE_FAKE) {
		uint32_t v = 6;
		memcpy((char *)run + run->io.data_offset, &v, 4);
		r->rax = 6;
		r->rbx = MAGIC;
		r->rcx = 2;
		run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
	}
}

static int micro(unsigned long iters, unsigned rounds, double *lib_ns, double *hand_ns)
{
	static _Alignas(4096) uint8_t buf[RUN_SIZE_FAKE];
	struct kvm_run *run = (struct kvm_run *)(void *)buf;
	struct vmwkvm_sys_ops ops = *vmwkvm_sys_default_ops();
	ops.ioctl = fake_ioctl;
	vmwkvm_sys_set_ops(&ops);
	vmwkvm_vm *vm = NULL;
	vmwkvm_vcpu *vcpu = NULL;
	int r = vmwkvm_vm_new(100, NULL, &vm);
	struct vmwkvm_vcpu_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.regs_mode = VMWKVM_REGS_SYNC;
	if (r == 0)
		r = vmwkvm_vcpu_new(vm, 101, run, sizeof(buf), &o, &vcpu);
	if (r < 0) {
		fprintf(stderr, "micro: set-up failed: %s\n", vmwkvm_strerror(r));
		vmwkvm_vm_free(vm);
		vmwkvm_sys_set_ops(NULL);
		return -1;
	}
	n_other = 0;
	double lib[16], hand[16];
	if (rounds > 16)
		rounds = 16;
	struct vmwkvm_reply reply;
	memset(&reply, 0, sizeof(reply));
	reply.set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX | VMWKVM_REPLY_ECX;
	reply.eax = 6, reply.ebx = MAGIC, reply.ecx = 2;
	unsigned long bad = 0;
	for (unsigned k = 0; k < rounds; k++) {
		uint64_t t0 = now_ns();
		for (unsigned long i = 0; i < iters; i++) {
			fill_exit(run);
			__asm__ volatile("" ::: "memory");
			struct vmwkvm_call call;
			if (vmwkvm_exit_decode(vcpu, &call) != VMWKVM_EXIT_CALL || call.command != 10 ||
			    vmwkvm_exit_complete(vcpu, &call, &reply) != 0)
				bad++;
			__asm__ volatile("" ::: "memory");
		}
		uint64_t t1 = now_ns();
		for (unsigned long i = 0; i < iters; i++) {
			fill_exit(run);
			__asm__ volatile("" ::: "memory");
			by_hand(run);
			__asm__ volatile("" ::: "memory");
		}
		uint64_t t2 = now_ns();
		lib[k] = (double)(t1 - t0) / (double)iters;
		hand[k] = (double)(t2 - t1) / (double)iters;
	}
	/* the fill is in both loops; what remains is decode+complete vs the hand-written answer */
	*lib_ns = median(lib, rounds);
	*hand_ns = median(hand, rounds);
	unsigned long ioctls = n_other;
	vmwkvm_vcpu_free(vcpu);
	vmwkvm_vm_free(vm);
	vmwkvm_sys_set_ops(NULL);
	if (bad || ioctls) {
		fprintf(stderr, "micro: %lu failed calls, %lu ioctls on the exit path\n", bad, ioctls);
		return -1;
	}
	printf("micro: decode+complete %.1f ns/call in sync-regs mode (by-hand answer %.1f ns/call, "
	       "fill of the exit included in both; %lu iterations x %u rounds, 0 ioctls)\n",
	       *lib_ns, *hand_ns, iters, rounds);
	return 0;
}

/* ------------------------------------------------------------------ real KVM */

static volatile sig_atomic_t alarm_fired;
static void on_alarm(int sig)
{
	(void)sig;
	alarm_fired = 1;
}

struct kvmvm {
	int kvm, vm, vcpu;
	struct kvm_run *run;
	size_t run_size;
	uint8_t *mem;
	vmwkvm_vm *lvm;
	vmwkvm_vcpu *lvcpu;
};

static void kvm_down(struct kvmvm *k)
{
	vmwkvm_vcpu_free(k->lvcpu);
	vmwkvm_vm_free(k->lvm);
	if (k->run)
		munmap(k->run, k->run_size);
	if (k->mem)
		munmap(k->mem, MEM_SIZE);
	if (k->vcpu >= 0)
		close(k->vcpu);
	if (k->vm >= 0)
		close(k->vm);
	if (k->kvm >= 0)
		close(k->kvm);
	memset(k, 0, sizeof(*k));
	k->kvm = k->vm = k->vcpu = -1;
}

static int load_guest(uint8_t *mem)
{
	FILE *f = fopen(VMWKVM_BENCH_GUEST, "rb");
	if (!f) {
		fprintf(stderr, "cannot open guest %s: %s\n", VMWKVM_BENCH_GUEST, strerror(errno));
		return -1;
	}
	size_t n = fread(mem + ENTRY, 1, MEM_SIZE - ENTRY, f);
	fclose(f);
	return n > 0 ? 0 : -1;
}

/* VM + RAM + guest + vCPU in real mode. with_lib: the vCPU is created and wrapped by the library. */
static int kvm_up(struct kvmvm *k, unsigned calls, int lib_regs_mode)
{
	memset(k, 0, sizeof(*k));
	k->kvm = k->vm = k->vcpu = -1;
	k->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (k->kvm < 0)
		goto err;
	k->vm = ioctl(k->kvm, KVM_CREATE_VM, 0);
	if (k->vm < 0)
		goto err;
	void *m = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		goto err;
	k->mem = m;
	struct kvm_userspace_memory_region reg = { .slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE,
						   .userspace_addr = (uint64_t)(uintptr_t)m };
	if (ioctl(k->vm, KVM_SET_USER_MEMORY_REGION, &reg) < 0)
		goto err;
	if (load_guest(k->mem) < 0)
		goto fail;
	memcpy(k->mem + PARAM_N, &calls, 4);
	if (lib_regs_mode) {
		struct vmwkvm_vm_opts vo;
		memset(&vo, 0, sizeof(vo));
		vo.sz = sizeof(vo);
		vo.kvm_fd = k->kvm;
		vo.kvm_fd_set = 1;
		int r = vmwkvm_vm_new(k->vm, &vo, &k->lvm);
		if (r < 0) {
			errno = -r;
			goto err;
		}
		k->vcpu = vmwkvm_vm_create_vcpu(k->lvm, 0);
		if (k->vcpu < 0) {
			errno = -k->vcpu;
			goto err;
		}
	} else {
		k->vcpu = ioctl(k->vm, KVM_CREATE_VCPU, 0);
		if (k->vcpu < 0)
			goto err;
	}
	int sz = ioctl(k->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (sz < (int)sizeof(struct kvm_run))
		goto err;
	void *r = mmap(NULL, (size_t)sz, PROT_READ | PROT_WRITE, MAP_SHARED, k->vcpu, 0);
	if (r == MAP_FAILED)
		goto err;
	k->run = r;
	k->run_size = (size_t)sz;
	struct kvm_sregs s;
	if (ioctl(k->vcpu, KVM_GET_SREGS, &s) < 0)
		goto err;
	struct kvm_segment *segs[] = { &s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss };
	for (size_t i = 0; i < sizeof(segs) / sizeof(segs[0]); i++) {
		segs[i]->selector = 0;
		segs[i]->base = 0;
		segs[i]->limit = 0xffff;
	}
	s.cr0 &= ~1ull;
	if (ioctl(k->vcpu, KVM_SET_SREGS, &s) < 0)
		goto err;
	struct kvm_regs g;
	memset(&g, 0, sizeof(g));
	g.rip = ENTRY;
	g.rsp = 0x7000;
	g.rflags = 0x2;
	if (ioctl(k->vcpu, KVM_SET_REGS, &g) < 0)
		goto err;
	if (lib_regs_mode) {
		struct vmwkvm_vcpu_opts o;
		memset(&o, 0, sizeof(o));
		o.sz = sizeof(o);
		o.regs_mode = lib_regs_mode;
		int rr = vmwkvm_vcpu_new(k->lvm, k->vcpu, k->run, k->run_size, &o, &k->lvcpu);
		if (rr < 0) {
			errno = -rr;
			goto err;
		}
	}
	return 0;
err:
	fprintf(stderr, "KVM set-up failed: %s\n", strerror(errno));
fail:
	kvm_down(k);
	return -1;
}

/* end of the guest loop: 1 done, 0 not the report, -1 failure report */
static int guest_report(const struct kvm_run *run)
{
	if (run->exit_reason != KVM_EXIT_IO || run->io.direction != KVM_EXIT_IO_OUT ||
	    (run->io.port != 0xF4 && run->io.port != 0xF5))
		return 0;
	uint32_t v = 0;
	memcpy(&v, (const char *)run + run->io.data_offset, 4);
	if (run->io.port == 0xF4 && v == 0x600D)
		return 1;
	fprintf(stderr, "guest reported a wrong answer (port 0x%x, value %u)\n", run->io.port, v);
	return -1;
}

/* (a) the floor: KVM_RUN + the answer through sync regs by hand. with_sregs: also have
 * KVM copy the segment registers out at every exit, as the library does (for CPL/mode). */
static int bare_loop(unsigned calls, bool with_sregs, double *ns, double *ioctls_per_call)
{
	struct kvmvm k;
	if (kvm_up(&k, calls, 0) < 0)
		return -1;
	struct kvm_run *run = k.run;
	run->kvm_valid_regs = KVM_SYNC_X86_REGS | (with_sregs ? KVM_SYNC_X86_SREGS : 0);
	unsigned long ioctls = 0, answered = 0;
	int rc = -1;
	alarm_fired = 0;
	alarm(120);
	uint64_t t0 = now_ns();
	for (;;) {
		ioctls++;
		if (ioctl(k.vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR && !alarm_fired)
				continue;
			fprintf(stderr, "bare loop: KVM_RUN: %s\n", alarm_fired ? "watchdog" : strerror(errno));
			goto out;
		}
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x5658 && run->io.direction == KVM_EXIT_IO_IN) {
			struct kvm_regs *r = &run->s.regs.regs;
			uint32_t v = 0xFFFFFFFFu;
			if ((uint32_t)r->rax == MAGIC && (uint16_t)r->rcx == 10) {
				v = 6;
				r->rax = 6;
				r->rbx = MAGIC;
				r->rcx = 2;
				run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
			}
			if (run->io.data_offset + 4 > k.run_size)
				goto out;
			memcpy((char *)run + run->io.data_offset, &v, 4);
			answered++;
			continue;
		}
		int g = guest_report(run);
		if (g == 1)
			break;
		if (g == 0)
			fprintf(stderr, "bare loop: unexpected exit %u\n", run->exit_reason);
		goto out;
	}
	uint64_t t1 = now_ns();
	if (answered != calls) {
		fprintf(stderr, "bare loop: %lu answers for %u calls\n", answered, calls);
		goto out;
	}
	*ns = (double)(t1 - t0) / calls;
	*ioctls_per_call = (double)ioctls / calls;
	rc = 0;
out:
	alarm(0);
	kvm_down(&k);
	return rc;
}

/* (b) through the library */
static int lib_loop(unsigned calls, int regs_mode, double *ns, double *ioctls_per_call, double *extra_per_call)
{
	struct kvmvm k;
	if (kvm_up(&k, calls, regs_mode) < 0)
		return -1;
	struct vmwkvm_sys_ops ops = *vmwkvm_sys_default_ops();
	ops.ioctl = counting_ioctl;
	vmwkvm_sys_set_ops(&ops);
	n_run = n_other = 0;
	struct vmwkvm_reply reply;
	memset(&reply, 0, sizeof(reply));
	reply.set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX | VMWKVM_REPLY_ECX;
	reply.eax = 6, reply.ebx = MAGIC, reply.ecx = 2;
	unsigned long answered = 0;
	int rc = -1;
	alarm_fired = 0;
	alarm(120);
	uint64_t t0 = now_ns();
	for (;;) {
		int r = vmwkvm_vcpu_run(k.lvcpu);
		if (r < 0) {
			if (r == -EINTR && !alarm_fired)
				continue;
			fprintf(stderr, "library loop: KVM_RUN: %s\n", alarm_fired ? "watchdog" : vmwkvm_strerror(r));
			goto out;
		}
		struct vmwkvm_call call;
		int d = vmwkvm_exit_decode(k.lvcpu, &call);
		if (d == VMWKVM_EXIT_CALL) {
			r = vmwkvm_exit_complete(k.lvcpu, &call, call.command == 10 ? &reply : NULL);
			if (r < 0)
				goto out;
			answered++;
			continue;
		}
		if (d == VMWKVM_EXIT_INVALID) {
			vmwkvm_exit_complete_invalid(k.lvcpu, &call);
			continue;
		}
		int g = d == VMWKVM_EXIT_NOT_BACKDOOR ? guest_report(k.run) : 0;
		if (g == 1)
			break;
		if (g == 0)
			fprintf(stderr, "library loop: unexpected exit %u (decode %d)\n", k.run->exit_reason, d);
		goto out;
	}
	uint64_t t1 = now_ns();
	if (answered != calls) {
		fprintf(stderr, "library loop: %lu answers for %u calls\n", answered, calls);
		goto out;
	}
	*ns = (double)(t1 - t0) / calls;
	*ioctls_per_call = (double)(n_run + n_other) / calls;
	*extra_per_call = (double)n_other / calls;
	rc = 0;
out:
	alarm(0);
	vmwkvm_sys_set_ops(NULL);
	kvm_down(&k);
	return rc;
}

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [--calls N] [--rounds R] [--micro-iters M]\n", argv0);
}

int main(int argc, char **argv)
{
	unsigned calls = 20000, rounds = 5;
	unsigned long micro_iters = 2000000;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--calls") && i + 1 < argc)
			calls = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--micro-iters") && i + 1 < argc)
			micro_iters = strtoul(argv[++i], NULL, 0);
		else {
			usage(argv[0]);
			return 1;
		}
	}
	if (calls == 0 || rounds == 0 || rounds > 16 || micro_iters == 0) {
		usage(argv[0]);
		return 1;
	}

	double m_lib, m_hand;
	if (micro(micro_iters, rounds, &m_lib, &m_hand) < 0)
		return 1;

	struct stat st;
	if (stat("/dev/kvm", &st) < 0) {
		printf("backdoor_rtt skipped: /dev/kvm absent (%s); only the microbenchmark ran\n", strerror(errno));
		return 0;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL); /* no SA_RESTART: KVM_RUN returns EINTR */

	double floor_v[16], sregs_v[16], lib_v[16], io_v[16];
	double floor_ioc = 0, sregs_ioc = 0, lib_ioc = 0, lib_extra = 0, io_ioc = 0, io_extra = 0;
	for (unsigned k = 0; k < rounds; k++) {
		if (bare_loop(calls, false, &floor_v[k], &floor_ioc) < 0)
			return 1;
		if (bare_loop(calls, true, &sregs_v[k], &sregs_ioc) < 0)
			return 1;
		if (lib_loop(calls, VMWKVM_REGS_SYNC, &lib_v[k], &lib_ioc, &lib_extra) < 0)
			return 1;
		if (lib_loop(calls, VMWKVM_REGS_IOCTL, &io_v[k], &io_ioc, &io_extra) < 0)
			return 1;
	}
	double fl = median(floor_v, rounds), sr = median(sregs_v, rounds), lb = median(lib_v, rounds),
	       io = median(io_v, rounds);
	printf("kvm: %u GETVERSION calls x %u rounds, median per call:\n", calls, rounds);
	printf("  bare sync-regs loop (floor): %.0f ns, %.2f ioctls/call\n", fl, floor_ioc);
	printf("  same + SREGS synced:         %.0f ns, %.2f ioctls/call (kernel cost of CPL/mode per exit)\n", sr,
	       sregs_ioc);
	printf("  library, sync regs:          %.0f ns, %.2f ioctls/call (%.2f besides KVM_RUN)\n", lb, lib_ioc,
	       lib_extra);
	printf("  library, ioctl mode:         %.0f ns, %.2f ioctls/call (%.2f besides KVM_RUN), ratio %.3f\n", io,
	       io_ioc, io_extra, io / fl);
	printf("backdoor_rtt floor_ns=%.0f lib_ns=%.0f ratio=%.3f\n", fl, lb, lb / fl);
	return 0;
}
