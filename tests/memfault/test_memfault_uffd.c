/* Memory-fault dispatcher on the REAL userfaultfd (no KVM needed): host threads write to
 * write-protected anonymous and memfd memory, MISSING faults answered with COPY and
 * ZEROPAGE, MINOR with CONTINUE, remove events (MADV_DONTNEED dropping WP on anonymous
 * memory), EAGAIN while events are unread, EEXIST on copy, failing and retrying handlers,
 * a region removed while a fault is pending, the pollable fd and the service thread.
 * Skips (77) when this process may not use userfaultfd the way KVM needs it. Every test
 * is bounded by Check's timeout (CK_DEFAULT_TIMEOUT), which kills a hung test. */
#include <poll.h>

#include "test_memfault_util.h"

#define GPA0 0x100000ull

static vmwkvm_memfault *mf;

static void setup(void)
{
	vk_mf_test_mask_features(0);
	struct vmwkvm_memfault_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.flags = VMWKVM_MF_OPT_REQUIRE_UFFD;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &mf), 0);
}

static void teardown(void)
{
	vmwkvm_memfault_free(mf);
	mf = NULL;
	vk_mf_test_mask_features(0);
}

static void add_anon(uint8_t *mem, size_t len)
{
	struct vmwkvm_mf_region r = mf_region(GPA0, mem, len, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r), 0);
}

/* ------------------------------------------------------------------ write protection */

static void wp_write_caught(uint8_t *mem, size_t len, bool populated)
{
	struct mf_log log;
	mf_log_init(&log, 0);
	struct vmwkvm_mf_range rg = mf_range(GPA0, len, VMWKVM_MF_ACCESS_WRITE, mf_log_handler, &log);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	if (populated)
		for (size_t i = 0; i < len; i += PG)
			mem[i + 5] = 0x11;
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0, len), VMWKVM_MF_MECH_UFFD_WP);
	ck_assert_int_eq(vmwkvm_memfault_mechanism(mf, GPA0), VMWKVM_MF_MECH_UFFD_WP);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + PG), VMWKVM_MF_PROT_WRITE);
	for (size_t p = 0; p < len / PG; p++) {
		struct mf_toucher t;
		mf_touch_start(&t, mem + p * PG + 5, 1, true, (uint8_t)(0x40 + p));
		mf_serve_until_done(mf, &t);
		ck_assert_int_eq(mem[p * PG + 5], 0x40 + p);
		ck_assert_int_eq(atomic_load(&log.n), (int)p + 1);
		const struct vmwkvm_mf_record *r = &log.recs[p];
		ck_assert_uint_eq(r->source, VMWKVM_MF_SRC_UFFD);
		ck_assert(r->access & VMWKVM_MF_ACCESS_WRITE);
		ck_assert_uint_eq(r->gpa, GPA0 + p * PG);
		ck_assert_uint_eq(r->size, PG);
		ck_assert_uint_eq(r->fault_gpa, GPA0 + p * PG + 5); /* exact address */
		ck_assert_ptr_eq(r->host, mem + p * PG);
		ck_assert_int_eq(r->tid, t.tid);
		ck_assert(r->flags & VMWKVM_MF_FLAG_PROTECTED);
		/* the handler saw the page as it was before the write */
		ck_assert_int_eq(log.first_bytes[p][5], populated ? 0x11 : 0);
		ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + p * PG), VMWKVM_MF_PROT_NONE);
	}
	/* unprotected now: a second round of writes does not fault */
	for (size_t p = 0; p < len / PG; p++)
		mem[p * PG + 6] = 1;
	ck_assert_int_eq(atomic_load(&log.n), (int)(len / PG));
}

START_TEST(wp_anon_populated)
{
	uint8_t *mem = mf_anon(8 * PG);
	add_anon(mem, 8 * PG);
	wp_write_caught(mem, 8 * PG, true);
	munmap(mem, 8 * PG);
}
END_TEST

START_TEST(wp_anon_untouched)
{
	uint64_t f = 0;
	ck_assert_int_eq(vmwkvm_memfault_uffd_features(mf, &f), 0);
	uint8_t *mem = mf_anon(8 * PG);
	add_anon(mem, 8 * PG);
	wp_write_caught(mem, 8 * PG, false);
	struct vmwkvm_mf_stats st = { .sz = sizeof(st) };
	ck_assert_int_eq(vmwkvm_memfault_stats(mf, &st), 0);
	if (f & VMWKVM_UAPI_UFFD_FEATURE_WP_UNPOPULATED)
		ck_assert_uint_eq(st.populated_bytes, 0);
	munmap(mem, 8 * PG);
}
END_TEST

/* Without WP_UNPOPULATED the first write to untouched anonymous memory would be lost:
 * the library populates first, or refuses with NO_POPULATE. */
