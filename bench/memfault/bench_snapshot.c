/*
 * Lazy snapshot benchmarks of vmwkvm-bench-memfault (see bench_memfault.c for the others).
 *
 * RAM: --mib MiB of private anonymous memory with 4 KiB pages (and, labelled "_thp", the
 * same with transparent huge pages, as QEMU backs guest RAM). A writer thread keeps writing
 * 8 bytes at uniformly random places of all of RAM (xorshift). One snapshot run:
 *   pause the writer, take an eager copy (the reference, not timed), write-protect all of
 *   RAM through the library, resume the writer, and save every page into a second buffer;
 *   the copy must equal the eager copy byte for byte (exit 1 otherwise).
 * Saving (copy before write: a page's old content is saved before any write to it lands):
 *   - saver threads (--snap-threads, the calling thread is one of them) take batches of
 *     --snap-batch pages (default 512 = 2 MiB): in each batch they claim the unsaved pages,
 *     copy contiguous runs of at most 64 pages with vmwkvm_memfault_save() and streaming
 *     stores (--snap-own-copy: the bench's own streaming copy, no pagemap lookup), and when
 *     every page of the batch is saved clear the protection of the whole batch with one
 *     unprotect call;
 *   - the library's service thread runs the WRITE handler for a write to an unsaved page:
 *     it saves that page and lets the write proceed; if a saver is copying that page at
 *     the moment, the fault is answered RETRY (the saver's unprotect wakes the writer);
 *   - copy ahead of the writer: a fault tells the savers where the writer is; the next
 *     saver to take a batch takes that one and continues ahead of it.
 * Baseline: memcpy() of all of RAM by one thread, median of the runs.
 *
 * Also, as references for what limits the writer:
 *   - fault_floor: first write to each page (random order) of RAM write-protected with
 *     UFFD_FEATURE_WP_ASYNC (the kernel resolves the fault itself, no userspace, no copy),
 *     and after fork() (the kernel copies the page before the write), against the same
 *     writes to unprotected RAM;
 *   - snapshot_fork: the snapshot taken by a forked child (memcpy in the child), i.e. the
 *     kernel's copy-on-write doing the copy before write; verified like the lazy one.
 * For a writer writing at random at rate 1/c whose first write to each unsaved page waits F,
 * the expected rate during the snapshot is ln(1 + F/c) / F (independent of the saver's
 * speed); the bench prints that prediction from the measured F next to the measured rate.
 */
#include "bench_memfault.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define RUN_PAGES 64 /* pages copied by one memcpy() at most (256 KiB): a racing fault waits for one run */
#define NO_HINT SIZE_MAX

/* ------------------------------------------------------------------ writer */

struct rwriter {
	uint8_t *mem;
	size_t npages;
	atomic_int pause, paused, stop;
	atomic_ulong writes;
};

static void *rwriter_main(void *p)
{
	struct rwriter *w = p;
	uint64_t x = 88172645463325252ull;
	unsigned long n = 0;
	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		if (atomic_load_explicit(&w->pause, memory_order_relaxed)) {
			atomic_store(&w->paused, 1);
			while (atomic_load(&w->pause))
				sched_yield();
			atomic_store(&w->paused, 0);
			continue;
		}
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		size_t page = x % w->npages;
		*(volatile uint64_t *)(void *)(w->mem + page * PG + ((x >> 40) % (PG / 8)) * 8) = x;
		if ((++n & 1023) == 0)
			atomic_fetch_add_explicit(&w->writes, 1024, memory_order_relaxed);
	}
	return NULL;
}

static void writer_pause(struct rwriter *w)
{
	atomic_store(&w->pause, 1);
	while (!atomic_load(&w->paused))
		sched_yield();
}

static void writer_resume(struct rwriter *w)
{
	atomic_store(&w->pause, 0);
}

