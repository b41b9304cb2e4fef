/* Memory-fault dispatcher: the region and handler tables (overlap, adjacency, lookup,
 * removal while handlers run), driven through MMIO-on-RAM exits on a fake kvm_run over
 * plain memory, without userfaultfd (VMWKVM_MF_OPT_NO_UFFD), plus argument checking. */
#include "test_memfault_util.h"

#define GPA0 0x200000ull

static vmwkvm_memfault *mf;
static struct kvm_run run;

static void setup(void)
{
	struct vmwkvm_memfault_opts o = { .sz = sizeof(o), .flags = VMWKVM_MF_OPT_NO_UFFD };
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &mf), 0);
}

static void teardown(void)
{
	vmwkvm_memfault_free(mf);
	mf = NULL;
}

static int mmio(uint64_t gpa, uint32_t len, bool write, const void *data, struct vmwkvm_mf_record *rec)
{
	mf_fake_mmio(&run, gpa, len, write, data);
	return vmwkvm_memfault_handle_run(mf, &run, sizeof(run), 0, NULL, rec);
}

/* ------------------------------------------------------------------ argument checks */

START_TEST(new_and_options)
{
	vmwkvm_memfault *m = NULL;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, NULL, NULL), -EINVAL);
	struct vmwkvm_memfault_opts o = { .sz = sizeof(o), .flags = 1u << 20 };
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &m), -EINVAL);
	o.flags = VMWKVM_MF_OPT_NO_UFFD | VMWKVM_MF_OPT_REQUIRE_UFFD;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &m), -EINVAL);
	o.flags = VMWKVM_MF_OPT_NO_UFFD;
	o.mechanism = 3;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &m), -EINVAL);
	o.mechanism = VMWKVM_MF_MECH_UFFD_WP;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &m), -EINVAL);
	o.mechanism = 0;
	o.default_action = VMWKVM_MF_ACT_FILL;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &m), -EINVAL);
	o.default_action = 0;
	o.dialects = 1u << 7;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &m), -EINVAL);
	o.dialects = 0;
	o.reserved[2] = 1;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &m), -EINVAL);
	o.reserved[2] = 0;
	o.sz = 4; /* shorter than the first field */
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &o, &m), -EINVAL);
	/* a bigger struct from a newer caller: accepted when the unknown tail is zero */
	struct {
		struct vmwkvm_memfault_opts o;
		uint64_t more[2];
	} big;
	memset(&big, 0, sizeof(big));
	big.o.sz = sizeof(big);
	big.o.flags = VMWKVM_MF_OPT_NO_UFFD;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &big.o, &m), 0);
	vmwkvm_memfault_free(m);
	big.more[1] = 1;
	ck_assert_int_eq(vmwkvm_memfault_new(NULL, &big.o, &m), -EINVAL);
	vmwkvm_memfault_free(NULL);
	ck_assert_int_eq(vmwkvm_memfault_fd(mf), -EOPNOTSUPP);
	ck_assert_int_eq(vmwkvm_memfault_dispatch(mf), -EOPNOTSUPP);
	ck_assert_int_eq(vmwkvm_memfault_kick(mf), -EOPNOTSUPP);
	uint64_t f;
	ck_assert_int_eq(vmwkvm_memfault_uffd_features(mf, &f), -EOPNOTSUPP);
	ck_assert_int_eq(vmwkvm_memfault_pending(mf), 0);
	ck_assert_int_eq(vmwkvm_memfault_pending(NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_stop(mf), -ESRCH);
	struct vmwkvm_mf_stats st = { .sz = 4 };
	ck_assert_int_eq(vmwkvm_memfault_stats(mf, &st), -EINVAL);
	ck_assert_str_eq(vmwkvm_memfault_source_name(VMWKVM_MF_SRC_MMIO_ON_RAM), "mmio-on-ram");
	ck_assert_str_eq(vmwkvm_memfault_source_name(VMWKVM_MF_SRC_KVM_USERFAULT), "kvm-userfault");
	ck_assert_str_eq(vmwkvm_memfault_source_name(99), "unknown");
	ck_assert_str_eq(vmwkvm_memfault_action_name(VMWKVM_MF_ACT_ALLOW_ONCE), "allow-once");
	ck_assert_str_eq(vmwkvm_memfault_action_name(-1), "unknown");
}
END_TEST