START_TEST(wp_anon_untouched_without_wp_unpopulated)
{
	vmwkvm_memfault_free(mf);
	vk_mf_test_mask_features(VMWKVM_UAPI_UFFD_FEATURE_WP_UNPOPULATED);
	struct vmwkvm_memfault_opts o = { .sz = sizeof(o), .flags = VMWKVM_MF_OPT_REQUIRE_UFFD };
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &mf), 0);
	uint64_t f = 0;
	ck_assert_int_eq(vmwkvm_memfault_uffd_features(mf, &f), 0);
	ck_assert(!(f & VMWKVM_UAPI_UFFD_FEATURE_WP_UNPOPULATED));
	uint8_t *mem = mf_anon(8 * PG);
	add_anon(mem, 8 * PG);
	wp_write_caught(mem, 8 * PG, false);
	struct vmwkvm_mf_stats st = { .sz = sizeof(st) };
	ck_assert_int_eq(vmwkvm_memfault_stats(mf, &st), 0);
	ck_assert_uint_eq(st.populated_bytes, 8 * PG);
	munmap(mem, 8 * PG);

	vmwkvm_memfault_free(mf);
	o.flags |= VMWKVM_MF_OPT_NO_POPULATE;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &mf), 0);
	mem = mf_anon(8 * PG);
	add_anon(mem, 8 * PG);
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0, 8 * PG), -EOPNOTSUPP);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0), VMWKVM_MF_PROT_NONE);
	munmap(mem, 8 * PG);
}
END_TEST

START_TEST(wp_memfd)
{
	struct mf_memfd m = mf_memfd_new(8 * PG);
	struct vmwkvm_mf_region r = mf_region(GPA0, m.map, 8 * PG, VMWKVM_MF_MEM_SHMEM);
	r.flags = VMWKVM_MF_REGION_HAS_FD;
	r.fd = m.fd;
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r), 0);
	wp_write_caught(m.map, 8 * PG, true);
	mf_memfd_free(&m);
}
END_TEST

/* A handler that fills the page on a WP fault: its bytes land, then the guest's write. */
START_TEST(wp_fill_then_write_lands)
{
	uint8_t *mem = mf_anon(2 * PG);
	add_anon(mem, 2 * PG);
	static uint8_t page[PG];
	memset(page, 0x5a, sizeof(page));
	struct mf_log log;
	mf_log_init(&log, VMWKVM_MF_ACT_FILL);
	log.data = page;
	struct vmwkvm_mf_range rg = mf_range(GPA0, 2 * PG, VMWKVM_MF_ACCESS_WRITE, mf_log_handler, &log);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	memset(mem, 1, 2 * PG);
	ck_assert_int_ge(vmwkvm_memfault_write_protect(mf, GPA0, 2 * PG), 0);
	struct mf_toucher t;
	mf_touch_start(&t, mem + 100, 1, true, 0x77);
	mf_serve_until_done(mf, &t);
	ck_assert_int_eq(mem[100], 0x77);
	ck_assert_int_eq(mem[99], 0x5a);
	ck_assert_int_eq(mem[PG - 1], 0x5a);
	ck_assert_int_eq(mem[PG], 1); /* the other page is untouched and still protected */
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + PG), VMWKVM_MF_PROT_WRITE);
	munmap(mem, 2 * PG);
}
END_TEST

/* ------------------------------------------------------------------ MISSING / MINOR */

static void missing_fill(uint8_t *mem, bool memfd)
{
	(void)memfd;
	static uint8_t page[PG];
	for (size_t i = 0; i < PG; i++)
		page[i] = (uint8_t)(i * 7 + 3);
	struct mf_log fill, zero;
	mf_log_init(&fill, VMWKVM_MF_ACT_FILL);
	fill.data = page;
	mf_log_init(&zero, VMWKVM_MF_ACT_ZERO);
	struct vmwkvm_mf_range a = mf_range(GPA0, 2 * PG, VMWKVM_MF_ACCESS_MISSING, mf_log_handler, &fill);
	struct vmwkvm_mf_range b = mf_range(GPA0 + 2 * PG, 2 * PG, VMWKVM_MF_ACCESS_MISSING, mf_log_handler, &zero);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &a), 0);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &b), 0);

	struct mf_toucher t;
	mf_touch_start(&t, mem + PG + 10, 8, false, 0);
	mf_serve_until_done(mf, &t);
	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(t.got[i], page[10 + i]);
	ck_assert_int_eq(atomic_load(&fill.n), 1);
	ck_assert_uint_eq(fill.recs[0].access, VMWKVM_MF_ACCESS_MISSING);
	ck_assert(fill.recs[0].flags & VMWKVM_MF_FLAG_UNPOPULATED);
	ck_assert_uint_eq(fill.recs[0].gpa, GPA0 + PG);
	ck_assert_int_eq(fill.first_bytes[0][0], 0); /* data points to zeroes */

	mf_touch_start(&t, mem + 3 * PG + 1, 1, true, 0x99);
	mf_serve_until_done(mf, &t);
	ck_assert_int_eq(mem[3 * PG + 1], 0x99);
	ck_assert_int_eq(mem[3 * PG], 0);
	ck_assert_int_eq(atomic_load(&zero.n), 1);
	ck_assert(zero.recs[0].raw_flags & UFFD_PAGEFAULT_FLAG_WRITE);

	/* outside the ranges: the default is a zero page */
	mf_touch_start(&t, mem + 5 * PG, 4, false, 0);
	mf_serve_until_done(mf, &t);
	ck_assert_int_eq(t.got[0] | t.got[1] | t.got[2] | t.got[3], 0);
	/* a populated page does not fault again */
	ck_assert_int_eq(mem[PG + 10], page[10]);
	ck_assert_int_eq(atomic_load(&fill.n), 1);
}

