/* Helpers shared by the memory-fault tests (tests/{unit,model}/test_memfault*.c).
 * Header-only (static functions) so that every test stays one self-contained program. */
#ifndef VMWKVM_TEST_MEMFAULT_UTIL_H
#define VMWKVM_TEST_MEMFAULT_UTIL_H

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "memfault/uffd_io.h"

#define PG 4096ull

/* ---- memory ---- */
static inline uint8_t *mf_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	/* 4 KiB pages keep the tests' page arithmetic exact */
	madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

struct mf_memfd {
	int fd;
	uint8_t *map;
	size_t len;
};

static inline struct mf_memfd mf_memfd_new(size_t len)
{
	struct mf_memfd m;
	m.fd = memfd_create("mf-test", MFD_CLOEXEC);
	ck_assert_int_ge(m.fd, 0);
	ck_assert_int_eq(ftruncate(m.fd, (off_t)len), 0);
	m.map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, m.fd, 0);
	ck_assert_ptr_ne(m.map, MAP_FAILED);
	m.len = len;
	return m;
}

static inline void mf_memfd_free(struct mf_memfd *m)
{
	if (m->map)
		munmap(m->map, m->len);
	if (m->fd >= 0)
		close(m->fd);
	m->map = NULL;
	m->fd = -1;
}

static inline struct vmwkvm_mf_region mf_region(uint64_t gpa, void *host, uint64_t size, uint32_t kind)
{
	struct vmwkvm_mf_region r;
	memset(&r, 0, sizeof(r));
	r.sz = sizeof(r);
	r.gpa = gpa;
	r.host = host;
	r.size = size;
	r.kind = kind;
	return r;
}

/* ---- a recording handler ---- */
#define MF_REC_MAX 256
struct mf_log {
	pthread_mutex_t lock;
	struct vmwkvm_mf_record recs[MF_REC_MAX];
	uint8_t first_bytes[MF_REC_MAX][8]; /* copy of rec->data[0..8) at the call (0xEE if NULL) */
	atomic_int n;
	/* answer */
	uint32_t kind;
	int ret;
	const void *data;
	atomic_int retries_left; /* answer RETRY this many times first */
	atomic_int calls;
};

static inline void mf_log_init(struct mf_log *l, uint32_t kind)
{
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->lock, NULL);
	l->kind = kind;
}

static inline int mf_log_handler(vmwkvm_memfault *mf, const struct vmwkvm_mf_record *rec,
				 struct vmwkvm_mf_action *act, void *ctx)
{
	(void)mf;
	struct mf_log *l = ctx;
	atomic_fetch_add(&l->calls, 1);
	pthread_mutex_lock(&l->lock);
	int i = atomic_load(&l->n);
	if (i < MF_REC_MAX) {
		l->recs[i] = *rec;
		if (rec->data) /* guest memory: atomic loads (see test_memfault_stress.c) */
			for (size_t b = 0; b < (rec->size < 8 ? rec->size : 8); b++)
				l->first_bytes[i][b] = __atomic_load_n((const uint8_t *)rec->data + b, __ATOMIC_RELAXED);
		else
			memset(l->first_bytes[i], 0xEE, 8);
		atomic_store(&l->n, i + 1);
	}
	pthread_mutex_unlock(&l->lock);
	if (atomic_load(&l->retries_left) > 0) {
		atomic_fetch_sub(&l->retries_left, 1);
		act->kind = VMWKVM_MF_ACT_RETRY;
		return 0;
	}
	if (l->ret < 0)
		return l->ret;
	if (l->kind)
		act->kind = l->kind;
	if (l->data)
		act->data = (const uint8_t *)l->data + (rec->gpa & (PG - 1));
	return 0;
}

static inline struct vmwkvm_mf_range mf_range(uint64_t gpa, uint64_t size, uint32_t access, vmwkvm_mf_handler fn,
					      void *ctx)
{
	struct vmwkvm_mf_range r;
	memset(&r, 0, sizeof(r));
	r.sz = sizeof(r);
	r.gpa = gpa;
	r.size = size;
	r.access = access;
	r.fn = fn;
	r.ctx = ctx;
	return r;
}

