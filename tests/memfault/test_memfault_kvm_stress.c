/* Multi-vCPU stress on REAL KVM (exit 77 only when /dev/kvm is absent; userfaultfd not
 * permitted: 77 with the reason): 3 vCPUs run mf_guest.S in stress mode (store k to page
 * k mod P at the vCPU's own slot, read it back, k = 1..N; pass after pass) while a host thread keeps
 * write-protecting and unprotecting random page ranges through the library and the
 * library's service thread serves the faults KVM takes. No write may be lost: every
 * guest reads back its own store (else it reports on port 0xF5) and, at the end, every
 * slot holds the last k its vCPU stored there. Anonymous and memfd memory.
 * Watchdog: a thread that, past the deadline, flags the run and signals every vCPU thread
 * (SIGUSR1, no SA_RESTART) so that KVM_RUN returns EINTR; alarm() as a backstop. */
#include "test_memfault_kvm.h"

#define NPAGES 32
#define NCPU 3
#define ITERS 20000u
#define ROUNDS 400u

static struct mfk k;

struct vcpu_arg {
	vmwkvm_memfault *mf;
	int cpu;
	atomic_int *stop;
	int result;
	unsigned passes;
	struct mfk_result res;
	atomic_int done;
};

/* Stress passes (each stores k = 1..ITERS again) until told to stop; the first failure ends it. */
static void *vcpu_main(void *p)
{
	struct vcpu_arg *a = p;
	do {
		a->result = mfk_start(&k, a->cpu, MFK_MODE_STRESS, NPAGES, (unsigned)a->cpu, ITERS);
		if (a->result == 0)
			a->result = mfk_run(&k, a->cpu, a->mf, NULL, &a->res);
		if (a->result == 0 && (a->res.port != MFK_PORT_DONE || a->res.eax != ITERS))
			break;
		a->passes++;
	} while (a->result == 0 && !atomic_load(a->stop));
	atomic_store(&a->done, 1);
	return NULL;
}

struct watchdog {
	pthread_t th;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool finished;
	unsigned seconds;
	struct vcpu_arg *args;
};

