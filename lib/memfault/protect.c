/*
 * Memory-fault dispatcher: page protection (write and access protection by userfaultfd WP
 * or mprotect(), unprotection, resolution from outside a handler), guest-RAM access
 * whatever the protection (alias mapping, /proc/self/mem) and saving protected RAM without
 * faulting (vmwkvm_memfault_save(): pagemap tells never-populated pages). Under the tables,
 * above the userfaultfd ioctls (uffd_io.c).
 */
#include "memfault/protect.h"

#include "memfault/table.h"
#include "memfault/uffd_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------ guest RAM access */

/* A descriptor kept in *slot, opened on first use. */
static int proc_fd(atomic_int *slot, const char *path, int flags)
{
	int fd = atomic_load(slot);
	if (fd >= 0)
		return fd;
	int n = open(path, flags | O_CLOEXEC);
	if (n < 0)
		return -errno;
	int expect = -1;
	if (!atomic_compare_exchange_strong(slot, &expect, n)) {
		close(n);
		return expect;
	}
	return n;
}

static int procmem_fd(struct vmwkvm_memfault *mf)
{
	return proc_fd(&mf->procmem, "/proc/self/mem", O_RDWR);
}

static int procmem_io(struct vmwkvm_memfault *mf, void *addr, void *buf, size_t len, bool write)
{
	int fd = procmem_fd(mf);
	if (fd < 0)
		return fd;
	size_t done = 0;
	while (done < len) {
		off_t off = (off_t)((uintptr_t)addr + done);
		ssize_t r = write ? pwrite(fd, (const char *)buf + done, len - done, off)
				  : pread(fd, (char *)buf + done, len - done, off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		done += (size_t)r;
	}
	return 0;
}

/* OR of the page states of [gpa, gpa+len) in r */
static uint8_t pst_span(const struct mf_region *r, uint64_t gpa, uint64_t len)
{
	uint8_t s = 0;
	uint64_t first = vk_mf_page_index(r, gpa), last = vk_mf_page_index(r, gpa + len - 1);
	for (uint64_t i = first; i <= last; i++)
		s |= atomic_load_explicit(&r->pst[i], memory_order_acquire);
	return s;
}

int vk_mf_ram_write(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t gpa, const void *src, size_t len)
{
	uint64_t off = gpa - r->gpa;
	if (len == 0)
		return 0;
	if (r->alias) {
		vk_mf_guest_copy(r->alias + off, src, len);
		return 0;
	}
	uint8_t s = pst_span(r, gpa, len);
	if (!(s & PST_MPROT)) {
		vk_mf_guest_copy(r->hva + off, src, len);
		return 0;
	}
	if (r->kind == VMWKVM_MF_MEM_ANON) {
		int e = procmem_io(mf, r->hva + off, (void *)(uintptr_t)src, len, true);
		if (e == 0)
			return 0;
		vk_debug("memfault: /proc/self/mem write at GPA 0x%llx failed: %s", (unsigned long long)gpa,
			 vmwkvm_strerror(e));
	}
	return -EOPNOTSUPP;
}

int vk_mf_ram_read(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t gpa, void *dst, size_t len)
{
	uint64_t off = gpa - r->gpa;
	if (len == 0)
		return 0;
	if (r->alias) {
		vk_mf_guest_copy(dst, r->alias + off, len);
		return 0;
	}
	uint8_t s = pst_span(r, gpa, len);
	if (!(s & PST_ACC)) {
		vk_mf_guest_copy(dst, r->hva + off, len);
		return 0;
	}
	if (r->kind == VMWKVM_MF_MEM_ANON) {
		int e = procmem_io(mf, r->hva + off, dst, len, false);
		if (e == 0)
			return 0;
	}
	return -EOPNOTSUPP;
}

/* ------------------------------------------------------------------ protection */

static bool aligned_to(const struct mf_region *r, uint64_t v)
{
	return (v & (r->page_size - 1)) == 0;
}

/* mprotect() runs of pages [first, first+n) of r that carry PST_MPROT back to read-write
 * and clear their mprotect state (caller holds prot_lock) */
static int mprotect_runs_rw(struct mf_region *r, uint64_t first, uint64_t n, bool *any_uffd)
{
	int err = 0;
	uint64_t i = 0;
	while (i < n) {
		uint8_t s = atomic_load(&r->pst[first + i]);
		if (any_uffd && (s & PST_PROT) && !(s & PST_MPROT))
			*any_uffd = true;
		if (!(s & PST_MPROT)) {
			i++;
			continue;
		}
		uint64_t j = i;
		while (j < n && (atomic_load(&r->pst[first + j]) & PST_MPROT))
			j++;
		int e = vk_mprotect(r->hva + ((first + i) << r->page_shift), (j - i) << r->page_shift,
				    PROT_READ | PROT_WRITE);
		if (e < 0 && !err)
			err = e;
		if (e == 0)
			for (uint64_t k = i; k < j; k++)
				atomic_fetch_and_explicit(&r->pst[first + k], (uint8_t)~(PST_PROT | PST_MPROT),
							  memory_order_acq_rel);
		i = j;
	}
	return err;
}

/* apply kind to [gpa, gpa+len) of r (caller holds prot_lock); returns the mechanism */
static int protect_region_locked(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t gpa, uint64_t len, int kind)
{
	uint64_t first = vk_mf_page_index(r, gpa), n = len >> r->page_shift;
	uint8_t *hva = r->hva + (gpa - r->gpa);
	if (r->dead)
		return -ENOENT;
	if (kind == VMWKVM_MF_PROT_ACCESS || r->mech == VMWKVM_MF_MECH_MPROTECT) {
		uint8_t bits = PST_MPROT | PST_WP | (kind == VMWKVM_MF_PROT_ACCESS ? PST_ACC : 0);
		for (uint64_t i = 0; i < n; i++) {
			if (!(bits & PST_ACC))
				atomic_fetch_and_explicit(&r->pst[first + i], (uint8_t)~PST_ACC, memory_order_acq_rel);
			atomic_fetch_or_explicit(&r->pst[first + i], bits, memory_order_acq_rel);
		}
		int e = vk_mprotect(hva, len, kind == VMWKVM_MF_PROT_ACCESS ? PROT_NONE : PROT_READ);
		if (e < 0) {
			/* mprotect may have applied to part of the range: return all of it to
			 * read-write so that the recorded state is true */
			vk_mprotect(hva, len, PROT_READ | PROT_WRITE);
			for (uint64_t i = 0; i < n; i++)
				atomic_fetch_and_explicit(&r->pst[first + i], (uint8_t)~(PST_PROT | PST_MPROT),
							  memory_order_acq_rel);
			return e;
		}
		return VMWKVM_MF_MECH_MPROTECT;
	}
	/* userfaultfd WP; pages access-protected before go back to read-write first */
	int e = mprotect_runs_rw(r, first, n, NULL);
	if (e < 0)
		return e;
	if (r->kind == VMWKVM_MF_MEM_ANON && !(r->uffd_modes & UFFDIO_REGISTER_MODE_MISSING)) {
		/* the missing guard: a page emptied by MADV_DONTNEED loses its protection,
		 * its next touch must still be seen */
		e = vk_mf_uffd_register(mf, r, r->uffd_modes | UFFDIO_REGISTER_MODE_MISSING);
		if (e < 0)
			return e;
		r->guard = true;
	}
	for (uint64_t i = 0; i < n; i++)
		atomic_fetch_or_explicit(&r->pst[first + i], PST_WP, memory_order_acq_rel);
	e = vk_mf_uffd_wp(mf, (uint64_t)(uintptr_t)hva, len, true, false);
	if (e < 0)
		return e;
	return VMWKVM_MF_MECH_UFFD_WP;
}

/* Without WP_UNPOPULATED, write-protecting a never-populated anonymous page does nothing:
 * map the zero page everywhere first, outside every lock (populating may fault). */
static int populate_for_wp(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t gpa, uint64_t len)
{
	if (r->mech != VMWKVM_MF_MECH_UFFD_WP || r->kind != VMWKVM_MF_MEM_ANON ||
	    (mf->features & VMWKVM_UAPI_UFFD_FEATURE_WP_UNPOPULATED))
		return 0;
	if (mf->flags & VMWKVM_MF_OPT_NO_POPULATE) {
		vk_warn("memfault: kernel lacks UFFD_FEATURE_WP_UNPOPULATED: refusing to write-protect anonymous "
			"GPA 0x%llx (its untouched pages would lose their first write)", (unsigned long long)gpa);
		return -EOPNOTSUPP;
	}
	uint8_t *hva = r->hva + (gpa - r->gpa);
	if ((r->uffd_modes & UFFDIO_REGISTER_MODE_MISSING) && vk_mf_in_dispatch(mf)) {
		/* populating may take MISSING faults, which only this very thread could serve */
		vk_warn("memfault: cannot populate GPA 0x%llx for write protection from a handler on the "
			"userfaultfd service thread", (unsigned long long)gpa);
		return -EDEADLK;
	}
	if (madvise(hva, len, MADV_POPULATE_READ) < 0) {
		if (errno != EINVAL)
			return -errno;
		/* before Linux 5.14: touch one byte per page */
		for (uint64_t off = 0; off < len; off += r->page_size)
			(void)*(volatile uint8_t *)(hva + off);
	}
	vk_mf_count(mf, ST_POPULATED, len);
	return 0;
}

/* caller holds prot_lock */
static int unprotect_region_locked(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t gpa, uint64_t len,
				   bool dontwake)
{
	uint64_t first = vk_mf_page_index(r, gpa), n = len >> r->page_shift;
	bool any_uffd = false;
	int err = mprotect_runs_rw(r, first, n, &any_uffd);
	if (r->mech == VMWKVM_MF_MECH_UFFD_WP && mf->uffd >= 0 && (any_uffd || !dontwake)) {
		/* clearing WP also wakes writers blocked on these pages (unless dontwake) */
		int e = vk_mf_uffd_wp(mf, (uint64_t)(uintptr_t)(r->hva + (gpa - r->gpa)), len, false, dontwake);
		if (e < 0 && !err)
			err = e;
	}
	if (err)
		return err;
	for (uint64_t i = 0; i < n; i++)
		atomic_fetch_and_explicit(&r->pst[first + i], (uint8_t)~(PST_PROT | PST_MPROT), memory_order_acq_rel);
	return 0;
}

int vk_mf_unprotect_region(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t gpa, uint64_t len, bool dontwake)
{
	pthread_mutex_lock(&mf->prot_lock);
	int e = r->dead ? 0 : unprotect_region_locked(mf, r, gpa, len, dontwake);
	pthread_mutex_unlock(&mf->prot_lock);
	return e;
}

/* Walk [gpa, gpa+len) region by region. */
typedef int (*region_fn)(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t gpa, uint64_t len, void *arg);

static int for_each_region(struct vmwkvm_memfault *mf, uint64_t gpa, uint64_t len, region_fn fn, void *arg)
{
	if (!mf || len == 0 || gpa + len < gpa || (gpa | len) & (MF_MIN_PAGE - 1))
		return -EINVAL;
	struct mf_table *t = vk_mf_pin(mf);
	int ret = 0;
	/* check first that the whole range is RAM and aligned to each region's pages */
	for (uint64_t pos = gpa; pos < gpa + len;) {
		struct mf_region *r = vk_mf_region_by_gpa(t, pos);
		if (!r) {
			ret = -ENOENT;
			break;
		}
		uint64_t end = r->gpa + r->size < gpa + len ? r->gpa + r->size : gpa + len;
		if (!aligned_to(r, pos) || !aligned_to(r, end)) {
			ret = -EINVAL;
			break;
		}
		pos = end;
	}
	for (uint64_t pos = gpa; ret >= 0 && pos < gpa + len;) {
		struct mf_region *r = vk_mf_region_by_gpa(t, pos);
		uint64_t end = r->gpa + r->size < gpa + len ? r->gpa + r->size : gpa + len;
		int e = fn(mf, r, pos, end - pos, arg);
		ret = e;
		pos = end;
	}
	vk_mf_unpin(mf, t);
	return ret;
}

static int do_protect(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t gpa, uint64_t len, void *arg)
{
	int kind = *(int *)arg;
	if (kind == VMWKVM_MF_PROT_WRITE) {
		int e = populate_for_wp(mf, r, gpa, len);
		if (e < 0)
			return e;
	}
	pthread_mutex_lock(&mf->prot_lock);
	int e = protect_region_locked(mf, r, gpa, len, kind);
	pthread_mutex_unlock(&mf->prot_lock);
	return e;
}

int vmwkvm_memfault_protect(vmwkvm_memfault *mf, uint64_t gpa, uint64_t len, int kind)
{
	if (kind != VMWKVM_MF_PROT_WRITE && kind != VMWKVM_MF_PROT_ACCESS)
		return -EINVAL;
	return for_each_region(mf, gpa, len, do_protect, &kind);
}

int vmwkvm_memfault_write_protect(vmwkvm_memfault *mf, uint64_t gpa, uint64_t len)
{
	return vmwkvm_memfault_protect(mf, gpa, len, VMWKVM_MF_PROT_WRITE);
}

static void drop_guard_locked(struct vmwkvm_memfault *mf, struct mf_region *r)
{
	/* UFFDIO_REGISTER only adds modes: take the guard away by registering afresh.
	 * Nothing is protected in r now, so no fault can be lost in between. */
	uint64_t keep = r->uffd_modes & ~(uint64_t)UFFDIO_REGISTER_MODE_MISSING;
	if (vk_mf_uffd_unregister(mf, r) == 0 && keep)
		vk_mf_uffd_register(mf, r, keep);
	r->guard = false;
}

static int do_unprotect(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t gpa, uint64_t len, void *arg)
{
	(void)arg;
	pthread_mutex_lock(&mf->prot_lock);
	int e = unprotect_region_locked(mf, r, gpa, len, false);
	if (e == 0 && r->guard && gpa == r->gpa && len == r->size)
		drop_guard_locked(mf, r);
	pthread_mutex_unlock(&mf->prot_lock);
	if (e == 0)
		vk_mf_uffd_forget(mf, (uint64_t)(uintptr_t)(r->hva + (gpa - r->gpa)), len);
	return e;
}

int vmwkvm_memfault_unprotect(vmwkvm_memfault *mf, uint64_t gpa, uint64_t len)
{
	int e = for_each_region(mf, gpa, len, do_unprotect, NULL);
	return e < 0 ? e : 0;
}

int vmwkvm_memfault_protection(vmwkvm_memfault *mf, uint64_t gpa)
{
	if (!mf)
		return -EINVAL;
	struct mf_table *t = vk_mf_pin(mf);
	struct mf_region *r = vk_mf_region_by_gpa(t, gpa);
	int ret = -ENOENT;
	if (r) {
		uint8_t s = vk_mf_pst(r, gpa);
		ret = (s & PST_ACC) ? VMWKVM_MF_PROT_ACCESS : (s & PST_WP) ? VMWKVM_MF_PROT_WRITE : VMWKVM_MF_PROT_NONE;
	}
	vk_mf_unpin(mf, t);
	return ret;
}

int vmwkvm_memfault_mechanism(vmwkvm_memfault *mf, uint64_t gpa)
{
	if (!mf)
		return -EINVAL;
	struct mf_table *t = vk_mf_pin(mf);
	struct mf_region *r = vk_mf_region_by_gpa(t, gpa);
	int ret = r ? r->mech : -ENOENT;
	vk_mf_unpin(mf, t);
	return ret;
}

struct resolve_arg {
	int kind;
	const uint8_t *data;
	uint64_t base;
};

static int do_resolve(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t gpa, uint64_t len, void *arg)
{
	const struct resolve_arg *a = arg;
	uint64_t ps = r->page_size;
	const uint8_t *zero = mf->zero; /* once: a region added meanwhile may replace it */
	/* MISSING registered for handlers (not only as the guard): empty pages must be filled */
	bool missing = (r->uffd_modes & UFFDIO_REGISTER_MODE_MISSING) && mf->uffd >= 0 &&
		       (!r->guard || a->kind != VMWKVM_MF_ACT_UNPROTECT);
	for (uint64_t pos = gpa; pos < gpa + len; pos += ps) {
		uint8_t *hva = r->hva + (pos - r->gpa);
		const uint8_t *src = NULL;
		if (a->kind == VMWKVM_MF_ACT_FILL)
			src = a->data + (pos - a->base);
		else if (a->kind == VMWKVM_MF_ACT_ZERO || missing)
			src = zero;
		if (!src)
			continue;
		if (missing) {
			/* COPY fills an empty page atomically and wakes its waiters; 1 means the
			 * page has data already */
			int e = vk_mf_uffd_copy(mf, (uint64_t)(uintptr_t)hva, src, ps, false);
			if (e < 0)
				return e;
			if (e == 0) {
				atomic_fetch_and(&r->pst[vk_mf_page_index(r, pos)], (uint8_t)~PST_REMOVED);
				continue;
			}
			if (a->kind == VMWKVM_MF_ACT_UNPROTECT)
				continue;
		}
		/* present page: lift the protection without waking, write, then wake below */
		int e = vk_mf_unprotect_region(mf, r, pos, ps, true);
		if (e < 0)
			return e;
		if (r->alias)
			vk_mf_guest_copy(r->alias + (pos - r->gpa), src, ps);
		else
			vk_mf_guest_copy(hva, src, ps);
	}
	return do_unprotect(mf, r, gpa, len, NULL);
}

int vmwkvm_memfault_resolve(vmwkvm_memfault *mf, uint64_t gpa, uint64_t len, int kind, const void *data)
{
	if (kind != VMWKVM_MF_ACT_UNPROTECT && kind != VMWKVM_MF_ACT_FILL && kind != VMWKVM_MF_ACT_ZERO)
		return -EINVAL;
	if ((kind == VMWKVM_MF_ACT_FILL) != (data != NULL))
		return -EINVAL;
	struct resolve_arg a = { .kind = kind, .data = data, .base = gpa };
	int e = for_each_region(mf, gpa, len, do_resolve, &a);
	return e < 0 ? e : 0;
}


/* ------------------------------------------------------------------ saving */

#define SAVE_CHUNK 64u                   /* 4 KiB pages looked up in pagemap at once */
#define PM_PRESENT (1ull << 63)
#define PM_SWAP (1ull << 62)
#define PM_FRAME ((1ull << 55) - 1)
/* The frame field of a swap-format pagemap entry is type | offset << 5. The marker that
 * userfaultfd write protection leaves on a never-populated page is type 31 (SWP_PTE_MARKER,
 * the last of the 32 types) with offset 1 (PTE_MARKER_UFFD_WP). The field is shown to
 * CAP_SYS_ADMIN only (0 otherwise). */
#define PM_UFFD_WP_MARKER 0x3full

enum { PG_DATA, PG_EMPTY, PG_UNSURE };

static int pm_class(uint64_t e)
{
	if (e & PM_PRESENT)
		return PG_DATA;
	if (!(e & PM_SWAP))
		return PG_EMPTY;
	if ((e & PM_FRAME) == PM_UFFD_WP_MARKER)
		return PG_EMPTY;
	return (e & PM_FRAME) ? PG_DATA : PG_UNSURE; /* swapped out, or a marker we cannot see */
}

/* What page i of a chunk holds; without pagemap, anonymous pages may be never-populated ones. */
static int page_class(bool known, const uint64_t *e, uint64_t i, bool anon)
{
	if (known)
		return pm_class(e[i]);
	return anon ? PG_UNSURE : PG_DATA;
}

struct save_arg {
	uint8_t *dst;
	uint64_t base;
	uint32_t flags;
	uint64_t zero_pages;
};

/* Copy whole 4 KiB pages from guest RAM that is readable through the mapping. */
static void save_copy(uint8_t *dst, const uint8_t *src, size_t len, bool stream)
{
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
	if (stream && ((uintptr_t)dst & 15) == 0) {
		__m128i *d = (__m128i *)(void *)dst;
		const __m128i *s = (const __m128i *)(const void *)src;
		for (size_t i = 0; i < len / 16; i += 4) {
			__m128i a = _mm_load_si128(s + i), b = _mm_load_si128(s + i + 1);
			__m128i c = _mm_load_si128(s + i + 2), e = _mm_load_si128(s + i + 3);
			_mm_stream_si128(d + i, a);
			_mm_stream_si128(d + i + 1, b);
			_mm_stream_si128(d + i + 2, c);
			_mm_stream_si128(d + i + 3, e);
		}
		_mm_sfence();
		return;
	}
#endif
	(void)stream;
	vk_mf_guest_copy(dst, src, len);
}

/* Copy [pos, pos+len) of r (data pages) into dst. */
static int save_data(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t pos, uint8_t *dst, size_t len,
		     bool stream)
{
	if (r->alias || (pst_span(r, pos, len) & PST_ACC))
		return vk_mf_ram_read(mf, r, pos, dst, len);
	save_copy(dst, r->hva + (pos - r->gpa), len, stream);
	return 0;
}

static int do_save(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t gpa, uint64_t len, void *arg)
{
	struct save_arg *a = arg;
	bool stream = a->flags & VMWKVM_MF_SAVE_STREAM;
	/* never-populated pages of anonymous memory read as zeroes: reading one would be a
	 * MISSING fault (the missing guard), which the service thread would wait for itself */
	bool anon = r->kind == VMWKVM_MF_MEM_ANON;
	int pm = anon ? proc_fd(&mf->pagemap, "/proc/self/pagemap", O_RDONLY) : -1;
	for (uint64_t pos = gpa; pos < gpa + len;) {
		uint64_t n = (gpa + len - pos) / MF_MIN_PAGE < SAVE_CHUNK ? (gpa + len - pos) / MF_MIN_PAGE : SAVE_CHUNK;
		uint64_t e[SAVE_CHUNK];
		uint64_t hva = (uint64_t)(uintptr_t)(r->hva + (pos - r->gpa));
		bool known = pm >= 0 && pread(pm, e, n * 8, (off_t)(hva / MF_MIN_PAGE * 8)) == (ssize_t)(n * 8);
		for (uint64_t i = 0; i < n;) {
			int c = page_class(known, e, i, anon);
			if (c == PG_UNSURE && vk_mf_in_dispatch(mf))
				return -EDEADLK;
			uint64_t j = i + 1;
			while (j < n && page_class(known, e, j, anon) == c)
				j++;
			uint8_t *to = a->dst + (pos + i * MF_MIN_PAGE - a->base);
			if (c == PG_EMPTY) {
				memset(to, 0, (j - i) * MF_MIN_PAGE);
				a->zero_pages += j - i;
			} else {
				int err = save_data(mf, r, pos + i * MF_MIN_PAGE, to, (j - i) * MF_MIN_PAGE, stream);
				if (err < 0)
					return err;
			}
			i = j;
		}
		pos += n * MF_MIN_PAGE;
	}
	return (a->flags & VMWKVM_MF_SAVE_UNPROTECT) ? do_unprotect(mf, r, gpa, len, NULL) : 0;
}

int vmwkvm_memfault_save(vmwkvm_memfault *mf, uint64_t gpa, uint64_t len, void *dst, uint32_t flags)
{
	if (!dst || (flags & ~(uint32_t)(VMWKVM_MF_SAVE_UNPROTECT | VMWKVM_MF_SAVE_STREAM)))
		return -EINVAL;
	struct save_arg a = { .dst = dst, .base = gpa, .flags = flags };
	int e = for_each_region(mf, gpa, len, do_save, &a);
	if (e < 0)
		return e;
	return a.zero_pages > INT_MAX ? INT_MAX : (int)a.zero_pages;
}