START_TEST(region_checks)
{
	uint8_t *mem = mf_anon(16 * PG);
	struct vmwkvm_mf_region r = mf_region(GPA0, mem, 8 * PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(NULL, &r), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, NULL), -EINVAL);
	struct vmwkvm_mf_region b = r;
	b.gpa += 1;
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &b), -EINVAL);
	b = r;
	b.size = 0;
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &b), -EINVAL);
	b = r;
	b.host = mem + 1;
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &b), -EINVAL);
	b = r;
	b.gpa = UINT64_MAX & ~(PG - 1);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &b), -EINVAL); /* wraps */
	b = r;
	b.kind = 7;
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &b), -EINVAL);
	b = r;
	b.flags = VMWKVM_MF_REGION_HAS_FD; /* anon with an fd */
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &b), -EINVAL);
	b = r;
	b.page_size = 3000;
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &b), -EINVAL);
	b = r;
	b.reserved[0] = 1;
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &b), -EINVAL);

	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r), 0);
	/* overlap in GPA, in host address, partial and enclosing */
	b = mf_region(GPA0 + 4 * PG, mem + 8 * PG, 8 * PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &b), -EEXIST);
	b = mf_region(GPA0 - PG, mem + 8 * PG, 2 * PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &b), -EEXIST);
	b = mf_region(GPA0 + 64 * PG, mem + 4 * PG, 8 * PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &b), -EEXIST);
	b = mf_region(GPA0 - 64 * PG, mem, PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &b), -EEXIST);
	/* adjacent in both: fine */
	b = mf_region(GPA0 + 8 * PG, mem + 8 * PG, 8 * PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &b), 0);
	ck_assert_int_eq(vmwkvm_memfault_mechanism(mf, GPA0 + 9 * PG), VMWKVM_MF_MECH_MPROTECT);
	ck_assert_int_eq(vmwkvm_memfault_mechanism(mf, GPA0 + 16 * PG), -ENOENT);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 - 1), -ENOENT);
	ck_assert_int_eq(vmwkvm_memfault_remove_region(mf, GPA0 + PG), -ENOENT);
	ck_assert_int_eq(vmwkvm_memfault_remove_region(mf, GPA0), 0);
	ck_assert_int_eq(vmwkvm_memfault_remove_region(mf, GPA0), -ENOENT);
	ck_assert_int_eq(vmwkvm_memfault_remove_region(mf, GPA0 + 8 * PG), 0);
	munmap(mem, 16 * PG);
}
END_TEST

static int nop_handler(vmwkvm_memfault *m, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
		       void *ctx)
{
	(void)m;
	(void)rec;
	(void)act;
	(void)ctx;
	return 0;
}

START_TEST(range_checks)
{
	struct vmwkvm_mf_range r = mf_range(0x1000, 0x100, VMWKVM_MF_ACCESS_WRITE, nop_handler, NULL);
	struct vmwkvm_mf_range b = r;
	b.fn = NULL;
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &b), -EINVAL);
	b = r;
	b.size = 0;
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &b), -EINVAL);
	b = r;
	b.access = 0;
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &b), -EINVAL);
	b = r;
	b.access = 1u << 9;
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &b), -EINVAL);
	b = r;
	b.gpa = UINT64_MAX - 10;
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &b), -EINVAL);
	b = r;
	b.access = VMWKVM_MF_ACCESS_MISSING; /* needs userfaultfd */
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &b), -EOPNOTSUPP);

	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &r), 0);
	/* overlaps: same, inside, across the start, across the end, enclosing */
	uint64_t ov[][2] = { { 0x1000, 0x100 }, { 0x1010, 0x10 }, { 0xff0, 0x20 }, { 0x10f0, 0x20 }, { 0x800, 0x1000 } };
	for (size_t i = 0; i < sizeof(ov) / sizeof(ov[0]); i++) {
		b = r;
		b.gpa = ov[i][0];
		b.size = ov[i][1];
		ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &b), -EEXIST);
	}
	/* adjacent on both sides */
	b = r;
	b.gpa = 0xf00;
	b.size = 0x100;
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &b), 0);
	b.gpa = 0x1100;
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &b), 0);
	/* removal must name the range exactly */
	ck_assert_int_eq(vmwkvm_memfault_remove_range(mf, 0x1000, 0x80), -ENOENT);
	ck_assert_int_eq(vmwkvm_memfault_remove_range(mf, 0x1001, 0x100), -ENOENT);
	ck_assert_int_eq(vmwkvm_memfault_remove_range(mf, 0x1000, 0x100), 0);
	ck_assert_int_eq(vmwkvm_memfault_remove_range(mf, 0x1000, 0x100), -ENOENT);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &r), 0); /* the hole can be refilled */
	/* a range at the very top of the address space */
	b = r;
	b.gpa = UINT64_MAX - 0xfff;
	b.size = 0xfff;
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &b), 0);
	ck_assert_int_eq(vmwkvm_memfault_remove_range(NULL, 0, 1), -EINVAL);
}
END_TEST

/* ------------------------------------------------------------------ lookup */

struct id_ctx {
	int id;
	atomic_int *last;
};