START_TEST(missing_copy_zeropage_anon)
{
	uint8_t *mem = mf_anon(8 * PG);
	add_anon(mem, 8 * PG);
	missing_fill(mem, false);
	munmap(mem, 8 * PG);
}
END_TEST

START_TEST(missing_copy_zeropage_memfd)
{
	struct mf_memfd m = mf_memfd_new(8 * PG);
	struct vmwkvm_mf_region r = mf_region(GPA0, m.map, 8 * PG, VMWKVM_MF_MEM_SHMEM);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r), 0);
	missing_fill(m.map, true);
	mf_memfd_free(&m);
}
END_TEST

START_TEST(minor_continue_memfd)
{
	uint64_t f = 0;
	ck_assert_int_eq(vmwkvm_memfault_uffd_features(mf, &f), 0);
	if (!(f & UFFD_FEATURE_MINOR_SHMEM))
		return; /* the kernel has no MINOR faults on shmem: nothing to check */
	struct mf_memfd m = mf_memfd_new(4 * PG);
	/* content in the page cache, not mapped in m.map yet */
	uint8_t buf[PG];
	memset(buf, 0x3c, sizeof(buf));
	ck_assert_int_eq(pwrite(m.fd, buf, PG, 0), (ssize_t)PG);
	ck_assert_int_eq(pwrite(m.fd, buf, PG, PG), (ssize_t)PG);
	struct vmwkvm_mf_region r = mf_region(GPA0, m.map, 4 * PG, VMWKVM_MF_MEM_SHMEM);
	r.flags = VMWKVM_MF_REGION_HAS_FD;
	r.fd = m.fd;
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r), 0);
	struct mf_log cont, fill;
	mf_log_init(&cont, 0); /* default: map the page-cache page */
	static uint8_t page[PG];
	memset(page, 0xc3, sizeof(page));
	mf_log_init(&fill, VMWKVM_MF_ACT_FILL);
	fill.data = page;
	struct vmwkvm_mf_range a = mf_range(GPA0, PG, VMWKVM_MF_ACCESS_MINOR, mf_log_handler, &cont);
	struct vmwkvm_mf_range b = mf_range(GPA0 + PG, PG, VMWKVM_MF_ACCESS_MINOR, mf_log_handler, &fill);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &a), 0);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &b), 0);
	struct mf_toucher t;
	mf_touch_start(&t, m.map + 8, 1, false, 0);
	mf_serve_until_done(mf, &t);
	ck_assert_int_eq(t.got[0], 0x3c);
	ck_assert_int_eq(atomic_load(&cont.n), 1);
	ck_assert_uint_eq(cont.recs[0].access, VMWKVM_MF_ACCESS_MINOR);
	ck_assert_int_eq(cont.first_bytes[0][0], 0x3c); /* data read through the alias */
	mf_touch_start(&t, m.map + PG + 8, 1, false, 0);
	mf_serve_until_done(mf, &t);
	ck_assert_int_eq(t.got[0], 0xc3);
	uint8_t back;
	ck_assert_int_eq(pread(m.fd, &back, 1, PG + 9), 1);
	ck_assert_int_eq(back, 0xc3);
	mf_memfd_free(&m);
}
END_TEST

/* ------------------------------------------------------------------ events and races */

struct madv_arg {
	void *addr;
	size_t len;
	int advice;
	atomic_int done;
};

static void *madv_main(void *p)
{
	struct madv_arg *a = p;
	madvise(a->addr, a->len, a->advice);
	atomic_store(&a->done, 1);
	return NULL;
}

static void wait_readable(int fd)
{
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	for (;;) {
		int r = poll(&pf, 1, -1);
		if (r > 0)
			return;
		ck_assert(r == 0 || errno == EINTR);
	}
}

/* MADV_DONTNEED on write-protected anonymous memory drops the protection in the kernel;
 * the next write is still reported (missing guard) and no write is lost. */
