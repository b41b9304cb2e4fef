/*
 * Memory-fault dispatcher: object, region and handler tables (copy-on-write snapshots with
 * a grace period, see memfault_internal.h), the dispatch engine shared by every fault
 * source, protection helpers and guest-RAM access. userfaultfd: memfault_uffd.c; KVM exits:
 * memfault_exit.c.
 */
#include "memfault/memfault_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MF_MIN_PAGE 4096u

/* ------------------------------------------------------------------ names */

const char *vmwkvm_memfault_source_name(int source)
{
	switch (source) {
	case VMWKVM_MF_SRC_NONE: return "none";
	case VMWKVM_MF_SRC_UFFD: return "uffd";
	case VMWKVM_MF_SRC_MEMORY_FAULT_EXIT: return "memory-fault-exit";
	case VMWKVM_MF_SRC_MMIO_ON_RAM: return "mmio-on-ram";
	case VMWKVM_MF_SRC_KVM_USERFAULT: return "kvm-userfault";
	case VMWKVM_MF_SRC_PERM_FAULT: return "perm-fault";
	default: return "unknown";
	}
}

const char *vmwkvm_memfault_action_name(int kind)
{
	switch (kind) {
	case VMWKVM_MF_ACT_DEFAULT: return "default";
	case VMWKVM_MF_ACT_UNPROTECT: return "unprotect";
	case VMWKVM_MF_ACT_FILL: return "fill";
	case VMWKVM_MF_ACT_ZERO: return "zero";
	case VMWKVM_MF_ACT_ALLOW_ONCE: return "allow-once";
	case VMWKVM_MF_ACT_RETRY: return "retry";
	case VMWKVM_MF_ACT_FAIL: return "fail";
	default: return "unknown";
	}
}

/* ------------------------------------------------------------------ pinning */

/* Tables this thread has pinned (a handler may pin again through library calls). */
#define TL_PINS 4
static _Thread_local struct {
	const struct vmwkvm_memfault *mf;
	const struct mf_table *t;
	long n;
} tl_pins[TL_PINS];

static void tl_pin_note(const struct vmwkvm_memfault *mf, const struct mf_table *t, long d)
{
	int free_slot = -1;
	for (int i = 0; i < TL_PINS; i++) {
		if (tl_pins[i].mf == mf && tl_pins[i].t == t) {
			tl_pins[i].n += d;
			if (tl_pins[i].n == 0) {
				tl_pins[i].mf = NULL;
				tl_pins[i].t = NULL;
			}
			return;
		}
		if (!tl_pins[i].t && free_slot < 0)
			free_slot = i;
	}
	if (d > 0 && free_slot >= 0) {
		tl_pins[free_slot].mf = mf;
		tl_pins[free_slot].t = t;
		tl_pins[free_slot].n = d;
	}
	/* more than TL_PINS distinct tables pinned at once: not tracked, a writer in this
	 * thread would then wait for its own pin; the library never nests that deep */
}

static long tl_pin_count(const struct vmwkvm_memfault *mf, const struct mf_table *t)
{
	for (int i = 0; i < TL_PINS; i++)
		if (tl_pins[i].mf == mf && tl_pins[i].t == t)
			return tl_pins[i].n;
	return 0;
}

static void table_free(struct mf_table *t)
{
	if (!t)
		return;
	free(t->by_gpa);
	free(t->by_hva);
	free(t->ranges);
	free(t);
}

struct mf_table *vk_mf_pin(struct vmwkvm_memfault *mf)
{
	pthread_rwlock_rdlock(&mf->pin_lock);
	struct mf_table *t = mf->cur;
	atomic_fetch_add_explicit(&t->refs, 1, memory_order_acq_rel);
	pthread_rwlock_unlock(&mf->pin_lock);
	tl_pin_note(mf, t, 1);
	return t;
}

static void region_release(struct vmwkvm_memfault *mf, struct mf_region *r, bool unregister);

/* Drop a reference without thread-local bookkeeping (used for mf->cur's own reference).
 * After its decrement a thread no longer touches t unless it took the count to zero. */
static void table_put(struct vmwkvm_memfault *mf, struct mf_table *t)
{
	long left = atomic_fetch_sub(&t->refs, 1) - 1;
	if (left > 0) {
		/* a writer may wait for this table's readers to leave: it counts itself in
		 * grace_waiters before it reads refs, this thread reads grace_waiters after it
		 * changed refs (both seq_cst), so one of the two sees the other */
		if (atomic_load(&mf->grace_waiters) > 0) {
			pthread_mutex_lock(&mf->gc_lock);
			pthread_cond_broadcast(&mf->gc_cond);
			pthread_mutex_unlock(&mf->gc_lock);
		}
		return;
	}
	/* only a retired table can reach zero: mf->cur holds a reference */
	pthread_mutex_lock(&mf->gc_lock);
	for (struct mf_table **pp = &mf->retired; *pp; pp = &(*pp)->next_retired) {
		if (*pp == t) {
			*pp = t->next_retired;
			break;
		}
	}
	/* removed regions that no remaining (older) table can reach are released */
	uint64_t oldest = UINT64_MAX;
	for (struct mf_table *x = mf->retired; x; x = x->next_retired)
		oldest = x->gen < oldest ? x->gen : oldest;
	struct mf_region *dead = NULL;
	for (struct mf_region **pp = &mf->deferred; *pp;) {
		struct mf_region *r = *pp;
		if (r->dead_gen < oldest) {
			*pp = r->next_dead;
			r->next_dead = dead;
			dead = r;
		} else {
			pp = &r->next_dead;
		}
	}
	pthread_cond_broadcast(&mf->gc_cond);
	pthread_mutex_unlock(&mf->gc_lock);
	table_free(t);
	while (dead) {
		struct mf_region *next = dead->next_dead;
		region_release(mf, dead, true);
		dead = next;
	}
}

