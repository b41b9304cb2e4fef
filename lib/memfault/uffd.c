/*
 * Memory-fault dispatcher, userfaultfd source: resolving the faults read from the fd (one
 * fault: handlers, page composition, UFFDIO_COPY / CONTINUE / WRITEPROTECT), remove events,
 * vmwkvm_memfault_dispatch() and the service thread. Locks (memfault_internal.h):
 *   uffd_lock  one thread serves at a time (held while handlers run)
 *   q_lock     the pending queues (uffd_io.c)
 */
#include "memfault/uffd.h"

#include "memfault/engine.h"
#include "memfault/protect.h"
#include "memfault/table.h"
#include "memfault/uffd_io.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define MF_MIN_PAGE_FOR_WAKE 4096u

/* ------------------------------------------------------------------ one fault */

static void pst_clear(struct mf_region *r, uint64_t gpa, uint8_t bits)
{
	atomic_fetch_and_explicit(&r->pst[vk_mf_page_index(r, gpa)], (uint8_t)~bits, memory_order_acq_rel);
}

/* compose the page at gpa (size ps) from the FILL/ZERO pieces into buf (zeroes elsewhere) */
static bool compose(const struct mf_fault *f, uint64_t gpa, uint64_t ps, uint8_t *buf)
{
	bool any = false;
	memset(buf, 0, ps);
	for (size_t i = 0; i < f->npieces; i++) {
		const struct mf_piece *p = &f->pieces[i];
		if (p->kind == VMWKVM_MF_ACT_FILL) {
			memcpy(buf + (p->gpa - gpa), p->data, p->size);
			any = true;
		} else if (p->kind == VMWKVM_MF_ACT_ZERO) {
			any = true;
		}
	}
	return any;
}

static bool any_fill(const struct mf_fault *f)
{
	for (size_t i = 0; i < f->npieces; i++)
		if (f->pieces[i].kind == VMWKVM_MF_ACT_FILL || f->pieces[i].kind == VMWKVM_MF_ACT_ZERO)
			return true;
	return false;
}

/* write the FILL/ZERO pieces through dst (the page's base) */
static void write_pieces(const struct mf_fault *f, uint64_t gpa, uint8_t *dst)
{
	for (size_t i = 0; i < f->npieces; i++) {
		const struct mf_piece *p = &f->pieces[i];
		if (p->kind == VMWKVM_MF_ACT_FILL)
			vk_mf_guest_copy(dst + (p->gpa - gpa), p->data, p->size);
		else if (p->kind == VMWKVM_MF_ACT_ZERO)
			vk_mf_guest_zero(dst + (p->gpa - gpa), p->size);
	}
}

/* The fault record of a userfaultfd fault on the page at gpa (state s) before the handlers
 * run. Returns false for a stale write-protect fault (the page was unprotected meanwhile,
 * or its protection is not ours): nothing to dispatch. */
static bool uffd_fault_init(struct mf_fault *f, const struct mf_region *r, const struct mf_pending *e, uint64_t gpa,
			    uint8_t s, const uint8_t *zero)
{
	uint64_t ps = r->page_size;
	uint64_t base = (uint64_t)(uintptr_t)r->hva;
	uint64_t page_hva = e->hva & ~(ps - 1);
	memset(f, 0, sizeof(*f));
	f->gpa = gpa;
	f->size = ps;
	f->fault_gpa = r->gpa + (e->hva - base);
	f->fault_size = ps;
	f->source = VMWKVM_MF_SRC_UFFD;
	f->tid = (int32_t)e->tid;
	f->raw_flags = e->flags;
	bool write = e->flags & UFFD_PAGEFAULT_FLAG_WRITE;
	if (s & PST_PROT)
		f->flags |= VMWKVM_MF_FLAG_PROTECTED;
	if (s & PST_REMOVED)
		f->flags |= VMWKVM_MF_FLAG_REMOVED;

	if (e->flags & UFFD_PAGEFAULT_FLAG_WP) {
		if (!(s & PST_WP) || (s & PST_MPROT))
			return false;
		f->access = VMWKVM_MF_ACCESS_WRITE;
		f->default_kind = VMWKVM_MF_ACT_UNPROTECT;
		f->data = (const uint8_t *)(uintptr_t)page_hva;
	} else if (e->flags & UFFD_PAGEFAULT_FLAG_MINOR) {
		f->access = VMWKVM_MF_ACCESS_MINOR;
		f->default_kind = VMWKVM_MF_ACT_UNPROTECT;
		f->data = r->alias ? r->alias + (gpa - r->gpa) : NULL;
	} else {
		f->flags |= VMWKVM_MF_FLAG_UNPOPULATED;
		f->data = zero;
		if (s & PST_WP) {
			/* the missing guard (or MISSING handlers) on a write-protected page */
			f->access = VMWKVM_MF_ACCESS_MISSING | (write ? VMWKVM_MF_ACCESS_WRITE : VMWKVM_MF_ACCESS_READ);
			f->default_kind = write ? VMWKVM_MF_ACT_UNPROTECT : VMWKVM_MF_ACT_ALLOW_ONCE;
		} else {
			f->access = VMWKVM_MF_ACCESS_MISSING;
			f->default_kind = VMWKVM_MF_ACT_ZERO;
		}
	}
	return true;
}

