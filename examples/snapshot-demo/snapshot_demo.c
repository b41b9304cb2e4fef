/*
 * vmwkvm-snapshot-demo: a lazy (copy-on-write) snapshot of a running guest, built only on
 * libvmwkvm's public API.
 *
 * A guest with two or more vCPUs (snap_guest.S) keeps writing the pattern of snapfile.h over
 * its RAM. The demo then
 *   1. pauses the vCPUs (with --verify, takes an eager copy of RAM: the reference),
 *   2. write-protects all of RAM through the memory-fault dispatcher (userfaultfd WP where
 *      the kernel allows it, else mprotect(), whose guest writes come back as MMIO exits on
 *      hosts whose KVM emulates guest code),
 *   3. resumes the vCPUs at once,
 *   4. saves pages in the background (--savers threads, default 2, this one included: each
 *      takes 2 MiB batches, copies runs of up to 256 KiB with vmwkvm_memfault_save(), which
 *      gives never-populated pages as zeroes without reading them, writes them out, and
 *      unprotects a batch with one call once every page of it is saved), while a guest write to a page not saved yet reaches the WRITE handler, which
 *      saves that page first and only then lets the write proceed (if a saver is writing
 *      that page out at the moment, the write waits for its unprotect); the savers then
 *      take that page's batch next and go on ahead of the guest,
 *   5. writes the RAM image to the snapshot file as pages are saved.
 * With --verify it exits 0 only if the file equals guest memory at the instant of
 * protection (the eager copy). The file can be restored by vmwkvm-restore-demo.
 *
 * --no-kvm runs the same with host threads in place of the vCPUs (the library sees their
 * faults as it sees KVM's), so the demo also works where /dev/kvm is missing.
 *
 * Usage: vmwkvm-snapshot-demo [--out FILE] [--mem MiB] [--vcpus N] [--run-ms MS] [--savers N] [--verify]
 *                             [--no-kvm] [--memfd] [--mprotect] [--guest FILE] [--quiet]
 * Exit: 0 done (and verified with --verify), 1 failure, 2 usage, 77 /dev/kvm absent.
 */
#include "demo_vm.h"
#include "snapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef VMWKVM_DEMO_GUEST
#define VMWKVM_DEMO_GUEST "snap_guest.bin"
#endif

static const char *opt_out = "vmwkvm-snapshot.bin", *opt_guest = VMWKVM_DEMO_GUEST;
#define DEMO_MAX_SAVERS 8

static unsigned opt_mib = 16, opt_vcpus = 2, opt_run_ms = 300, opt_savers = 2;
static bool opt_verify, opt_nokvm, opt_memfd, opt_mprotect;

/* ------------------------------------------------------------------ saving */

#define SAVE_BATCH 512 /* pages a saver takes at once (2 MiB): one unprotect call */
#define SAVE_RUN 64    /* pages copied and written out in one go (256 KiB): a racing fault waits for one run */
#define NO_BATCH SIZE_MAX

struct saver {
	struct demo_vm *d;
	int fd;
	size_t npages, nbatch;
	_Atomic uint8_t *st;    /* per page: 0 unsaved, 1 being saved, 2 saved */
	_Atomic uint8_t *taken; /* per batch: taken by a saver */
	atomic_size_t cursor;   /* next batch in address order */
	atomic_size_t hint;     /* batch of the last page a guest write saved first, or NO_BATCH */
	atomic_ulong by_fault, by_saver, zero_pages, retries;
	atomic_int err;
};

static void write_out(struct saver *s, size_t p, const uint8_t *from, size_t len)
{
	off_t off = (off_t)(SNAP_DATA_OFFSET + p * DEMO_PG);
	size_t done = 0;
	while (done < len) {
		ssize_t w = pwrite(s->fd, from + done, len - done, off + (off_t)done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			atomic_store(&s->err, w < 0 ? errno : EIO);
			return;
		}
		done += (size_t)w;
	}
}

/* Copy page p (write-protected, populated) into buf. The guest cannot change it meanwhile
 * (a write waits for the handler), an order the kernel keeps and a race detector cannot
 * see: hence relaxed atomic loads. */
static void copy_page(struct saver *s, size_t p, uint64_t *buf)
{
	const uint64_t *g = (const uint64_t *)(const void *)(s->d->ram + p * DEMO_PG);
	for (size_t j = 0; j < DEMO_PG / 8; j++)
		buf[j] = __atomic_load_n(&g[j], __ATOMIC_RELAXED);
}

/* WRITE handler: a guest write is about to change a page; save it first. Runs on the
 * library's service thread (userfaultfd) or on the vCPU thread (MMIO exits). */