/* Writes per second over ms milliseconds. */
/* CPU time of the process, of the calling thread, of thread t (ns). */
static double cpu_ns(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static double thread_cpu_ns(pthread_t t)
{
	clockid_t clk;
	return pthread_getcpuclockid(t, &clk) == 0 ? cpu_ns(clk) : 0;
}

static double writer_rate(struct rwriter *w, unsigned ms)
{
	unsigned long w0 = atomic_load(&w->writes);
	double t0 = now_ns();
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
	return (double)(atomic_load(&w->writes) - w0) / ((now_ns() - t0) / 1e9);
}

/* ------------------------------------------------------------------ the lazy snapshot */

/* Copy whole pages with streaming (non-temporal) stores: the saved copy is not read again
 * soon, and memcpy() uses plain stores below its (multi-MiB) threshold, which makes copying
 * in 256 KiB runs cost ~40 % more CPU than one big memcpy() here. */
static void copy_pages(uint8_t *dst, const uint8_t *src, size_t len)
{
#if defined(__x86_64__)
	__m128i *d = (__m128i *)(void *)dst;
	const __m128i *s = (const __m128i *)(const void *)src;
	for (size_t i = 0; i < len / 16; i += 4) {
		__m128i a = _mm_load_si128(s + i), b = _mm_load_si128(s + i + 1);
		__m128i c = _mm_load_si128(s + i + 2), e = _mm_load_si128(s + i + 3);
		_mm_stream_si128(d + i, a);
		_mm_stream_si128(d + i + 1, b);
		_mm_stream_si128(d + i + 2, c);
		_mm_stream_si128(d + i + 3, e);
	}
	_mm_sfence(); /* the stores are visible before the page is marked saved */
#else
	memcpy(dst, src, len);
#endif
}

struct snap {
	uint8_t *mem, *copy;
	size_t npages, batch, nbatch;
	_Atomic uint8_t *st;     /* per page: 0 unsaved, 1 being saved, 2 saved */
	_Atomic uint8_t *taken;  /* per batch: taken by a saver */
	atomic_size_t cursor;    /* next batch in address order */
	atomic_size_t hint;      /* batch of the last page a write fault saved, or NO_HINT */
	atomic_ulong by_fault, retries, calls;
	vmwkvm_memfault *mf;
	bool lib_save; /* copy runs with vmwkvm_memfault_save() (else the bench's own streaming copy) */
	atomic_int err;
};

static int snap_handler(vmwkvm_memfault *mf, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
			void *ctx)
{
	(void)mf;
	struct snap *s = ctx;
	size_t p = (size_t)(rec->gpa - GPA_DATA) / PG;
	atomic_fetch_add_explicit(&s->calls, 1, memory_order_relaxed);
	uint8_t expect = 0;
	if (atomic_compare_exchange_strong(&s->st[p], &expect, 1)) {
		memcpy(s->copy + p * PG, s->mem + p * PG, PG);
		atomic_store(&s->st[p], 2);
		atomic_fetch_add_explicit(&s->by_fault, 1, memory_order_relaxed);
		atomic_store_explicit(&s->hint, p / s->batch, memory_order_relaxed);
	} else if (expect != 2) {
		/* a saver is copying this page: its unprotect of the batch wakes the writer */
		atomic_fetch_add_explicit(&s->retries, 1, memory_order_relaxed);
		act->kind = VMWKVM_MF_ACT_RETRY;
		return 0;
	}
	act->kind = VMWKVM_MF_ACT_UNPROTECT;
	return 0;
}

/* Claim a batch: b itself if free, else NO_HINT. */
static size_t take(struct snap *s, size_t b)
{
	if (b < s->nbatch && !atomic_load_explicit(&s->taken[b], memory_order_relaxed) &&
	    !atomic_exchange(&s->taken[b], 1))
		return b;
	return NO_HINT;
}

/* The next batch for a saver that just saved prev (NO_HINT at the start): where the writer
 * was last seen, else the one after prev (copying ahead), else the next in address order. */
static size_t next_batch(struct snap *s, size_t prev)
{
	size_t h = atomic_exchange_explicit(&s->hint, NO_HINT, memory_order_relaxed);
	size_t b = h != NO_HINT ? take(s, h) : NO_HINT;
	if (b == NO_HINT && prev != NO_HINT)
		b = take(s, prev + 1);
	while (b == NO_HINT) {
		size_t c = atomic_fetch_add(&s->cursor, 1);
		if (c >= s->nbatch)
			return NO_HINT;
		b = take(s, c);
	}
	return b;
}

static void save_batch(struct snap *s, size_t b)
{
	size_t first = b * s->batch, end = first + s->batch < s->npages ? first + s->batch : s->npages;
	for (size_t p = first; p < end;) {
		/* claim a run of unsaved pages and copy it in one go */
		size_t run = p;
		while (run < end && run - p < RUN_PAGES) {
			uint8_t expect = 0;
			if (!atomic_compare_exchange_strong(&s->st[run], &expect, 1))
				break;
			run++;
		}
		if (run > p) {
			if (!s->lib_save) {
				copy_pages(s->copy + p * PG, s->mem + p * PG, (run - p) * PG);
			} else {
				int e = vmwkvm_memfault_save(s->mf, GPA_DATA + p * PG, (run - p) * PG, s->copy + p * PG,
							     VMWKVM_MF_SAVE_STREAM);
				if (e < 0)
					atomic_store(&s->err, e);
			}
			for (size_t q = p; q < run; q++)
				atomic_store_explicit(&s->st[q], 2, memory_order_release);
			p = run;
		} else {
			p++; /* saved or being saved by a fault */
		}
	}
	/* a fault may still be copying one of them: unprotecting would let its write in */
	for (size_t p = first; p < end; p++)
		while (atomic_load(&s->st[p]) != 2)
			sched_yield();
	int e = vmwkvm_memfault_unprotect(s->mf, GPA_DATA + first * PG, (end - first) * PG);
	if (e < 0)
		atomic_store(&s->err, e);
}

static void *saver_main(void *p)
{
	struct snap *s = p;
	for (size_t b = next_batch(s, NO_HINT); b != NO_HINT; b = next_batch(s, b))
		save_batch(s, b);
	return NULL;
}

struct run_result {
	double ns, rate, faults, retries;
	double cpu_ns; /* CPU time the snapshot took: the whole process's, less the writer's */
	double huge_mib; /* THP: MiB of RAM in huge pages at protection */
};

static void snap_reset(struct snap *s)
{
	memset((void *)s->st, 0, s->npages);
	memset((void *)s->taken, 0, s->nbatch);
	atomic_store(&s->cursor, 0);
	atomic_store(&s->hint, NO_HINT);
	atomic_store(&s->by_fault, 0);
	atomic_store(&s->retries, 0);
	atomic_store(&s->calls, 0);
}

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

/* THP-backed RAM: the writer's faults split huge pages (the fault unprotects 4 KiB); put
 * them back together before the next snapshot, as khugepaged would in time. Returns the
 * MiB of the process's anonymous memory in huge pages afterwards (only RAM asks for them). */
static double thp_restore(uint8_t *mem, size_t len)
{
	madvise(mem, len, MADV_COLLAPSE); /* best effort */
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	double kib = 0;
	char line[256];
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "AnonHugePages: %lf", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib / 1024;
}

/* One lazy snapshot; returns 0 or -EIO when the copy differs from the eager one. */
static int lazy_run(const struct snap_cfg *cfg, bool cfg_thp, struct snap *s, struct rwriter *w, pthread_t wth,
		    uint8_t *eager, bool quiet, struct run_result *out)
{
	size_t len = s->npages * PG;
	snap_reset(s);
	writer_pause(w);
	out->huge_mib = cfg_thp ? thp_restore(s->mem, len) : 0;
	memcpy(eager, s->mem, len);
	double c0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID) - thread_cpu_ns(wth);
	double t0 = now_ns();
	int e = vmwkvm_memfault_write_protect(s->mf, GPA_DATA, len);
	if (e < 0)
		die("vmwkvm_memfault_write_protect", e);
	if (!quiet)
		writer_resume(w);
	unsigned long w0 = atomic_load(&w->writes);
	pthread_t th[16];
	unsigned n = cfg->threads - 1;
	for (unsigned i = 0; i < n; i++)
		if (pthread_create(&th[i], NULL, saver_main, s))
			die("pthread_create", EAGAIN);
	saver_main(s);
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	out->ns = now_ns() - t0;
	out->rate = (double)(atomic_load(&w->writes) - w0) / (out->ns / 1e9);
	out->cpu_ns = cpu_ns(CLOCK_PROCESS_CPUTIME_ID) - thread_cpu_ns(wth) - c0;
	out->retries = (double)atomic_load(&s->retries);
	out->faults = (double)(atomic_load(&s->calls) - atomic_load(&s->retries));
	if (atomic_load(&s->err))
		die("vmwkvm_memfault_save/unprotect", atomic_load(&s->err));
	writer_pause(w); /* the check reads while nothing writes */
	int bad = memcmp(s->copy, eager, len) != 0;
	writer_resume(w);
	return bad ? -EIO : 0;
}

