/* Harness shared by the real-KVM memory-fault tests (tests/memfault/test_memfault_kvm*.c): a VM
 * (kvmh: 1 MiB of low RAM at GPA 0 with the guest mf_guest.S at 0x1000), a data slot at
 * MFK_DATA_GPA backed by anonymous memory or a memfd, up to MFK_MAX_CPUS vCPUs in flat
 * 32-bit mode, and a run loop that hands every exit to the memory-fault dispatcher first.
 * Header-only (static functions): each test stays one program. */
#ifndef VMWKVM_TEST_MEMFAULT_KVM_H
#define VMWKVM_TEST_MEMFAULT_KVM_H

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <vmwkvm/vmwkvm.h>

#include "kvmh.h"

#define MFK_PG 4096ull
#define MFK_DATA_GPA 0x100000ull
#define MFK_ENTRY 0x1000u
#define MFK_MAX_CPUS 8
#define MFK_PORT_DONE 0xf4
#define MFK_PORT_FAIL 0xf5
#define MFK_MODE_WRITE 0
#define MFK_MODE_SUM 1
#define MFK_MODE_STRESS 2

struct mfk_cpu {
	int fd;
	struct kvm_run *run;
	size_t run_size;
	pthread_t th;
};

struct mfk {
	struct kvmh h;
	uint8_t *data;
	size_t data_len;
	int memfd;
	int ncpu;
	struct mfk_cpu cpu[MFK_MAX_CPUS];
	char why[256]; /* what went wrong in mfk_run() */
};

/* Set by the watchdog: a vCPU loop that sees it gives up. */
static atomic_int mfk_timed_out;

static void mfk_on_signal(int sig)
{
	(void)sig;
}

/* SIGALRM (kvmh's single-thread watchdog) and SIGUSR1 (the multi-vCPU watchdog) interrupt
 * KVM_RUN: installed without SA_RESTART. */
static inline void mfk_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = mfk_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
}

/* VM with npages of data at MFK_DATA_GPA (memfd: shared memfd, else private anonymous),
 * KVM memslot flags slot_flags on the data slot, ncpu vCPUs in flat 32-bit mode. */