/* Resolve a write-protect fault on the page at gpa: write the FILL pieces, unprotect. */
static int uffd_resolve_wp(struct vmwkvm_memfault *mf, struct mf_region *r, const struct mf_fault *f, uint64_t gpa)
{
	uint64_t ps = r->page_size;
	int err = 0;
	if (any_fill(f)) {
		if (r->alias) {
			write_pieces(f, gpa, r->alias + (gpa - r->gpa));
		} else {
			/* lift the protection without waking, write, then wake below */
			err = vk_mf_unprotect_region(mf, r, gpa, ps, true);
			if (err == 0)
				write_pieces(f, gpa, r->hva + (gpa - r->gpa));
		}
	}
	if (err == 0)
		err = vk_mf_unprotect_region(mf, r, gpa, ps, false);
	return err;
}

/* Resolve a MINOR fault on the page at gpa (state s): fill through the alias, CONTINUE. */
static int uffd_resolve_minor(struct vmwkvm_memfault *mf, struct mf_region *r, const struct mf_fault *f,
			      uint64_t gpa, uint64_t page_hva, uint8_t s)
{
	uint64_t ps = r->page_size;
	int err = 0;
	bool keep = (s & PST_WP) && !(s & PST_MPROT) && vk_mf_keep_protection(f, gpa, ps);
	if (any_fill(f)) {
		if (!r->alias) {
			vk_warn("memfault: MINOR fault at GPA 0x%llx: cannot fill without an alias mapping",
				(unsigned long long)gpa);
			err = -EOPNOTSUPP;
		} else {
			write_pieces(f, gpa, r->alias + (gpa - r->gpa));
		}
	}
	if (err == 0)
		err = vk_mf_uffd_continue(mf, page_hva, ps, keep);
	if (err >= 0 && !keep && (s & PST_PROT))
		err = vk_mf_unprotect_region(mf, r, gpa, ps, false);
	return err;
}

/* Resolve a MISSING fault on the page at gpa (state s): place the composed page (or
 * zeroes) with UFFDIO_COPY / ZEROPAGE and record that the page holds data. */
static int uffd_resolve_missing(struct vmwkvm_memfault *mf, struct mf_region *r, const struct mf_fault *f,
				uint64_t gpa, uint64_t page_hva, uint8_t s, const uint8_t *zero, uint8_t *scratch)
{
	uint64_t ps = r->page_size;
	int err;
	/* keeping the protection through the fill needs userfaultfd WP on this page */
	bool keep = (s & PST_WP) && !(s & PST_MPROT) && vk_mf_keep_protection(f, gpa, ps);
	bool fill = compose(f, gpa, ps, scratch);
	if (!fill && !keep && !(s & PST_PROT)) {
		err = vk_mf_uffd_zeropage(mf, page_hva, ps);
		if (err == 1) /* a marker or a racing fill: place zeroes the other way */
			err = vk_mf_uffd_copy(mf, page_hva, zero, ps, false);
	} else {
		err = vk_mf_uffd_copy(mf, page_hva, scratch, ps, keep);
	}
	if (err >= 0) {
		pst_clear(r, gpa, PST_REMOVED);
		if (!keep && (s & PST_PROT)) {
			/* the page now holds data and is not protected: record that */
			pthread_mutex_lock(&mf->prot_lock);
			if (!(vk_mf_pst(r, gpa) & PST_MPROT))
				pst_clear(r, gpa, PST_PROT);
			pthread_mutex_unlock(&mf->prot_lock);
		}
	}
	return err;
}

