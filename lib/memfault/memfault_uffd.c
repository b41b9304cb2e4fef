/*
 * Memory-fault dispatcher, userfaultfd side: opening the fd the way KVM needs it, feature
 * negotiation, registration, reading messages, resolving page faults and the service
 * thread. See memfault_internal.h for the locks:
 *   uffd_lock  one thread serves at a time (held while handlers run)
 *   q_lock     reading the fd and the pending queues; held briefly, takes no other lock,
 *              so any thread (also one holding prot_lock) can drain events when a
 *              resolution ioctl meets EAGAIN
 */
#include "memfault/memfault_internal.h"

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

#define MF_MSG_BATCH 64
#define MF_EAGAIN_TRIES 4000
#define MF_MIN_PAGE_FOR_WAKE 4096u

static _Atomic uint64_t test_feature_mask;
static _Thread_local const struct vmwkvm_memfault *tl_serving;

void vk_mf_test_mask_features(uint64_t mask)
{
	atomic_store(&test_feature_mask, mask);
}

uint64_t vk_mf_test_masked_features(void)
{
	return atomic_load(&test_feature_mask);
}

bool vk_mf_in_dispatch(const struct vmwkvm_memfault *mf)
{
	return tl_serving == mf;
}

/* ------------------------------------------------------------------ opening */

#define MF_WANTED_FEATURES                                                                                  \
	(UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_MISSING_SHMEM |           \
	 UFFD_FEATURE_MISSING_HUGETLBFS | UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MINOR_HUGETLBFS |           \
	 UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_EXACT_ADDRESS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |              \
	 VMWKVM_UAPI_UFFD_FEATURE_WP_UNPOPULATED)

/* One userfaultfd that also traps faults taken in the kernel (never UFFD_USER_MODE_ONLY). */
static int open_one(int *err_dev, int *err_sys)
{
	int dev = vk_open("/dev/userfaultfd", O_RDWR);
	if (dev >= 0) {
		int fd = vk_ioctl(dev, USERFAULTFD_IOC_NEW, (void *)(uintptr_t)(O_CLOEXEC | O_NONBLOCK));
		vk_close(dev);
		if (fd >= 0)
			return fd;
		*err_dev = fd;
	} else {
		*err_dev = dev;
	}
	int fd = vk_userfaultfd(O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0)
		return fd;
	*err_sys = fd;
	return fd;
}

static bool perm_error(int e)
{
	return e == -EPERM || e == -EACCES;
}

int vk_mf_uffd_open(struct vmwkvm_memfault *mf)
{
	int err_dev = 0, err_sys = 0;
	int probe = open_one(&err_dev, &err_sys);
	if (probe < 0) {
		if (perm_error(err_sys) || (perm_error(err_dev) && (err_sys == -ENOSYS || perm_error(err_sys)))) {
			vk_err("memfault: userfaultfd not permitted (/dev/userfaultfd: %s; userfaultfd(2): %s). A VMM needs a "
			       "userfaultfd that also traps faults KVM takes inside the kernel, which UFFD_USER_MODE_ONLY "
			       "cannot: give this process read-write access to /dev/userfaultfd (for example with an ACL), or "
			       "CAP_SYS_PTRACE, or set the sysctl vm.unprivileged_userfaultfd=1",
			       vmwkvm_strerror(err_dev), vmwkvm_strerror(err_sys));
			return -EPERM;
		}
		vk_err("memfault: no userfaultfd (/dev/userfaultfd: %s; userfaultfd(2): %s)", vmwkvm_strerror(err_dev),
		       vmwkvm_strerror(err_sys));
		return probe;
	}
	/* UFFDIO_API may be issued once per fd: learn the features on a probe fd */
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	int r = vk_ioctl(probe, UFFDIO_API, &api);
	vk_close(probe);
	if (r < 0) {
		vk_err("memfault: UFFDIO_API failed: %s", vmwkvm_strerror(r));
		return r;
	}
	uint64_t features = api.features & MF_WANTED_FEATURES & ~atomic_load(&test_feature_mask);
	int fd = open_one(&err_dev, &err_sys);
	if (fd < 0)
		return fd;
	struct uffdio_api api2 = { .api = UFFD_API, .features = features };
	r = vk_ioctl(fd, UFFDIO_API, &api2);
	if (r < 0) {
		vk_err("memfault: UFFDIO_API with features 0x%llx failed: %s", (unsigned long long)features,
		       vmwkvm_strerror(r));
		vk_close(fd);
		return r;
	}
	mf->uffd = fd;
	mf->features = features;
	vk_info("memfault: userfaultfd open, features 0x%llx (kernel offers 0x%llx)%s", (unsigned long long)features,
		(unsigned long long)api.features,
		(features & VMWKVM_UAPI_UFFD_FEATURE_WP_UNPOPULATED)
			? ""
			: "; no WP_UNPOPULATED: anonymous memory is populated before write protection");
	return 0;
}

