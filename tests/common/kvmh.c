/* kvmh: harness for real-KVM tests (see kvmh.h). Talks to the kernel with plain ioctl(2). */
#include "kvmh.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef VMWKVM_GUEST_DIR
#error "VMWKVM_GUEST_DIR must be defined by the build"
#endif

static volatile sig_atomic_t watchdog_fired;

static void watchdog_handler(int sig)
{
	(void)sig;
	watchdog_fired = 1;
}

unsigned kvmh_timeout_scale(void)
{
	/* set by CTest from the build's VMWKVM_TEST_TIMEOUT_SCALE (sanitizer builds are slower,
	 * and slower still in a nested KVM under TCG); 1 when run by hand */
	const char *e = getenv("VMWKVM_TEST_TIMEOUT_SCALE");
	unsigned long v = e ? strtoul(e, NULL, 10) : 1;
	return v >= 1 && v <= 100 ? (unsigned)v : 1;
}

void kvmh_watchdog_arm(unsigned seconds)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = watchdog_handler;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: KVM_RUN must come back with EINTR */
	sigaction(SIGALRM, &sa, NULL);
	watchdog_fired = 0;
	alarm(seconds * kvmh_timeout_scale());
}

void kvmh_watchdog_disarm(void)
{
	alarm(0);
}

bool kvmh_watchdog_fired(void)
{
	return watchdog_fired != 0;
}

void kvmh_skip_unless_kvm(const char *test_name)
{
	struct stat st;
	if (stat("/dev/kvm", &st) == 0)
		return;
	int e = errno;
	if (e == ENOENT || e == ENOTDIR) {
		fprintf(stderr, "SKIP: %s: /dev/kvm is absent on this machine (%s); this test needs real KVM\n",
			test_name ? test_name : "test", strerror(e));
		exit(77);
	}
}

static int xioctl(int fd, unsigned long req, void *arg)
{
	int r = ioctl(fd, req, arg);
	return r < 0 ? -errno : r;
}

static void init_empty(struct kvmh *h)
{
	memset(h, 0, sizeof(*h));
	h->kvm_fd = -1;
	h->vm_fd = -1;
	h->vcpu_fd = -1;
	h->live = true;
}

int kvmh_add_slot(struct kvmh *h, uint32_t slot, uint64_t gpa, void *hva, size_t size, uint32_t flags)
{
	struct kvm_userspace_memory_region r;
	memset(&r, 0, sizeof(r));
	r.slot = slot;
	r.flags = flags;
	r.guest_phys_addr = gpa;
	r.memory_size = size;
	r.userspace_addr = (uint64_t)(uintptr_t)hva;
	return xioctl(h->vm_fd, KVM_SET_USER_MEMORY_REGION, &r);
}

int kvmh_vm_create(struct kvmh *h, const struct kvmh_opts *opts)
{
	init_empty(h);
	struct kvmh_opts o;
	memset(&o, 0, sizeof(o));
	if (opts)
		o = *opts;
	h->mem_size = o.mem_size ? o.mem_size : KVMH_DEFAULT_MEM_SIZE;
	h->mem_gpa = o.mem_gpa;
	h->gdt_gpa = o.gdt_gpa ? o.gdt_gpa : KVMH_DEFAULT_GDT_GPA;
	if (h->mem_size % 4096 || h->mem_gpa % 4096)
		return -EINVAL;

	int r;
	h->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (h->kvm_fd < 0) {
		r = -errno;
		goto fail;
	}
	r = xioctl(h->kvm_fd, KVM_GET_API_VERSION, NULL);
	if (r < 0)
		goto fail;
	if (r != KVM_API_VERSION) {
		r = -EPROTO;
		goto fail;
	}
	r = xioctl(h->kvm_fd, KVM_CREATE_VM, (void *)0);
	if (r < 0)
		goto fail;
	h->vm_fd = r;
	if (!o.no_memory) {
		void *p;
		if (o.mem_fd_set && o.mem_fd >= 0)
			p = mmap(NULL, h->mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, o.mem_fd, 0);
		else
			p = mmap(NULL, h->mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED) {
			r = -errno;
			goto fail;
		}
		h->mem = p;
		h->mem_owned = true;
		r = kvmh_add_slot(h, 0, h->mem_gpa, h->mem, h->mem_size, 0);
		if (r < 0)
			goto fail;
	} else {
		h->mem_size = 0;
	}
	return 0;
fail:
	kvmh_destroy(h);
	init_empty(h);
	h->live = false;
	return r;
}

