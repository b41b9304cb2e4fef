/*
 * vmwkvm-bench-memfault: what the memory-fault dispatcher costs, against baselines measured
 * in the same run.
 *
 *  wp_fault             one write fault on a write-protected page, round trip: a thread
 *                       writes one byte to each of N populated, write-protected anonymous
 *                       pages; each write blocks until the fault is served.
 *                         base: a bare userfaultfd loop written here (poll, read one
 *                               message, UFFDIO_WRITEPROTECT clear of the page);
 *                         lib:  the library's service thread with a WRITE handler that
 *                               answers UNPROTECT.
 *                       Per-fault time = (protected loop - unprotected loop) / N, median of
 *                       R alternating rounds. By default the writer and the serving thread
 *                       share one CPU (--no-pin: not pinned; cross-CPU wake-ups then
 *                       dominate, see kvm-uapi-notes section 9). The bulk benchmarks below
 *                       run unpinned.
 *  wp_fault_guest       (only with /dev/kvm) the same with a guest vCPU doing the writes
 *                       (bench_guest.S, flat 32-bit), so KVM takes the faults.
 *  protect_gib          write-protect 1 GiB of populated 4 KiB-page anonymous RAM:
 *                         base: mprotect(PROT_READ); lib: vmwkvm_memfault_write_protect().
 *                       Absolute times are printed too.
 *  snapshot_throughput  lazy snapshot of 1 GiB while a writer thread keeps writing at random
 *                       (pause, write-protect all, resume; saver threads save 2 MiB batches
 *                       and unprotect them; a fault on an unsaved page saves it first),
 *                       against memcpy() of 1 GiB; each copy is checked against an eager
 *                       copy taken at the pause (exit 1 if it differs). With it:
 *                       snapshot_writer (the writer's rate during the snapshot against its
 *                       idle rate), snapshot_cpu (CPU time against memcpy's, telling the
 *                       cost apart from a busy machine's scheduling), fault_floor and
 *                       snapshot_fork (what kernel-resolved faults would allow); all of it
 *                       again with THP-backed RAM, labelled _thp. See bench_snapshot.c.
 *
 * The last lines have the form `name base_<unit>=<n> lib_<unit>=<n> ratio=<lib/base>`
 * (snapshot_writer: base_kps/lib_kps, writes per second; its ratio is during/idle).
 * Memory: --mib MiB of guest RAM plus twice that for the copies (default 1024), and for
 * the fork reference that again.
 *
 * Usage: vmwkvm-bench-memfault [--pages N] [--rounds R] [--mib M] [--no-pin] [--skip-gib]
 *        [--snapshot-only] [--snap-threads N] [--snap-batch PAGES] [--snap-runs R] [--no-thp]
 *        [--no-fork] [--snap-pin-writer] [--snap-own-copy]
 */
#include "bench_memfault.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static unsigned opt_pages = 4096, opt_rounds = 7;
unsigned opt_mib = 1024;
static bool opt_pin = true, opt_skip_gib, opt_snapshot_only;
static struct snap_cfg snap_cfg = { .threads = 2, .batch_pages = 512, .runs = 3, .thp = true, .fork_ref = true };

double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