START_TEST(remove_event_anon_wp)
{
	uint8_t *mem = mf_anon(4 * PG);
	add_anon(mem, 4 * PG);
	struct mf_log wlog, rlog;
	mf_log_init(&wlog, 0);
	mf_log_init(&rlog, 0);
	struct vmwkvm_mf_range a =
		mf_range(GPA0, 4 * PG, VMWKVM_MF_ACCESS_WRITE | VMWKVM_MF_ACCESS_REMOVE, mf_log_handler, &wlog);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &a), 0);
	memset(mem, 0x21, 4 * PG);
	ck_assert_int_ge(vmwkvm_memfault_write_protect(mf, GPA0, 4 * PG), 0);
	int fd = vmwkvm_memfault_fd(mf);
	ck_assert_int_ge(fd, 0);

	struct madv_arg ma = { .addr = mem + PG, .len = 2 * PG, .advice = MADV_DONTNEED };
	pthread_t th;
	ck_assert_int_eq(pthread_create(&th, NULL, madv_main, &ma), 0);
	while (!atomic_load(&ma.done))
		ck_assert_int_ge(vmwkvm_memfault_dispatch(mf), 0);
	pthread_join(th, NULL);
	(void)rlog;
	/* the handler heard of the removal */
	ck_assert_int_eq(atomic_load(&wlog.n), 1);
	ck_assert_uint_eq(wlog.recs[0].access, VMWKVM_MF_ACCESS_REMOVE);
	ck_assert_uint_eq(wlog.recs[0].gpa, GPA0 + PG);
	ck_assert_uint_eq(wlog.recs[0].size, 2 * PG);
	ck_assert(wlog.recs[0].flags & VMWKVM_MF_FLAG_REMOVED);
	struct vmwkvm_mf_stats st = { .sz = sizeof(st) };
	ck_assert_int_eq(vmwkvm_memfault_stats(mf, &st), 0);
	ck_assert_uint_ge(st.remove_events, 1);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + PG), VMWKVM_MF_PROT_WRITE);

	/* a read of the emptied page keeps it protected; then a write is still reported */
	struct mf_toucher t;
	mf_touch_start(&t, mem + PG + 3, 1, false, 0);
	mf_serve_until_done(mf, &t);
	ck_assert_int_eq(t.got[0], 0);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + PG), VMWKVM_MF_PROT_WRITE);
	ck_assert_int_eq(atomic_load(&wlog.n), 1); /* reads are not the WRITE handler's business */
	mf_touch_start(&t, mem + PG + 3, 1, true, 0x66);
	mf_serve_until_done(mf, &t);
	ck_assert_int_eq(mem[PG + 3], 0x66);
	ck_assert_int_eq(atomic_load(&wlog.n), 2);
	ck_assert(wlog.recs[1].access & VMWKVM_MF_ACCESS_WRITE);
	ck_assert_uint_eq(wlog.recs[1].gpa, GPA0 + PG);

	/* never read: the first access is the write, still reported with REMOVED */
	mf_touch_start(&t, mem + 2 * PG + 9, 1, true, 0x67);
	mf_serve_until_done(mf, &t);
	ck_assert_int_eq(mem[2 * PG + 9], 0x67);
	ck_assert_int_eq(mem[2 * PG + 8], 0);
	ck_assert_int_eq(atomic_load(&wlog.n), 3);
	ck_assert(wlog.recs[2].access & VMWKVM_MF_ACCESS_WRITE);
	ck_assert(wlog.recs[2].flags & VMWKVM_MF_FLAG_REMOVED);
	ck_assert(wlog.recs[2].flags & VMWKVM_MF_FLAG_UNPOPULATED);
	ck_assert_int_eq(wlog.first_bytes[2][0], 0);
	/* unprotecting the whole region drops the guard; untouched pages then fault no more */
	ck_assert_int_eq(vmwkvm_memfault_unprotect(mf, GPA0, 4 * PG), 0);
	struct madv_arg mb = { .addr = mem, .len = 4 * PG, .advice = MADV_DONTNEED };
	ck_assert_int_eq(pthread_create(&th, NULL, madv_main, &mb), 0);
	while (!atomic_load(&mb.done)) /* the madvise caller waits until the event is read */
		ck_assert_int_ge(vmwkvm_memfault_dispatch(mf), 0);
	pthread_join(th, NULL);
	mem[0] = 1; /* would block forever if still registered MISSING (no dispatcher here) */
	ck_assert_int_eq(mem[0], 1);
	munmap(mem, 4 * PG);
}
END_TEST

/* EAGAIN: while a remove event is unread, UFFDIO_WRITEPROTECT fails with EAGAIN; the
 * library reads the events and retries. */
START_TEST(eagain_while_event_unread)
{
	uint8_t *mem = mf_anon(4 * PG);
	add_anon(mem, 4 * PG);
	memset(mem, 1, 4 * PG);
	ck_assert_int_ge(vmwkvm_memfault_write_protect(mf, GPA0, 2 * PG), 0);
	int fd = vmwkvm_memfault_fd(mf);
	ck_assert_int_ge(fd, 0);
	struct madv_arg ma = { .addr = mem + 3 * PG, .len = PG, .advice = MADV_DONTNEED };
	pthread_t th;
	ck_assert_int_eq(pthread_create(&th, NULL, madv_main, &ma), 0);
	wait_readable(fd); /* the remove event is queued; the madvise caller waits for it */
	ck_assert_int_eq(atomic_load(&ma.done), 0);
	ck_assert_int_eq(vmwkvm_memfault_unprotect(mf, GPA0, PG), 0);
	pthread_join(th, NULL);
	struct vmwkvm_mf_stats st = { .sz = sizeof(st) };
	ck_assert_int_eq(vmwkvm_memfault_stats(mf, &st), 0);
	ck_assert_uint_ge(st.eagain, 1);
	ck_assert_uint_ge(st.remove_events, 1);
	mem[1] = 2; /* unprotected: no fault */
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + PG), VMWKVM_MF_PROT_WRITE);
	munmap(mem, 4 * PG);
}
END_TEST

/* EEXIST: a prefetcher filled the page after the fault was read (here: from inside the
 * handler, the worst case); the handler's COPY finds it present, counts as resolved, the
 * waiter is woken and sees the prefetched data. */
static uint8_t pre_a[PG], pre_b[PG];
static int prefetch_race(vmwkvm_memfault *m, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
			 void *ctx)
{
	(void)ctx;
	ck_assert_int_eq(vmwkvm_memfault_resolve(m, rec->gpa, PG, VMWKVM_MF_ACT_FILL, pre_a), 0);
	act->kind = VMWKVM_MF_ACT_FILL;
	act->data = pre_b;
	return 0;
}

