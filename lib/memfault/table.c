/*
 * Memory-fault dispatcher: the region and handler-range tables. Readers pin the current
 * snapshot, writers publish a copy and wait for a grace period (memfault_internal.h);
 * lookups by GPA and host address; copies with a region or range added or removed; the
 * release of a removed region. Calls only uffd_io.c below it.
 */
#include "memfault/table.h"

#include "memfault/uffd_io.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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

void vk_mf_table_free(struct mf_table *t)
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
	vk_mf_table_free(t);
	while (dead) {
		struct mf_region *next = dead->next_dead;
		vk_mf_region_release(mf, dead, true);
		dead = next;
	}
}

void vk_mf_unpin(struct vmwkvm_memfault *mf, struct mf_table *t)
{
	tl_pin_note(mf, t, -1);
	table_put(mf, t);
}

/* Publish t as the current table (caller holds mf->wlock). Returns the generation of the
 * table it replaced, for vk_mf_grace_wait(). */
uint64_t vk_mf_table_publish(struct vmwkvm_memfault *mf, struct mf_table *t)
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
void vk_mf_grace_wait(struct vmwkvm_memfault *mf, uint64_t gen)
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

size_t vk_mf_region_pos_gpa(const struct mf_table *t, uint64_t gpa)
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

size_t vk_mf_region_pos_hva(const struct mf_table *t, uint64_t hva)
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

struct mf_table *vk_mf_table_alloc(size_t nreg, size_t nrange)
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
		vk_mf_table_free(t);
		return NULL;
	}
	return t;
}

/* copy of t with region r inserted (r == NULL: plain copy) or region index del removed */
struct mf_table *vk_mf_table_regions(const struct mf_table *t, struct mf_region *add, const struct mf_region *del)
{
	size_t n = t->nreg + (add ? 1 : 0) - (del ? 1 : 0);
	struct mf_table *c = vk_mf_table_alloc(n, t->nrange);
	if (!c)
		return NULL;
	if (t->nrange)
		memcpy(c->ranges, t->ranges, t->nrange * sizeof(*t->ranges));
	size_t j = 0;
	size_t pos = add ? vk_mf_region_pos_gpa(t, add->gpa) : (size_t)-1;
	for (size_t i = 0; i <= t->nreg; i++) {
		if (i == pos)
			c->by_gpa[j++] = add;
		if (i < t->nreg && t->by_gpa[i] != del)
			c->by_gpa[j++] = t->by_gpa[i];
	}
	j = 0;
	pos = add ? vk_mf_region_pos_hva(t, (uint64_t)(uintptr_t)add->hva) : (size_t)-1;
	for (size_t i = 0; i <= t->nreg; i++) {
		if (i == pos)
			c->by_hva[j++] = add;
		if (i < t->nreg && t->by_hva[i] != del)
			c->by_hva[j++] = t->by_hva[i];
	}
	return c;
}

struct mf_table *vk_mf_table_ranges(const struct mf_table *t, const struct mf_range *add, size_t del_idx)
{
	bool del = del_idx != (size_t)-1;
	size_t n = t->nrange + (add ? 1 : 0) - (del ? 1 : 0);
	struct mf_table *c = vk_mf_table_alloc(t->nreg, n);
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

void vk_mf_region_free_mem(struct mf_region *r)
{
	free((void *)r->pst);
	free(r);
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

void vk_mf_region_release(struct vmwkvm_memfault *mf, struct mf_region *r, bool unregister)
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
	vk_mf_region_free_mem(r);
}