static int map_run(struct kvmh *h)
{
	int sz = xioctl(h->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, NULL);
	if (sz < 0)
		return sz;
	if ((size_t)sz < sizeof(struct kvm_run))
		return -EPROTO;
	void *p = mmap(NULL, (size_t)sz, PROT_READ | PROT_WRITE, MAP_SHARED, h->vcpu_fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	h->run = p;
	h->run_size = (size_t)sz;
	return 0;
}

int kvmh_vcpu_attach(struct kvmh *h, int vcpu_fd)
{
	if (!h->live || vcpu_fd < 0 || h->vcpu_fd >= 0)
		return -EINVAL;
	h->vcpu_fd = vcpu_fd;
	int r = map_run(h);
	if (r < 0) {
		h->vcpu_fd = -1; /* the caller keeps its fd on failure */
		return r;
	}
	return 0;
}

int kvmh_vcpu_create(struct kvmh *h)
{
	if (!h->live || h->vm_fd < 0 || h->vcpu_fd >= 0)
		return -EINVAL;
	int fd = xioctl(h->vm_fd, KVM_CREATE_VCPU, (void *)0);
	if (fd < 0)
		return fd;
	int r = kvmh_vcpu_attach(h, fd);
	if (r < 0)
		close(fd);
	return r;
}

void *kvmh_gpa(struct kvmh *h, uint64_t gpa, size_t len)
{
	if (!h->mem || gpa < h->mem_gpa)
		return NULL;
	uint64_t off = gpa - h->mem_gpa;
	if (off > h->mem_size || len > h->mem_size - off)
		return NULL;
	return h->mem + off;
}

int kvmh_load_guest(struct kvmh *h, const char *name, uint64_t gpa)
{
	char path[512];
	int n = snprintf(path, sizeof(path), "%s/%s.bin", VMWKVM_GUEST_DIR, name);
	if (n < 0 || (size_t)n >= sizeof(path))
		return -ENAMETOOLONG;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	uint8_t *dst = kvmh_gpa(h, gpa, (size_t)st.st_size);
	if (!dst || st.st_size <= 0) {
		close(fd);
		return -E2BIG;
	}
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, dst + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r < 0 ? -errno : -EIO;
			close(fd);
			return e;
		}
		got += (size_t)r;
	}
	close(fd);
	return (int)got;
}

int kvmh_get_regs(struct kvmh *h, struct kvm_regs *regs)
{
	return xioctl(h->vcpu_fd, KVM_GET_REGS, regs);
}

int kvmh_set_regs(struct kvmh *h, const struct kvm_regs *regs)
{
	return xioctl(h->vcpu_fd, KVM_SET_REGS, (void *)(uintptr_t)regs);
}

int kvmh_get_sregs(struct kvmh *h, struct kvm_sregs *sregs)
{
	return xioctl(h->vcpu_fd, KVM_GET_SREGS, sregs);
}

int kvmh_set_sregs(struct kvmh *h, const struct kvm_sregs *sregs)
{
	return xioctl(h->vcpu_fd, KVM_SET_SREGS, (void *)(uintptr_t)sregs);
}

static int set_entry(struct kvmh *h, uint64_t entry)
{
	struct kvm_regs regs;
	memset(&regs, 0, sizeof(regs));
	regs.rip = entry;
	regs.rsp = entry >= 0x10 ? entry - 0x10 : 0;
	regs.rflags = 0x2;
	return kvmh_set_regs(h, &regs);
}

int kvmh_setup_real_mode(struct kvmh *h, uint64_t entry)
{
	if (!h->live || h->vcpu_fd < 0 || entry > 0xffff)
		return -EINVAL;
	struct kvm_sregs s;
	int r = kvmh_get_sregs(h, &s);
	if (r < 0)
		return r;
	struct kvm_segment *segs[] = { &s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss };
	for (size_t i = 0; i < sizeof(segs) / sizeof(segs[0]); i++) {
		segs[i]->selector = 0;
		segs[i]->base = 0;
		segs[i]->limit = 0xffff;
	}
	s.cr0 &= ~1ull;
	r = kvmh_set_sregs(h, &s);
	if (r < 0)
		return r;
	return set_entry(h, entry);
}

static void flat_seg(struct kvm_segment *seg, uint16_t sel, uint8_t type, uint8_t dpl)
{
	memset(seg, 0, sizeof(*seg));
	seg->base = 0;
	seg->limit = 0xffffffffu;
	seg->selector = sel;
	seg->type = type;
	seg->present = 1;
	seg->dpl = dpl;
	seg->db = 1;
	seg->s = 1;
	seg->l = 0;
	seg->g = 1;
}