/* Handle one queued fault. Returns MFP_DONE, MFP_RETRY or MFP_FAILED. */
static int handle_one(struct vmwkvm_memfault *mf, const struct mf_pending *e)
{
	struct mf_table *t = vk_mf_pin(mf);
	struct mf_region *r = vk_mf_region_by_hva(t, e->hva);
	if (!r) {
		/* not (or no longer) guest RAM we know: never leave the thread asleep */
		vk_debug("memfault: fault at 0x%llx outside every region: woken", (unsigned long long)e->hva);
		vk_mf_uffd_wake(mf, e->hva & ~(uint64_t)(MF_MIN_PAGE_FOR_WAKE - 1), MF_MIN_PAGE_FOR_WAKE);
		vk_mf_unpin(mf, t);
		return MFP_DONE;
	}
	uint64_t ps = r->page_size;
	/* loaded once, after pinning: big enough for r's pages (see memfault_internal.h) */
	uint8_t *zero = mf->zero, *scratch = mf->scratch;
	uint64_t page_hva = e->hva & ~(ps - 1);
	uint64_t gpa = r->gpa + (page_hva - (uint64_t)(uintptr_t)r->hva);
	uint8_t s = vk_mf_pst(r, gpa);
	atomic_fetch_add_explicit(&mf->faults[VMWKVM_MF_SRC_UFFD], 1, memory_order_relaxed);

	struct mf_fault f;
	if (!uffd_fault_init(&f, r, e, gpa, s, zero)) {
		/* stale (the page was unprotected meanwhile) or not ours: let it go */
		vk_mf_uffd_wp(mf, page_hva, ps, false, false);
		vk_mf_unpin(mf, t);
		return MFP_DONE;
	}

	int res = MFP_DONE;
	int err = vk_mf_run_handlers(mf, t, &f);
	if (err < 0) {
		vk_err("memfault: out of memory dispatching a fault at GPA 0x%llx", (unsigned long long)gpa);
		vk_mf_fault_fini(&f);
		vk_mf_unpin(mf, t);
		return MFP_RETRY;
	}
	if (f.verdict == VMWKVM_MF_ACT_RETRY) {
		res = MFP_RETRY;
		goto out;
	}
	if (f.verdict == VMWKVM_MF_ACT_FAIL) {
		vk_warn("memfault: handler failed the fault at GPA 0x%llx (%s): the thread stays blocked until "
			"vmwkvm_memfault_resolve() or the region's removal", (unsigned long long)f.fail_rec.gpa,
			vmwkvm_strerror(f.error));
		res = MFP_FAILED;
		goto out;
	}

	if (e->flags & UFFD_PAGEFAULT_FLAG_WP)
		err = uffd_resolve_wp(mf, r, &f, gpa);
	else if (e->flags & UFFD_PAGEFAULT_FLAG_MINOR)
		err = uffd_resolve_minor(mf, r, &f, gpa, page_hva, s);
	else
		err = uffd_resolve_missing(mf, r, &f, gpa, page_hva, s, zero, scratch);
	if (err < 0) {
		vk_err("memfault: resolving the fault at GPA 0x%llx failed: %s", (unsigned long long)gpa,
		       vmwkvm_strerror(err));
		vk_mf_count(mf, ST_FAILURES, 1);
		res = MFP_FAILED;
	}
out:
	vk_mf_fault_fini(&f);
	vk_mf_unpin(mf, t);
	return res;
}