static int id_handler(vmwkvm_memfault *m, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
		      void *ctx)
{
	(void)m;
	(void)rec;
	(void)act;
	struct id_ctx *c = ctx;
	atomic_store(c->last, c->id);
	return 0;
}

/* 2000 ranges inserted in a scrambled order; every lookup reaches the right one, gaps
 * reach none. */
START_TEST(lookup_many_ranges)
{
	enum { N = 2000 };
	uint8_t *mem = mf_anon(N * 2 * 64);
	struct vmwkvm_mf_region reg = mf_region(GPA0, mem, (N * 2 * 64 + PG - 1) & ~(PG - 1), VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &reg), 0);
	static struct id_ctx ctx[N];
	atomic_int last = -1;
	for (int k = 0; k < N; k++) {
		int i = (k * 769) % N; /* 769 is prime to N: a permutation */
		ctx[i].id = i;
		ctx[i].last = &last;
		/* range i: [GPA0 + i*128, +64), gaps of 64 between */
		struct vmwkvm_mf_range r = mf_range(GPA0 + (uint64_t)i * 128, 64,
						    VMWKVM_MF_ACCESS_READ | VMWKVM_MF_ACCESS_WRITE, id_handler, &ctx[i]);
		ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &r), 0);
	}
	for (int i = 0; i < N; i += 7) {
		atomic_store(&last, -1);
		uint32_t v = 0x12345678;
		ck_assert_int_eq(mmio(GPA0 + (uint64_t)i * 128 + 60, 4, true, &v, NULL), VMWKVM_MF_EXIT_HANDLED);
		ck_assert_int_eq(atomic_load(&last), i);
		ck_assert_int_eq(memcmp(mem + i * 128 + 60, &v, 4), 0);
		atomic_store(&last, -1);
		ck_assert_int_eq(mmio(GPA0 + (uint64_t)i * 128 + 64, 4, false, NULL, NULL), VMWKVM_MF_EXIT_HANDLED);
		ck_assert_int_eq(atomic_load(&last), -1); /* in a gap */
	}
	munmap(mem, N * 2 * 64);
}
END_TEST

/* ------------------------------------------------------------------ pieces */