int kvmh_setup_flat32(struct kvmh *h, uint64_t entry)
{
	if (!h->live || h->vcpu_fd < 0 || entry > 0xffffffffull)
		return -EINVAL;
	static const uint64_t gdt[5] = {
		0,
		0x00cf9b000000ffffull, /* 0x08 code32, DPL0 */
		0x00cf93000000ffffull, /* 0x10 data32, DPL0 */
		0x00cffb000000ffffull, /* 0x18 code32, DPL3 */
		0x00cff3000000ffffull, /* 0x20 data32, DPL3 */
	};
	void *g = kvmh_gpa(h, h->gdt_gpa, sizeof(gdt));
	if (!g)
		return -ERANGE;
	memcpy(g, gdt, sizeof(gdt));
	struct kvm_sregs s;
	int r = kvmh_get_sregs(h, &s);
	if (r < 0)
		return r;
	flat_seg(&s.cs, KVMH_SEL_CODE0, 0xb, 0);
	flat_seg(&s.ds, KVMH_SEL_DATA0, 0x3, 0);
	s.es = s.ds;
	s.fs = s.ds;
	s.gs = s.ds;
	s.ss = s.ds;
	s.gdt.base = h->gdt_gpa;
	s.gdt.limit = sizeof(gdt) - 1;
	s.cr0 |= 1ull; /* PE */
	s.cr0 &= ~(1ull << 31); /* no paging */
	r = kvmh_set_sregs(h, &s);
	if (r < 0)
		return r;
	return set_entry(h, entry);
}

int kvmh_set_stack(struct kvmh *h, uint64_t rsp)
{
	struct kvm_regs regs;
	int r = kvmh_get_regs(h, &regs);
	if (r < 0)
		return r;
	regs.rsp = rsp;
	return kvmh_set_regs(h, &regs);
}

int kvmh_run(struct kvmh *h)
{
	if (!h->live || h->vcpu_fd < 0)
		return -EINVAL;
	int r = xioctl(h->vcpu_fd, KVM_RUN, NULL);
	return r < 0 ? r : 0;
}

int kvmh_run_until_exit(struct kvmh *h, int max_runs)
{
	for (int i = 0; i < max_runs; i++) {
		int r = kvmh_run(h);
		if (r == -EINTR) {
			if (kvmh_watchdog_fired())
				return -EINTR;
			continue;
		}
		if (r < 0)
			return r;
		if (h->run->exit_reason == KVM_EXIT_INTR)
			continue;
		return 0;
	}
	return -ETIMEDOUT;
}

void *kvmh_io_data(struct kvmh *h)
{
	if (!h->run || h->run->exit_reason != KVM_EXIT_IO)
		return NULL;
	uint64_t off = h->run->io.data_offset;
	uint64_t len = (uint64_t)h->run->io.size * h->run->io.count;
	if (off > h->run_size || len > h->run_size - off)
		return NULL;
	return (char *)h->run + off;
}

const char *kvmh_describe_exit(const struct kvmh *h, char *buf, size_t len)
{
	if (!h->run) {
		snprintf(buf, len, "no kvm_run");
		return buf;
	}
	const struct kvm_run *r = h->run;
	switch (r->exit_reason) {
	case KVM_EXIT_IO:
		snprintf(buf, len, "KVM_EXIT_IO dir=%s size=%u port=0x%x count=%u data_offset=%llu",
			 r->io.direction == KVM_EXIT_IO_IN ? "in" : "out", r->io.size, r->io.port, r->io.count,
			 (unsigned long long)r->io.data_offset);
		break;
	case KVM_EXIT_MMIO:
		snprintf(buf, len, "KVM_EXIT_MMIO gpa=0x%llx len=%u write=%u", (unsigned long long)r->mmio.phys_addr,
			 r->mmio.len, r->mmio.is_write);
		break;
	case KVM_EXIT_HLT:
		snprintf(buf, len, "KVM_EXIT_HLT");
		break;
	case KVM_EXIT_SHUTDOWN:
		snprintf(buf, len, "KVM_EXIT_SHUTDOWN (triple fault?)");
		break;
	case KVM_EXIT_FAIL_ENTRY:
		snprintf(buf, len, "KVM_EXIT_FAIL_ENTRY reason=0x%llx",
			 (unsigned long long)r->fail_entry.hardware_entry_failure_reason);
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		snprintf(buf, len, "KVM_EXIT_INTERNAL_ERROR suberror=%u", r->internal.suberror);
		break;
	default:
		snprintf(buf, len, "exit_reason=%u", r->exit_reason);
		break;
	}
	return buf;
}

void kvmh_destroy(struct kvmh *h)
{
	if (!h->live)
		return;
	if (h->run)
		munmap(h->run, h->run_size);
	if (h->vcpu_fd >= 0)
		close(h->vcpu_fd);
	if (h->vm_fd >= 0)
		close(h->vm_fd);
	if (h->kvm_fd >= 0)
		close(h->kvm_fd);
	if (h->mem && h->mem_owned)
		munmap(h->mem, h->mem_size);
	memset(h, 0, sizeof(*h));
	h->kvm_fd = h->vm_fd = h->vcpu_fd = -1;
	h->live = false;
}
