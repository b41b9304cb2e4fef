/*
 * vmwkvm-restore-demo: start a guest from a snapshot file lazily (post-copy style), built
 * only on libvmwkvm's public API.
 *
 * Guest RAM starts empty. Three MISSING handler ranges fill each page on its first touch:
 * page 0 gets the GDT, page 1 the checker guest (check_guest.S), every other page comes from
 * the snapshot file (written by vmwkvm-snapshot-demo, or made up with --make). The checker
 * vCPUs read all of the data area, check the pattern of ../snapshot-demo/snapfile.h in every
 * dword (or 0: not written before the snapshot), add the dwords up and report both through the exit ports (0xF4, 0xF7). The demo
 * exits 0 only if no dword breaks the pattern and every vCPU's sum equals the sum of the
 * same dwords in the file.
 *
 * --no-kvm runs the checker as host threads (their faults reach the same handlers).
 *
 * Usage: vmwkvm-restore-demo (--in FILE | --make FILE [--mem MiB]) [--vcpus N] [--no-kvm]
 *                            [--memfd] [--guest FILE] [--quiet]
 * Exit: 0 restored and checked, 1 failure, 2 usage, 77 /dev/kvm absent (or userfaultfd not
 * permitted).
 */
#include "../snapshot-demo/demo_vm.h"
#include "../snapshot-demo/snapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef VMWKVM_DEMO_GUEST
#define VMWKVM_DEMO_GUEST "check_guest.bin"
#endif
#define PORT_MISMATCH 0xf4
#define PORT_SUM 0xf7

static const char *opt_in, *opt_make, *opt_guest = VMWKVM_DEMO_GUEST;
static unsigned opt_mib = 16, opt_vcpus = 2;
static bool opt_nokvm, opt_memfd;

/* ------------------------------------------------------------------ --make */

static int make_snapshot(const char *path, size_t ram_size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	struct snap_header h;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, SNAP_MAGIC, 8);
	h.version = SNAP_VERSION;
	h.page_size = DEMO_PG;
	h.ram_size = ram_size;
	h.data_gpa = DEMO_DATA_GPA;
	h.nvcpu = 0;
	static uint8_t hdr[SNAP_DATA_OFFSET], page[DEMO_PG];
	memcpy(hdr, &h, sizeof(h));
	int e = 0;
	if (pwrite(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr))
		e = -EIO;
	for (size_t p = 0; !e && p < ram_size / DEMO_PG; p++) {
		uint32_t v = (uint32_t)p << 8 | (uint32_t)((p * 7 + 1) & 0xff);
		if (p * DEMO_PG < DEMO_DATA_GPA)
			memset(page, 0, sizeof(page));
		else
			for (size_t i = 0; i < DEMO_PG / 4; i++)
				memcpy(page + i * 4, &v, 4);
		if (pwrite(fd, page, DEMO_PG, (off_t)(SNAP_DATA_OFFSET + p * DEMO_PG)) != (ssize_t)DEMO_PG)
			e = -EIO;
	}
	if (!e && fsync(fd) < 0)
		e = -errno;
	close(fd);
	return e;
}

/* ------------------------------------------------------------------ fill handlers */

struct restore {
	int fd;
	size_t ram_size;
	uint8_t gdt[DEMO_PG];
	uint8_t code[DEMO_PG];
	uint8_t buf[DEMO_PG]; /* handlers run one at a time (the library's service thread) */
	atomic_ulong from_file, fixed;
	atomic_int err;
	uint32_t mismatches[DEMO_MAX_VCPUS], sums[DEMO_MAX_VCPUS];
	bool got_mismatch[DEMO_MAX_VCPUS], got_sum[DEMO_MAX_VCPUS];
};

/* page 0 (GDT) and page 1 (checker code): fixed contents */
static int fill_fixed(vmwkvm_memfault *mf, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
		      void *ctx)
{
	(void)mf;
	struct restore *r = ctx;
	const uint8_t *src = rec->gpa < DEMO_PG ? r->gdt : r->code;
	act->kind = VMWKVM_MF_ACT_FILL;
	act->data = src + (rec->gpa & (DEMO_PG - 1));
	atomic_fetch_add(&r->fixed, 1);
	return 0;
}

/* everything else: from the snapshot file */
static int fill_from_file(vmwkvm_memfault *mf, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
			  void *ctx)
{
	(void)mf;
	struct restore *r = ctx;
	if (rec->size > sizeof(r->buf) || rec->gpa + rec->size > r->ram_size)
		return -ERANGE;
	ssize_t n = pread(r->fd, r->buf, rec->size, (off_t)(SNAP_DATA_OFFSET + rec->gpa));
	if (n != (ssize_t)rec->size) {
		/* never leave the vCPU blocked: give it zeroes, the check then fails and says why */
		atomic_store(&r->err, n < 0 ? errno : EIO);
		act->kind = VMWKVM_MF_ACT_ZERO;
		return 0;
	}
	act->kind = VMWKVM_MF_ACT_FILL;
	act->data = r->buf;
	atomic_fetch_add(&r->from_file, 1);
	return 0;
}