static int on_write(vmwkvm_memfault *mf, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act, void *ctx)
{
	(void)mf;
	struct saver *s = ctx;
	uint64_t first = rec->gpa / DEMO_PG, last = (rec->gpa + rec->size - 1) / DEMO_PG;
	bool wait = false;
	for (uint64_t p = first; p <= last && p < s->npages; p++) {
		uint8_t expect = 0;
		if (atomic_compare_exchange_strong(&s->st[p], &expect, 1)) {
			uint64_t copy[DEMO_PG / 8];
			/* an unpopulated page reads as zeroes; touching it from here would fault again */
			if (rec->flags & VMWKVM_MF_FLAG_UNPOPULATED)
				memset(copy, 0, sizeof(copy));
			else
				copy_page(s, p, copy);
			write_out(s, p, (const uint8_t *)copy, DEMO_PG);
			atomic_store(&s->st[p], 2);
			atomic_fetch_add(&s->by_fault, 1);
			/* copy ahead of the writer: a saver takes this page's batch next */
			atomic_store_explicit(&s->hint, p / SAVE_BATCH, memory_order_relaxed);
		} else if (expect != 2) {
			wait = true; /* a saver is writing it out; its unprotect lets the write in */
		}
	}
	if (wait) {
		atomic_fetch_add_explicit(&s->retries, 1, memory_order_relaxed);
		act->kind = VMWKVM_MF_ACT_RETRY;
		return 0;
	}
	act->kind = VMWKVM_MF_ACT_UNPROTECT;
	return 0;
}

static size_t take(struct saver *s, size_t b)
{
	if (b < s->nbatch && !atomic_load_explicit(&s->taken[b], memory_order_relaxed) &&
	    !atomic_exchange(&s->taken[b], 1))
		return b;
	return NO_BATCH;
}

/* The next batch: where the guest last wrote, else the one after prev, else address order. */
static size_t next_batch(struct saver *s, size_t prev)
{
	size_t h = atomic_exchange_explicit(&s->hint, NO_BATCH, memory_order_relaxed);
	size_t b = h != NO_BATCH ? take(s, h) : NO_BATCH;
	if (b == NO_BATCH && prev != NO_BATCH)
		b = take(s, prev + 1);
	while (b == NO_BATCH) {
		size_t c = atomic_fetch_add(&s->cursor, 1);
		if (c >= s->nbatch)
			return NO_BATCH;
		b = take(s, c);
	}
	return b;
}

/* Save the unsaved pages of batch b in runs, then unprotect the whole batch at once. */
static void save_batch(struct saver *s, size_t b, uint8_t *buf)
{
	size_t first = b * SAVE_BATCH, end = first + SAVE_BATCH < s->npages ? first + SAVE_BATCH : s->npages;
	for (size_t p = first; p < end;) {
		size_t run = p;
		while (run < end && run - p < SAVE_RUN) {
			uint8_t expect = 0;
			if (!atomic_compare_exchange_strong(&s->st[run], &expect, 1))
				break;
			run++;
		}
		if (run == p) {
			p++; /* saved, or being saved by a fault */
			continue;
		}
		/* never-populated pages come back as zeroes without being read (each read would
		 * be a MISSING fault through the library's missing guard) */
		int z = vmwkvm_memfault_save(s->d->mf, p * DEMO_PG, (run - p) * DEMO_PG, buf, 0);
		if (z < 0) {
			fprintf(stderr, "vmwkvm_memfault_save: %s\n", vmwkvm_strerror(z));
			atomic_store(&s->err, -z);
			return;
		}
		atomic_fetch_add_explicit(&s->zero_pages, (unsigned long)z, memory_order_relaxed);
		write_out(s, p, buf, (run - p) * DEMO_PG);
		for (size_t q = p; q < run; q++)
			atomic_store(&s->st[q], 2);
		atomic_fetch_add(&s->by_saver, run - p);
		p = run;
	}
	/* a fault may still be writing one out: unprotecting now would let its write in */
	for (size_t p = first; p < end; p++)
		while (atomic_load(&s->st[p]) != 2)
			sched_yield();
	int e = vmwkvm_memfault_unprotect(s->d->mf, first * DEMO_PG, (end - first) * DEMO_PG);
	if (e < 0) {
		fprintf(stderr, "unprotect: %s\n", vmwkvm_strerror(e));
		atomic_store(&s->err, -e);
	}
}

