/* Stress on the real userfaultfd (no KVM needed; also run under ThreadSanitizer, preset
 * tsan): host threads write while other threads change the protection, and
 *  1. no write is lost: every writer reads back what it wrote, and at the end every slot
 *     holds the last value its writer put there;
 *  2. a lazy snapshot (pause, write-protect everything, resume; a saver thread copies pages
 *     and unprotects them; a fault on an unsaved page saves it first) equals memory at the
 *     instant of protection, checked against an eager copy taken at the pause.
 * Guest memory is accessed with relaxed atomics: the kernel orders the writers against the
 * handler (a writer sleeps until the page is unprotected), which ThreadSanitizer cannot see.
 * Scale with VMWKVM_STRESS_SCALE (default 1). Skips (77) without userfaultfd. */
#include "test_memfault_util.h"

#define GPA0 0x1000000ull
#define NPAGES 64
#define NWRITERS 3

static unsigned scale(void)
{
	const char *s = getenv("VMWKVM_STRESS_SCALE");
	unsigned v = s ? (unsigned)atoi(s) : 1;
	return v ? v : 1;
}

static _Atomic uint64_t *slot(uint8_t *mem, unsigned page, unsigned w)
{
	return (_Atomic uint64_t *)(void *)(mem + (size_t)page * PG + (size_t)w * 64);
}

/* ------------------------------------------------------------------ 1: no lost write */

struct writer {
	pthread_t th;
	uint8_t *mem;
	unsigned id;
	atomic_int *stop;
	atomic_int *warm; /* writers that have written every page once */
	unsigned long n; /* writes done */
	atomic_long bad;
};

/* Writes k = 1, 2, ... to page k % NPAGES until told to stop. */
static void *writer_main(void *p)
{
	struct writer *w = p;
	unsigned long k = 0;
	while (!atomic_load_explicit(w->stop, memory_order_relaxed)) {
		k++;
		unsigned page = (unsigned)(k % NPAGES);
		atomic_store_explicit(slot(w->mem, page, w->id), k, memory_order_relaxed);
		if (atomic_load_explicit(slot(w->mem, page, w->id), memory_order_relaxed) != k)
			atomic_fetch_add(&w->bad, 1);
		if (k == NPAGES)
			atomic_fetch_add(w->warm, 1);
	}
	w->n = k;
	return NULL;
}

struct protector {
	pthread_t th;
	vmwkvm_memfault *mf;
	long target;
	atomic_int *stop;
	atomic_int *warm;
	long rounds;
	long errors;
};

static atomic_long write_faults;
#define MIN_WRITE_FAULTS 32

/* Once every writer is running (on a loaded machine a writer may not have been scheduled
 * yet), changes the protection of random ranges at least `target` times and until the
 * writers have hit a protected page MIN_WRITE_FAULTS times (a descheduled writer can miss
 * every round), then stops the writers. */
static void *protector_main(void *p)
{
	struct protector *pr = p;
	unsigned seed = 12345;
	while (atomic_load(pr->warm) < NWRITERS)
		sched_yield();
	while (pr->rounds < pr->target || atomic_load(&write_faults) < MIN_WRITE_FAULTS) {
		unsigned a = rand_r(&seed) % NPAGES, n = 1 + rand_r(&seed) % (NPAGES - a);
		if (vmwkvm_memfault_write_protect(pr->mf, GPA0 + a * PG, n * PG) < 0)
			pr->errors++;
		unsigned b = rand_r(&seed) % NPAGES, m = 1 + rand_r(&seed) % (NPAGES - b);
		if (vmwkvm_memfault_unprotect(pr->mf, GPA0 + b * PG, m * PG) < 0)
			pr->errors++;
		pr->rounds++;
		sched_yield();
	}
	atomic_store(pr->stop, 1);
	return NULL;
}

static int count_handler(vmwkvm_memfault *m, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
			 void *ctx)
{
	(void)m;
	(void)rec;
	(void)act;
	(void)ctx;
	atomic_fetch_add(&write_faults, 1);
	return 0;
}