START_TEST(eexist_on_copy)
{
	uint8_t *mem = mf_anon(4 * PG);
	add_anon(mem, 4 * PG);
	memset(pre_a, 0xaa, sizeof(pre_a));
	memset(pre_b, 0xbb, sizeof(pre_b));
	struct vmwkvm_mf_range rg = mf_range(GPA0, 4 * PG, VMWKVM_MF_ACCESS_MISSING, prefetch_race, NULL);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	struct mf_toucher t;
	mf_touch_start(&t, mem + 2 * PG, 1, false, 0);
	mf_serve_until_done(mf, &t);
	ck_assert_int_eq(t.got[0], 0xaa);
	ck_assert_int_eq(mem[2 * PG + 100], 0xaa);
	struct vmwkvm_mf_stats st = { .sz = sizeof(st) };
	ck_assert_int_eq(vmwkvm_memfault_stats(mf, &st), 0);
	ck_assert_uint_ge(st.eexist, 1);
	munmap(mem, 4 * PG);
}
END_TEST

/* A failing handler parks the fault; resolve() answers it later. */
START_TEST(failing_handler_parks_until_resolved)
{
	uint8_t *mem = mf_anon(4 * PG);
	add_anon(mem, 4 * PG);
	struct mf_log log;
	mf_log_init(&log, 0);
	log.ret = -EIO;
	struct vmwkvm_mf_range rg = mf_range(GPA0, 4 * PG, VMWKVM_MF_ACCESS_MISSING, mf_log_handler, &log);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	int fd = vmwkvm_memfault_fd(mf);
	struct mf_toucher t;
	mf_touch_start(&t, mem + PG + 1, 1, false, 0);
	wait_readable(fd);
	ck_assert_int_eq(vmwkvm_memfault_dispatch(mf), 0);
	ck_assert_int_eq(vmwkvm_memfault_pending(mf), 1);
	ck_assert_int_eq(atomic_load(&t.done), 0);
	/* dispatching again does not ask the failed handler again */
	ck_assert_int_eq(vmwkvm_memfault_dispatch(mf), 0);
	ck_assert_int_eq(atomic_load(&log.calls), 1);
	static uint8_t page[PG];
	memset(page, 0x4f, sizeof(page));
	ck_assert_int_eq(vmwkvm_memfault_resolve(mf, GPA0 + PG, PG, VMWKVM_MF_ACT_FILL, page), 0);
	pthread_join(t.th, NULL);
	ck_assert_int_eq(t.got[0], 0x4f);
	ck_assert_int_eq(vmwkvm_memfault_pending(mf), 0);
	struct vmwkvm_mf_stats st = { .sz = sizeof(st) };
	ck_assert_int_eq(vmwkvm_memfault_stats(mf, &st), 0);
	ck_assert_uint_ge(st.failures, 1);
	munmap(mem, 4 * PG);
}
END_TEST

/* A region refused because it overlaps a known one in host address must not touch the
 * faults parked for that known region: a RETRY-parked fault stays queued and is asked
 * again at the next dispatch (else its thread would stay blocked forever). */
START_TEST(refused_overlapping_region_keeps_parked_faults)
{
	uint8_t *mem = mf_anon(4 * PG);
	add_anon(mem, 4 * PG);
	struct mf_log log;
	mf_log_init(&log, 0);
	atomic_store(&log.retries_left, 1);
	struct vmwkvm_mf_range rg = mf_range(GPA0, 4 * PG, VMWKVM_MF_ACCESS_MISSING, mf_log_handler, &log);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	int fd = vmwkvm_memfault_fd(mf);
	struct mf_toucher t;
	mf_touch_start(&t, mem + PG + 1, 1, false, 0);
	wait_readable(fd);
	ck_assert_int_eq(vmwkvm_memfault_dispatch(mf), 0);
	ck_assert_int_eq(vmwkvm_memfault_pending(mf), 1);
	/* same host memory under another GPA: refused, and nothing else changes */
	struct vmwkvm_mf_region dup = mf_region(GPA0 + 0x100000, mem, 4 * PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &dup), -EEXIST);
	ck_assert_int_eq(vmwkvm_memfault_pending(mf), 1);
	/* the parked fault is asked again and answered (default: a zero page) */
	mf_serve_until_done(mf, &t);
	ck_assert_int_eq(atomic_load(&log.calls), 2);
	ck_assert_int_eq(t.got[0], 0);
	ck_assert_int_eq(vmwkvm_memfault_pending(mf), 0);
	munmap(mem, 4 * PG);
}
END_TEST

/* ---- a region with bigger pages added while the zero/scratch buffers are in use ---- */
#define HUGE_PG (2ull << 20)
#define GPA_HUGE 0x40000000ull

static uint8_t *huge_mem;
static int add_huge_region(void)
{
	/* declared 2 MiB pages: the dispatcher grows its page buffers */
	struct vmwkvm_mf_region r = mf_region(GPA_HUGE, huge_mem, HUGE_PG, VMWKVM_MF_MEM_ANON);
	r.page_size = (uint32_t)HUGE_PG;
	return vmwkvm_memfault_add_region(mf, &r);
}

