/*
 * Memory-fault dispatcher: page protection (write and access protection by userfaultfd WP
 * or mprotect(), unprotection, resolution from outside a handler) and guest-RAM access
 * whatever the protection (alias mapping, /proc/self/mem). Under the tables, above the
 * userfaultfd ioctls (uffd_io.c).
 */
#include "memfault/protect.h"

#include "memfault/table.h"
#include "memfault/uffd_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ------------------------------------------------------------------ guest RAM access */

static int procmem_fd(struct vmwkvm_memfault *mf)
{
	int fd = atomic_load(&mf->procmem);
	if (fd >= 0)
		return fd;
	int n = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
	if (n < 0)
		return -errno;
	int expect = -1;
	if (!atomic_compare_exchange_strong(&mf->procmem, &expect, n)) {
		close(n);
		return expect;
	}
	return n;
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