static inline int mfk_up(struct mfk *k, unsigned npages, bool memfd, uint32_t slot_flags, int ncpu)
{
	memset(k, 0, sizeof(*k));
	k->memfd = -1;
	if (ncpu < 1 || ncpu > MFK_MAX_CPUS)
		return -EINVAL;
	struct kvmh_opts o;
	memset(&o, 0, sizeof(o));
	o.mem_size = MFK_DATA_GPA; /* low RAM up to the data slot */
	int r = kvmh_vm_create(&k->h, &o);
	if (r < 0)
		return r;
	k->data_len = (size_t)npages * MFK_PG;
	if (memfd) {
		k->memfd = memfd_create("mfk-data", MFD_CLOEXEC);
		if (k->memfd < 0 || ftruncate(k->memfd, (off_t)k->data_len) < 0)
			return -errno;
		k->data = mmap(NULL, k->data_len, PROT_READ | PROT_WRITE, MAP_SHARED, k->memfd, 0);
	} else {
		k->data = mmap(NULL, k->data_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	if (k->data == MAP_FAILED) {
		k->data = NULL;
		return -errno;
	}
	madvise(k->data, k->data_len, MADV_NOHUGEPAGE);
	r = kvmh_add_slot(&k->h, 1, MFK_DATA_GPA, k->data, k->data_len, slot_flags);
	if (r < 0)
		return r;
	r = kvmh_load_guest(&k->h, "mf_guest", MFK_ENTRY);
	if (r < 0)
		return r;
	r = kvmh_vcpu_create(&k->h);
	if (r < 0)
		return r;
	r = kvmh_setup_flat32(&k->h, MFK_ENTRY);
	if (r < 0)
		return r;
	k->cpu[0].fd = k->h.vcpu_fd;
	k->cpu[0].run = k->h.run;
	k->cpu[0].run_size = k->h.run_size;
	struct kvm_sregs sregs;
	r = kvmh_get_sregs(&k->h, &sregs);
	if (r < 0)
		return r;
	for (int i = 1; i < ncpu; i++) {
		int fd = ioctl(k->h.vm_fd, KVM_CREATE_VCPU, (void *)(uintptr_t)i);
		if (fd < 0)
			return -errno;
		k->cpu[i].fd = fd;
		k->cpu[i].run_size = k->h.run_size;
		void *p = mmap(NULL, k->h.run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			return -errno;
		k->cpu[i].run = p;
		if (ioctl(fd, KVM_SET_SREGS, &sregs) < 0)
			return -errno;
	}
	k->ncpu = ncpu;
	mfk_signals();
	return 0;
}

static inline void mfk_down(struct mfk *k)
{
	for (int i = 1; i < k->ncpu; i++) {
		if (k->cpu[i].run)
			munmap(k->cpu[i].run, k->cpu[i].run_size);
		if (k->cpu[i].fd > 0)
			close(k->cpu[i].fd);
	}
	kvmh_destroy(&k->h);
	if (k->data)
		munmap(k->data, k->data_len);
	if (k->memfd >= 0)
		close(k->memfd);
	memset(k, 0, sizeof(*k));
	k->memfd = -1;
}

static inline struct vmwkvm_mf_region mfk_region(const struct mfk *k)
{
	struct vmwkvm_mf_region r;
	memset(&r, 0, sizeof(r));
	r.sz = sizeof(r);
	r.gpa = MFK_DATA_GPA;
	r.size = k->data_len;
	r.host = k->data;
	r.kind = k->memfd >= 0 ? VMWKVM_MF_MEM_SHMEM : VMWKVM_MF_MEM_ANON;
	if (k->memfd >= 0) {
		r.flags = VMWKVM_MF_REGION_HAS_FD;
		r.fd = k->memfd;
	}
	return r;
}

/* Registers for one pass of mf_guest on vCPU cpu. */
static inline int mfk_start(struct mfk *k, int cpu, unsigned mode, unsigned npages, unsigned id, unsigned iters)
{
	struct kvm_regs regs;
	memset(&regs, 0, sizeof(regs));
	regs.rip = MFK_ENTRY;
	regs.rflags = 0x2;
	regs.rsp = 0x8000 + (uint64_t)cpu * 0x400;
	regs.rdx = mode;
	regs.rsi = MFK_DATA_GPA;
	regs.rcx = npages;
	regs.rbx = id;
	regs.rdi = iters;
	return ioctl(k->cpu[cpu].fd, KVM_SET_REGS, &regs) < 0 ? -errno : 0;
}

struct mfk_result {
	int port;            /* MFK_PORT_DONE / MFK_PORT_FAIL, or 0 */
	uint32_t eax;        /* the value reported */
	unsigned exits;      /* exits that reached the loop */
	unsigned mf_handled; /* of which the dispatcher handled */
	int last_run;        /* last KVM_RUN result */
	int last_mf;         /* last dispatcher answer */
	struct vmwkvm_mf_record rec;
};

/* Run vCPU cpu until the guest reports. Every exit goes to the dispatcher first (if mf);
 * RETRY answers are asked again before re-entering. Returns 0 when the guest reported,
 * -ETIMEDOUT (watchdog), or the failing KVM_RUN / dispatcher result (k->why says what). */
static inline int mfk_run(struct mfk *k, int cpu, vmwkvm_memfault *mf, vmwkvm_vcpu *vcpu, struct mfk_result *res)
{
	memset(res, 0, sizeof(*res));
	struct mfk_cpu *c = &k->cpu[cpu];
	for (unsigned guard = 0; guard < 10000000; guard++) {
		int r = ioctl(c->fd, KVM_RUN, 0) < 0 ? -errno : 0;
		if (vcpu && r == -EFAULT && c->run->exit_reason == 39)
			r = VMWKVM_RUN_MEMORY_FAULT;
		res->last_run = r;
		if (r == -EINTR || (r == 0 && c->run->exit_reason == KVM_EXIT_INTR)) {
			if (atomic_load(&mfk_timed_out) || kvmh_watchdog_fired()) {
				snprintf(k->why, sizeof(k->why), "watchdog fired (vCPU %d)", cpu);
				return -ETIMEDOUT;
			}
			continue;
		}
		res->exits++;
		if (mf) {
			int h;
			do {
				h = vcpu ? vmwkvm_memfault_handle_exit(mf, vcpu, r, &res->rec)
					 : vmwkvm_memfault_handle_run(mf, c->run, c->run_size, r, NULL, &res->rec);
				if (h == VMWKVM_MF_EXIT_RETRY)
					sched_yield();
			} while (h == VMWKVM_MF_EXIT_RETRY && !atomic_load(&mfk_timed_out));
			res->last_mf = h;
			if (h == VMWKVM_MF_EXIT_HANDLED) {
				res->mf_handled++;
				continue;
			}
			if (h != VMWKVM_MF_EXIT_NOT_OURS) {
				snprintf(k->why, sizeof(k->why), "dispatcher answered %d (error %d) at GPA 0x%llx", h,
					 res->rec.error, (unsigned long long)res->rec.gpa);
				return h < 0 ? h : -EFAULT;
			}
		}
		if (r < 0) {
			snprintf(k->why, sizeof(k->why), "KVM_RUN failed: %s (exit_reason %u, stale)", strerror(-r),
				 c->run->exit_reason);
			return r;
		}
		if (c->run->exit_reason == KVM_EXIT_IO && c->run->io.direction == KVM_EXIT_IO_OUT &&
		    c->run->io.size == 4 && (c->run->io.port == MFK_PORT_DONE || c->run->io.port == MFK_PORT_FAIL)) {
			uint64_t off = c->run->io.data_offset;
			if (off + 4 > c->run_size)
				return -EPROTO;
			memcpy(&res->eax, (uint8_t *)c->run + off, 4);
			res->port = c->run->io.port;
			return 0;
		}
		struct kvmh tmp = k->h;
		tmp.run = c->run;
		char buf[160];
		snprintf(k->why, sizeof(k->why), "unexpected exit on vCPU %d: %s", cpu,
			 kvmh_describe_exit(&tmp, buf, sizeof(buf)));
		return -EPROTO;
	}
	snprintf(k->why, sizeof(k->why), "too many exits");
	return -ELOOP;
}

/* May this process use a userfaultfd that traps KVM's faults? (A permission matter, not a
 * KVM one: the tests that need it are left out, with a note, when it is not.) */
static inline bool mfk_uffd_permitted(void)
{
	vmwkvm_memfault *mf = NULL;
	struct vmwkvm_memfault_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.flags = VMWKVM_MF_OPT_REQUIRE_UFFD;
	int r = vmwkvm_memfault_new(NULL, &o, &mf);
	vmwkvm_memfault_free(mf);
	if (r < 0)
		fprintf(stderr, "NOTE: userfaultfd not permitted here (%s): its tests are skipped\n", strerror(-r));
	return r == 0;
}

static inline vmwkvm_memfault *mfk_memfault(uint32_t mechanism, bool need_uffd)
{
	vmwkvm_memfault *mf = NULL;
	struct vmwkvm_memfault_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.mechanism = mechanism;
	o.flags = need_uffd ? VMWKVM_MF_OPT_REQUIRE_UFFD : VMWKVM_MF_OPT_NO_UFFD;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &mf), 0);
	return mf;
}

#endif