static uint8_t *huge_map(void **base)
{
	void *p = mmap(NULL, 2 * HUGE_PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	*base = p;
	return (uint8_t *)(((uintptr_t)p + HUGE_PG - 1) & ~(uintptr_t)(HUGE_PG - 1));
}

static atomic_int copy_hook_calls;
static atomic_int copy_hook_add_result;
static int copy_hook_ioctl(void *ctx, int fd, unsigned long req, void *arg)
{
	if (req == UFFDIO_COPY && atomic_fetch_add(&copy_hook_calls, 1) == 0) {
		/* another thread adds a region with bigger pages while the copy's source (the
		 * library's zero page) is in use */
		atomic_store(&copy_hook_add_result, add_huge_region());
	}
	return vmwkvm_sys_default_ops()->ioctl(ctx, fd, req, arg);
}

/* vmwkvm_memfault_resolve(ZERO) on MISSING-registered memory copies from the library's zero
 * buffer; a region added meanwhile must not free that buffer under it (the page must
 * come out zero, and nothing is read after free). */
START_TEST(resolve_zero_while_bigger_pages_added)
{
	uint8_t *mem = mf_anon(4 * PG);
	add_anon(mem, 4 * PG);
	void *hbase;
	huge_mem = huge_map(&hbase);
	struct mf_log log;
	mf_log_init(&log, 0);
	struct vmwkvm_mf_range rg = mf_range(GPA0, 4 * PG, VMWKVM_MF_ACCESS_MISSING, mf_log_handler, &log);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	struct vmwkvm_sys_ops ops = *vmwkvm_sys_default_ops();
	ops.ioctl = copy_hook_ioctl;
	atomic_store(&copy_hook_calls, 0);
	atomic_store(&copy_hook_add_result, 1);
	vmwkvm_sys_set_ops(&ops);
	int r = vmwkvm_memfault_resolve(mf, GPA0 + PG, PG, VMWKVM_MF_ACT_ZERO, NULL);
	vmwkvm_sys_set_ops(NULL);
	ck_assert_int_eq(r, 0);
	ck_assert_int_eq(atomic_load(&copy_hook_add_result), 0);
	for (size_t i = 0; i < PG; i++)
		ck_assert_int_eq(mem[PG + i], 0);
	ck_assert_int_eq(atomic_load(&log.calls), 0);
	ck_assert_int_eq(vmwkvm_memfault_remove_region(mf, GPA_HUGE), 0);
	munmap(hbase, 2 * HUGE_PG);
	munmap(mem, 4 * PG);
}
END_TEST

static int add_huge_handler(vmwkvm_memfault *m, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
			    void *ctx)
{
	(void)m;
	(void)rec;
	(void)act;
	atomic_store((atomic_int *)ctx, add_huge_region());
	return 0;
}

/* A handler on the serving thread may change the tables, also by adding a region whose
 * pages are bigger than any before (no self-deadlock on the serving lock). */
START_TEST(handler_adds_bigger_page_region)
{
	uint8_t *mem = mf_anon(4 * PG);
	add_anon(mem, 4 * PG);
	void *hbase;
	huge_mem = huge_map(&hbase);
	atomic_int added = 1;
	struct vmwkvm_mf_range rg = mf_range(GPA0, 4 * PG, VMWKVM_MF_ACCESS_MISSING, add_huge_handler, &added);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	struct mf_toucher t;
	mf_touch_start(&t, mem + 2 * PG + 3, 1, false, 0);
	mf_serve_until_done(mf, &t);
	ck_assert_int_eq(t.got[0], 0);
	ck_assert_int_eq(atomic_load(&added), 0);
	ck_assert_int_eq(vmwkvm_memfault_mechanism(mf, GPA_HUGE), vmwkvm_memfault_mechanism(mf, GPA0));
	ck_assert_int_eq(vmwkvm_memfault_remove_region(mf, GPA_HUGE), 0);
	munmap(hbase, 2 * HUGE_PG);
	munmap(mem, 4 * PG);
}
END_TEST

/* RETRY keeps the thread blocked; the service thread asks again until the handler fills. */
START_TEST(retry_then_fill_service_thread)
{
	uint8_t *mem = mf_anon(4 * PG);
	add_anon(mem, 4 * PG);
	static uint8_t page[PG];
	memset(page, 0x2e, sizeof(page));
	struct mf_log log;
	mf_log_init(&log, VMWKVM_MF_ACT_FILL);
	log.data = page;
	atomic_store(&log.retries_left, 3);
	struct vmwkvm_mf_range rg = mf_range(GPA0, 4 * PG, VMWKVM_MF_ACCESS_MISSING, mf_log_handler, &log);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	ck_assert_int_eq(vmwkvm_memfault_start(mf), 0);
	ck_assert_int_eq(vmwkvm_memfault_start(mf), -EALREADY);
	ck_assert_int_eq(mem[3 * PG + 7], 0x2e); /* this thread faults; the service answers */
	ck_assert_int_eq(atomic_load(&log.calls), 4);
	ck_assert_int_eq(vmwkvm_memfault_stop(mf), 0);
	ck_assert_int_eq(vmwkvm_memfault_stop(mf), -ESRCH);
	struct vmwkvm_mf_stats st = { .sz = sizeof(st) };
	ck_assert_int_eq(vmwkvm_memfault_stats(mf, &st), 0);
	ck_assert_uint_eq(st.retries, 3);
	munmap(mem, 4 * PG);
}
END_TEST

/* The region goes away while a fault waits on it (handler keeps answering RETRY): the
 * thread is released and reads what the memory holds (zero), nothing hangs. */
START_TEST(region_removed_while_fault_pending)
{
	uint8_t *mem = mf_anon(4 * PG);
	add_anon(mem, 4 * PG);
	struct mf_log log;
	mf_log_init(&log, 0);
	atomic_store(&log.retries_left, 1 << 30);
	struct vmwkvm_mf_range rg = mf_range(GPA0, 4 * PG, VMWKVM_MF_ACCESS_MISSING, mf_log_handler, &log);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	int fd = vmwkvm_memfault_fd(mf);
	struct mf_toucher t;
	mf_touch_start(&t, mem + 2 * PG, 1, false, 0);
	wait_readable(fd);
	ck_assert_int_eq(vmwkvm_memfault_dispatch(mf), 0);
	ck_assert_int_eq(vmwkvm_memfault_pending(mf), 1);
	ck_assert_int_eq(vmwkvm_memfault_remove_region(mf, GPA0), 0);
	pthread_join(t.th, NULL);
	ck_assert_int_eq(t.got[0], 0);
	ck_assert_int_eq(vmwkvm_memfault_pending(mf), 0);
	ck_assert_int_eq(vmwkvm_memfault_dispatch(mf), 0);
	ck_assert_int_eq(vmwkvm_memfault_remove_region(mf, GPA0), -ENOENT);
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0, PG), -ENOENT);
	munmap(mem, 4 * PG);
}
END_TEST