/* One snapshot by a forked child; the copy goes to shared memory. */
static int fork_run(uint8_t *mem, uint8_t *shared, size_t len, bool thp, struct rwriter *w, uint8_t *eager,
		    struct run_result *out)
{
	writer_pause(w);
	out->huge_mib = thp ? thp_restore(mem, len) : 0;
	memcpy(eager, mem, len);
	double t0 = now_ns();
	pid_t pid = fork();
	if (pid == 0) {
		memcpy(shared, mem, len);
		_exit(0);
	}
	if (pid < 0)
		die("fork", errno);
	writer_resume(w);
	unsigned long w0 = atomic_load(&w->writes);
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid", errno);
	out->ns = now_ns() - t0;
	out->rate = (double)(atomic_load(&w->writes) - w0) / (out->ns / 1e9);
	out->faults = out->retries = 0;
	writer_pause(w);
	int bad = !WIFEXITED(st) || WEXITSTATUS(st) || memcmp(shared, eager, len) != 0;
	writer_resume(w);
	return bad ? -EIO : 0;
}

/* ------------------------------------------------------------------ fault floor */

/* ns per first write to each page, in a random page order. */
static double touch_pages(uint8_t *mem, size_t np)
{
	double t0 = now_ns();
	for (size_t i = 0; i < np; i++) {
		size_t q = (size_t)((i * 2654435761ull) % np);
		*(volatile uint8_t *)(mem + q * PG + (i * 8 % PG)) = (uint8_t)i;
	}
	return (now_ns() - t0) / (double)np;
}