static void no_lost_write(uint8_t *mem, struct vmwkvm_mf_region *reg)
{
	vmwkvm_memfault *mf;
	struct vmwkvm_memfault_opts o = { .sz = sizeof(o), .flags = VMWKVM_MF_OPT_REQUIRE_UFFD };
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &mf), 0);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, reg), 0);
	struct vmwkvm_mf_range rg = mf_range(GPA0, NPAGES * PG, VMWKVM_MF_ACCESS_WRITE, count_handler, NULL);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	ck_assert_int_eq(vmwkvm_memfault_start(mf), 0);
	atomic_store(&write_faults, 0);

	atomic_int stop = 0, warm = 0;
	struct writer w[NWRITERS];
	for (unsigned i = 0; i < NWRITERS; i++) {
		w[i] = (struct writer){ .mem = mem, .id = i, .stop = &stop, .warm = &warm };
		ck_assert_int_eq(pthread_create(&w[i].th, NULL, writer_main, &w[i]), 0);
	}
	struct protector pr = { .mf = mf, .target = 400l * scale(), .stop = &stop, .warm = &warm };
	ck_assert_int_eq(pthread_create(&pr.th, NULL, protector_main, &pr), 0);
	pthread_join(pr.th, NULL);
	unsigned long n = 0;
	for (unsigned i = 0; i < NWRITERS; i++) {
		pthread_join(w[i].th, NULL);
		n += w[i].n;
	}
	ck_assert_int_eq(vmwkvm_memfault_unprotect(mf, GPA0, NPAGES * PG), 0);
	ck_assert_int_eq(vmwkvm_memfault_stop(mf), 0);

	for (unsigned i = 0; i < NWRITERS; i++) {
		ck_assert_int_eq(atomic_load(&w[i].bad), 0);
		ck_assert_uint_ge(w[i].n, NPAGES);
		for (unsigned page = 0; page < NPAGES; page++) {
			/* the last k <= n with k % NPAGES == page */
			unsigned long last = w[i].n - ((w[i].n - page) % NPAGES);
			ck_assert_uint_eq(atomic_load_explicit(slot(mem, page, i), memory_order_relaxed), last);
		}
	}
	ck_assert_int_eq(pr.errors, 0);
	struct vmwkvm_mf_stats st = { .sz = sizeof(st) };
	ck_assert_int_eq(vmwkvm_memfault_stats(mf, &st), 0);
	fprintf(stderr, "no_lost_write: %lu writes, %ld protection rounds, %ld write faults handled, "
			"%llu uffd faults, %llu wakes\n",
		n, pr.rounds, atomic_load(&write_faults), (unsigned long long)st.faults[VMWKVM_MF_SRC_UFFD],
		(unsigned long long)st.wakes);
	ck_assert_int_ge(atomic_load(&write_faults), MIN_WRITE_FAULTS);
	vmwkvm_memfault_free(mf);
}

START_TEST(no_lost_write_anon)
{
	uint8_t *mem = mf_anon(NPAGES * PG);
	struct vmwkvm_mf_region reg = mf_region(GPA0, mem, NPAGES * PG, VMWKVM_MF_MEM_ANON);
	no_lost_write(mem, &reg);
	munmap(mem, NPAGES * PG);
}
END_TEST

START_TEST(no_lost_write_memfd)
{
	struct mf_memfd m = mf_memfd_new(NPAGES * PG);
	struct vmwkvm_mf_region reg = mf_region(GPA0, m.map, NPAGES * PG, VMWKVM_MF_MEM_SHMEM);
	reg.flags = VMWKVM_MF_REGION_HAS_FD;
	reg.fd = m.fd;
	no_lost_write(m.map, &reg);
	mf_memfd_free(&m);
}
END_TEST

/* ------------------------------------------------------------------ 2: lazy snapshot */

struct snap {
	uint8_t *mem;
	uint8_t *copy;       /* the lazy snapshot */
	_Atomic uint8_t st[NPAGES]; /* 0 unsaved, 1 saving, 2 saved */
	atomic_long faults;
};

static void copy_page(uint8_t *dst, const uint8_t *src)
{
	/* word-wise relaxed atomic loads (see the file comment) */
	for (size_t i = 0; i < PG; i += 8) {
		uint64_t v = atomic_load_explicit((_Atomic uint64_t *)(uintptr_t)(src + i), memory_order_relaxed);
		memcpy(dst + i, &v, 8);
	}
}

static bool save_page(struct snap *s, unsigned page)
{
	uint8_t expect = 0;
	if (atomic_compare_exchange_strong(&s->st[page], &expect, 1)) {
		copy_page(s->copy + (size_t)page * PG, s->mem + (size_t)page * PG);
		atomic_store(&s->st[page], 2);
		return true;
	}
	while (atomic_load(&s->st[page]) != 2)
		sched_yield();
	return false;
}

static int snap_handler(vmwkvm_memfault *m, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
			void *ctx)
{
	(void)m;
	struct snap *s = ctx;
	atomic_fetch_add(&s->faults, 1);
	save_page(s, (unsigned)((rec->gpa - GPA0) / PG));
	act->kind = VMWKVM_MF_ACT_UNPROTECT;
	return 0;
}

struct pwriter {
	pthread_t th;
	uint8_t *mem;
	unsigned id;
	atomic_int *pause_req, *stop;
	atomic_int paused;
	unsigned long k;
};