/* ---- threads touching memory ---- */
struct mf_toucher {
	pthread_t th;
	volatile uint8_t *addr;
	size_t len;      /* bytes to write (write) or read */
	uint8_t value;   /* written byte */
	bool write;
	uint8_t got[64]; /* bytes read */
	atomic_int done;
	pid_t tid;
};

static inline void *mf_toucher_main(void *arg)
{
	struct mf_toucher *t = arg;
	t->tid = (pid_t)syscall(SYS_gettid);
	for (size_t i = 0; i < t->len; i++) {
		/* relaxed atomics: the kernel orders these against the fault handler, which a
		 * race detector cannot see */
		uint8_t *a = (uint8_t *)(uintptr_t)(t->addr + i);
		if (t->write)
			__atomic_store_n(a, t->value, __ATOMIC_RELAXED);
		else if (i < sizeof(t->got))
			t->got[i] = __atomic_load_n(a, __ATOMIC_RELAXED);
		else
			(void)__atomic_load_n(a, __ATOMIC_RELAXED);
	}
	atomic_store(&t->done, 1);
	return NULL;
}

static inline void mf_touch_start(struct mf_toucher *t, void *addr, size_t len, bool write, uint8_t value)
{
	memset(t, 0, sizeof(*t));
	t->addr = addr;
	t->len = len;
	t->write = write;
	t->value = value;
	ck_assert_int_eq(pthread_create(&t->th, NULL, mf_toucher_main, t), 0);
}

/* Serve with vmwkvm_memfault_dispatch() until the toucher is done (bounded by the test's
 * Check timeout). */
static inline void mf_serve_until_done(vmwkvm_memfault *mf, struct mf_toucher *t)
{
	while (!atomic_load(&t->done)) {
		int r = vmwkvm_memfault_dispatch(mf);
		ck_assert_int_ge(r, 0);
		if (!atomic_load(&t->done))
			sched_yield();
	}
	pthread_join(t->th, NULL);
}

/* ---- log capture ---- */
static char mf_last_log[1024];
static atomic_int mf_log_errors;
static inline void mf_log_capture(int level, const char *msg, void *ctx)
{
	(void)ctx;
	if (level <= VMWKVM_LOG_WARN) {
		snprintf(mf_last_log, sizeof(mf_last_log), "%s", msg);
		if (level == VMWKVM_LOG_ERROR)
			atomic_fetch_add(&mf_log_errors, 1);
	}
}

/* ---- a fake kvm_run ---- */
static inline void mf_fake_mmio(struct kvm_run *run, uint64_t gpa, uint32_t len, bool write, const void *data)
{
	memset(run, 0, sizeof(*run));
	run->exit_reason = KVM_EXIT_MMIO;
	run->mmio.phys_addr = gpa;
	run->mmio.len = len;
	run->mmio.is_write = write;
	if (data)
		memcpy(run->mmio.data, data, len <= 8 ? len : 8);
}

static inline void mf_fake_memory_fault(struct kvm_run *run, uint64_t gpa, uint64_t size, uint64_t flags)
{
	memset(run, 0, sizeof(*run));
	run->exit_reason = VMWKVM_UAPI_EXIT_MEMORY_FAULT;
	struct vmwkvm_uapi_memory_fault *m = vmwkvm_uapi_run_memory_fault(run);
	m->flags = flags;
	m->gpa = gpa;
	m->size = size;
}

/* ---- main ---- */

/* Run a suite that needs userfaultfd able to trap KVM's (kernel-mode) faults; exit 77 with
 * the reason when this process may not have one. The program's exit status. */
static inline int mf_run_uffd_suite(Suite *suite)
{
	vmwkvm_memfault *probe = NULL;
	struct vmwkvm_memfault_opts o = { .sz = sizeof(o), .flags = VMWKVM_MF_OPT_REQUIRE_UFFD };
	int r = vmwkvm_memfault_new(NULL, &o, &probe);
	if (r == -EPERM || r == -ENOSYS) {
		fprintf(stderr, "SKIP: userfaultfd (kernel-fault capable) not available to this process: %s\n",
			strerror(-r));
		return 77;
	}
	vmwkvm_memfault_free(probe);
	SRunner *sr = srunner_create(suite);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