/* The VMM's own loop: poll the fd, dispatch. */
START_TEST(own_event_loop)
{
	uint8_t *mem = mf_anon(16 * PG);
	add_anon(mem, 16 * PG);
	memset(mem, 3, 16 * PG);
	ck_assert_int_ge(vmwkvm_memfault_write_protect(mf, GPA0, 16 * PG), 0);
	int fd = vmwkvm_memfault_fd(mf);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(vmwkvm_memfault_fd(mf), fd);
	struct mf_toucher t;
	mf_touch_start(&t, mem, 16 * PG, true, 9);
	int resolved = 0;
	while (!atomic_load(&t.done)) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		if (poll(&pf, 1, 10) > 0) {
			int r = vmwkvm_memfault_dispatch(mf);
			ck_assert_int_ge(r, 0);
			resolved += r;
		}
	}
	pthread_join(t.th, NULL);
	ck_assert_int_eq(resolved, 16);
	for (size_t i = 0; i < 16 * PG; i++)
		ck_assert_int_eq(mem[i], 9);
	/* kick makes the fd readable */
	ck_assert_int_eq(vmwkvm_memfault_kick(mf), 0);
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	ck_assert_int_eq(poll(&pf, 1, 0), 1);
	ck_assert_int_eq(vmwkvm_memfault_dispatch(mf), 0);
	ck_assert_int_eq(poll(&pf, 1, 0), 0);
	munmap(mem, 16 * PG);
}
END_TEST

/* A handler removes its own range (no deadlock) and resolves other pages itself. */
static int self_removing(vmwkvm_memfault *m, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
			 void *ctx)
{
	atomic_int *calls = ctx;
	atomic_fetch_add(calls, 1);
	ck_assert_int_eq(vmwkvm_memfault_remove_range(m, GPA0, 4 * PG), 0);
	ck_assert_int_eq(vmwkvm_memfault_dispatch(m), -EDEADLK);
	ck_assert_int_eq(vmwkvm_memfault_unprotect(m, GPA0 + 3 * PG, PG), 0);
	act->kind = VMWKVM_MF_ACT_UNPROTECT;
	(void)rec;
	return 0;
}

START_TEST(handler_removes_itself)
{
	uint8_t *mem = mf_anon(4 * PG);
	add_anon(mem, 4 * PG);
	memset(mem, 1, 4 * PG);
	atomic_int calls = 0;
	struct vmwkvm_mf_range rg = mf_range(GPA0, 4 * PG, VMWKVM_MF_ACCESS_WRITE, self_removing, &calls);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	ck_assert_int_ge(vmwkvm_memfault_write_protect(mf, GPA0, 4 * PG), 0);
	ck_assert_int_eq(vmwkvm_memfault_start(mf), 0);
	mem[0] = 2;
	mem[PG] = 2; /* handler gone: default action (unprotect) */
	mem[3 * PG] = 2;
	ck_assert_int_eq(atomic_load(&calls), 1);
	ck_assert_int_eq(vmwkvm_memfault_stop(mf), 0);
	munmap(mem, 4 * PG);
}
END_TEST

/* ------------------------------------------------------------------ opening */

static int fake_open(void *ctx, const char *path, int flags)
{
	(void)ctx;
	(void)flags;
	return strcmp(path, "/dev/userfaultfd") == 0 ? -EACCES : -ENOENT;
}
static atomic_int uffd_flags_seen = -1;
static int fake_userfaultfd(void *ctx, int flags)
{
	(void)ctx;
	atomic_store(&uffd_flags_seen, flags);
	return -EPERM;
}