void vk_mf_unpin(struct vmwkvm_memfault *mf, struct mf_table *t)
{
	tl_pin_note(mf, t, -1);
	table_put(mf, t);
}

/* Publish t as the current table (caller holds mf->wlock). Returns the generation of the
 * table it replaced, for grace_wait(). */
static uint64_t table_publish(struct vmwkvm_memfault *mf, struct mf_table *t)
{
	atomic_init(&t->refs, 1);
	t->gen = ++mf->gen;
	pthread_rwlock_wrlock(&mf->pin_lock);
	struct mf_table *old = mf->cur;
	mf->cur = t;
	pthread_rwlock_unlock(&mf->pin_lock);
	uint64_t old_gen = old->gen;
	pthread_mutex_lock(&mf->gc_lock);
	old->next_retired = mf->retired;
	mf->retired = old;
	pthread_mutex_unlock(&mf->gc_lock);
	table_put(mf, old);
	return old_gen;
}

/* Wait until no thread but this one uses a table of generation <= gen (caller holds no
 * lock of the library). */
static void grace_wait(struct vmwkvm_memfault *mf, uint64_t gen)
{
	atomic_fetch_add(&mf->grace_waiters, 1);
	pthread_mutex_lock(&mf->gc_lock);
	for (;;) {
		bool busy = false;
		for (struct mf_table *x = mf->retired; x; x = x->next_retired) {
			if (x->gen > gen)
				continue;
			long refs = atomic_load(&x->refs);
			if (refs > tl_pin_count(mf, x)) {
				busy = true;
				break;
			}
		}
		if (!busy)
			break;
		pthread_cond_wait(&mf->gc_cond, &mf->gc_lock);
	}
	pthread_mutex_unlock(&mf->gc_lock);
	atomic_fetch_sub(&mf->grace_waiters, 1);
}

/* ------------------------------------------------------------------ lookups */

struct mf_region *vk_mf_region_by_gpa(const struct mf_table *t, uint64_t gpa)
{
	size_t lo = 0, hi = t->nreg;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct mf_region *r = t->by_gpa[mid];
		if (gpa < r->gpa)
			hi = mid;
		else if (gpa - r->gpa >= r->size)
			lo = mid + 1;
		else
			return r;
	}
	return NULL;
}

struct mf_region *vk_mf_region_by_hva(const struct mf_table *t, uint64_t hva)
{
	size_t lo = 0, hi = t->nreg;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct mf_region *r = t->by_hva[mid];
		uint64_t base = (uint64_t)(uintptr_t)r->hva;
		if (hva < base)
			hi = mid;
		else if (hva - base >= r->size)
			lo = mid + 1;
		else
			return r;
	}
	return NULL;
}