static void *pwriter_main(void *p)
{
	struct pwriter *w = p;
	unsigned seed = 77 + w->id;
	while (!atomic_load(w->stop)) {
		if (atomic_load(w->pause_req)) {
			atomic_store(&w->paused, 1);
			while (atomic_load(w->pause_req))
				sched_yield();
			atomic_store(&w->paused, 0);
			continue;
		}
		unsigned page = rand_r(&seed) % NPAGES;
		unsigned word = 8 + rand_r(&seed) % (PG / 8 - 8);
		w->k++;
		atomic_store_explicit((_Atomic uint64_t *)(void *)(w->mem + (size_t)page * PG + word * 8),
				      (uint64_t)w->id << 56 | w->k, memory_order_relaxed);
	}
	return NULL;
}

static void lazy_snapshot(uint8_t *mem, struct vmwkvm_mf_region *reg)
{
	vmwkvm_memfault *mf;
	struct vmwkvm_memfault_opts o = { .sz = sizeof(o), .flags = VMWKVM_MF_OPT_REQUIRE_UFFD };
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &mf), 0);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, reg), 0);
	static struct snap s;
	memset(&s, 0, sizeof(s));
	s.mem = mem;
	s.copy = malloc(NPAGES * PG);
	uint8_t *eager = malloc(NPAGES * PG);
	ck_assert_ptr_nonnull(s.copy);
	ck_assert_ptr_nonnull(eager);
	struct vmwkvm_mf_range rg = mf_range(GPA0, NPAGES * PG, VMWKVM_MF_ACCESS_WRITE, snap_handler, &s);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	ck_assert_int_eq(vmwkvm_memfault_start(mf), 0);

	atomic_int pause_req = 0, stop = 0;
	struct pwriter w[NWRITERS];
	for (unsigned i = 0; i < NWRITERS; i++) {
		w[i] = (struct pwriter){ .mem = mem, .id = i, .pause_req = &pause_req, .stop = &stop };
		ck_assert_int_eq(pthread_create(&w[i].th, NULL, pwriter_main, &w[i]), 0);
	}
	long total_faults = 0;
	unsigned rounds = 4 * scale();
	for (unsigned round = 0; round < rounds; round++) {
		for (int i = 0; i < 200; i++)
			sched_yield(); /* let the writers run */
		/* pause */
		atomic_store(&pause_req, 1);
		for (unsigned i = 0; i < NWRITERS; i++)
			while (!atomic_load(&w[i].paused))
				sched_yield();
		for (unsigned p = 0; p < NPAGES; p++) {
			copy_page(eager + (size_t)p * PG, mem + (size_t)p * PG);
			atomic_store(&s.st[p], 0);
		}
		atomic_store(&s.faults, 0);
		ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0, NPAGES * PG), VMWKVM_MF_MECH_UFFD_WP);
		/* resume at once; save in the background */
		atomic_store(&pause_req, 0);
		for (unsigned p = 0; p < NPAGES; p++) {
			unsigned page = (p * 37 + round) % NPAGES;
			if (save_page(&s, page) || atomic_load(&s.st[page]) == 2)
				ck_assert_int_eq(vmwkvm_memfault_unprotect(mf, GPA0 + (uint64_t)page * PG, PG), 0);
			if (p % 8 == 0)
				sched_yield();
		}
		ck_assert_int_eq(memcmp(s.copy, eager, NPAGES * PG), 0);
		total_faults += atomic_load(&s.faults);
	}
	atomic_store(&stop, 1);
	for (unsigned i = 0; i < NWRITERS; i++)
		pthread_join(w[i].th, NULL);
	ck_assert_int_eq(vmwkvm_memfault_stop(mf), 0);
	fprintf(stderr, "lazy_snapshot: %u rounds, %ld pages saved by a fault first\n", rounds, total_faults);
	vmwkvm_memfault_free(mf);
	free(s.copy);
	free(eager);
}

START_TEST(lazy_snapshot_anon)
{
	uint8_t *mem = mf_anon(NPAGES * PG);
	struct vmwkvm_mf_region reg = mf_region(GPA0, mem, NPAGES * PG, VMWKVM_MF_MEM_ANON);
	lazy_snapshot(mem, &reg);
	munmap(mem, NPAGES * PG);
}
END_TEST

START_TEST(lazy_snapshot_memfd)
{
	struct mf_memfd m = mf_memfd_new(NPAGES * PG);
	struct vmwkvm_mf_region reg = mf_region(GPA0, m.map, NPAGES * PG, VMWKVM_MF_MEM_SHMEM);
	reg.flags = VMWKVM_MF_REGION_HAS_FD;
	reg.fd = m.fd;
	lazy_snapshot(m.map, &reg);
	mf_memfd_free(&m);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("memfault-stress");
	TCase *t = tcase_create("stress");
	tcase_set_timeout(t, 240);
	tcase_add_test(t, no_lost_write_anon);
	tcase_add_test(t, no_lost_write_memfd);
	tcase_add_test(t, lazy_snapshot_anon);
	tcase_add_test(t, lazy_snapshot_memfd);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return mf_run_uffd_suite(suite());
}