/* Tell REMOVE handlers and record the emptied pages. */
static void handle_note(struct vmwkvm_memfault *mf, const struct mf_note *n)
{
	struct mf_table *t = vk_mf_pin(mf);
	for (size_t i = 0; i < t->nreg; i++) {
		struct mf_region *r = t->by_hva[i];
		uint64_t base = (uint64_t)(uintptr_t)r->hva;
		uint64_t lo = n->start > base ? n->start : base;
		uint64_t hi = n->end < base + r->size ? n->end : base + r->size;
		if (lo >= hi)
			continue;
		uint64_t ps = r->page_size;
		lo &= ~(ps - 1);
		hi = (hi + ps - 1) & ~(ps - 1);
		for (uint64_t a = lo; a < hi; a += ps)
			atomic_fetch_or_explicit(&r->pst[(a - base) >> r->page_shift], PST_REMOVED, memory_order_acq_rel);
		struct mf_fault f;
		memset(&f, 0, sizeof(f));
		f.gpa = r->gpa + (lo - base);
		f.size = hi - lo;
		f.fault_gpa = f.gpa;
		f.fault_size = f.size;
		f.access = VMWKVM_MF_ACCESS_REMOVE;
		f.source = VMWKVM_MF_SRC_UFFD;
		f.flags = VMWKVM_MF_FLAG_REMOVED;
		f.default_kind = VMWKVM_MF_ACT_UNPROTECT;
		vk_mf_run_handlers(mf, t, &f);
		vk_mf_fault_fini(&f);
		vk_debug("memfault: remove event GPA 0x%llx+0x%llx", (unsigned long long)f.gpa, (unsigned long long)f.size);
	}
	vk_mf_unpin(mf, t);
}

static void handle_notes(struct vmwkvm_memfault *mf)
{
	for (;;) {
		pthread_mutex_lock(&mf->q_lock);
		if (mf->nnotes == 0) {
			pthread_mutex_unlock(&mf->q_lock);
			return;
		}
		struct mf_note n = mf->notes[0];
		memmove(mf->notes, mf->notes + 1, (mf->nnotes - 1) * sizeof(*mf->notes));
		mf->nnotes--;
		pthread_mutex_unlock(&mf->q_lock);
		handle_note(mf, &n);
	}
}

int vmwkvm_memfault_dispatch(vmwkvm_memfault *mf)
{
	if (!mf)
		return -EINVAL;
	if (mf->uffd < 0)
		return vk_mf_uffd_unavailable(mf);
	if (vk_mf_in_dispatch(mf))
		return -EDEADLK;
	pthread_mutex_lock(&mf->uffd_lock);
	vk_mf_set_serving(mf);
	pthread_mutex_lock(&mf->q_lock);
	int rd = vk_mf_uffd_read_msgs_locked(mf);
	vk_mf_uffd_drain_kick_locked(mf);
	for (size_t i = 0; i < mf->npend; i++)
		mf->pend[i].seen = 0;
	pthread_mutex_unlock(&mf->q_lock);
	int resolved = 0;
	handle_notes(mf);
	for (size_t i = 0;; i++) {
		pthread_mutex_lock(&mf->q_lock);
		if (i >= mf->npend) {
			pthread_mutex_unlock(&mf->q_lock);
			break;
		}
		struct mf_pending e = mf->pend[i];
		bool skip = e.seen || e.state == MFP_DONE || e.state == MFP_FAILED;
		mf->pend[i].seen = 1;
		pthread_mutex_unlock(&mf->q_lock);
		if (skip)
			continue;
		int st = handle_one(mf, &e);
		pthread_mutex_lock(&mf->q_lock);
		if (mf->pend[i].state != MFP_DONE) /* forget() may have released it meanwhile */
			mf->pend[i].state = (uint8_t)st;
		pthread_mutex_unlock(&mf->q_lock);
		if (st == MFP_DONE)
			resolved++;
		handle_notes(mf);
	}
	/* compact */
	pthread_mutex_lock(&mf->q_lock);
	size_t j = 0;
	int parked = 0;
	for (size_t i = 0; i < mf->npend; i++) {
		if (mf->pend[i].state == MFP_DONE)
			continue;
		parked++;
		mf->pend[j++] = mf->pend[i];
	}
	mf->npend = j;
	atomic_store(&mf->nparked, parked);
	pthread_mutex_unlock(&mf->q_lock);
	vk_mf_set_serving(NULL);
	pthread_mutex_unlock(&mf->uffd_lock);
	if (rd < 0)
		return rd;
	return resolved;
}

