/* vmwkvm_memfault_save() on the REAL userfaultfd (no KVM needed): the bytes it copies from
 * write-protected, access-protected, anonymous and memfd memory; never-populated anonymous
 * pages given as zeroes without being read (and so without a MISSING fault); the optional
 * unprotect; the call from a handler on the service thread; argument errors. Skips (77)
 * when this process may not use userfaultfd the way KVM needs it. Every test is bounded by
 * Check's timeout (CK_DEFAULT_TIMEOUT), which kills a hung test. */
#include "test_memfault_util.h"

#define GPA0 0x100000ull
#define NPG 64u

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
}

static uint64_t pagemap_entry(const void *addr)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t e = 0;
	if (fd >= 0) {
		if (pread(fd, &e, 8, (off_t)((uintptr_t)addr / PG * 8)) != 8)
			e = 0;
		close(fd);
	}
	return e;
}

/* Does pagemap show this process frame numbers (CAP_SYS_ADMIN)? Only then can the library
 * tell the marker of a never-populated write-protected page from a swapped-out page. */
static bool frames_visible(void)
{
	static volatile uint8_t probe = 1;
	probe = 2;
	return (pagemap_entry((const void *)&probe) & ((1ull << 55) - 1)) != 0;
}

static uint8_t pattern(size_t page, size_t i)
{
	return (uint8_t)(page * 7 + i + 1);
}

static int no_write_expected(vmwkvm_memfault *m, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
			     void *ctx)
{
	(void)m;
	(void)rec;
	atomic_fetch_add((atomic_int *)ctx, 1);
	act->kind = VMWKVM_MF_ACT_UNPROTECT;
	return 0;
}

/* Pages 0..31 written, 32..63 never touched; all write-protected; saved in one call. */
START_TEST(anon_untouched_pages_are_zeroes_not_read)
{
	uint8_t *mem = mf_anon(NPG * PG);
	for (size_t p = 0; p < NPG / 2; p++)
		for (size_t i = 0; i < PG; i += 512)
			mem[p * PG + i] = pattern(p, i);
	struct vmwkvm_mf_region r = mf_region(GPA0, mem, NPG * PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r), 0);
	atomic_int writes = 0;
	struct vmwkvm_mf_range rg = mf_range(GPA0, NPG * PG, VMWKVM_MF_ACCESS_WRITE, no_write_expected, &writes);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0, NPG * PG), VMWKVM_MF_MECH_UFFD_WP);
	/* without frame numbers an untouched page is read, a MISSING fault someone must serve */
	ck_assert_int_eq(vmwkvm_memfault_start(mf), 0);
	bool seen = frames_visible();

	uint8_t *dst = aligned_alloc(64, NPG * PG);
	ck_assert_ptr_nonnull(dst);
	memset(dst, 0xee, NPG * PG);
	int n = vmwkvm_memfault_save(mf, GPA0, NPG * PG, dst, VMWKVM_MF_SAVE_UNPROTECT | VMWKVM_MF_SAVE_STREAM);
	ck_assert_int_eq(n, seen ? (int)(NPG / 2) : 0);
	for (size_t p = 0; p < NPG; p++)
		for (size_t i = 0; i < PG; i++)
			ck_assert_int_eq(dst[p * PG + i], p < NPG / 2 && i % 512 == 0 ? pattern(p, i) : 0);
	for (size_t p = 0; p < NPG; p++)
		ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + p * PG), VMWKVM_MF_PROT_NONE);
	if (seen) /* not read: still nothing mapped there */
		for (size_t p = NPG / 2; p < NPG; p++)
			ck_assert_uint_eq(pagemap_entry(mem + p * PG) >> 63, 0);
	/* unprotected: writes proceed without a fault */
	for (size_t p = 0; p < NPG / 2; p++)
		__atomic_store_n(&mem[p * PG + 1], 0x5a, __ATOMIC_RELAXED);
	ck_assert_int_eq(atomic_load(&writes), 0);
	ck_assert_int_eq(vmwkvm_memfault_stop(mf), 0);
	free(dst);
	munmap(mem, NPG * PG);
}
END_TEST

/* Without VMWKVM_MF_SAVE_UNPROTECT the protection stays; a range of two regions. */
START_TEST(two_regions_protection_kept)
{
	uint8_t *a = mf_anon(8 * PG);
	struct mf_memfd m = mf_memfd_new(8 * PG);
	for (size_t i = 0; i < 8 * PG; i++) {
		a[i] = (uint8_t)(i * 3);
		m.map[i] = (uint8_t)(i * 5);
	}
	struct vmwkvm_mf_region r0 = mf_region(GPA0, a, 8 * PG, VMWKVM_MF_MEM_ANON);
	struct vmwkvm_mf_region r1 = mf_region(GPA0 + 8 * PG, m.map, 8 * PG, VMWKVM_MF_MEM_SHMEM);
	r1.flags = VMWKVM_MF_REGION_HAS_FD;
	r1.fd = m.fd;
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r0), 0);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r1), 0);
	ck_assert_int_ge(vmwkvm_memfault_write_protect(mf, GPA0, 16 * PG), 0);
	uint8_t *dst = malloc(16 * PG + 1);
	ck_assert_ptr_nonnull(dst);
	/* an odd destination: no streaming stores, same bytes */
	ck_assert_int_eq(vmwkvm_memfault_save(mf, GPA0, 16 * PG, dst + 1, VMWKVM_MF_SAVE_STREAM), 0);
	for (size_t i = 0; i < 8 * PG; i++) {
		ck_assert_int_eq(dst[1 + i], (uint8_t)(i * 3));
		ck_assert_int_eq(dst[1 + 8 * PG + i], (uint8_t)(i * 5));
	}
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0), VMWKVM_MF_PROT_WRITE);
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + 15 * PG), VMWKVM_MF_PROT_WRITE);
	ck_assert_int_eq(vmwkvm_memfault_unprotect(mf, GPA0, 16 * PG), 0);
	free(dst);
	ck_assert_int_eq(vmwkvm_memfault_remove_region(mf, GPA0 + 8 * PG), 0);
	mf_memfd_free(&m);
	munmap(a, 8 * PG);
}
END_TEST