START_TEST(access_mask_filters)
{
	uint8_t *mem = mf_anon(PG);
	struct vmwkvm_mf_region reg = mf_region(GPA0, mem, PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &reg), 0);
	struct mf_log log;
	mf_log_init(&log, 0);
	struct vmwkvm_mf_range r = mf_range(GPA0, PG, VMWKVM_MF_ACCESS_WRITE, mf_log_handler, &log);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &r), 0);
	ck_assert_int_eq(mmio(GPA0 + 8, 8, false, NULL, NULL), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(atomic_load(&log.n), 0);
	uint64_t v = 0x1122334455667788ull;
	ck_assert_int_eq(mmio(GPA0 + 8, 8, true, &v, NULL), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(atomic_load(&log.n), 1);
	munmap(mem, PG);
}
END_TEST

struct split_ctx {
	uint32_t kind;
	int err;
	int calls;
	uint64_t gpa, size;
	const void *data;
};

static int split_handler(vmwkvm_memfault *m, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
			 void *ctx)
{
	(void)m;
	struct split_ctx *c = ctx;
	c->calls++;
	c->gpa = rec->gpa;
	c->size = rec->size;
	if (c->err)
		return c->err;
	if (c->kind)
		act->kind = c->kind;
	act->data = c->data;
	return 0;
}

/* An access across the end of a range is split: each handler sees its part; the access
 * completes only if every part resolves; the first failing part is reported. */
START_TEST(access_across_range_end)
{
	uint8_t *mem = mf_anon(PG);
	memset(mem, 0, PG);
	struct vmwkvm_mf_region reg = mf_region(GPA0, mem, PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &reg), 0);
	struct split_ctx a = { 0 }, b = { 0 };
	struct vmwkvm_mf_range ra = mf_range(GPA0, 0x100, VMWKVM_MF_ACCESS_WRITE, split_handler, &a);
	struct vmwkvm_mf_range rb = mf_range(GPA0 + 0x100, 0x100, VMWKVM_MF_ACCESS_WRITE | VMWKVM_MF_ACCESS_READ,
					     split_handler, &b);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &ra), 0);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rb), 0);
	uint32_t v = 0xa1b2c3d4;
	struct vmwkvm_mf_record rec;
	ck_assert_int_eq(mmio(GPA0 + 0xfe, 4, true, &v, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(a.calls, 1);
	ck_assert_int_eq(b.calls, 1);
	ck_assert_uint_eq(a.gpa, GPA0 + 0xfe);
	ck_assert_uint_eq(a.size, 2);
	ck_assert_uint_eq(b.gpa, GPA0 + 0x100);
	ck_assert_uint_eq(b.size, 2);
	ck_assert_uint_eq(rec.gpa, GPA0 + 0xfe);
	ck_assert_uint_eq(rec.size, 4);
	ck_assert_int_eq(memcmp(mem + 0xfe, &v, 4), 0);

	/* a part answers RETRY: nothing is written */
	b.kind = VMWKVM_MF_ACT_RETRY;
	uint32_t w = 0x01020304;
	ck_assert_int_eq(mmio(GPA0 + 0xfe, 4, true, &w, &rec), VMWKVM_MF_EXIT_RETRY);
	ck_assert_int_eq(memcmp(mem + 0xfe, &v, 4), 0);
	/* a part fails: nothing is written, the failing part is reported */
	b.kind = 0;
	b.err = -EIO;
	ck_assert_int_eq(mmio(GPA0 + 0xfe, 4, true, &w, &rec), VMWKVM_MF_EXIT_FAILED);
	ck_assert_int_eq(memcmp(mem + 0xfe, &v, 4), 0);
	ck_assert_int_eq(rec.error, -EIO);
	ck_assert_uint_eq(rec.gpa, GPA0 + 0x100);
	ck_assert_uint_eq(rec.size, 2);
	ck_assert_uint_eq(rec.source, VMWKVM_MF_SRC_MMIO_ON_RAM);
	/* FAIL with an explicit error */
	b.err = 0;
	b.kind = VMWKVM_MF_ACT_FAIL;
	ck_assert_int_eq(mmio(GPA0 + 0x100, 1, true, &w, &rec), VMWKVM_MF_EXIT_FAILED);
	ck_assert_int_eq(rec.error, -EFAULT);
	/* FILL on one part, then the access itself on top */
	static const uint8_t fill[2] = { 0xee, 0xef };
	b.kind = VMWKVM_MF_ACT_FILL;
	b.data = fill;
	int bcalls = b.calls;
	ck_assert_int_eq(mmio(GPA0 + 0xfe, 2, true, &w, NULL), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(b.calls, bcalls); /* the access ends before b: b is not asked */
	ck_assert_int_eq(mem[0x100], 0xb2);
	ck_assert_int_eq(mmio(GPA0 + 0xff, 2, false, NULL, NULL), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(mem[0x100], 0xee);
	ck_assert_int_eq(run.mmio.data[1], 0xee); /* the read returned RAM after the fill */
	/* FILL without data is a failure, not a crash */
	b.data = NULL;
	ck_assert_int_eq(mmio(GPA0 + 0x100, 1, false, NULL, &rec), VMWKVM_MF_EXIT_FAILED);
	ck_assert_int_eq(rec.error, -EINVAL);
	/* an unknown action likewise */
	b.kind = 77;
	ck_assert_int_eq(mmio(GPA0 + 0x100, 1, false, NULL, &rec), VMWKVM_MF_EXIT_FAILED);
	ck_assert_int_eq(rec.error, -EINVAL);
	munmap(mem, PG);
}
END_TEST

/* Regions: outside RAM is not ours; crossing into no RAM fails with -ERANGE untouched;
 * crossing into an adjacent region lands in both. */
START_TEST(access_outside_and_across_regions)
{
	uint8_t *m1 = mf_anon(PG), *m2 = mf_anon(PG);
	memset(m1, 0, PG);
	memset(m2, 0, PG);
	struct vmwkvm_mf_region r1 = mf_region(GPA0, m1, PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r1), 0);
	uint64_t v = 0x0807060504030201ull;
	struct vmwkvm_mf_record rec;
	ck_assert_int_eq(mmio(GPA0 - 8, 8, true, &v, &rec), VMWKVM_MF_EXIT_NOT_OURS);
	ck_assert_int_eq(mmio(GPA0 + PG, 4, true, &v, &rec), VMWKVM_MF_EXIT_NOT_OURS);
	ck_assert_int_eq(mmio(GPA0 + PG - 4, 8, true, &v, &rec), VMWKVM_MF_EXIT_FAILED);
	ck_assert_int_eq(rec.error, -ERANGE);
	ck_assert_int_eq(m1[PG - 4] | m1[PG - 1], 0);
	struct vmwkvm_mf_region r2 = mf_region(GPA0 + PG, m2, PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r2), 0);
	ck_assert_int_eq(mmio(GPA0 + PG - 4, 8, true, &v, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(memcmp(m1 + PG - 4, &v, 4), 0);
	ck_assert_int_eq(memcmp(m2, (uint8_t *)&v + 4, 4), 0);
	ck_assert_int_eq(mmio(GPA0 + PG - 2, 4, false, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(memcmp(run.mmio.data, (uint8_t *)&v + 2, 4), 0);
	/* bad kvm_run */
	ck_assert_int_eq(mmio(GPA0, 0, true, &v, NULL), -EINVAL);
	ck_assert_int_eq(mmio(GPA0, 9, true, &v, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run) - 1, 0, NULL, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, NULL, sizeof(run), 0, NULL, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_handle_exit(mf, NULL, 0, NULL), -EINVAL);
	/* an MMIO exit reported with a failed KVM_RUN is stale: not ours */
	mf_fake_mmio(&run, GPA0, 4, true, &v);
	ck_assert_int_eq(vmwkvm_memfault_handle_run(mf, &run, sizeof(run), -EINTR, NULL, NULL), VMWKVM_MF_EXIT_NOT_OURS);
	munmap(m1, PG);
	munmap(m2, PG);
}
END_TEST

/* ------------------------------------------------------------------ removal while running */

struct block_ctx {
	atomic_int entered, release, exited, calls;
};

static int blocking_handler(vmwkvm_memfault *m, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
			    void *ctx)
{
	(void)m;
	(void)rec;
	(void)act;
	struct block_ctx *c = ctx;
	atomic_fetch_add(&c->calls, 1);
	atomic_store(&c->entered, 1);
	while (!atomic_load(&c->release))
		sched_yield();
	atomic_store(&c->exited, 1);
	return 0;
}

struct vcpu_arg {
	vmwkvm_memfault *mf;
	uint64_t gpa;
	int result;
};

static void *vcpu_main(void *p)
{
	struct vcpu_arg *a = p;
	struct kvm_run r;
	uint32_t v = 0xfeedf00d;
	mf_fake_mmio(&r, a->gpa, 4, true, &v);
	a->result = vmwkvm_memfault_handle_run(a->mf, &r, sizeof(r), 0, NULL, NULL);
	return NULL;
}

struct remover_arg {
	vmwkvm_memfault *mf;
	bool region;
	uint64_t gpa, size;
	struct block_ctx *c;
	atomic_int calling, returned;
	int exited_at_return;
	int result;
};

static void *remover_main(void *p)
{
	struct remover_arg *a = p;
	atomic_store(&a->calling, 1);
	a->result = a->region ? vmwkvm_memfault_remove_region(a->mf, a->gpa)
			      : vmwkvm_memfault_remove_range(a->mf, a->gpa, a->size);
	a->exited_at_return = atomic_load(&a->c->exited);
	atomic_store(&a->returned, 1);
	return NULL;
}

static void removal_during_dispatch(bool region)
{
	uint8_t *mem = mf_anon(PG);
	struct vmwkvm_mf_region reg = mf_region(GPA0, mem, PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &reg), 0);
	struct block_ctx c;
	memset(&c, 0, sizeof(c));
	struct vmwkvm_mf_range r = mf_range(GPA0, PG, VMWKVM_MF_ACCESS_WRITE, blocking_handler, &c);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &r), 0);
	struct vcpu_arg va = { .mf = mf, .gpa = GPA0 + 16 };
	pthread_t vt, rt;
	ck_assert_int_eq(pthread_create(&vt, NULL, vcpu_main, &va), 0);
	while (!atomic_load(&c.entered))
		sched_yield();
	struct remover_arg ra = { .mf = mf, .region = region, .gpa = GPA0, .size = PG, .c = &c };
	ck_assert_int_eq(pthread_create(&rt, NULL, remover_main, &ra), 0);
	while (!atomic_load(&ra.calling))
		sched_yield();
	for (int i = 0; i < 1000; i++)
		sched_yield(); /* give a broken implementation every chance to return early */
	ck_assert_int_eq(atomic_load(&ra.returned), 0);
	atomic_store(&c.release, 1);
	pthread_join(rt, NULL);
	pthread_join(vt, NULL);
	ck_assert_int_eq(ra.result, 0);
	ck_assert_int_eq(ra.exited_at_return, 1); /* removal returned only after the handler left */
	ck_assert_int_eq(va.result, VMWKVM_MF_EXIT_HANDLED);
	ck_assert_uint_eq(*(uint32_t *)(void *)(mem + 16), 0xfeedf00d);
	/* afterwards the handler is never called again */
	uint32_t v = 1;
	int res = mmio(GPA0 + 32, 4, true, &v, NULL);
	ck_assert_int_eq(res, region ? VMWKVM_MF_EXIT_NOT_OURS : VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(atomic_load(&c.calls), 1);
	if (region)
		ck_assert_int_eq(vmwkvm_memfault_remove_range(mf, GPA0, PG), 0);
	else
		ck_assert_int_eq(vmwkvm_memfault_remove_region(mf, GPA0), 0);
	munmap(mem, PG);
}

START_TEST(remove_range_waits_for_handler)
{
	removal_during_dispatch(false);
}
END_TEST

START_TEST(remove_region_waits_for_handler)
{
	removal_during_dispatch(true);
}
END_TEST

static int self_remove(vmwkvm_memfault *m, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
		       void *ctx)
{
	(void)act;
	(void)ctx;
	ck_assert_int_eq(vmwkvm_memfault_remove_range(m, rec->gpa & ~(PG - 1), PG), 0);
	ck_assert_int_eq(vmwkvm_memfault_remove_region(m, GPA0 + PG), 0);
	return 0;
}

START_TEST(handler_removes_its_range_and_region)
{
	uint8_t *mem = mf_anon(2 * PG);
	struct vmwkvm_mf_region r1 = mf_region(GPA0, mem, PG, VMWKVM_MF_MEM_ANON);
	struct vmwkvm_mf_region r2 = mf_region(GPA0 + PG, mem + PG, PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r1), 0);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r2), 0);
	struct vmwkvm_mf_range r = mf_range(GPA0, PG, VMWKVM_MF_ACCESS_WRITE, self_remove, NULL);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &r), 0);
	uint32_t v = 5;
	ck_assert_int_eq(mmio(GPA0 + 4, 4, true, &v, NULL), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(mem[4], 5);
	ck_assert_int_eq(vmwkvm_memfault_remove_range(mf, GPA0, PG), -ENOENT);
	ck_assert_int_eq(mmio(GPA0 + PG, 4, true, &v, NULL), VMWKVM_MF_EXIT_NOT_OURS);
	munmap(mem, 2 * PG);
}
END_TEST