/* ------------------------------------------------------------------ checkers */

static int on_exit_port(struct demo_vm *d, int cpu, struct kvm_run *run, void *ctx)
{
	(void)d;
	struct restore *r = ctx;
	if (run->exit_reason != KVM_EXIT_IO || run->io.direction != KVM_EXIT_IO_OUT || run->io.size != 4)
		return -EPROTO;
	uint32_t v;
	memcpy(&v, (uint8_t *)run + run->io.data_offset, 4);
	if (run->io.port == PORT_MISMATCH) {
		r->mismatches[cpu] = v;
		r->got_mismatch[cpu] = true;
		return 0;
	}
	if (run->io.port == PORT_SUM) {
		r->sums[cpu] = v;
		r->got_sum[cpu] = true;
		return 1; /* this vCPU is done */
	}
	return -EPROTO;
}

static int host_checker(struct demo_vm *d, int cpu, void *ctx)
{
	struct restore *r = ctx;
	uint32_t bad = 0, sum = 0;
	for (size_t p = DEMO_DATA_GPA / DEMO_PG + (size_t)cpu; p < d->ram_size / DEMO_PG; p += (size_t)d->nvcpu) {
		const uint32_t *w = (const uint32_t *)(const void *)(d->ram + p * DEMO_PG);
		for (size_t i = 0; i < DEMO_PG / 4; i++) {
			uint32_t v = __atomic_load_n(&w[i], __ATOMIC_RELAXED);
			sum += v;
			bad += v != 0 && (v >> 8) != p;
		}
	}
	r->mismatches[cpu] = bad;
	r->sums[cpu] = sum;
	r->got_mismatch[cpu] = r->got_sum[cpu] = true;
	return 0;
}