/* Access-protected (PROT_NONE) anonymous memory is read through /proc/self/mem. */
START_TEST(access_protected_anon)
{
	uint8_t *mem = mf_anon(4 * PG);
	for (size_t i = 0; i < 4 * PG; i++)
		mem[i] = (uint8_t)(i ^ 0x3c);
	struct vmwkvm_mf_region r = mf_region(GPA0, mem, 4 * PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r), 0);
	ck_assert_int_ge(vmwkvm_memfault_protect(mf, GPA0 + PG, 2 * PG, VMWKVM_MF_PROT_ACCESS), 0);
	uint8_t *dst = malloc(4 * PG);
	ck_assert_ptr_nonnull(dst);
	ck_assert_int_eq(vmwkvm_memfault_save(mf, GPA0, 4 * PG, dst, VMWKVM_MF_SAVE_UNPROTECT), 0);
	for (size_t i = 0; i < 4 * PG; i++)
		ck_assert_int_eq(dst[i], (uint8_t)(i ^ 0x3c));
	ck_assert_int_eq(vmwkvm_memfault_protection(mf, GPA0 + PG), VMWKVM_MF_PROT_NONE);
	mem[PG + 1] = 1; /* readable and writable again (a SIGSEGV would end the test) */
	free(dst);
	munmap(mem, 4 * PG);
}
END_TEST

/* From a WRITE handler on the service thread: the faulting page was never populated. */
struct in_handler {
	uint8_t buf[PG];
	atomic_int result, calls;
};

static int save_in_handler(vmwkvm_memfault *m, const struct vmwkvm_mf_record *rec, struct vmwkvm_mf_action *act,
			   void *ctx)
{
	struct in_handler *h = ctx;
	atomic_store(&h->result, vmwkvm_memfault_save(m, rec->gpa, PG, h->buf, 0));
	atomic_fetch_add(&h->calls, 1);
	act->kind = VMWKVM_MF_ACT_UNPROTECT;
	return 0;
}

START_TEST(from_handler_untouched_page)
{
	uint8_t *mem = mf_anon(4 * PG);
	mem[0] = 9; /* page 0 populated, pages 1..3 not */
	struct vmwkvm_mf_region r = mf_region(GPA0, mem, 4 * PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r), 0);
	static struct in_handler h;
	memset(h.buf, 0xee, sizeof(h.buf));
	atomic_store(&h.result, 1000);
	atomic_store(&h.calls, 0);
	struct vmwkvm_mf_range rg = mf_range(GPA0, 4 * PG, VMWKVM_MF_ACCESS_WRITE, save_in_handler, &h);
	ck_assert_int_eq(vmwkvm_memfault_add_range(mf, &rg), 0);
	ck_assert_int_eq(vmwkvm_memfault_write_protect(mf, GPA0, 4 * PG), VMWKVM_MF_MECH_UFFD_WP);
	ck_assert_int_eq(vmwkvm_memfault_start(mf), 0);
	struct mf_toucher t;
	mf_touch_start(&t, mem + 2 * PG + 7, 1, true, 0x77);
	pthread_join(t.th, NULL);
	ck_assert_int_eq(atomic_load(&h.calls), 1);
	if (frames_visible()) {
		ck_assert_int_eq(atomic_load(&h.result), 1); /* one page given as zeroes */
		for (size_t i = 0; i < PG; i++)
			ck_assert_int_eq(h.buf[i], 0);
	} else {
		/* it cannot tell a never-populated page from a swapped one: reading would wait for itself */
		ck_assert_int_eq(atomic_load(&h.result), -EDEADLK);
	}
	ck_assert_int_eq(__atomic_load_n(&mem[2 * PG + 7], __ATOMIC_RELAXED), 0x77);
	ck_assert_int_eq(vmwkvm_memfault_stop(mf), 0);
	munmap(mem, 4 * PG);
}
END_TEST

START_TEST(bad_arguments)
{
	uint8_t *mem = mf_anon(4 * PG);
	struct vmwkvm_mf_region r = mf_region(GPA0, mem, 4 * PG, VMWKVM_MF_MEM_ANON);
	ck_assert_int_eq(vmwkvm_memfault_add_region(mf, &r), 0);
	uint8_t dst[2 * PG];
	ck_assert_int_eq(vmwkvm_memfault_save(NULL, GPA0, PG, dst, 0), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_save(mf, GPA0, PG, NULL, 0), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_save(mf, GPA0 + 1, PG, dst, 0), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_save(mf, GPA0, PG - 1, dst, 0), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_save(mf, GPA0, 0, dst, 0), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_save(mf, GPA0, PG, dst, 1u << 7), -EINVAL);
	ck_assert_int_eq(vmwkvm_memfault_save(mf, GPA0 + 3 * PG, 2 * PG, dst, 0), -ENOENT);
	ck_assert_int_eq(vmwkvm_memfault_save(mf, 0, PG, dst, 0), -ENOENT);
	munmap(mem, 4 * PG);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("memfault_save");
	TCase *t = tcase_create("save");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, anon_untouched_pages_are_zeroes_not_read);
	tcase_add_test(t, two_regions_protection_kept);
	tcase_add_test(t, access_protected_anon);
	tcase_add_test(t, from_handler_untouched_page);
	tcase_add_test(t, bad_arguments);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return mf_run_uffd_suite(suite());
}