static void *watchdog_main(void *p)
{
	struct watchdog *w = p;
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += w->seconds;
	pthread_mutex_lock(&w->lock);
	while (!w->finished)
		if (pthread_cond_timedwait(&w->cond, &w->lock, &dl) == ETIMEDOUT)
			break;
	bool fire = !w->finished;
	pthread_mutex_unlock(&w->lock);
	if (!fire)
		return NULL;
	atomic_store(&mfk_timed_out, 1);
	for (int round = 0; round < 100; round++) {
		bool all = true;
		for (int i = 0; i < NCPU; i++) {
			if (!atomic_load(&w->args[i].done)) {
				all = false;
				__atomic_store_n(&k.cpu[i].run->immediate_exit, 1, __ATOMIC_SEQ_CST);
				pthread_kill(k.cpu[i].th, SIGUSR1);
			}
		}
		if (all)
			break;
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static atomic_long faults;
static int count_handler(vmwkvm_memfault *mf, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
			 void *ctx)
{
	(void)mf;
	(void)act;
	(void)ctx;
	ck_assert_uint_eq(rec->source, VMWKVM_MF_SRC_UFFD);
	atomic_fetch_add(&faults, 1);
	return 0;
}

static void stress(bool memfd)
{
	ck_assert_int_eq(mfk_up(&k, NPAGES, memfd, 0, NCPU), 0);
	memset(k.data, 0, k.data_len);
	vmwkvm_memfault *mf = mfk_memfault(VMWKVM_MF_MECH_UFFD_WP, true);
	struct vmwkvm_mf_region reg = mfk_region(&k);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &reg), 0);
	struct vmwkvm_mf_range rg = { .sz = sizeof(rg), .gpa = MFK_DATA_GPA, .size = k.data_len,
				      .access = VMWKVM_MF_ACCESS_WRITE, .fn = count_handler };
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	ck_assert_int_eq(vmwkvm_memfault_start(mf), 0);
	atomic_store(&faults, 0);
	atomic_store(&mfk_timed_out, 0);

	struct vcpu_arg args[NCPU];
	atomic_int stop = 0;
	struct watchdog wd = { .seconds = 120 * kvmh_timeout_scale(), .args = args };
	pthread_mutex_init(&wd.lock, NULL);
	pthread_cond_init(&wd.cond, NULL);
	for (int i = 0; i < NCPU; i++) {
		memset(&args[i], 0, sizeof(args[i]));
		args[i].mf = mf;
		args[i].cpu = i;
		args[i].stop = &stop;
		ck_assert_int_eq(pthread_create(&k.cpu[i].th, NULL, vcpu_main, &args[i]), 0);
	}
	ck_assert_int_eq(pthread_create(&wd.th, NULL, watchdog_main, &wd), 0);
	/* change the protection ROUNDS times while the vCPUs run, then let them finish */
	unsigned seed = 4242, rounds = 0;
	for (;;) {
		bool all = true;
		for (int i = 0; i < NCPU; i++)
			all &= atomic_load(&args[i].done) != 0;
		if (all)
			break;
		if (rounds == ROUNDS)
			atomic_store(&stop, 1);
		if (rounds >= ROUNDS) {
			sched_yield();
			continue;
		}
		unsigned a = rand_r(&seed) % NPAGES, n = 1 + rand_r(&seed) % (NPAGES - a);
		ck_assert_int_ge(vmwkvm_memfault_write_protect(mf, MFK_DATA_GPA + a * MFK_PG, n * MFK_PG), 0);
		unsigned b = rand_r(&seed) % NPAGES, m = 1 + rand_r(&seed) % (NPAGES - b);
		ck_assert_int_eq(vmwkvm_memfault_unprotect(mf, MFK_DATA_GPA + b * MFK_PG, m * MFK_PG), 0);
		rounds++;
		sched_yield();
	}
	for (int i = 0; i < NCPU; i++)
		pthread_join(k.cpu[i].th, NULL);
	pthread_mutex_lock(&wd.lock);
	wd.finished = true;
	pthread_cond_signal(&wd.cond);
	pthread_mutex_unlock(&wd.lock);
	pthread_join(wd.th, NULL);
	ck_assert_int_eq(vmwkvm_memfault_unprotect(mf, MFK_DATA_GPA, k.data_len), 0);
	ck_assert_int_eq(vmwkvm_memfault_stop(mf), 0);

	for (int i = 0; i < NCPU; i++) {
		ck_assert_msg(args[i].result == 0, "vCPU %d: %s", i, k.why);
		ck_assert_msg(args[i].res.port == MFK_PORT_DONE, "vCPU %d reported a lost write at k=%u", i,
			      args[i].res.eax);
		ck_assert_uint_eq(args[i].res.eax, ITERS);
		for (unsigned p = 0; p < NPAGES; p++) {
			uint32_t last = ITERS - ((ITERS - p) % NPAGES), v;
			memcpy(&v, k.data + p * MFK_PG + (size_t)i * 8, 4);
			ck_assert_msg(v == last, "vCPU %d page %u: %u, expected %u", i, p, v, last);
		}
	}
	fprintf(stderr, "%s: %u protection rounds, %ld write faults handled, passes %u/%u/%u\n",
		memfd ? "memfd" : "anon", rounds, atomic_load(&faults), args[0].passes, args[1].passes, args[2].passes);
	vmwkvm_memfault_free(mf);
}

static void setup(void)
{
	kvmh_watchdog_arm(140); /* backstop; the watchdog thread acts first */
}

static void teardown(void)
{
	kvmh_watchdog_disarm();
	mfk_down(&k);
}

START_TEST(stress_anon)
{
	stress(false);
}
END_TEST

START_TEST(stress_memfd)
{
	stress(true);
}
END_TEST

int main(void)
{
	kvmh_skip_unless_kvm("memfault-kvm-stress");
	if (!mfk_uffd_permitted()) {
		fprintf(stderr, "SKIP: memfault-kvm-stress needs userfaultfd (not permitted to this process)\n");
		return 77;
	}
	Suite *s = suite_create("memfault-kvm-stress");
	TCase *t = tcase_create("stress");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 145);
	tcase_add_test(t, stress_anon);
	tcase_add_test(t, stress_memfd);
	suite_add_tcase(s, t);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