/* A handler changes the tables while another thread waits for that handler's grace period
 * (the waiter must not hold the writers' lock meanwhile). */
static int changing_handler(vmwkvm_memfault *m, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
			    void *ctx)
{
	(void)rec;
	(void)act;
	struct block_ctx *c = ctx;
	atomic_store(&c->entered, 1);
	while (!atomic_load(&c->release))
		sched_yield();
	struct vmwkvm_mf_range r = mf_range(GPA0 + 0x800, 0x10, VMWKVM_MF_ACCESS_WRITE, nop_handler, NULL);
	ck_assert_int_eq(vmwkvm_memfault_add_range(m, &r), 0);
	ck_assert_int_eq(vmwkvm_memfault_remove_range(m, GPA0 + 0x800, 0x10), 0);
	atomic_store(&c->exited, 1);
	return 0;
}

START_TEST(handler_changes_tables_during_grace)
{
	uint8_t *mem = mf_anon(PG);
	struct vmwkvm_mf_region reg = mf_region(GPA0, mem, PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &reg), 0);
	struct block_ctx c;
	memset(&c, 0, sizeof(c));
	struct vmwkvm_mf_range r = mf_range(GPA0, 0x100, VMWKVM_MF_ACCESS_WRITE, changing_handler, &c);
	struct vmwkvm_mf_range other = mf_range(GPA0 + 0x400, 0x100, VMWKVM_MF_ACCESS_WRITE, nop_handler, NULL);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &r), 0);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &other), 0);
	struct vcpu_arg va = { .mf = mf, .gpa = GPA0 + 16 };
	pthread_t vt, rt;
	ck_assert_int_eq(pthread_create(&vt, NULL, vcpu_main, &va), 0);
	while (!atomic_load(&c.entered))
		sched_yield();
	struct remover_arg ra = { .mf = mf, .gpa = GPA0 + 0x400, .size = 0x100, .c = &c };
	ck_assert_int_eq(pthread_create(&rt, NULL, remover_main, &ra), 0);
	while (!atomic_load(&ra.calling))
		sched_yield();
	for (int i = 0; i < 1000; i++)
		sched_yield();
	atomic_store(&c.release, 1); /* the handler now adds and removes a range */
	pthread_join(vt, NULL);
	pthread_join(rt, NULL);
	ck_assert_int_eq(va.result, VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(ra.result, 0);
	ck_assert_int_eq(ra.exited_at_return, 1);
	munmap(mem, PG);
}
END_TEST