START_TEST(open_not_permitted)
{
	vmwkvm_memfault_free(mf);
	mf = NULL;
	struct vmwkvm_sys_ops ops = *vmwkvm_sys_default_ops();
	ops.open = fake_open;
	ops.userfaultfd = fake_userfaultfd;
	vmwkvm_sys_set_ops(&ops);
	vmwkvm_set_log(mf_log_capture, NULL, VMWKVM_LOG_WARN);
	struct vmwkvm_memfault_opts o = { .sz = sizeof(o), .flags = VMWKVM_MF_OPT_REQUIRE_UFFD };
	vmwkvm_memfault *m = NULL;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &m), -EPERM);
	ck_assert_ptr_null(m);
	ck_assert_ptr_nonnull(strstr(mf_last_log, "/dev/userfaultfd"));
	ck_assert_ptr_nonnull(strstr(mf_last_log, "CAP_SYS_PTRACE"));
	ck_assert_ptr_nonnull(strstr(mf_last_log, "vm.unprivileged_userfaultfd=1"));
	/* never user-mode-only */
	ck_assert_int_ge(atomic_load(&uffd_flags_seen), 0);
	ck_assert(!(atomic_load(&uffd_flags_seen) & UFFD_USER_MODE_ONLY));
	/* without REQUIRE: works, falls back to mprotect, fd says why */
	o.flags = 0;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &m), 0);
	ck_assert_int_eq(vmwkvm_memfault_fd(m), -EPERM);
	ck_assert_int_eq(vmwkvm_memfault_dispatch(m), -EPERM);
	ck_assert_int_eq(vmwkvm_memfault_start(m), -EPERM);
	uint8_t *mem = mf_anon(2 * PG);
	struct vmwkvm_mf_region r = mf_region(GPA0, mem, 2 * PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(m, &r), 0);
	ck_assert_int_eq(vmwkvm_memfault_mechanism(m, GPA0), VMWKVM_MF_MECH_MPROTECT);
	struct mf_log log;
	mf_log_init(&log, 0);
	struct vmwkvm_mf_range rg = mf_range(GPA0, PG, VMWKVM_MF_ACCESS_MISSING, mf_log_handler, &log);
	ck_assert_int_eq(vmwkvm_memfault_add_range(m, &rg), -EOPNOTSUPP);
	vmwkvm_memfault_free(m);
	munmap(mem, 2 * PG);
	vmwkvm_sys_set_ops(NULL);
	vmwkvm_set_log(NULL, NULL, VMWKVM_LOG_ERROR);
}
END_TEST

static atomic_int wp_eagain_left;
static int eagain_ioctl(void *ctx, int fd, unsigned long req, void *arg)
{
	if (req == UFFDIO_WRITEPROTECT && atomic_load(&wp_eagain_left) > 0) {
		atomic_fetch_sub(&wp_eagain_left, 1);
		return -EAGAIN;
	}
	return vmwkvm_sys_default_ops()->ioctl(ctx, fd, req, arg);
}

START_TEST(eagain_injected_is_retried)
{
	uint8_t *mem = mf_anon(2 * PG);
	add_anon(mem, 2 * PG);
	struct vmwkvm_sys_ops ops = *vmwkvm_sys_default_ops();
	ops.ioctl = eagain_ioctl;
	atomic_store(&wp_eagain_left, 5);
	vmwkvm_sys_set_ops(&ops);
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0, 2 * PG), VMWKVM_MF_MECH_UFFD_WP);
	vmwkvm_sys_set_ops(NULL);
	struct vmwkvm_mf_stats st = { .sz = sizeof(st) };
	ck_assert_int_eq(vmwkvm_memfault_stats(mf, &st), 0);
	ck_assert_uint_eq(st.eagain, 5);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0), VMWKVM_MF_PROT_WRITE);
	ck_assert_int_eq(vmwkvm_memfault_unprotect(mf, GPA0, 2 * PG), 0);
	munmap(mem, 2 * PG);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("memfault-uffd");
	TCase *w = tcase_create("wp");
	tcase_add_checked_fixture(w, setup, teardown);
	tcase_add_test(w, wp_anon_populated);
	tcase_add_test(w, wp_anon_untouched);
	tcase_add_test(w, wp_anon_untouched_without_wp_unpopulated);
	tcase_add_test(w, wp_memfd);
	tcase_add_test(w, wp_fill_then_write_lands);
	suite_add_tcase(s, w);
	TCase *m = tcase_create("missing");
	tcase_add_checked_fixture(m, setup, teardown);
	tcase_add_test(m, missing_copy_zeropage_anon);
	tcase_add_test(m, missing_copy_zeropage_memfd);
	tcase_add_test(m, minor_continue_memfd);
	suite_add_tcase(s, m);
	TCase *e = tcase_create("events");
	tcase_add_checked_fixture(e, setup, teardown);
	tcase_add_test(e, remove_event_anon_wp);
	tcase_add_test(e, eagain_while_event_unread);
	tcase_add_test(e, eexist_on_copy);
	tcase_add_test(e, failing_handler_parks_until_resolved);
	tcase_add_test(e, refused_overlapping_region_keeps_parked_faults);
	tcase_add_test(e, resolve_zero_while_bigger_pages_added);
	tcase_add_test(e, handler_adds_bigger_page_region);
	tcase_add_test(e, retry_then_fill_service_thread);
	tcase_add_test(e, region_removed_while_fault_pending);
	tcase_add_test(e, own_event_loop);
	tcase_add_test(e, handler_removes_itself);
	tcase_add_test(e, eagain_injected_is_retried);
	suite_add_tcase(s, e);
	TCase *o = tcase_create("open");
	tcase_add_test(o, open_not_permitted);
	suite_add_tcase(s, o);
	return s;
}

int main(void)
{
	/* skip only when userfaultfd is not permitted the way KVM needs it */
	return mf_run_uffd_suite(suite());
}