struct floor {
	double plain, wp_async, cow;
};

static void fault_floor(size_t len, bool thp, struct floor *f)
{
	size_t np = len / PG;
	uint8_t *mem = anon_mem(len, true, thp);
	f->plain = touch_pages(mem, np);
	f->wp_async = f->cow = 0;
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP | (1ull << 15) };
	if (fd >= 0 && ioctl(fd, UFFDIO_API, &api) == 0) {
		struct uffdio_register reg = { .range = { (uintptr_t)mem, len }, .mode = UFFDIO_REGISTER_MODE_WP };
		struct uffdio_writeprotect wp = { .range = { (uintptr_t)mem, len }, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
		if (ioctl(fd, UFFDIO_REGISTER, &reg) == 0 && ioctl(fd, UFFDIO_WRITEPROTECT, &wp) == 0)
			f->wp_async = touch_pages(mem, np) - f->plain;
	}
	if (fd >= 0)
		close(fd);
	pid_t pid = fork();
	if (pid == 0) {
		pause();
		_exit(0);
	}
	if (pid > 0) {
		f->cow = touch_pages(mem, np) - f->plain;
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	munmap(mem, len);
}

/* ------------------------------------------------------------------ one mode */

struct mode_result {
	double memcpy_ns, lazy_ns, lazy_rate, fork_ns, fork_rate, idle_rate, faults, retries;
	double lazy_rate_min, lazy_rate_max, lazy_ns_min, lazy_ns_max;
	double memcpy_cpu_ns, lazy_cpu_ns, quiet_ns, quiet_cpu_ns;
	double huge_mib; /* THP: least MiB in huge pages at the protection of a run */
};

static int cmp_run(const void *a, const void *b)
{
	double x = ((const struct run_result *)a)->ns, y = ((const struct run_result *)b)->ns;
	return x < y ? -1 : x > y;
}

static int run_mode(const struct snap_cfg *cfg, bool thp, struct mode_result *m)
{
	size_t len = (size_t)opt_mib << 20, np = len / PG;
	uint8_t *mem = anon_mem(len, true, thp);
	uint8_t *copy = anon_mem(len, true, false);
	uint8_t *eager = anon_mem(len, true, false);
	unsigned R = cfg->runs < 16 ? cfg->runs : 16;
	double base[16], base_cpu[16];
	for (unsigned r = 0; r < R; r++) {
		double c0 = cpu_ns(CLOCK_THREAD_CPUTIME_ID), t0 = now_ns();
		memcpy(copy, mem, len);
		base[r] = now_ns() - t0;
		base_cpu[r] = cpu_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
	}
	m->memcpy_ns = median(base, R);
	m->memcpy_cpu_ns = median(base_cpu, R);

	struct snap s = { .mem = mem, .copy = copy, .npages = np, .batch = cfg->batch_pages, .lib_save = !cfg->own_copy };
	s.nbatch = (np + s.batch - 1) / s.batch;
	s.st = calloc(np, 1);
	s.taken = calloc(s.nbatch, 1);
	if (!s.st || !s.taken)
		die("calloc", ENOMEM);
	/* --snap-pin-writer: the writer and the library's service thread (both created now,
	 * inheriting this thread's affinity) share the last CPU, as a VMM may pin a vCPU with
	 * its fault service, so that a fault needs no cross-CPU wake-up; the savers (this
	 * thread and those it creates) get the other CPUs */
	cpu_set_t all, one, rest;
	sched_getaffinity(0, sizeof(all), &all);
	rest = all;
	if (cfg->pin_writer) {
		CPU_ZERO(&one);
		int last = -1;
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &all))
				last = c;
		CPU_SET(last, &one);
		if (CPU_COUNT(&all) > 1)
			CPU_CLR(last, &rest);
		sched_setaffinity(0, sizeof(one), &one);
	}
	s.mf = lib_start(mem, len, snap_handler, &s, false, true);
	struct rwriter w = { .mem = mem, .npages = np };
	pthread_t th;
	if (pthread_create(&th, NULL, rwriter_main, &w))
		die("pthread_create", EAGAIN);
	sched_setaffinity(0, sizeof(rest), &rest);
	double idle[16];
	struct run_result lz[16], fk[16];
	int bad = 0;
	for (unsigned r = 0; r < R && !bad; r++) {
		idle[r] = writer_rate(&w, 200);
		bad = lazy_run(cfg, thp, &s, &w, th, eager, false, &lz[r]);
	}
	/* the same with the writer kept paused: what the saving itself costs */
	struct run_result q;
	if (!bad)
		bad = lazy_run(cfg, thp, &s, &w, th, eager, true, &q);
	m->quiet_ns = q.ns;
	m->quiet_cpu_ns = q.cpu_ns;
	vmwkvm_memfault_stop(s.mf);
	vmwkvm_memfault_free(s.mf);
	m->idle_rate = median(idle, R);
	qsort(lz, R, sizeof(lz[0]), cmp_run);
	m->huge_mib = lz[0].huge_mib;
	for (unsigned r = 1; r < R; r++)
		m->huge_mib = fmin(m->huge_mib, lz[r].huge_mib);
	m->lazy_ns = lz[R / 2].ns;
	m->lazy_cpu_ns = lz[R / 2].cpu_ns;
	m->lazy_rate = lz[R / 2].rate;
	m->faults = lz[R / 2].faults;
	m->retries = lz[R / 2].retries;
	m->lazy_ns_min = lz[0].ns;
	m->lazy_ns_max = lz[R - 1].ns;
	m->lazy_rate_min = m->lazy_rate_max = lz[0].rate;
	for (unsigned r = 1; r < R; r++) {
		m->lazy_rate_min = fmin(m->lazy_rate_min, lz[r].rate);
		m->lazy_rate_max = fmax(m->lazy_rate_max, lz[r].rate);
	}

	m->fork_ns = m->fork_rate = 0;
	if (cfg->fork_ref && !bad) {
		/* the copy the child writes must outlive it: shared memory; the rest need not be forked */
		uint8_t *shared = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (shared == MAP_FAILED)
			die("mmap", errno);
		memset(shared, 0x11, len);
		madvise(copy, len, MADV_DONTFORK);
		madvise(eager, len, MADV_DONTFORK);
		for (unsigned r = 0; r < R && !bad; r++)
			bad = fork_run(mem, shared, len, thp, &w, eager, &fk[r]);
		if (!bad) {
			qsort(fk, R, sizeof(fk[0]), cmp_run);
			m->fork_ns = fk[R / 2].ns;
			m->fork_rate = fk[R / 2].rate;
		}
		munmap(shared, len);
	}
	sched_setaffinity(0, sizeof(all), &all);
	atomic_store(&w.stop, 1);
	pthread_join(th, NULL);
	free((void *)s.st);
	free((void *)s.taken);
	munmap(mem, len);
	munmap(copy, len);
	munmap(eager, len);
	return bad ? -EIO : 0;
}