/* Many vCPU threads dispatch while another thread keeps adding and removing ranges. */
struct churn_arg {
	vmwkvm_memfault *mf;
	atomic_int *stop;
	int id;
	atomic_long ok; /* dispatches done; read by the churning thread */
};

static void *churn_vcpu(void *p)
{
	struct churn_arg *a = p;
	struct kvm_run r;
	uint32_t v = (uint32_t)a->id;
	while (!atomic_load(a->stop)) {
		mf_fake_mmio(&r, GPA0 + (uint64_t)a->id * 64, 4, true, &v);
		int res = vmwkvm_memfault_handle_run(a->mf, &r, sizeof(r), 0, NULL, NULL);
		ck_assert_int_eq(res, VMWKVM_MF_EXIT_HANDLED);
		atomic_fetch_add(&a->ok, 1);
	}
	return NULL;
}

/* Whether every churn thread has dispatched at least @p n times. */
static bool churn_all_dispatched(struct churn_arg *args, int nargs, long n)
{
	for (int i = 0; i < nargs; i++)
		if (atomic_load(&args[i].ok) < n)
			return false;
	return true;
}

START_TEST(churn_ranges_while_dispatching)
{
	uint8_t *mem = mf_anon(PG);
	memset(mem, 0xa5, PG); /* every thread's value, thread 0's too, must be written */
	struct vmwkvm_mf_region reg = mf_region(GPA0, mem, PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &reg), 0);
	atomic_int stop = 0;
	struct churn_arg args[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		args[i] = (struct churn_arg){ .mf = mf, .stop = &stop, .id = i };
		ck_assert_int_eq(pthread_create(&th[i], NULL, churn_vcpu, &args[i]), 0);
	}
	/* churn only while every thread dispatches: on a loaded machine a thread may otherwise
	 * not be scheduled before the 300 rounds are over (seen: its word never written) */
	while (!churn_all_dispatched(args, 4, 1))
		sched_yield();
	atomic_int calls = 0;
	for (int round = 0; round < 300 || !churn_all_dispatched(args, 4, 300); round++) {
		struct mf_log log;
		mf_log_init(&log, 0);
		struct vmwkvm_mf_range r = mf_range(GPA0 + (uint64_t)(round % 4) * 64, 64, VMWKVM_MF_ACCESS_WRITE,
						    mf_log_handler, &log);
		ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &r), 0);
		sched_yield();
		ck_assert_int_eq(vmwkvm_memfault_remove_range(mf, r.gpa, r.size), 0);
		/* log lives on this stack frame: removal guaranteed nobody uses it any more */
		atomic_fetch_add(&calls, atomic_load(&log.calls));
		memset(&log, 0x5a, sizeof(log));
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ck_assert_uint_eq(*(uint32_t *)(void *)(mem + i * 64), (uint32_t)i);
	}
	munmap(mem, PG);
}
END_TEST