/* ------------------------------------------------------------------ main */

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s (--in FILE | --make FILE [--mem MiB]) [--vcpus N] [--no-kvm] [--memfd] [--guest FILE]"
		" [--quiet]\n",
		argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--in") && i + 1 < argc)
			opt_in = argv[++i];
		else if (!strcmp(a, "--make") && i + 1 < argc)
			opt_make = argv[++i];
		else if (!strcmp(a, "--mem") && i + 1 < argc)
			opt_mib = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(a, "--vcpus") && i + 1 < argc)
			opt_vcpus = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(a, "--guest") && i + 1 < argc)
			opt_guest = argv[++i];
		else if (!strcmp(a, "--no-kvm"))
			opt_nokvm = true;
		else if (!strcmp(a, "--memfd"))
			opt_memfd = true;
		else if (!strcmp(a, "--quiet") || !strcmp(a, "-q"))
			demo_quiet = true;
		else
			usage(argv[0]);
	}
	if ((!opt_in && !opt_make) || opt_vcpus < 1 || opt_vcpus > DEMO_MAX_VCPUS || opt_mib < 2 || opt_mib > 4096)
		usage(argv[0]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	vmwkvm_set_log(demo_on_log, NULL, VMWKVM_LOG_WARN);
	if (opt_make) {
		int e = make_snapshot(opt_make, (size_t)opt_mib << 20);
		if (e < 0) {
			fprintf(stderr, "%s: %s\n", opt_make, strerror(-e));
			return 1;
		}
		demo_say("made %s (%u MiB)\n", opt_make, opt_mib);
		if (!opt_in)
			opt_in = opt_make;
	}
	if (!opt_nokvm && access("/dev/kvm", F_OK) < 0) {
		fprintf(stderr, "vmwkvm-restore-demo: /dev/kvm is absent (%s); --no-kvm runs host threads instead\n",
			strerror(errno));
		return 77;
	}

	static struct restore r;
	r.fd = open(opt_in, O_RDONLY | O_CLOEXEC);
	struct snap_header h;
	if (r.fd < 0 || pread(r.fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
		fprintf(stderr, "%s: %s\n", opt_in, strerror(errno ? errno : EIO));
		return 1;
	}
	if (memcmp(h.magic, SNAP_MAGIC, 8) || h.version != SNAP_VERSION || h.page_size != DEMO_PG ||
	    h.data_gpa != DEMO_DATA_GPA || h.ram_size < 2 * DEMO_DATA_GPA || h.ram_size % DEMO_PG ||
	    h.ram_size > (4096ull << 20)) {
		fprintf(stderr, "%s: not a snapshot of these demos\n", opt_in);
		return 1;
	}
	r.ram_size = (size_t)h.ram_size;
	demo_gdt_page(r.gdt);
	if (!opt_nokvm) {
		long n = demo_read_file(opt_guest, r.code, sizeof(r.code));
		if (n <= 0) {
			fprintf(stderr, "cannot read the guest %s: %s\n", opt_guest, strerror(n < 0 ? (int)-n : EIO));
			return 1;
		}
	}

	struct demo_vm d;
	int e = demo_vm_create(&d, r.ram_size, opt_memfd, (int)opt_vcpus, !opt_nokvm);
	if (e < 0) {
		fprintf(stderr, "VM set-up failed: %s\n", strerror(-e));
		return 1;
	}
	struct vmwkvm_memfault_opts mo = { .sz = sizeof(mo), .flags = VMWKVM_MF_OPT_REQUIRE_UFFD };
	e = vmwkvm_memfault_new(d.lib_vm, &mo, &d.mf);
	if (e == -EPERM || e == -ENOSYS) {
		fprintf(stderr, "vmwkvm-restore-demo: lazy restore needs userfaultfd MISSING faults: %s\n",
			vmwkvm_strerror(e));
		return 77;
	}
	if (e < 0) {
		fprintf(stderr, "vmwkvm_memfault_new: %s\n", vmwkvm_strerror(e));
		return 1;
	}
	struct vmwkvm_mf_region reg = demo_vm_region(&d);
	struct vmwkvm_mf_range fixed = { .sz = sizeof(fixed), .gpa = 0, .size = 2 * DEMO_PG,
					 .access = VMWKVM_MF_ACCESS_MISSING, .fn = fill_fixed, .ctx = &r };
	struct vmwkvm_mf_range file = { .sz = sizeof(file), .gpa = 2 * DEMO_PG, .size = r.ram_size - 2 * DEMO_PG,
					.access = VMWKVM_MF_ACCESS_MISSING, .fn = fill_from_file, .ctx = &r };
	if ((e = vmwkvm_memfault_add_region(d.mf, &reg)) < 0 || (e = vmwkvm_memfault_add_range(d.mf, &fixed)) < 0 ||
	    (e = vmwkvm_memfault_add_range(d.mf, &file)) < 0 || (e = vmwkvm_memfault_start(d.mf)) < 0) {
		fprintf(stderr, "dispatcher set-up: %s\n", vmwkvm_strerror(e));
		return 1;
	}
	for (unsigned i = 0; i < opt_vcpus; i++)
		if ((e = demo_vcpu_regs(&d, (int)i, i, opt_vcpus, DEMO_DATA_GPA, (uint32_t)r.ram_size)) < 0) {
			fprintf(stderr, "KVM_SET_REGS: %s\n", strerror(-e));
			return 1;
		}
	d.on_exit = on_exit_port;
	d.host_fn = host_checker;
	d.ctx = &r;
	demo_say("vmwkvm-restore-demo: %s, %zu MiB, %u %s, RAM filled on first touch\n", opt_in, r.ram_size >> 20, opt_vcpus,
	         opt_nokvm ? "host threads" : "vCPUs");
	double t0 = demo_now_ms();
	if ((e = demo_vm_start(&d)) < 0) {
		fprintf(stderr, "starting the vCPUs: %s\n", strerror(-e));
		return 1;
	}
	int vr = demo_join_all(&d);
	double t1 = demo_now_ms();

	/* what the file says the sums are */
	int rc = 0;
	uint8_t *img = malloc(r.ram_size);
	if (!img || pread(r.fd, img, r.ram_size, (off_t)SNAP_DATA_OFFSET) != (ssize_t)r.ram_size) {
		fprintf(stderr, "reading %s failed\n", opt_in);
		rc = 1;
	}
	if (vr) {
		fprintf(stderr, "vCPU failure: %s\n", d.err[0] ? d.err : strerror(vr < 0 ? -vr : vr));
		rc = 1;
	}
	if (atomic_load(&r.err)) {
		fprintf(stderr, "reading %s: %s\n", opt_in, strerror(atomic_load(&r.err)));
		rc = 1;
	}
	for (unsigned c = 0; img && c < opt_vcpus; c++) {
		uint32_t sum = 0;
		for (size_t p = DEMO_DATA_GPA / DEMO_PG + c; p < r.ram_size / DEMO_PG; p += opt_vcpus)
			for (size_t i = 0; i < DEMO_PG / 4; i++) {
				uint32_t v;
				memcpy(&v, img + p * DEMO_PG + i * 4, 4);
				sum += v;
			}
		if (!r.got_mismatch[c] || !r.got_sum[c]) {
			fprintf(stderr, "vCPU %u did not report\n", c);
			rc = 1;
			continue;
		}
		demo_say("vCPU %u: %u dwords break the pattern, sum 0x%08x (file: 0x%08x)\n", c, r.mismatches[c], r.sums[c], sum);
		if (r.mismatches[c] || r.sums[c] != sum)
			rc = 1;
	}
	struct vmwkvm_mf_stats st = { .sz = sizeof(st) };
	vmwkvm_memfault_stats(d.mf, &st);
	demo_say("restore: %lu pages filled from the file and %lu fixed pages on first touch, %llu userfaultfd faults, "
	         "%.1f ms\n",
	         atomic_load(&r.from_file), atomic_load(&r.fixed), (unsigned long long)st.faults[VMWKVM_MF_SRC_UFFD], t1 - t0);
	demo_say("%s\n", rc ? "restore check FAILED" : "restore check passed: the guest saw the snapshot's memory");
	free(img);
	vmwkvm_memfault_free(d.mf);
	demo_vm_destroy(&d);
	close(r.fd);
	return rc;
}