int vmwkvm_memfault_pending(vmwkvm_memfault *mf)
{
	if (!mf)
		return -EINVAL;
	return atomic_load(&mf->nparked);
}

int vmwkvm_memfault_fd(vmwkvm_memfault *mf)
{
	if (!mf)
		return -EINVAL;
	int e = vk_mf_uffd_ensure_fds(mf);
	return e < 0 ? e : mf->epfd;
}

int vmwkvm_memfault_kick(vmwkvm_memfault *mf)
{
	if (!mf)
		return -EINVAL;
	int e = vk_mf_uffd_ensure_fds(mf);
	if (e < 0)
		return e;
	/* write first, then flag: a dispatch that sees the flag finds the value to drain */
	uint64_t one = 1;
	if (write(mf->kickfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	atomic_store(&mf->kicked, true);
	return 0;
}

int vmwkvm_memfault_uffd_features(vmwkvm_memfault *mf, uint64_t *features)
{
	if (!mf || !features)
		return -EINVAL;
	if (mf->uffd < 0)
		return vk_mf_uffd_unavailable(mf);
	*features = mf->features;
	return 0;
}

/* ------------------------------------------------------------------ service thread */

static void *svc_main(void *arg)
{
	struct vmwkvm_memfault *mf = arg;
	struct pollfd pf[2] = { { .fd = mf->uffd, .events = POLLIN }, { .fd = mf->kickfd, .events = POLLIN } };
	while (!atomic_load(&mf->svc_stop)) {
		int timeout = -1;
		if (atomic_load(&mf->nparked) > 0) {
			timeout = (int)(mf->retry_us / 1000);
			if (timeout < 1)
				timeout = 1;
		}
		int r = poll(pf, 2, timeout);
		if (atomic_load(&mf->svc_stop))
			break;
		if (r < 0 && errno != EINTR) {
			vk_err("memfault: service thread poll: %s", vmwkvm_strerror(-errno));
			break;
		}
		int d = vmwkvm_memfault_dispatch(mf);
		if (d < 0 && d != -EAGAIN && d != -EINTR) {
			vk_err("memfault: service thread dispatch: %s", vmwkvm_strerror(d));
			struct timespec ts = { .tv_sec = 0, .tv_nsec = 1000000 };
			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

int vmwkvm_memfault_start(vmwkvm_memfault *mf)
{
	if (!mf)
		return -EINVAL;
	int e = vk_mf_uffd_ensure_fds(mf);
	if (e < 0)
		return e;
	pthread_mutex_lock(&mf->svc_lock);
	if (mf->svc_running) {
		pthread_mutex_unlock(&mf->svc_lock);
		return -EALREADY;
	}
	atomic_store(&mf->svc_stop, false);
	/* the thread takes no signal: the VMM's signals (watchdogs, vCPU kicks) go to its threads */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int r = pthread_create(&mf->svc, NULL, svc_main, mf);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r == 0)
		mf->svc_running = true;
	pthread_mutex_unlock(&mf->svc_lock);
	return -r;
}

int vmwkvm_memfault_stop(vmwkvm_memfault *mf)
{
	if (!mf)
		return -EINVAL;
	pthread_mutex_lock(&mf->svc_lock);
	if (!mf->svc_running) {
		pthread_mutex_unlock(&mf->svc_lock);
		return -ESRCH;
	}
	if (pthread_equal(pthread_self(), mf->svc)) {
		pthread_mutex_unlock(&mf->svc_lock);
		return -EDEADLK;
	}
	atomic_store(&mf->svc_stop, true);
	uint64_t one = 1;
	if (write(mf->kickfd, &one, sizeof(one)) < 0)
		vk_debug("memfault: kick on stop: %s", vmwkvm_strerror(-errno));
	atomic_store(&mf->kicked, true);
	pthread_join(mf->svc, NULL);
	mf->svc_running = false;
	pthread_mutex_unlock(&mf->svc_lock);
	return 0;
}

void vk_mf_svc_stop_all(struct vmwkvm_memfault *mf)
{
	bool running;
	pthread_mutex_lock(&mf->svc_lock);
	running = mf->svc_running;
	pthread_mutex_unlock(&mf->svc_lock);
	if (running)
		vmwkvm_memfault_stop(mf);
}