/* ------------------------------------------------------------------ mprotect mechanism */

/* Without userfaultfd write protection is mprotect(); a (fake) MMIO write to a protected
 * page lands through /proc/self/mem (anonymous) or the alias (memfd) while the page stays
 * protected (ALLOW_ONCE), or after unprotecting (default). */
static void mprotect_complete(uint8_t *mem, struct vmwkvm_mf_region *reg)
{
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, reg), 0);
	memset(mem, 0x10, 4 * PG);
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0, 4 * PG), VMWKVM_MF_MECH_MPROTECT);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0), VMWKVM_MF_PROT_WRITE);
	struct mf_log keep;
	mf_log_init(&keep, VMWKVM_MF_ACT_ALLOW_ONCE);
	struct vmwkvm_mf_range r = mf_range(GPA0, PG, VMWKVM_MF_ACCESS_WRITE, mf_log_handler, &keep);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &r), 0);
	uint32_t v = 0xcafebabe;
	struct vmwkvm_mf_record rec;
	ck_assert_int_eq(mmio(GPA0 + 0x40, 4, true, &v, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(memcmp(mem + 0x40, &v, 4), 0);
	ck_assert_int_eq(keep.first_bytes[0][0], 0x10); /* handler saw the old bytes */
	ck_assert(keep.recs[0].flags & VMWKVM_MF_FLAG_PROTECTED);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0), VMWKVM_MF_PROT_WRITE);
	/* default for an unhandled page: unprotect, then the write */
	ck_assert_int_eq(mmio(GPA0 + PG + 8, 4, true, &v, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(memcmp(mem + PG + 8, &v, 4), 0);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + PG), VMWKVM_MF_PROT_NONE);
	mem[PG + 100] = 1; /* really writable again */
	/* access protection: reads trap too and return RAM's bytes */
	ck_assert_int_eq(vmwkvm_memfault_protect(mf, GPA0 + 2 * PG, PG, VMWKVM_MF_PROT_ACCESS), VMWKVM_MF_MECH_MPROTECT);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + 2 * PG), VMWKVM_MF_PROT_ACCESS);
	struct mf_log rd;
	mf_log_init(&rd, VMWKVM_MF_ACT_ALLOW_ONCE);
	struct vmwkvm_mf_range r3 = mf_range(GPA0 + 2 * PG, PG, VMWKVM_MF_ACCESS_READ, mf_log_handler, &rd);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &r3), 0);
	ck_assert_int_eq(mmio(GPA0 + 2 * PG + 6, 2, false, NULL, &rec), VMWKVM_MF_EXIT_HANDLED);
	ck_assert_int_eq(run.mmio.data[0], 0x10);
	ck_assert_int_eq(run.mmio.data[1], 0x10);
	ck_assert_int_eq(atomic_load(&rd.n), 1);
	ck_assert_int_eq(rd.first_bytes[0][0], 0x10);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + 2 * PG), VMWKVM_MF_PROT_ACCESS);
	/* write-protect again lowers access protection to write protection */
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0 + 2 * PG, PG), VMWKVM_MF_MECH_MPROTECT);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + 2 * PG), VMWKVM_MF_PROT_WRITE);
	ck_assert_int_eq(mem[2 * PG], 0x10); /* readable */
	/* resolve FILL writes through the protection and lifts it */
	static uint8_t page[PG];
	memset(page, 0x6b, sizeof(page));
	ck_assert_int_eq(vmwkvm_memfault_resolve(mf, GPA0 + 3 * PG, PG, VMWKVM_MF_ACT_FILL, page), 0);
	ck_assert_int_eq(mem[3 * PG + 17], 0x6b);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + 3 * PG), VMWKVM_MF_PROT_NONE);
	ck_assert_int_eq(vmwkvm_memfault_unprotect(mf, GPA0, 4 * PG), 0);
	memset(mem, 0, 4 * PG);
	/* bad arguments */
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0 + 1, PG), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0, 0), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0, 5 * PG), -ENOENT);
	ck_assert_int_eq(vmwkvm_memfault_protect(mf, GPA0, PG, 9), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_resolve(mf, GPA0, PG, VMWKVM_MF_ACT_FILL, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_resolve(mf, GPA0, PG, VMWKVM_MF_ACT_RETRY, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0), VMWKVM_MF_PROT_NONE);
}