size_t vk_mf_range_lower(const struct mf_table *t, uint64_t gpa)
{
	/* first range with end > gpa; ranges are sorted and disjoint, so ends are sorted too */
	size_t lo = 0, hi = t->nrange;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct mf_range *r = &t->ranges[mid];
		if (r->gpa + r->size <= gpa)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static size_t region_pos_gpa(const struct mf_table *t, uint64_t gpa)
{
	size_t lo = 0, hi = t->nreg;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (t->by_gpa[mid]->gpa < gpa)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static size_t region_pos_hva(const struct mf_table *t, uint64_t hva)
{
	size_t lo = 0, hi = t->nreg;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if ((uint64_t)(uintptr_t)t->by_hva[mid]->hva < hva)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* ------------------------------------------------------------------ table copies */

static struct mf_table *table_alloc(size_t nreg, size_t nrange)
{
	struct mf_table *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->nreg = nreg;
	t->nrange = nrange;
	if (nreg) {
		t->by_gpa = calloc(nreg, sizeof(*t->by_gpa));
		t->by_hva = calloc(nreg, sizeof(*t->by_hva));
	}
	if (nrange)
		t->ranges = calloc(nrange, sizeof(*t->ranges));
	if ((nreg && (!t->by_gpa || !t->by_hva)) || (nrange && !t->ranges)) {
		table_free(t);
		return NULL;
	}
	return t;
}

/* copy of t with region r inserted (r == NULL: plain copy) or region index del removed */
static struct mf_table *table_regions(const struct mf_table *t, struct mf_region *add, const struct mf_region *del)
{
	size_t n = t->nreg + (add ? 1 : 0) - (del ? 1 : 0);
	struct mf_table *c = table_alloc(n, t->nrange);
	if (!c)
		return NULL;
	if (t->nrange)
		memcpy(c->ranges, t->ranges, t->nrange * sizeof(*t->ranges));
	size_t j = 0;
	size_t pos = add ? region_pos_gpa(t, add->gpa) : (size_t)-1;
	for (size_t i = 0; i <= t->nreg; i++) {
		if (i == pos)
			c->by_gpa[j++] = add;
		if (i < t->nreg && t->by_gpa[i] != del)
			c->by_gpa[j++] = t->by_gpa[i];
	}
	j = 0;
	pos = add ? region_pos_hva(t, (uint64_t)(uintptr_t)add->hva) : (size_t)-1;
	for (size_t i = 0; i <= t->nreg; i++) {
		if (i == pos)
			c->by_hva[j++] = add;
		if (i < t->nreg && t->by_hva[i] != del)
			c->by_hva[j++] = t->by_hva[i];
	}
	return c;
}

static struct mf_table *table_ranges(const struct mf_table *t, const struct mf_range *add, size_t del_idx)
{
	bool del = del_idx != (size_t)-1;
	size_t n = t->nrange + (add ? 1 : 0) - (del ? 1 : 0);
	struct mf_table *c = table_alloc(t->nreg, n);
	if (!c)
		return NULL;
	if (t->nreg) {
		memcpy(c->by_gpa, t->by_gpa, t->nreg * sizeof(*t->by_gpa));
		memcpy(c->by_hva, t->by_hva, t->nreg * sizeof(*t->by_hva));
	}
	size_t pos = add ? vk_mf_range_lower(t, add->gpa) : (size_t)-1;
	size_t j = 0;
	for (size_t i = 0; i <= t->nrange; i++) {
		if (i == pos)
			c->ranges[j++] = *add;
		if (i < t->nrange && i != del_idx)
			c->ranges[j++] = t->ranges[i];
	}
	return c;
}

/* ------------------------------------------------------------------ object */

static uint64_t pick(uint64_t v, uint64_t def)
{
	return v ? v : def;
}

int vmwkvm_memfault_new(vmwkvm_vm *vm, const struct vmwkvm_memfault_opts *opts, vmwkvm_memfault **out)
{
	if (!out || !VK_OPTS_VALID(opts, struct vmwkvm_memfault_opts))
		return -EINVAL;
	*out = NULL;
	struct vmwkvm_memfault_opts o;
	memset(&o, 0, sizeof(o));
	if (opts)
		memcpy(&o, opts, opts->sz < sizeof(o) ? opts->sz : sizeof(o));
	if (o.flags & ~(uint32_t)(VMWKVM_MF_OPT_NO_UFFD | VMWKVM_MF_OPT_REQUIRE_UFFD | VMWKVM_MF_OPT_NO_POPULATE))
		return -EINVAL;
	if ((o.flags & VMWKVM_MF_OPT_NO_UFFD) && (o.flags & VMWKVM_MF_OPT_REQUIRE_UFFD))
		return -EINVAL;
	if (o.mechanism > VMWKVM_MF_MECH_MPROTECT || o.default_action > VMWKVM_MF_ACT_FAIL ||
	    o.default_action == VMWKVM_MF_ACT_FILL)
		return -EINVAL;
	if (o.dialects & ~(uint32_t)(VMWKVM_MF_DIALECT_KVM_USERFAULT | VMWKVM_MF_DIALECT_PERM_FAULT))
		return -EINVAL;
	if (o.reserved0)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(o.reserved) / sizeof(o.reserved[0]); i++)
		if (o.reserved[i])
			return -EINVAL;
	if (o.mechanism == VMWKVM_MF_MECH_UFFD_WP && (o.flags & VMWKVM_MF_OPT_NO_UFFD))
		return -EINVAL;

	struct vmwkvm_memfault *mf = calloc(1, sizeof(*mf));
	if (!mf)
		return -ENOMEM;
	mf->vm = vm;
	mf->flags = o.flags;
	mf->mechanism = o.mechanism;
	mf->default_action = o.default_action;
	mf->dialects = o.dialects;
	mf->userfault_flag = pick(o.userfault_flag, VMWKVM_PROPOSED_MEMORY_EXIT_FLAG_USERFAULT);
	mf->perm_read = pick(o.perm_read_flag, VMWKVM_PROPOSED_MEMORY_FAULT_FLAG_READ);
	mf->perm_write = pick(o.perm_write_flag, VMWKVM_PROPOSED_MEMORY_FAULT_FLAG_WRITE);
	mf->perm_exec = pick(o.perm_exec_flag, VMWKVM_PROPOSED_MEMORY_FAULT_FLAG_EXEC);
	mf->retry_us = o.retry_interval_us ? o.retry_interval_us : 1000;
	mf->uffd = -1;
	mf->epfd = -1;
	mf->kickfd = -1;
	atomic_init(&mf->procmem, -1);
	atomic_init(&mf->nparked, 0);
	atomic_init(&mf->svc_stop, false);
	mf->max_page = MF_MIN_PAGE;
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	/* writers are rare and must not starve behind a stream of faults */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&mf->pin_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	pthread_mutex_init(&mf->wlock, NULL);
	pthread_mutex_init(&mf->gc_lock, NULL);
	pthread_cond_init(&mf->gc_cond, NULL);
	pthread_mutex_init(&mf->prot_lock, NULL);
	pthread_mutex_init(&mf->fd_lock, NULL);
	pthread_mutex_init(&mf->uffd_lock, NULL);
	pthread_mutex_init(&mf->q_lock, NULL);
	pthread_mutex_init(&mf->svc_lock, NULL);
	mf->cur = table_alloc(0, 0);
	mf->zero = aligned_alloc(MF_MIN_PAGE, MF_MIN_PAGE);
	mf->scratch = aligned_alloc(MF_MIN_PAGE, MF_MIN_PAGE);
	if (!mf->cur || !mf->zero || !mf->scratch) {
		vmwkvm_memfault_free(mf);
		return -ENOMEM;
	}
	memset(mf->zero, 0, MF_MIN_PAGE);
	atomic_init(&mf->cur->refs, 1);

	if (!(o.flags & VMWKVM_MF_OPT_NO_UFFD)) {
		int r = vk_mf_uffd_open(mf);
		if (r < 0) {
			mf->uffd_err = r;
			if (o.flags & VMWKVM_MF_OPT_REQUIRE_UFFD) {
				vmwkvm_memfault_free(mf);
				return r;
			}
			if (o.mechanism == VMWKVM_MF_MECH_UFFD_WP) {
				vmwkvm_memfault_free(mf);
				return r;
			}
			vk_warn("memfault: continuing without userfaultfd (%s): write protection falls back to mprotect()",
				vmwkvm_strerror(r));
		}
	} else {
		mf->uffd_err = -EOPNOTSUPP;
	}
	*out = mf;
	return 0;
}

void vmwkvm_memfault_free(vmwkvm_memfault *mf)
{
	if (!mf)
		return;
	vk_mf_svc_stop_all(mf);
	struct mf_table *t = mf->cur;
	if (t) {
		for (size_t i = 0; i < t->nreg; i++)
			region_release(mf, t->by_gpa[i], true);
		table_free(t);
	}
	/* retired tables are all unpinned by now (no concurrent use allowed) */
	while (mf->retired) {
		struct mf_table *x = mf->retired;
		mf->retired = x->next_retired;
		table_free(x);
	}
	while (mf->deferred) {
		struct mf_region *r = mf->deferred;
		mf->deferred = r->next_dead;
		region_release(mf, r, true);
	}
	vk_mf_uffd_close(mf);
	int pm = atomic_load(&mf->procmem);
	if (pm >= 0)
		close(pm);
	free(mf->pend);
	free(mf->zero);
	free(mf->scratch);
	for (size_t i = 0; i < mf->nold_bufs; i++)
		free(mf->old_bufs[i]);
	pthread_rwlock_destroy(&mf->pin_lock);
	pthread_mutex_destroy(&mf->wlock);
	pthread_mutex_destroy(&mf->gc_lock);
	pthread_cond_destroy(&mf->gc_cond);
	pthread_mutex_destroy(&mf->prot_lock);
	pthread_mutex_destroy(&mf->fd_lock);
	pthread_mutex_destroy(&mf->uffd_lock);
	pthread_mutex_destroy(&mf->q_lock);
	pthread_mutex_destroy(&mf->svc_lock);
	free(mf);
}

/* ------------------------------------------------------------------ regions */

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static bool kind_has_uffd_wp(const struct vmwkvm_memfault *mf, uint32_t kind)
{
	if (mf->uffd < 0 || !(mf->features & UFFD_FEATURE_PAGEFAULT_FLAG_WP))
		return false;
	if (kind == VMWKVM_MF_MEM_SHMEM)
		return (mf->features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM) != 0;
	return true;
}

/* registration modes the handler ranges of t ask for over [gpa, gpa+size) */
static uint64_t range_modes(const struct mf_table *t, uint64_t gpa, uint64_t size)
{
	uint64_t modes = 0;
	for (size_t i = vk_mf_range_lower(t, gpa); i < t->nrange && t->ranges[i].gpa < gpa + size; i++) {
		if (t->ranges[i].access & VMWKVM_MF_ACCESS_MISSING)
			modes |= UFFDIO_REGISTER_MODE_MISSING;
		if (t->ranges[i].access & VMWKVM_MF_ACCESS_MINOR)
			modes |= UFFDIO_REGISTER_MODE_MINOR;
	}
	return modes;
}

static void region_free_mem(struct mf_region *r)
{
	free((void *)r->pst);
	free(r);
}

static int region_make_alias(struct vmwkvm_memfault *mf, struct mf_region *r)
{
	(void)mf;
	if (r->kind != VMWKVM_MF_MEM_SHMEM || (r->flags & VMWKVM_MF_REGION_NO_ALIAS))
		return 0;
	if (r->flags & VMWKVM_MF_REGION_HAS_FD) {
		void *p = NULL;
		int e = vk_mmap(&p, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, (off_t)r->fd_off);
		if (e < 0)
			return e;
		r->alias = p;
		r->alias_how = 1;
		return 0;
	}
	/* a MAP_SHARED mapping without a descriptor: mremap(old_size 0) maps the same pages again */
	void *p = mremap(r->hva, 0, r->size, MREMAP_MAYMOVE);
	if (p == MAP_FAILED)
		return -errno;
	r->alias = p;
	r->alias_how = 2;
	return 0;
}

int vmwkvm_memfault_add_region(vmwkvm_memfault *mf, const struct vmwkvm_mf_region *in)
{
	if (!mf || !in || !VK_OPTS_VALID(in, struct vmwkvm_mf_region) || in->sz < sizeof(*in))
		return -EINVAL;
	for (size_t i = 0; i < sizeof(in->reserved) / sizeof(in->reserved[0]); i++)
		if (in->reserved[i])
			return -EINVAL;
	uint64_t ps = in->page_size ? in->page_size : MF_MIN_PAGE;
	uint64_t hva = (uint64_t)(uintptr_t)in->host;
	if (!is_pow2(ps) || ps < MF_MIN_PAGE || !in->host || in->size == 0 || (in->gpa | in->size | hva) & (ps - 1))
		return -EINVAL;
	if (in->gpa + in->size < in->gpa || hva + in->size < hva)
		return -EINVAL;
	if (in->kind > VMWKVM_MF_MEM_SHMEM || in->flags & ~(uint32_t)(VMWKVM_MF_REGION_HAS_FD | VMWKVM_MF_REGION_NO_ALIAS))
		return -EINVAL;
	if ((in->flags & VMWKVM_MF_REGION_HAS_FD) && (in->fd < 0 || in->kind != VMWKVM_MF_MEM_SHMEM))
		return -EINVAL;

	struct mf_region *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->gpa = in->gpa;
	r->size = in->size;
	r->hva = in->host;
	r->kind = in->kind;
	r->flags = in->flags;
	r->fd = (in->flags & VMWKVM_MF_REGION_HAS_FD) ? in->fd : -1;
	r->fd_off = in->fd_offset;
	r->page_size = (uint32_t)ps;
	r->page_shift = (unsigned)__builtin_ctzll(ps);
	r->npages = in->size >> r->page_shift;
	r->uf_bitmap = in->userfault_bitmap;
	atomic_init(&r->nprot, 0);
	r->pst = calloc(r->npages, 1);
	if (!r->pst) {
		free(r);
		return -ENOMEM;
	}
	if (mf->mechanism == VMWKVM_MF_MECH_MPROTECT || !kind_has_uffd_wp(mf, r->kind)) {
		if (mf->mechanism == VMWKVM_MF_MECH_UFFD_WP) {
			vk_warn("memfault: region at GPA 0x%llx: userfaultfd cannot write-protect %s memory here",
				(unsigned long long)r->gpa, r->kind == VMWKVM_MF_MEM_SHMEM ? "shmem" : "anonymous");
			region_free_mem(r);
			return -EOPNOTSUPP;
		}
		r->mech = VMWKVM_MF_MECH_MPROTECT;
	} else {
		r->mech = VMWKVM_MF_MECH_UFFD_WP;
	}

	pthread_mutex_lock(&mf->wlock);
	struct mf_table *t = mf->cur;
	int err = 0;
	/* overlap checks against the neighbours in both orders */
	size_t p = region_pos_gpa(t, r->gpa);
	if ((p < t->nreg && t->by_gpa[p]->gpa < r->gpa + r->size) ||
	    (p > 0 && t->by_gpa[p - 1]->gpa + t->by_gpa[p - 1]->size > r->gpa))
		err = -EEXIST;
	p = region_pos_hva(t, hva);
	if ((p < t->nreg && (uint64_t)(uintptr_t)t->by_hva[p]->hva < hva + r->size) ||
	    (p > 0 && (uint64_t)(uintptr_t)t->by_hva[p - 1]->hva + t->by_hva[p - 1]->size > hva))
		err = -EEXIST;
	uint64_t modes = 0;
	if (!err) {
		modes = mf->uffd >= 0 ? range_modes(t, r->gpa, r->size) : 0;
		if ((modes & UFFDIO_REGISTER_MODE_MINOR) && r->kind != VMWKVM_MF_MEM_SHMEM)
			err = -EOPNOTSUPP;
	}
	if (!err) {
		err = region_make_alias(mf, r);
		if (err < 0)
			vk_warn("memfault: region at GPA 0x%llx: no alias mapping (%s); protected pages are then "
				"completed by unprotecting them", (unsigned long long)r->gpa, vmwkvm_strerror(err));
		err = 0;
	}
	if (!err && r->mech == VMWKVM_MF_MECH_UFFD_WP)
		modes |= UFFDIO_REGISTER_MODE_WP;
	if (!err && modes) {
		pthread_mutex_lock(&mf->prot_lock);
		err = vk_mf_uffd_register(mf, r, modes);
		pthread_mutex_unlock(&mf->prot_lock);
	}
	struct mf_table *c = NULL;
	if (!err) {
		c = table_regions(t, r, NULL);
		if (!c)
			err = -ENOMEM;
	}
	if (err) {
		pthread_mutex_unlock(&mf->wlock);
		region_release(mf, r, true);
		return err;
	}
	if (r->page_size > mf->max_page) {
		/* bigger zero/scratch buffers for huge pages. Faults in progress (on the
		 * serving thread, or resolve() callers) may still use the old ones: keep them
		 * until the dispatcher is freed (page sizes at least double each time, so a
		 * handful at most). No serving lock here: a handler may add regions. */
		uint8_t *z = NULL, *s = NULL;
		if (mf->nold_bufs + 2 <= sizeof(mf->old_bufs) / sizeof(mf->old_bufs[0])) {
			z = aligned_alloc(r->page_size, r->page_size);
			s = aligned_alloc(r->page_size, r->page_size);
		}
		if (z && s) {
			memset(z, 0, r->page_size);
			mf->old_bufs[mf->nold_bufs++] = atomic_exchange(&mf->zero, z);
			mf->old_bufs[mf->nold_bufs++] = atomic_exchange(&mf->scratch, s);
			mf->max_page = r->page_size;
		} else {
			free(z);
			free(s);
			err = -ENOMEM;
		}
		if (err) {
			pthread_mutex_unlock(&mf->wlock);
			table_free(c);
			region_release(mf, r, true);
			return err;
		}
	}
	table_publish(mf, c);
	pthread_mutex_unlock(&mf->wlock);
	vk_info("memfault: region GPA 0x%llx+0x%llx (%s) write protection by %s%s", (unsigned long long)r->gpa,
		(unsigned long long)r->size, r->kind == VMWKVM_MF_MEM_SHMEM ? "shmem" : "anonymous",
		r->mech == VMWKVM_MF_MECH_UFFD_WP ? "userfaultfd" : "mprotect", r->alias ? ", alias mapped" : "");
	return 0;
}

/* Undo mprotect()s the library made on region r (caller holds prot_lock). */
static void region_restore_mprotect(struct mf_region *r)
{
	uint64_t i = 0;
	while (i < r->npages) {
		if (!(atomic_load(&r->pst[i]) & PST_MPROT)) {
			i++;
			continue;
		}
		uint64_t j = i;
		while (j < r->npages && (atomic_load(&r->pst[j]) & PST_MPROT))
			j++;
		vk_mprotect(r->hva + (i << r->page_shift), (j - i) << r->page_shift, PROT_READ | PROT_WRITE);
		i = j;
	}
}

static void region_release(struct vmwkvm_memfault *mf, struct mf_region *r, bool unregister)
{
	pthread_mutex_lock(&mf->prot_lock);
	r->dead = true;
	if (r->uffd_modes) {
		/* faults queued for it are answered by the unregistration (it wakes their
		 * threads). Only a registered region has any: an unregistered one may be a
		 * refused add whose host range belongs to another region's parked faults. */
		vk_mf_uffd_forget(mf, (uint64_t)(uintptr_t)r->hva, r->size);
		if (unregister)
			vk_mf_uffd_unregister(mf, r);
	}
	region_restore_mprotect(r);
	pthread_mutex_unlock(&mf->prot_lock);
	if (r->alias) {
		if (r->alias_how == 1)
			vk_munmap(r->alias, r->size);
		else
			munmap(r->alias, r->size);
	}
	region_free_mem(r);
}

int vmwkvm_memfault_remove_region(vmwkvm_memfault *mf, uint64_t gpa)
{
	if (!mf)
		return -EINVAL;
	pthread_mutex_lock(&mf->wlock);
	struct mf_table *t = mf->cur;
	struct mf_region *r = vk_mf_region_by_gpa(t, gpa);
	if (!r || r->gpa != gpa) {
		pthread_mutex_unlock(&mf->wlock);
		return -ENOENT;
	}
	struct mf_table *c = table_regions(t, NULL, r);
	if (!c) {
		pthread_mutex_unlock(&mf->wlock);
		return -ENOMEM;
	}
	uint64_t gen = table_publish(mf, c);
	pthread_mutex_unlock(&mf->wlock);
	grace_wait(mf, gen);
	/* Only tables this thread pins (it runs in a handler) can still reach r: release it
	 * now, or when the last of them goes (the blocked threads are released then). */
	pthread_mutex_lock(&mf->gc_lock);
	bool defer = false;
	for (struct mf_table *x = mf->retired; x; x = x->next_retired)
		defer |= x->gen <= gen;
	if (defer) {
		r->dead_gen = gen;
		r->next_dead = mf->deferred;
		mf->deferred = r;
	}
	pthread_mutex_unlock(&mf->gc_lock);
	if (!defer)
		region_release(mf, r, true);
	vk_info("memfault: region GPA 0x%llx removed%s", (unsigned long long)gpa, defer ? " (released after the current dispatch)" : "");
	return 0;
}

/* ------------------------------------------------------------------ ranges */

int vmwkvm_memfault_add_range(vmwkvm_memfault *mf, const struct vmwkvm_mf_range *in)
{
	if (!mf || !in || !VK_OPTS_VALID(in, struct vmwkvm_mf_range) || in->sz < sizeof(*in))
		return -EINVAL;
	if (!in->fn || in->size == 0 || in->gpa + in->size < in->gpa || in->gpa + in->size == 0 ||
	    !in->access || (in->access & ~(uint32_t)VMWKVM_MF_ACCESS_ALL) || in->reserved0)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(in->reserved) / sizeof(in->reserved[0]); i++)
		if (in->reserved[i])
			return -EINVAL;
	struct mf_range nr = { .gpa = in->gpa, .size = in->size, .access = in->access, .fn = in->fn, .ctx = in->ctx };
	/* MINOR faults exist only with userfaultfd; MISSING ones also come from KVM Userfault exits */
	if (mf->uffd < 0 && ((in->access & VMWKVM_MF_ACCESS_MINOR) ||
			     ((in->access & VMWKVM_MF_ACCESS_MISSING) && !(mf->dialects & VMWKVM_MF_DIALECT_KVM_USERFAULT))))
		return -EOPNOTSUPP;

	pthread_mutex_lock(&mf->wlock);
	struct mf_table *t = mf->cur;
	size_t i = vk_mf_range_lower(t, nr.gpa);
	int err = 0;
	if (i < t->nrange && t->ranges[i].gpa < nr.gpa + nr.size)
		err = -EEXIST;
	uint64_t modes = 0;
	if ((in->access & VMWKVM_MF_ACCESS_MISSING) && mf->uffd >= 0)
		modes |= UFFDIO_REGISTER_MODE_MISSING;
	if (in->access & VMWKVM_MF_ACCESS_MINOR)
		modes |= UFFDIO_REGISTER_MODE_MINOR;
	/* regions the range overlaps: check, then register */
	size_t first = 0;
	if (!err && modes) {
		first = region_pos_gpa(t, nr.gpa);
		if (first > 0 && t->by_gpa[first - 1]->gpa + t->by_gpa[first - 1]->size > nr.gpa)
			first--;
		for (size_t k = first; k < t->nreg && t->by_gpa[k]->gpa < nr.gpa + nr.size; k++)
			if ((modes & UFFDIO_REGISTER_MODE_MINOR) && t->by_gpa[k]->kind != VMWKVM_MF_MEM_SHMEM)
				err = -EOPNOTSUPP;
		if (!err) {
			pthread_mutex_lock(&mf->prot_lock);
			for (size_t k = first; !err && k < t->nreg && t->by_gpa[k]->gpa < nr.gpa + nr.size; k++) {
				struct mf_region *r = t->by_gpa[k];
				uint64_t want = modes;
				if (r->kind != VMWKVM_MF_MEM_SHMEM)
					want &= ~(uint64_t)UFFDIO_REGISTER_MODE_MINOR;
				if ((r->uffd_modes & want) != want) {
					err = vk_mf_uffd_register(mf, r, r->uffd_modes | want);
					if (!err && (want & UFFDIO_REGISTER_MODE_MISSING))
						r->guard = false; /* MISSING is wanted by a handler now */
				}
			}
			pthread_mutex_unlock(&mf->prot_lock);
		}
	}
	struct mf_table *c = NULL;
	if (!err) {
		c = table_ranges(t, &nr, (size_t)-1);
		if (!c)
			err = -ENOMEM;
	}
	if (!err)
		table_publish(mf, c);
	pthread_mutex_unlock(&mf->wlock);
	return err;
}

int vmwkvm_memfault_remove_range(vmwkvm_memfault *mf, uint64_t gpa, uint64_t size)
{
	if (!mf)
		return -EINVAL;
	pthread_mutex_lock(&mf->wlock);
	struct mf_table *t = mf->cur;
	size_t i = vk_mf_range_lower(t, gpa);
	if (i >= t->nrange || t->ranges[i].gpa != gpa || t->ranges[i].size != size) {
		pthread_mutex_unlock(&mf->wlock);
		return -ENOENT;
	}
	struct mf_table *c = table_ranges(t, NULL, i);
	if (!c) {
		pthread_mutex_unlock(&mf->wlock);
		return -ENOMEM;
	}
	uint64_t gen = table_publish(mf, c);
	pthread_mutex_unlock(&mf->wlock);
	grace_wait(mf, gen);
	return 0;
}

/* ------------------------------------------------------------------ dispatch engine */

static int push_piece(struct mf_fault *f, const struct mf_piece *p)
{
	if (!f->pieces) {
		f->pieces = f->inl;
		f->cappieces = MF_MAX_INLINE_PIECES;
	}
	if (f->npieces == f->cappieces) {
		size_t cap = f->cappieces * 2;
		struct mf_piece *n = malloc(cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		memcpy(n, f->pieces, f->npieces * sizeof(*n));
		if (f->pieces != f->inl)
			free(f->pieces);
		f->pieces = n;
		f->cappieces = cap;
	}
	f->pieces[f->npieces++] = *p;
	return 0;
}

void vk_mf_fault_fini(struct mf_fault *f)
{
	if (f->pieces && f->pieces != f->inl)
		free(f->pieces);
	f->pieces = NULL;
	f->npieces = f->cappieces = 0;
}

static void fill_record(const struct mf_table *t, const struct mf_fault *f, uint64_t gpa, uint64_t size,
			struct vmwkvm_mf_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->gpa = gpa;
	rec->size = size;
	rec->fault_gpa = f->fault_gpa;
	rec->fault_size = f->fault_size;
	struct mf_region *r = vk_mf_region_by_gpa(t, gpa);
	if (r) {
		rec->host = r->hva + (gpa - r->gpa);
		rec->region_gpa = r->gpa;
	}
	rec->data = f->data ? f->data + (gpa - f->gpa) : NULL;
	rec->access = f->access;
	rec->source = f->source;
	rec->flags = f->flags;
	rec->tid = f->tid;
	rec->vcpu = f->vcpu;
	rec->raw_flags = f->raw_flags;
}

void vk_mf_fault_record(const struct vmwkvm_memfault *mf, const struct mf_table *t, const struct mf_fault *f,
			struct vmwkvm_mf_record *rec)
{
	(void)mf;
	fill_record(t, f, f->gpa, f->size, rec);
}

static void note_fail(struct mf_fault *f, const struct mf_table *t, uint64_t gpa, uint64_t size, int error)
{
	if (f->verdict != VMWKVM_MF_ACT_FAIL) {
		f->verdict = VMWKVM_MF_ACT_FAIL;
		f->error = error;
		fill_record(t, f, gpa, size, &f->fail_rec);
		f->fail_rec.error = error;
	}
}

static int take_kind(struct vmwkvm_memfault *mf, struct mf_fault *f, const struct mf_table *t, uint64_t gpa,
		     uint64_t size, uint32_t kind, const void *data, int error, bool handled)
{
	switch (kind) {
	case VMWKVM_MF_ACT_RETRY:
		vk_mf_count(mf, ST_RETRIES, 1);
		if (f->verdict == MF_VERDICT_RESOLVE)
			f->verdict = VMWKVM_MF_ACT_RETRY;
		return 0;
	case VMWKVM_MF_ACT_FAIL:
		vk_mf_count(mf, ST_FAILURES, 1);
		note_fail(f, t, gpa, size, error < 0 ? error : -EFAULT);
		return 0;
	case VMWKVM_MF_ACT_UNPROTECT:
	case VMWKVM_MF_ACT_ZERO:
	case VMWKVM_MF_ACT_ALLOW_ONCE:
	case VMWKVM_MF_ACT_FILL: {
		struct mf_piece p = { .gpa = gpa, .size = size, .kind = kind, .data = data, .handled = handled };
		return push_piece(f, &p);
	}
	default:
		vk_warn("memfault: handler answered unknown action %u for GPA 0x%llx", kind, (unsigned long long)gpa);
		vk_mf_count(mf, ST_FAILURES, 1);
		note_fail(f, t, gpa, size, -EINVAL);
		return 0;
	}
}

static uint32_t unhandled_kind(const struct vmwkvm_memfault *mf, const struct mf_fault *f)
{
	if (f->access == VMWKVM_MF_ACCESS_REMOVE)
		return VMWKVM_MF_ACT_UNPROTECT; /* notifications: nothing to do */
	if (mf->default_action != VMWKVM_MF_ACT_DEFAULT)
		return mf->default_action;
	return f->default_kind;
}

int vk_mf_run_handlers(struct vmwkvm_memfault *mf, struct mf_table *t, struct mf_fault *f)
{
	f->verdict = MF_VERDICT_RESOLVE;
	f->error = 0;
	f->any_handler = false;
	uint64_t pos = f->gpa, end = f->gpa + f->size;
	size_t i = vk_mf_range_lower(t, pos);
	while (pos < end) {
		uint64_t pend;
		const struct mf_range *rg = NULL;
		if (i < t->nrange && t->ranges[i].gpa <= pos) {
			rg = &t->ranges[i];
			uint64_t rend = rg->gpa + rg->size;
			pend = rend < end ? rend : end;
		} else {
			pend = (i < t->nrange && t->ranges[i].gpa < end) ? t->ranges[i].gpa : end;
		}
		/* a record never spans two regions (its host pointer belongs to one) */
		struct mf_region *reg = vk_mf_region_by_gpa(t, pos);
		if (reg && reg->gpa + reg->size < pend)
			pend = reg->gpa + reg->size;
		int e;
		if (rg && (rg->access & f->access)) {
			struct vmwkvm_mf_record rec;
			fill_record(t, f, pos, pend - pos, &rec);
			struct vmwkvm_mf_action act = { .kind = unhandled_kind(mf, f) };
			if (f->access == VMWKVM_MF_ACCESS_REMOVE)
				act.kind = VMWKVM_MF_ACT_UNPROTECT;
			uint32_t def = act.kind;
			vk_mf_count(mf, ST_HANDLER_CALLS, 1);
			f->any_handler = true;
			int r = rg->fn(mf, &rec, &act, rg->ctx);
			uint32_t kind = r < 0 ? (uint32_t)VMWKVM_MF_ACT_FAIL : act.kind;
			if (kind == VMWKVM_MF_ACT_DEFAULT)
				kind = def;
			int error = r < 0 ? r : act.error;
			if (kind == VMWKVM_MF_ACT_FILL && !act.data) {
				vk_warn("memfault: handler answered FILL without data for GPA 0x%llx", (unsigned long long)pos);
				kind = VMWKVM_MF_ACT_FAIL;
				error = -EINVAL;
			}
			if (f->access == VMWKVM_MF_ACCESS_REMOVE)
				kind = VMWKVM_MF_ACT_UNPROTECT; /* the answer to a notification is ignored */
			e = take_kind(mf, f, t, pos, pend - pos, kind, act.data, error, true);
		} else {
			if (f->access != VMWKVM_MF_ACCESS_REMOVE)
				vk_mf_count(mf, ST_UNHANDLED, 1);
			e = take_kind(mf, f, t, pos, pend - pos, unhandled_kind(mf, f), NULL, -EFAULT, false);
		}
		if (e < 0)
			return e;
		if (rg && pend == rg->gpa + rg->size)
			i++;
		pos = pend;
	}
	return 0;
}

bool vk_mf_keep_protection(const struct mf_fault *f, uint64_t gpa, uint64_t len)
{
	bool any = false;
	for (size_t i = 0; i < f->npieces; i++) {
		const struct mf_piece *p = &f->pieces[i];
		if (p->gpa >= gpa + len || p->gpa + p->size <= gpa)
			continue;
		any = true;
		if (p->kind != VMWKVM_MF_ACT_ALLOW_ONCE)
			return false;
	}
	return any;
}

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

/* ------------------------------------------------------------------ stats */

int vmwkvm_memfault_stats(vmwkvm_memfault *mf, struct vmwkvm_mf_stats *out)
{
	if (!mf || !out || out->sz < offsetof(struct vmwkvm_mf_stats, reserved))
		return -EINVAL;
	size_t sz = out->sz < sizeof(*out) ? out->sz : sizeof(*out);
	struct vmwkvm_mf_stats s;
	memset(&s, 0, sizeof(s));
	s.sz = sz;
	for (int i = 0; i < VMWKVM_MF_SRC_COUNT; i++)
		s.faults[i] = atomic_load_explicit(&mf->faults[i], memory_order_relaxed);
	s.handler_calls = atomic_load(&mf->stat[ST_HANDLER_CALLS]);
	s.unhandled = atomic_load(&mf->stat[ST_UNHANDLED]);
	s.retries = atomic_load(&mf->stat[ST_RETRIES]);
	s.failures = atomic_load(&mf->stat[ST_FAILURES]);
	s.remove_events = atomic_load(&mf->stat[ST_REMOVE_EVENTS]);
	s.eagain = atomic_load(&mf->stat[ST_EAGAIN]);
	s.eexist = atomic_load(&mf->stat[ST_EEXIST]);
	s.wakes = atomic_load(&mf->stat[ST_WAKES]);
	s.parked = (uint64_t)atomic_load(&mf->nparked);
	s.populated_bytes = atomic_load(&mf->stat[ST_POPULATED]);
	memcpy(out, &s, sz);
	return 0;
}