/* Expected writer rate with a wait of f ns on each first write to an unsaved page. */
static double model_rate(double f_ns, double idle_rate)
{
	double c = 1e9 / idle_rate;
	return f_ns > 0 ? log1p(f_ns / c) / (f_ns / 1e9) : idle_rate;
}

int bench_snapshot_all(const struct snap_cfg *cfg, char *summary, size_t summary_len)
{
	size_t at = 0;
	summary[0] = 0;
	for (int thp = 0; thp <= (cfg->thp ? 1 : 0); thp++) {
		const char *label = thp ? "_thp" : "";
		const char *pages = thp ? "THP-backed" : "4 KiB-page";
		struct floor f;
		fault_floor((size_t)(opt_mib < 256 ? opt_mib : 256) << 20, thp, &f);
		struct mode_result m;
		int e = run_mode(cfg, thp, &m);
		if (e < 0) {
			fprintf(stderr, "snapshot_throughput%s: the snapshot differs from memory at protection\n", label);
			return e;
		}
		double mib = opt_mib;
		char huge[96] = "";
		if (thp)
			snprintf(huge, sizeof(huge), "; at least %.0f MiB of RAM in huge pages at each protection "
				 "(MADV_COLLAPSE before each run)", m.huge_mib);
		printf("snapshot_throughput%s: %u MiB %s RAM, %u saver thread(s), %u-page batches, median of %u runs: "
		       "memcpy %.0f MB/s (%.0f ms), lazy snapshot %.0f MB/s (%.0f ms; runs %.0f-%.0f ms); "
		       "snapshot equals memory at protection in every run%s\n",
		       label, opt_mib, pages, cfg->threads, cfg->batch_pages, cfg->runs, mib * 1.048576 / (m.memcpy_ns / 1e9),
		       m.memcpy_ns / 1e6, mib * 1.048576 / (m.lazy_ns / 1e9), m.lazy_ns / 1e6, m.lazy_ns_min / 1e6,
		       m.lazy_ns_max / 1e6, huge);
		printf("snapshot_cpu%s: CPU time (all threads but the writer's; the machine may be shared): memcpy %.0f ms, "
		       "lazy snapshot %.0f ms (median run); with the writer paused the lazy snapshot takes %.0f ms "
		       "(%.0f ms CPU)\n", label, m.memcpy_cpu_ns / 1e6, m.lazy_cpu_ns / 1e6, m.quiet_ns / 1e6,
		       m.quiet_cpu_ns / 1e6);
		/* the writer's waits: time not spent writing, per fault */
		double blocked = m.lazy_ns - m.lazy_rate * (m.lazy_ns / 1e9) * (1e9 / m.idle_rate);
		double fwait = m.faults > 0 ? blocked / m.faults : 0;
		printf("snapshot_writer%s: writer %.0f k writes/s idle, %.0f k/s during the lazy snapshot (runs %.0f-%.0f k/s); "
		       "%.0f write faults (+%.0f retried while a saver copied the page), about %.1f us waited per fault; "
		       "model ln(1+F/c)/F with that F: %.0f k/s\n",
		       label, m.idle_rate / 1e3, m.lazy_rate / 1e3, m.lazy_rate_min / 1e3, m.lazy_rate_max / 1e3, m.faults,
		       m.retries, fwait / 1e3, model_rate(fwait, m.idle_rate) / 1e3);
		printf("fault_floor%s: first write to a page costs %.0f ns unprotected, +%.0f ns write-protected with "
		       "UFFD_FEATURE_WP_ASYNC (kernel resolves, no copy), +%.0f ns after fork() (kernel copies); "
		       "best writer ratio with one such wait per page: %.3f (WP_ASYNC), %.3f (fork)\n",
		       label, f.plain, f.wp_async, f.cow, model_rate(f.wp_async, m.idle_rate) / m.idle_rate,
		       model_rate(f.cow, m.idle_rate) / m.idle_rate);
		if (m.fork_ns > 0)
			printf("snapshot_fork%s: a forked child copies RAM (the kernel copies each page before its first "
			       "write): %.0f ms, writer %.0f k/s during it; equals memory at fork\n",
			       label, m.fork_ns / 1e6, m.fork_rate / 1e3);
		at += (size_t)snprintf(summary + at, summary_len - at,
				       "snapshot_throughput%s base_ns=%.0f lib_ns=%.0f ratio=%.3f\n"
				       "snapshot_writer%s base_kps=%.0f lib_kps=%.0f ratio=%.4f\n"
				       "snapshot_cpu%s base_ns=%.0f lib_ns=%.0f ratio=%.3f\n",
				       label, m.memcpy_ns, m.lazy_ns, m.lazy_ns / m.memcpy_ns, label, m.idle_rate / 1e3,
				       m.lazy_rate / 1e3, m.lazy_rate / m.idle_rate, label, m.memcpy_cpu_ns, m.lazy_cpu_ns,
				       m.lazy_cpu_ns / m.memcpy_cpu_ns);
		if (m.fork_ns > 0 && at < summary_len)
			at += (size_t)snprintf(summary + at, summary_len - at,
					       "snapshot_fork%s base_ns=%.0f lib_ns=%.0f ratio=%.3f writer_ratio=%.4f\n",
					       label, m.memcpy_ns, m.fork_ns, m.fork_ns / m.memcpy_ns, m.fork_rate / m.idle_rate);
		if (at >= summary_len)
			break;
	}
	return 0;
}