static void *saver_main(void *arg)
{
	struct saver *s = arg;
	uint8_t *buf = malloc(SAVE_RUN * DEMO_PG);
	if (!buf) {
		atomic_store(&s->err, ENOMEM);
		return NULL;
	}
	for (size_t b = next_batch(s, NO_BATCH); b != NO_BATCH && !atomic_load(&s->err); b = next_batch(s, b))
		save_batch(s, b, buf);
	free(buf);
	return NULL;
}

/* ------------------------------------------------------------------ host vCPUs (--no-kvm) */

static int host_writer(struct demo_vm *d, int cpu, void *ctx)
{
	(void)ctx;
	size_t npages = d->ram_size / DEMO_PG;
	for (uint32_t pass = 1; !demo_should_stop(d); pass++) {
		for (size_t p = DEMO_DATA_GPA / DEMO_PG + (size_t)cpu; p < npages && !demo_should_stop(d);
		     p += (size_t)d->nvcpu) {
			demo_pause_point(d, cpu);
			uint32_t v = (uint32_t)p << 8 | (pass & 0xff);
			uint32_t *w = (uint32_t *)(void *)(d->ram + p * DEMO_PG);
			for (size_t i = 0; i < DEMO_PG / 4; i++)
				__atomic_store_n(&w[i], v, __ATOMIC_RELAXED);
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ main */

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [--out FILE] [--mem MiB] [--vcpus N] [--run-ms MS] [--savers N] [--verify] [--no-kvm]\n"
		"          [--memfd] [--mprotect] [--guest FILE] [--quiet]\n",
		argv0);
	exit(2);
}

static int check_pattern(const uint8_t *img, size_t ram_size, size_t *written)
{
	size_t bad = 0;
	*written = 0;
	for (size_t p = DEMO_DATA_GPA / DEMO_PG; p < ram_size / DEMO_PG; p++) {
		const uint32_t *w = (const uint32_t *)(const void *)(img + p * DEMO_PG);
		bool any = false;
		for (size_t i = 0; i < DEMO_PG / 4; i++) {
			if (w[i] == 0)
				continue;
			any = true;
			if (w[i] >> 8 != p)
				bad++;
		}
		*written += any;
	}
	return bad ? -EINVAL : 0;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--out") && i + 1 < argc)
			opt_out = argv[++i];
		else if (!strcmp(a, "--mem") && i + 1 < argc)
			opt_mib = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(a, "--vcpus") && i + 1 < argc)
			opt_vcpus = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(a, "--run-ms") && i + 1 < argc)
			opt_run_ms = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(a, "--savers") && i + 1 < argc)
			opt_savers = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(a, "--guest") && i + 1 < argc)
			opt_guest = argv[++i];
		else if (!strcmp(a, "--verify"))
			opt_verify = true;
		else if (!strcmp(a, "--no-kvm"))
			opt_nokvm = true;
		else if (!strcmp(a, "--memfd"))
			opt_memfd = true;
		else if (!strcmp(a, "--mprotect"))
			opt_mprotect = true;
		else if (!strcmp(a, "--quiet") || !strcmp(a, "-q"))
			demo_quiet = true;
		else
			usage(argv[0]);
	}
	if (opt_mib < 2 || opt_mib > 4096 || opt_vcpus < 2 || opt_vcpus > DEMO_MAX_VCPUS || !opt_savers ||
	    opt_savers > DEMO_MAX_SAVERS)
		usage(argv[0]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	vmwkvm_set_log(demo_on_log, NULL, VMWKVM_LOG_WARN);
	if (!opt_nokvm && access("/dev/kvm", F_OK) < 0) {
		fprintf(stderr, "vmwkvm-snapshot-demo: /dev/kvm is absent (%s); --no-kvm runs host threads instead\n",
			strerror(errno));
		return 77;
	}

	size_t ram_size = (size_t)opt_mib << 20, npages = ram_size / DEMO_PG;
	struct demo_vm d;
	int e = demo_vm_create(&d, ram_size, opt_memfd, (int)opt_vcpus, !opt_nokvm);
	if (e < 0) {
		fprintf(stderr, "VM set-up failed: %s\n", strerror(-e));
		return 1;
	}
	static uint8_t page[DEMO_PG];
	demo_gdt_page(page);
	memcpy(d.ram, page, DEMO_PG);
	if (!opt_nokvm) {
		long n = demo_read_file(opt_guest, d.ram + DEMO_ENTRY, DEMO_PG);
		if (n <= 0) {
			fprintf(stderr, "cannot read the guest %s: %s\n", opt_guest, strerror(n < 0 ? (int)-n : EIO));
			return 1;
		}
		for (unsigned i = 0; i < opt_vcpus; i++)
			if ((e = demo_vcpu_regs(&d, (int)i, i, opt_vcpus, DEMO_DATA_GPA, (uint32_t)ram_size)) < 0) {
				fprintf(stderr, "KVM_SET_REGS: %s\n", strerror(-e));
				return 1;
			}
	}

	/* the dispatcher: one region (all of RAM), one handler range (all of RAM, writes) */
	struct vmwkvm_memfault_opts mo = { .sz = sizeof(mo), .mechanism = opt_mprotect ? VMWKVM_MF_MECH_MPROTECT : 0 };
	if ((e = vmwkvm_memfault_new(d.lib_vm, &mo, &d.mf)) < 0) {
		fprintf(stderr, "vmwkvm_memfault_new: %s\n", vmwkvm_strerror(e));
		return 1;
	}
	struct saver s = { .d = &d, .npages = npages, .nbatch = (npages + SAVE_BATCH - 1) / SAVE_BATCH,
			   .hint = NO_BATCH };
	s.st = calloc(npages, 1);
	s.taken = calloc(s.nbatch, 1);
	struct vmwkvm_mf_region reg = demo_vm_region(&d);
	struct vmwkvm_mf_range rg = { .sz = sizeof(rg), .gpa = 0, .size = ram_size, .access = VMWKVM_MF_ACCESS_WRITE,
				      .fn = on_write, .ctx = &s };
	if (!s.st || !s.taken || (e = vmwkvm_memfault_add_region(d.mf, &reg)) < 0 || (e = vmwkvm_memfault_add_range(d.mf, &rg)) < 0) {
		fprintf(stderr, "dispatcher set-up: %s\n", vmwkvm_strerror(e ? e : -ENOMEM));
		return 1;
	}
	int mech = vmwkvm_memfault_mechanism(d.mf, 0);
	if (opt_nokvm && mech != VMWKVM_MF_MECH_UFFD_WP) {
		/* host threads writing to mprotect()ed memory would just crash */
		fprintf(stderr, "--no-kvm needs userfaultfd write protection, which is not available here\n");
		return 77;
	}
	if (mech == VMWKVM_MF_MECH_UFFD_WP && (e = vmwkvm_memfault_start(d.mf)) < 0) {
		fprintf(stderr, "vmwkvm_memfault_start: %s\n", vmwkvm_strerror(e));
		return 1;
	}
	s.fd = open(opt_out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (s.fd < 0 || ftruncate(s.fd, (off_t)(SNAP_DATA_OFFSET + ram_size)) < 0) {
		fprintf(stderr, "%s: %s\n", opt_out, strerror(errno));
		return 1;
	}
	d.host_fn = host_writer;
	demo_say("vmwkvm-snapshot-demo: %u MiB %s RAM, %u %s, write protection by %s\n", opt_mib,
	         opt_memfd ? "memfd" : "anonymous", opt_vcpus, opt_nokvm ? "host threads" : "vCPUs",
	         mech == VMWKVM_MF_MECH_UFFD_WP ? "userfaultfd" : "mprotect (guest writes arrive as MMIO exits)");
	if ((e = demo_vm_start(&d)) < 0) {
		fprintf(stderr, "starting the vCPUs: %s\n", strerror(-e));
		return 1;
	}
	struct timespec ts = { opt_run_ms / 1000, (long)(opt_run_ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);

	/* 1-3: pause, (eager copy), protect, resume */
	uint8_t *eager = NULL;
	double t0 = demo_now_ms();
	demo_pause_all(&d);
	double t_paused = demo_now_ms();
	if (opt_verify) {
		eager = malloc(ram_size);
		if (!eager) {
			fprintf(stderr, "no memory for the eager copy\n");
			return 1;
		}
		memcpy(eager, d.ram, ram_size);
	}
	double t_copy = demo_now_ms();
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	e = vmwkvm_memfault_write_protect(d.mf, 0, ram_size);
	double t_prot = demo_now_ms();
	demo_resume_all(&d);
	double t_resumed = demo_now_ms();
	if (e < 0) {
		fprintf(stderr, "write protection failed: %s\n", vmwkvm_strerror(e));
		demo_stop_all(&d);
		return 1;
	}

	/* 4-5: save in the background: --savers threads (this one included) */
	pthread_t savers[DEMO_MAX_SAVERS];
	unsigned nsav = 0;
	for (; nsav + 1 < opt_savers; nsav++)
		if (pthread_create(&savers[nsav], NULL, saver_main, &s))
			break;
	saver_main(&s);
	for (unsigned i = 0; i < nsav; i++)
		pthread_join(savers[i], NULL);
	double t_saved = demo_now_ms();
	/* every batch is unprotected; one unprotect of all of RAM also drops the library's
	 * missing guard, so the guest's first touches of never-populated pages stop being
	 * userfaultfd round trips */
	if (!atomic_load(&s.err) && (e = vmwkvm_memfault_unprotect(d.mf, 0, ram_size)) < 0) {
		fprintf(stderr, "unprotect: %s\n", vmwkvm_strerror(e));
		atomic_store(&s.err, -e);
	}
	struct snap_header h;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, SNAP_MAGIC, 8);
	h.version = SNAP_VERSION;
	h.page_size = DEMO_PG;
	h.ram_size = ram_size;
	h.data_gpa = DEMO_DATA_GPA;
	h.nvcpu = opt_vcpus;
	h.taken_ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
	if (pwrite(s.fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || fsync(s.fd) < 0)
		atomic_store(&s.err, errno ? errno : EIO);

	/* the guest keeps running on unprotected memory */
	ts.tv_sec = opt_run_ms / 2000;
	ts.tv_nsec = (long)((opt_run_ms / 2) % 1000) * 1000000L;
	nanosleep(&ts, NULL);
	int vr = demo_stop_all(&d);
	unsigned long mmio = 0;
	for (unsigned i = 0; i < opt_vcpus; i++)
		mmio += d.vcpu[i].mf_exits;
	struct vmwkvm_mf_stats st = { .sz = sizeof(st) };
	vmwkvm_memfault_stats(d.mf, &st);

	demo_say("snapshot: downtime %.2f ms (pause %.2f, %sprotect %.2f), saved in %.1f ms after resume (%.0f MB/s)\n",
	         (t_paused - t0) + (t_resumed - t_copy), t_paused - t0, opt_verify ? "eager copy for --verify excluded, " : "", t_prot - t_copy,
	         t_saved - t_resumed, ram_size / 1e6 / ((t_saved - t_resumed) / 1e3));
	demo_say("          %lu pages saved because the guest wrote them first, %lu by %u background saver(s) (%lu never "
	         "populated: zeroes, not read); %lu write(s) waited for a saver; %llu userfaultfd faults, %lu MMIO exits "
	         "on RAM\n",
	         atomic_load(&s.by_fault), atomic_load(&s.by_saver), opt_savers, atomic_load(&s.zero_pages),
	         atomic_load(&s.retries), (unsigned long long)st.faults[VMWKVM_MF_SRC_UFFD], mmio);

	int rc = 0;
	if (vr) {
		fprintf(stderr, "vCPU failure: %s\n", d.err[0] ? d.err : strerror(vr < 0 ? -vr : vr));
		rc = 1;
	}
	if (atomic_load(&s.err)) {
		fprintf(stderr, "writing %s: %s\n", opt_out, strerror(atomic_load(&s.err)));
		rc = 1;
	}
	/* the file: read it back */
	uint8_t *img = malloc(ram_size);
	if (!img || pread(s.fd, img, ram_size, (off_t)SNAP_DATA_OFFSET) != (ssize_t)ram_size) {
		fprintf(stderr, "reading %s back failed\n", opt_out);
		rc = 1;
	} else {
		size_t written = 0;
		if (check_pattern(img, ram_size, &written) < 0) {
			fprintf(stderr, "the snapshot holds dwords the guest never writes\n");
			rc = 1;
		}
		demo_say("%s: %zu of %zu data pages written by the guest at the snapshot\n", opt_out, written,
		         (size_t)(npages - DEMO_DATA_GPA / DEMO_PG));
		if (opt_verify) {
			size_t diff = 0;
			for (size_t p = 0; p < npages; p++)
				diff += memcmp(img + p * DEMO_PG, eager + p * DEMO_PG, DEMO_PG) != 0;
			if (diff) {
				fprintf(stderr, "verify: %zu pages of %s differ from memory at the instant of protection\n",
					diff, opt_out);
				rc = 1;
			} else {
				demo_say("verify: %s equals guest memory at the instant of protection (eager copy at the pause)\n",
				         opt_out);
			}
			/* and the guest went on writing after the snapshot */
			size_t changed = 0;
			for (size_t p = DEMO_DATA_GPA / DEMO_PG; p < npages; p++)
				changed += memcmp(d.ram + p * DEMO_PG, eager + p * DEMO_PG, DEMO_PG) != 0;
			demo_say("verify: %zu pages changed since the snapshot (the guest kept running)\n", changed);
		}
	}
	free(img);
	free(eager);
	close(s.fd);
	vmwkvm_memfault_free(d.mf);
	free((void *)s.st);
	free((void *)s.taken);
	demo_vm_destroy(&d);
	return rc;
}