START_TEST(mprotect_anon)
{
	uint8_t *mem = mf_anon(4 * PG);
	struct vmwkvm_mf_region reg = mf_region(GPA0, mem, 4 * PG, VMWKVM_MF_MEM_ANON);
	mprotect_complete(mem, &reg);
	/* removing the region puts back read-write */
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0, 4 * PG), VMWKVM_MF_MECH_MPROTECT);
	ck_assert_int_eq(vmwkvm_memfault_remove_region(mf, GPA0), 0);
	mem[0] = 1;
	munmap(mem, 4 * PG);
}
END_TEST

START_TEST(mprotect_memfd_alias)
{
	struct mf_memfd m = mf_memfd_new(4 * PG);
	struct vmwkvm_mf_region reg = mf_region(GPA0, m.map, 4 * PG, VMWKVM_MF_MEM_SHMEM);
	reg.flags = VMWKVM_MF_REGION_HAS_FD;
	reg.fd = m.fd;
	mprotect_complete(m.map, &reg);
	mf_memfd_free(&m);
}
END_TEST

START_TEST(mprotect_shared_anon_alias)
{
	uint8_t *mem = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(mem, MAP_FAILED);
	struct vmwkvm_mf_region reg = mf_region(GPA0, mem, 4 * PG, VMWKVM_MF_MEM_SHMEM);
	mprotect_complete(mem, &reg);
	munmap(mem, 4 * PG);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("memfault-table");
	TCase *a = tcase_create("args");
	tcase_add_checked_fixture(a, setup, teardown);
	tcase_add_test(a, new_and_options);
	tcase_add_test(a, region_checks);
	tcase_add_test(a, range_checks);
	suite_add_tcase(s, a);
	TCase *l = tcase_create("lookup");
	tcase_add_checked_fixture(l, setup, teardown);
	tcase_add_test(l, lookup_many_ranges);
	tcase_add_test(l, access_mask_filters);
	tcase_add_test(l, access_across_range_end);
	tcase_add_test(l, access_outside_and_across_regions);
	suite_add_tcase(s, l);
	TCase *r = tcase_create("removal");
	tcase_add_checked_fixture(r, setup, teardown);
	tcase_add_test(r, remove_range_waits_for_handler);
	tcase_add_test(r, remove_region_waits_for_handler);
	tcase_add_test(r, handler_removes_its_range_and_region);
	tcase_add_test(r, handler_changes_tables_during_grace);
	tcase_add_test(r, churn_ranges_while_dispatching);
	suite_add_tcase(s, r);
	TCase *p = tcase_create("mprotect");
	tcase_add_checked_fixture(p, setup, teardown);
	tcase_add_test(p, mprotect_anon);
	tcase_add_test(p, mprotect_memfd_alias);
	tcase_add_test(p, mprotect_shared_anon_alias);
	suite_add_tcase(s, p);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
