/*
 * Memory-fault dispatcher: the object (vmwkvm_memfault_new/free), adding and removing
 * regions and handler ranges, names and statistics. The top of lib/memfault/: tables in
 * table.c, the dispatch engine in engine.c, protection in protect.c, the userfaultfd
 * source in uffd.c (ioctls in uffd_io.c), the KVM-exit source in kvm_exit.c.
 */
#include "memfault/table.h"
#include "memfault/uffd.h"
#include "memfault/uffd_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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
	atomic_init(&mf->pagemap, -1);
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
	mf->cur = vk_mf_table_alloc(0, 0);
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
			vk_mf_region_release(mf, t->by_gpa[i], true);
		vk_mf_table_free(t);
	}
	/* retired tables are all unpinned by now (no concurrent use allowed) */
	while (mf->retired) {
		struct mf_table *x = mf->retired;
		mf->retired = x->next_retired;
		vk_mf_table_free(x);
	}
	while (mf->deferred) {
		struct mf_region *r = mf->deferred;
		mf->deferred = r->next_dead;
		vk_mf_region_release(mf, r, true);
	}
	vk_mf_uffd_close(mf);
	int pm = atomic_load(&mf->procmem);
	if (pm >= 0)
		close(pm);
	pm = atomic_load(&mf->pagemap);
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
			vk_mf_region_free_mem(r);
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
	size_t p = vk_mf_region_pos_gpa(t, r->gpa);
	if ((p < t->nreg && t->by_gpa[p]->gpa < r->gpa + r->size) ||
	    (p > 0 && t->by_gpa[p - 1]->gpa + t->by_gpa[p - 1]->size > r->gpa))
		err = -EEXIST;
	p = vk_mf_region_pos_hva(t, hva);
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
		c = vk_mf_table_regions(t, r, NULL);
		if (!c)
			err = -ENOMEM;
	}
	if (err) {
		pthread_mutex_unlock(&mf->wlock);
		vk_mf_region_release(mf, r, true);
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
			vk_mf_table_free(c);
			vk_mf_region_release(mf, r, true);
			return err;
		}
	}
	vk_mf_table_publish(mf, c);
	pthread_mutex_unlock(&mf->wlock);
	vk_info("memfault: region GPA 0x%llx+0x%llx (%s) write protection by %s%s", (unsigned long long)r->gpa,
		(unsigned long long)r->size, r->kind == VMWKVM_MF_MEM_SHMEM ? "shmem" : "anonymous",
		r->mech == VMWKVM_MF_MECH_UFFD_WP ? "userfaultfd" : "mprotect", r->alias ? ", alias mapped" : "");
	return 0;
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
	struct mf_table *c = vk_mf_table_regions(t, NULL, r);
	if (!c) {
		pthread_mutex_unlock(&mf->wlock);
		return -ENOMEM;
	}
	uint64_t gen = vk_mf_table_publish(mf, c);
	pthread_mutex_unlock(&mf->wlock);
	vk_mf_grace_wait(mf, gen);
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
		vk_mf_region_release(mf, r, true);
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
		first = vk_mf_region_pos_gpa(t, nr.gpa);
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
		c = vk_mf_table_ranges(t, &nr, (size_t)-1);
		if (!c)
			err = -ENOMEM;
	}
	if (!err)
		vk_mf_table_publish(mf, c);
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
	struct mf_table *c = vk_mf_table_ranges(t, NULL, i);
	if (!c) {
		pthread_mutex_unlock(&mf->wlock);
		return -ENOMEM;
	}
	uint64_t gen = vk_mf_table_publish(mf, c);
	pthread_mutex_unlock(&mf->wlock);
	vk_mf_grace_wait(mf, gen);
	return 0;
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