void vk_mf_uffd_close(struct vmwkvm_memfault *mf)
{
	if (mf->epfd >= 0)
		close(mf->epfd);
	if (mf->kickfd >= 0)
		close(mf->kickfd);
	if (mf->uffd >= 0)
		vk_close(mf->uffd);
	mf->epfd = mf->kickfd = mf->uffd = -1;
	free(mf->notes);
	mf->notes = NULL;
}

static int no_uffd(const struct vmwkvm_memfault *mf)
{
	if (mf->flags & VMWKVM_MF_OPT_NO_UFFD)
		return -EOPNOTSUPP;
	return perm_error(mf->uffd_err) ? -EPERM : (mf->uffd_err ? mf->uffd_err : -EPERM);
}

int vk_mf_uffd_ensure_fds(struct vmwkvm_memfault *mf)
{
	if (mf->uffd < 0)
		return no_uffd(mf);
	pthread_mutex_lock(&mf->fd_lock);
	int err = 0;
	if (mf->kickfd < 0) {
		int k = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (k < 0)
			err = -errno;
		else
			mf->kickfd = k;
	}
	if (!err && mf->epfd < 0) {
		int ep = epoll_create1(EPOLL_CLOEXEC);
		if (ep < 0) {
			err = -errno;
		} else {
			struct epoll_event ev = { .events = EPOLLIN };
			ev.data.fd = mf->uffd;
			if (epoll_ctl(ep, EPOLL_CTL_ADD, mf->uffd, &ev) < 0)
				err = -errno;
			ev.data.fd = mf->kickfd;
			if (!err && epoll_ctl(ep, EPOLL_CTL_ADD, mf->kickfd, &ev) < 0)
				err = -errno;
			if (err)
				close(ep);
			else
				mf->epfd = ep;
		}
	}
	pthread_mutex_unlock(&mf->fd_lock);
	return err;
}

/* ------------------------------------------------------------------ registration */

int vk_mf_uffd_register(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t modes)
{
	if (mf->uffd < 0)
		return no_uffd(mf);
	if (r->dead)
		return 0;
	struct uffdio_register reg = {
		.range = { .start = (uint64_t)(uintptr_t)r->hva, .len = r->size },
		.mode = modes,
	};
	int e = vk_ioctl(mf->uffd, UFFDIO_REGISTER, &reg);
	if (e < 0) {
		vk_err("memfault: UFFDIO_REGISTER GPA 0x%llx+0x%llx mode 0x%llx: %s", (unsigned long long)r->gpa,
		       (unsigned long long)r->size, (unsigned long long)modes, vmwkvm_strerror(e));
		return e;
	}
	if ((modes & UFFDIO_REGISTER_MODE_WP) && !(reg.ioctls & (1ull << _UFFDIO_WRITEPROTECT)))
		vk_warn("memfault: GPA 0x%llx registered for WP but UFFDIO_WRITEPROTECT is not offered on it",
			(unsigned long long)r->gpa);
	r->uffd_modes = modes;
	return 0;
}

int vk_mf_uffd_unregister(struct vmwkvm_memfault *mf, struct mf_region *r)
{
	if (mf->uffd < 0 || !r->uffd_modes)
		return 0;
	struct uffdio_range rg = { .start = (uint64_t)(uintptr_t)r->hva, .len = r->size };
	int e = vk_ioctl(mf->uffd, UFFDIO_UNREGISTER, &rg);
	if (e < 0)
		vk_warn("memfault: UFFDIO_UNREGISTER GPA 0x%llx: %s", (unsigned long long)r->gpa, vmwkvm_strerror(e));
	r->uffd_modes = 0;
	return e;
}

/* ------------------------------------------------------------------ reading */