_Noreturn void die(const char *what, int err)
{
	fprintf(stderr, "%s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static cpu_set_t all_cpus;

static void pin_self(void)
{
	if (!opt_pin)
		return;
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(0, &s);
	if (sched_setaffinity(0, sizeof(s), &s) < 0)
		die("sched_setaffinity", errno);
}

static void unpin_self(void)
{
	if (opt_pin && sched_setaffinity(0, sizeof(all_cpus), &all_cpus) < 0)
		die("sched_setaffinity", errno);
}

uint8_t *anon_mem(size_t len, bool populate, bool thp)
{
	uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap", errno);
	/* 4 KiB pages unless asked: the case that costs */
	madvise(p, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	if (populate)
		memset(p, 0x11, len);
	return p;
}

/* ------------------------------------------------------------------ bare userfaultfd loop */

struct bare {
	int uffd, stopfd;
	pthread_t th;
	unsigned long served;
};

static int bare_open(void)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	int fd = -1;
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		close(dev);
	}
	if (fd < 0)
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP };
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

static void *bare_main(void *p)
{
	struct bare *b = p;
	struct pollfd pf[2] = { { .fd = b->uffd, .events = POLLIN }, { .fd = b->stopfd, .events = POLLIN } };
	for (;;) {
		if (poll(pf, 2, -1) < 0 && errno != EINTR)
			break;
		if (pf[1].revents)
			break;
		struct uffd_msg m[16];
		ssize_t n = read(b->uffd, m, sizeof(m));
		if (n <= 0)
			continue;
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(m[0]); i++) {
			if (m[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			struct uffdio_writeprotect w = {
				.range = { .start = m[i].arg.pagefault.address & ~(PG - 1), .len = PG }, .mode = 0 };
			if (ioctl(b->uffd, UFFDIO_WRITEPROTECT, &w) < 0)
				die("bare UFFDIO_WRITEPROTECT", errno);
			b->served++;
		}
	}
	return NULL;
}

static void bare_start(struct bare *b, uint8_t *buf, size_t len)
{
	b->uffd = bare_open();
	if (b->uffd < 0)
		die("bare userfaultfd", b->uffd);
	b->stopfd = (int)syscall(SYS_eventfd2, 0, O_CLOEXEC);
	struct uffdio_register reg = { .range = { .start = (uintptr_t)buf, .len = len }, .mode = UFFDIO_REGISTER_MODE_WP };
	if (ioctl(b->uffd, UFFDIO_REGISTER, &reg) < 0)
		die("bare UFFDIO_REGISTER", errno);
	struct uffdio_writeprotect w = { .range = { .start = (uintptr_t)buf, .len = len },
					 .mode = UFFDIO_WRITEPROTECT_MODE_WP };
	if (ioctl(b->uffd, UFFDIO_WRITEPROTECT, &w) < 0)
		die("bare UFFDIO_WRITEPROTECT", errno);
	b->served = 0;
	if (pthread_create(&b->th, NULL, bare_main, b))
		die("pthread_create", EAGAIN);
}

static void bare_stop(struct bare *b)
{
	uint64_t one = 1;
	if (write(b->stopfd, &one, sizeof(one)) < 0)
		die("eventfd", errno);
	pthread_join(b->th, NULL);
	close(b->stopfd);
	close(b->uffd);
}

/* ------------------------------------------------------------------ library */

static atomic_ulong lib_faults;

static int unprotect_handler(vmwkvm_memfault *mf, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
			     void *ctx)
{
	(void)mf;
	(void)rec;
	(void)ctx;
	atomic_fetch_add_explicit(&lib_faults, 1, memory_order_relaxed);
	act->kind = VMWKVM_MF_ACT_UNPROTECT;
	return 0;
}

vmwkvm_memfault *lib_start(uint8_t *buf, size_t len, vmwkvm_mf_handler fn, void *ctx, bool protect, bool service)
{
	vmwkvm_memfault *mf;
	struct vmwkvm_memfault_opts o = { .sz = sizeof(o), .flags = VMWKVM_MF_OPT_REQUIRE_UFFD };
	int r = vmwkvm_memfault_new(NULL, &o, &mf);
	if (r < 0)
		die("vmwkvm_memfault_new", r);
	struct vmwkvm_mf_region reg = { .sz = sizeof(reg), .gpa = GPA_DATA, .size = len, .host = buf,
					.kind = VMWKVM_MF_MEM_ANON };
	if ((r = vmwkvm_memfault_add_region(mf, &reg)) < 0)
		die("vmwkvm_memfault_add_region", r);
	struct vmwkvm_mf_range rg = { .sz = sizeof(rg), .gpa = GPA_DATA, .size = len,
				      .access = VMWKVM_MF_ACCESS_WRITE, .fn = fn, .ctx = ctx };
	if ((r = vmwkvm_memfault_add_range(mf, &rg)) < 0)
		die("vmwkvm_memfault_add_range", r);
	if (protect && (r = vmwkvm_memfault_write_protect(mf, GPA_DATA, len)) < 0)
		die("vmwkvm_memfault_write_protect", r);
	if (service && (r = vmwkvm_memfault_start(mf)) < 0)
		die("vmwkvm_memfault_start", r);
	return mf;
}

/* ------------------------------------------------------------------ wp_fault (host thread) */

static double write_pages(uint8_t *buf, unsigned n)
{
	double t0 = now_ns();
	for (unsigned i = 0; i < n; i++)
		*(volatile uint8_t *)(buf + (size_t)i * PG) = (uint8_t)i;
	return now_ns() - t0;
}

static void bench_wp_fault(double *base_out, double *lib_out)
{
	unsigned n = opt_pages;
	size_t len = (size_t)n * PG;
	uint8_t *buf = anon_mem(len, true, false);
	double base[64], lib[64];
	unsigned R = opt_rounds < 64 ? opt_rounds : 64;
	for (unsigned r = 0; r < R; r++) {
		double plain = write_pages(buf, n);
		struct bare b;
		bare_start(&b, buf, len);
		double t = write_pages(buf, n);
		bare_stop(&b);
		if (b.served != n)
			fprintf(stderr, "bare loop served %lu faults for %u pages\n", b.served, n);
		base[r] = (t - plain) / n;

		plain = write_pages(buf, n);
		atomic_store(&lib_faults, 0);
		vmwkvm_memfault *mf = lib_start(buf, len, unprotect_handler, NULL, true, true);
		t = write_pages(buf, n);
		vmwkvm_memfault_stop(mf);
		vmwkvm_memfault_free(mf);
		if (atomic_load(&lib_faults) != n)
			fprintf(stderr, "library served %lu faults for %u pages\n", atomic_load(&lib_faults), n);
		lib[r] = (t - plain) / n;
	}
	*base_out = median(base, R);
	*lib_out = median(lib, R);
	munmap(buf, len);
}

/* ------------------------------------------------------------------ wp_fault_guest (KVM) */

static volatile sig_atomic_t alarm_fired;
static void on_alarm(int s)
{
	(void)s;
	alarm_fired = 1;
}

struct kvmb {
	int kvm, vm, vcpu;
	struct kvm_run *run;
	size_t run_size;
	uint8_t *low; /* code + GDT, 1 MiB at GPA 0 */
	uint8_t *data;
};

static int kvmb_up(struct kvmb *k, uint8_t *data, size_t len)
{
	memset(k, 0, sizeof(*k));
	k->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (k->kvm < 0)
		return -errno;
	k->vm = ioctl(k->kvm, KVM_CREATE_VM, 0);
	if (k->vm < 0)
		return -errno;
	k->low = anon_mem(GPA_DATA, false, false);
	struct kvm_userspace_memory_region r0 = { .slot = 0, .guest_phys_addr = 0, .memory_size = GPA_DATA,
						  .userspace_addr = (uintptr_t)k->low };
	struct kvm_userspace_memory_region r1 = { .slot = 1, .guest_phys_addr = GPA_DATA, .memory_size = len,
						  .userspace_addr = (uintptr_t)data };
	if (ioctl(k->vm, KVM_SET_USER_MEMORY_REGION, &r0) < 0 || ioctl(k->vm, KVM_SET_USER_MEMORY_REGION, &r1) < 0)
		return -errno;
	FILE *f = fopen(VMWKVM_BENCH_GUEST, "rb");
	if (!f)
		return -errno;
	size_t got = fread(k->low + 0x1000, 1, 0x1000, f);
	fclose(f);
	if (!got)
		return -EIO;
	static const uint64_t gdt[3] = { 0, 0x00cf9b000000ffffull, 0x00cf93000000ffffull };
	memcpy(k->low + 0x500, gdt, sizeof(gdt));
	k->vcpu = ioctl(k->vm, KVM_CREATE_VCPU, 0);
	if (k->vcpu < 0)
		return -errno;
	int sz = ioctl(k->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (sz < 0)
		return -errno;
	k->run_size = (size_t)sz;
	k->run = mmap(NULL, k->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, k->vcpu, 0);
	if (k->run == MAP_FAILED)
		return -errno;
	struct kvm_sregs s;
	if (ioctl(k->vcpu, KVM_GET_SREGS, &s) < 0)
		return -errno;
	struct kvm_segment cs = { .base = 0, .limit = 0xffffffff, .selector = 0x08, .type = 0xb, .present = 1,
				  .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1 };
	struct kvm_segment ds = cs;
	ds.selector = 0x10;
	ds.type = 0x3;
	s.cs = cs;
	s.ds = s.es = s.fs = s.gs = s.ss = ds;
	s.gdt.base = 0x500;
	s.gdt.limit = sizeof(gdt) - 1;
	s.cr0 = (s.cr0 | 1) & ~(1ull << 31);
	if (ioctl(k->vcpu, KVM_SET_SREGS, &s) < 0)
		return -errno;
	k->data = data;
	return 0;
}

static void kvmb_down(struct kvmb *k)
{
	if (k->run && k->run != MAP_FAILED)
		munmap(k->run, k->run_size);
	if (k->vcpu > 0)
		close(k->vcpu);
	if (k->vm > 0)
		close(k->vm);
	if (k->kvm > 0)
		close(k->kvm);
	if (k->low)
		munmap(k->low, GPA_DATA);
}

/* Run the guest once over n pages; returns ns, or a negative errno. */
static double kvmb_pass(struct kvmb *k, unsigned n)
{
	struct kvm_regs regs;
	memset(&regs, 0, sizeof(regs));
	regs.rip = 0x1000;
	regs.rflags = 2;
	regs.rsi = GPA_DATA;
	regs.rcx = n;
	regs.rsp = 0x800;
	if (ioctl(k->vcpu, KVM_SET_REGS, &regs) < 0)
		return -errno;
	alarm_fired = 0;
	alarm(60);
	double t0 = now_ns();
	for (;;) {
		int r = ioctl(k->vcpu, KVM_RUN, 0);
		if (r < 0) {
			int e = errno;
			if (e == EINTR && !alarm_fired)
				continue;
			alarm(0);
			return -e;
		}
		if (k->run->exit_reason == KVM_EXIT_IO && k->run->io.port == 0xf4)
			break;
		if (k->run->exit_reason != KVM_EXIT_INTR) {
			alarm(0);
			fprintf(stderr, "guest: unexpected exit %u\n", k->run->exit_reason);
			return -EIO;
		}
	}
	double t = now_ns() - t0;
	alarm(0);
	return t;
}

static int bench_wp_fault_guest(double *base_out, double *lib_out)
{
	unsigned n = opt_pages;
	size_t len = (size_t)n * PG;
	uint8_t *buf = anon_mem(len, true, false);
	struct kvmb k;
	int e = kvmb_up(&k, buf, len);
	if (e < 0) {
		kvmb_down(&k);
		munmap(buf, len);
		return e;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
	double base[64], lib[64];
	unsigned R = opt_rounds < 64 ? opt_rounds : 64;
	for (unsigned r = 0; r < R; r++) {
		double plain = kvmb_pass(&k, n);
		struct bare b;
		bare_start(&b, buf, len);
		double t = kvmb_pass(&k, n);
		bare_stop(&b);
		if (plain < 0 || t < 0)
			return (int)(plain < 0 ? plain : t);
		base[r] = (t - plain) / n;
		plain = kvmb_pass(&k, n);
		vmwkvm_memfault *mf = lib_start(buf, len, unprotect_handler, NULL, true, true);
		t = kvmb_pass(&k, n);
		vmwkvm_memfault_stop(mf);
		vmwkvm_memfault_free(mf);
		if (plain < 0 || t < 0)
			return (int)(plain < 0 ? plain : t);
		lib[r] = (t - plain) / n;
	}
	*base_out = median(base, R);
	*lib_out = median(lib, R);
	kvmb_down(&k);
	munmap(buf, len);
	return 0;
}

/* ------------------------------------------------------------------ protect_gib */

static void bench_protect(double *base_out, double *lib_out, double *populate_ms)
{
	size_t len = (size_t)opt_mib << 20;
	double t0 = now_ns();
	uint8_t *buf = anon_mem(len, true, false);
	*populate_ms = (now_ns() - t0) / 1e6;
	unsigned R = opt_rounds < 64 ? opt_rounds : 64;
	if (R > 5)
		R = 5;
	double base[64], lib[64];
	vmwkvm_memfault *mf = lib_start(buf, len, unprotect_handler, NULL, false, false);
	for (unsigned r = 0; r < R; r++) {
		t0 = now_ns();
		if (mprotect(buf, len, PROT_READ) < 0)
			die("mprotect", errno);
		base[r] = now_ns() - t0;
		if (mprotect(buf, len, PROT_READ | PROT_WRITE) < 0)
			die("mprotect", errno);
		t0 = now_ns();
		int e = vmwkvm_memfault_write_protect(mf, GPA_DATA, len);
		lib[r] = now_ns() - t0;
		if (e < 0)
			die("vmwkvm_memfault_write_protect", e);
		if ((e = vmwkvm_memfault_unprotect(mf, GPA_DATA, len)) < 0)
			die("vmwkvm_memfault_unprotect", e);
	}
	vmwkvm_memfault_free(mf);
	munmap(buf, len);
	*base_out = median(base, R);
	*lib_out = median(lib, R);
}

/* ------------------------------------------------------------------ main */

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [--pages N] [--rounds R] [--mib M] [--no-pin] [--skip-gib] [--snapshot-only]\n"
		"          [--snap-threads N (1-16)] [--snap-batch PAGES] [--snap-runs R (1-16)] [--no-thp] [--no-fork]\n"
		"          [--snap-pin-writer] [--snap-own-copy]\n",
		argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--pages") && i + 1 < argc)
			opt_pages = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			opt_rounds = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--mib") && i + 1 < argc)
			opt_mib = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--no-pin"))
			opt_pin = false;
		else if (!strcmp(argv[i], "--skip-gib"))
			opt_skip_gib = true;
		else if (!strcmp(argv[i], "--snapshot-only"))
			opt_snapshot_only = true;
		else if (!strcmp(argv[i], "--snap-threads") && i + 1 < argc)
			snap_cfg.threads = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--snap-batch") && i + 1 < argc)
			snap_cfg.batch_pages = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--snap-runs") && i + 1 < argc)
			snap_cfg.runs = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--no-thp"))
			snap_cfg.thp = false;
		else if (!strcmp(argv[i], "--no-fork"))
			snap_cfg.fork_ref = false;
		else if (!strcmp(argv[i], "--snap-pin-writer"))
			snap_cfg.pin_writer = true;
		else if (!strcmp(argv[i], "--snap-own-copy"))
			snap_cfg.own_copy = true;
		else
			usage(argv[0]);
	}
	if (!opt_pages || !opt_rounds || !opt_mib || !snap_cfg.threads || snap_cfg.threads > 16 ||
	    !snap_cfg.batch_pages || !snap_cfg.runs || snap_cfg.runs > 16)
		usage(argv[0]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("vmwkvm-bench-memfault %s: %u pages x %u rounds (median), %u MiB RAM, fault writer and server %s\n",
	       vmwkvm_version_string(), opt_pages, opt_rounds, opt_mib, opt_pin ? "pinned to CPU 0" : "not pinned");
	sched_getaffinity(0, sizeof(all_cpus), &all_cpus);
	pin_self(); /* threads created later inherit the mask: the library's service thread too */

	double wb = 0, wl = 0;
	if (!opt_snapshot_only) {
		bench_wp_fault(&wb, &wl);
		printf("wp_fault (host thread): bare uffd loop %.0f ns/fault, library %.0f ns/fault\n", wb, wl);
		double gb = 0, gl = 0;
		int ge = bench_wp_fault_guest(&gb, &gl);
		if (ge == 0)
			printf("wp_fault_guest base_ns=%.0f lib_ns=%.0f ratio=%.3f\n", gb, gl, gl / gb);
		else
			printf("wp_fault_guest skipped: %s\n", ge == -ENOENT ? "/dev/kvm absent" : strerror(-ge));
	}

	double pb = 0, pl = 0, pop = 0;
	static char snap_summary[2048];
	unpin_self(); /* bulk work below: every CPU (the savers and the writer run in parallel) */
	if (!opt_skip_gib) {
		if (!opt_snapshot_only) {
			bench_protect(&pb, &pl, &pop);
			printf("protect_gib: %u MiB populated in %.0f ms; mprotect(PROT_READ) %.2f ms, library "
			       "write_protect %.2f ms\n", opt_mib, pop, pb / 1e6, pl / 1e6);
		}
		if (bench_snapshot_all(&snap_cfg, snap_summary, sizeof(snap_summary)) < 0)
			return 1;
	}
	if (!opt_snapshot_only)
		printf("wp_fault base_ns=%.0f lib_ns=%.0f ratio=%.3f\n", wb, wl, wl / wb);
	if (!opt_skip_gib) {
		if (!opt_snapshot_only)
			printf("protect_gib base_ns=%.0f lib_ns=%.0f ratio=%.3f\n", pb, pl, pl / pb);
		fputs(snap_summary, stdout);
	}
	return 0;
}