static int pend_push(struct vmwkvm_memfault *mf, const struct mf_pending *p)
{
	if (mf->npend == mf->cappend) {
		size_t cap = mf->cappend ? mf->cappend * 2 : 64;
		struct mf_pending *n = realloc(mf->pend, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		mf->pend = n;
		mf->cappend = cap;
	}
	mf->pend[mf->npend++] = *p;
	return 0;
}

static int note_push(struct vmwkvm_memfault *mf, uint64_t start, uint64_t end)
{
	if (mf->nnotes == mf->capnotes) {
		size_t cap = mf->capnotes ? mf->capnotes * 2 : 16;
		struct mf_note *n = realloc(mf->notes, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		mf->notes = n;
		mf->capnotes = cap;
	}
	mf->notes[mf->nnotes].start = start;
	mf->notes[mf->nnotes].end = end;
	mf->nnotes++;
	return 0;
}

/* Read every waiting message into the queues (caller holds q_lock). Returns the number
 * read or a negative errno. A message that cannot be queued (no memory) is lost to the
 * library, but its thread stays blocked and faults again after the next wake of its
 * range; a remove event is only a notification. */
static int read_msgs_locked(struct vmwkvm_memfault *mf)
{
	int total = 0;
	for (;;) {
		struct uffd_msg msgs[MF_MSG_BATCH];
		ssize_t n = vk_read(mf->uffd, msgs, sizeof(msgs));
		if (n == -EAGAIN || n == -EWOULDBLOCK)
			return total;
		if (n == -EINTR)
			continue;
		if (n < 0)
			return (int)n;
		size_t cnt = (size_t)n / sizeof(struct uffd_msg);
		for (size_t i = 0; i < cnt; i++) {
			const struct uffd_msg *m = &msgs[i];
			if (m->event == UFFD_EVENT_PAGEFAULT) {
				struct mf_pending p = {
					.hva = m->arg.pagefault.address,
					.flags = m->arg.pagefault.flags,
					.tid = m->arg.pagefault.feat.ptid,
					.state = MFP_NEW,
				};
				if (pend_push(mf, &p) < 0)
					vk_err("memfault: out of memory queueing a fault at 0x%llx",
					       (unsigned long long)p.hva);
			} else if (m->event == UFFD_EVENT_REMOVE) {
				vk_mf_count(mf, ST_REMOVE_EVENTS, 1);
				if (note_push(mf, m->arg.remove.start, m->arg.remove.end) < 0)
					vk_err("memfault: out of memory queueing a remove event");
			} else {
				vk_debug("memfault: ignoring userfaultfd event %u", m->event);
			}
			total++;
		}
		if ((size_t)n < sizeof(msgs))
			return total;
	}
}

static void drain_kick_locked(struct vmwkvm_memfault *mf)
{
	/* only when written: saves a read() per dispatch on the fault path */
	if (mf->kickfd >= 0 && atomic_exchange(&mf->kicked, false)) {
		uint64_t v;
		while (read(mf->kickfd, &v, sizeof(v)) == (ssize_t)sizeof(v))
			;
	}
}

/* Read pending events so that a resolution ioctl stops failing with EAGAIN. */
static void drain_events(struct vmwkvm_memfault *mf)
{
	pthread_mutex_lock(&mf->q_lock);
	read_msgs_locked(mf);
	pthread_mutex_unlock(&mf->q_lock);
}

static void backoff(int tries)
{
	if (tries < 16) {
		sched_yield();
		return;
	}
	long ns = tries < 200 ? 1000L * tries : 200000L;
	struct timespec ts = { .tv_sec = 0, .tv_nsec = ns };
	nanosleep(&ts, NULL);
}

/* A resolution ioctl; EAGAIN (a remove event unread, or its remover not yet resumed)
 * drains the events and retries. */
static int uffd_ioctl_retry(struct vmwkvm_memfault *mf, unsigned long req, void *arg)
{
	for (int tries = 0;; tries++) {
		int e = vk_ioctl(mf->uffd, req, arg);
		if (e != -EAGAIN)
			return e;
		vk_mf_count(mf, ST_EAGAIN, 1);
		if (tries >= MF_EAGAIN_TRIES) {
			vk_warn("memfault: userfaultfd ioctl 0x%lx still EAGAIN after %d tries", req, tries);
			return -EAGAIN;
		}
		drain_events(mf);
		backoff(tries);
	}
}

/* ------------------------------------------------------------------ resolution ioctls */

int vk_mf_uffd_wake(struct vmwkvm_memfault *mf, uint64_t hva, uint64_t len)
{
	struct uffdio_range rg = { .start = hva, .len = len };
	vk_mf_count(mf, ST_WAKES, 1);
	return vk_ioctl(mf->uffd, UFFDIO_WAKE, &rg);
}

int vk_mf_uffd_wp(struct vmwkvm_memfault *mf, uint64_t hva, uint64_t len, bool wp, bool dontwake)
{
	if (mf->uffd < 0)
		return no_uffd(mf);
	struct uffdio_writeprotect w = {
		.range = { .start = hva, .len = len },
		.mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : (dontwake ? UFFDIO_WRITEPROTECT_MODE_DONTWAKE : 0),
	};
	int e = uffd_ioctl_retry(mf, UFFDIO_WRITEPROTECT, &w);
	if (e < 0)
		vk_err("memfault: UFFDIO_WRITEPROTECT(%s) 0x%llx+0x%llx: %s", wp ? "set" : "clear",
		       (unsigned long long)hva, (unsigned long long)len, vmwkvm_strerror(e));
	return e;
}

int vk_mf_uffd_copy(struct vmwkvm_memfault *mf, uint64_t hva, const void *src, uint64_t len, bool wp)
{
	if (mf->uffd < 0)
		return no_uffd(mf);
	uint64_t done = 0;
	while (done < len) {
		struct uffdio_copy c = {
			.dst = hva + done,
			.src = (uint64_t)(uintptr_t)src + done,
			.len = len - done,
			.mode = wp ? UFFDIO_COPY_MODE_WP : 0,
		};
		int e = uffd_ioctl_retry(mf, UFFDIO_COPY, &c);
		if (e == -EEXIST) {
			/* present already: resolved by someone else; make sure nobody sleeps on it */
			vk_mf_count(mf, ST_EEXIST, 1);
			vk_mf_uffd_wake(mf, hva, len);
			return 1;
		}
		if (e < 0) {
			if (c.copy > 0) {
				done += (uint64_t)c.copy;
				continue;
			}
			return e;
		}
		done += c.copy > 0 ? (uint64_t)c.copy : len - done;
	}
	return 0;
}

static int uffd_zeropage(struct vmwkvm_memfault *mf, uint64_t hva, uint64_t len)
{
	struct uffdio_zeropage z = { .range = { .start = hva, .len = len }, .mode = 0 };
	int e = uffd_ioctl_retry(mf, UFFDIO_ZEROPAGE, &z);
	if (e == -EEXIST)
		return 1;
	return e;
}

static int uffd_continue(struct vmwkvm_memfault *mf, uint64_t hva, uint64_t len, bool wp)
{
	struct uffdio_continue c = {
		.range = { .start = hva, .len = len },
		.mode = wp ? VMWKVM_UAPI_UFFDIO_CONTINUE_MODE_WP : 0,
	};
	int e = uffd_ioctl_retry(mf, UFFDIO_CONTINUE, &c);
	if (e == -EEXIST) {
		vk_mf_count(mf, ST_EEXIST, 1);
		vk_mf_uffd_wake(mf, hva, len);
		return 1;
	}
	return e;
}

void vk_mf_uffd_forget(struct vmwkvm_memfault *mf, uint64_t hva, uint64_t len)
{
	if (mf->uffd < 0)
		return;
	pthread_mutex_lock(&mf->q_lock);
	int parked = 0;
	for (size_t i = 0; i < mf->npend; i++) {
		struct mf_pending *p = &mf->pend[i];
		if (p->hva - hva < len)
			p->state = MFP_DONE;
		if (p->state == MFP_RETRY || p->state == MFP_FAILED)
			parked++;
	}
	atomic_store(&mf->nparked, parked);
	pthread_mutex_unlock(&mf->q_lock);
}

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
	uint64_t base = (uint64_t)(uintptr_t)r->hva;
	uint64_t page_hva = e->hva & ~(ps - 1);
	uint64_t gpa = r->gpa + (page_hva - base);
	uint8_t s = vk_mf_pst(r, gpa);
	atomic_fetch_add_explicit(&mf->faults[VMWKVM_MF_SRC_UFFD], 1, memory_order_relaxed);

	struct mf_fault f;
	memset(&f, 0, sizeof(f));
	f.gpa = gpa;
	f.size = ps;
	f.fault_gpa = r->gpa + (e->hva - base);
	f.fault_size = ps;
	f.source = VMWKVM_MF_SRC_UFFD;
	f.tid = (int32_t)e->tid;
	f.raw_flags = e->flags;
	bool wp_fault = e->flags & UFFD_PAGEFAULT_FLAG_WP;
	bool minor = e->flags & UFFD_PAGEFAULT_FLAG_MINOR;
	bool write = e->flags & UFFD_PAGEFAULT_FLAG_WRITE;
	if (s & PST_PROT)
		f.flags |= VMWKVM_MF_FLAG_PROTECTED;
	if (s & PST_REMOVED)
		f.flags |= VMWKVM_MF_FLAG_REMOVED;

	if (wp_fault) {
		if (!(s & PST_WP) || (s & PST_MPROT)) {
			/* stale (the page was unprotected meanwhile) or not ours: let it go */
			vk_mf_uffd_wp(mf, page_hva, ps, false, false);
			vk_mf_unpin(mf, t);
			return MFP_DONE;
		}
		f.access = VMWKVM_MF_ACCESS_WRITE;
		f.default_kind = VMWKVM_MF_ACT_UNPROTECT;
		f.data = (const uint8_t *)(uintptr_t)page_hva;
	} else if (minor) {
		f.access = VMWKVM_MF_ACCESS_MINOR;
		f.default_kind = VMWKVM_MF_ACT_UNPROTECT;
		f.data = r->alias ? r->alias + (gpa - r->gpa) : NULL;
	} else {
		f.flags |= VMWKVM_MF_FLAG_UNPOPULATED;
		f.data = zero;
		if (s & PST_WP) {
			/* the missing guard (or MISSING handlers) on a write-protected page */
			f.access = VMWKVM_MF_ACCESS_MISSING | (write ? VMWKVM_MF_ACCESS_WRITE : VMWKVM_MF_ACCESS_READ);
			f.default_kind = write ? VMWKVM_MF_ACT_UNPROTECT : VMWKVM_MF_ACT_ALLOW_ONCE;
		} else {
			f.access = VMWKVM_MF_ACCESS_MISSING;
			f.default_kind = VMWKVM_MF_ACT_ZERO;
		}
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

	if (wp_fault) {
		if (any_fill(&f)) {
			if (r->alias) {
				write_pieces(&f, gpa, r->alias + (gpa - r->gpa));
			} else {
				/* lift the protection without waking, write, then wake below */
				err = vk_mf_unprotect_region(mf, r, gpa, ps, true);
				if (err == 0)
					write_pieces(&f, gpa, r->hva + (gpa - r->gpa));
			}
		}
		if (err == 0)
			err = vk_mf_unprotect_region(mf, r, gpa, ps, false);
	} else if (minor) {
		bool keep = (s & PST_WP) && !(s & PST_MPROT) && vk_mf_keep_protection(&f, gpa, ps);
		if (any_fill(&f)) {
			if (!r->alias) {
				vk_warn("memfault: MINOR fault at GPA 0x%llx: cannot fill without an alias mapping",
					(unsigned long long)gpa);
				err = -EOPNOTSUPP;
			} else {
				write_pieces(&f, gpa, r->alias + (gpa - r->gpa));
			}
		}
		if (err == 0)
			err = uffd_continue(mf, page_hva, ps, keep);
		if (err >= 0 && !keep && (s & PST_PROT))
			err = vk_mf_unprotect_region(mf, r, gpa, ps, false);
	} else {
		/* keeping the protection through the fill needs userfaultfd WP on this page */
		bool keep = (s & PST_WP) && !(s & PST_MPROT) && vk_mf_keep_protection(&f, gpa, ps);
		bool fill = compose(&f, gpa, ps, scratch);
		if (!fill && !keep && !(s & PST_PROT)) {
			err = uffd_zeropage(mf, page_hva, ps);
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
	}
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
		return no_uffd(mf);
	if (tl_serving == mf)
		return -EDEADLK;
	pthread_mutex_lock(&mf->uffd_lock);
	tl_serving = mf;
	pthread_mutex_lock(&mf->q_lock);
	int rd = read_msgs_locked(mf);
	drain_kick_locked(mf);
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
	tl_serving = NULL;
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
		return no_uffd(mf);
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
