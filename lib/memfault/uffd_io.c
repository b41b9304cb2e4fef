/*
 * Memory-fault dispatcher, userfaultfd ioctls: opening the fd the way KVM needs it, feature
 * negotiation, registration, reading messages into the pending queues, the resolution
 * ioctls (with EAGAIN handling) and forgetting queued faults. The bottom of lib/memfault/:
 * it calls nothing else of it. Locks (memfault_internal.h):
 *   q_lock     reading the fd and the pending queues; held briefly, takes no other lock,
 *              so any thread (also one holding prot_lock) can drain events when a
 *              resolution ioctl meets EAGAIN
 */
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

#define MF_MSG_BATCH 64
#define MF_EAGAIN_TRIES 4000

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

void vk_mf_set_serving(const struct vmwkvm_memfault *mf)
{
	tl_serving = mf;
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

int vk_mf_uffd_unavailable(const struct vmwkvm_memfault *mf)
{
	if (mf->flags & VMWKVM_MF_OPT_NO_UFFD)
		return -EOPNOTSUPP;
	return perm_error(mf->uffd_err) ? -EPERM : (mf->uffd_err ? mf->uffd_err : -EPERM);
}

int vk_mf_uffd_ensure_fds(struct vmwkvm_memfault *mf)
{
	if (mf->uffd < 0)
		return vk_mf_uffd_unavailable(mf);
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
		return vk_mf_uffd_unavailable(mf);
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
int vk_mf_uffd_read_msgs_locked(struct vmwkvm_memfault *mf)
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

void vk_mf_uffd_drain_kick_locked(struct vmwkvm_memfault *mf)
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
	vk_mf_uffd_read_msgs_locked(mf);
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
		return vk_mf_uffd_unavailable(mf);
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
		return vk_mf_uffd_unavailable(mf);
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

int vk_mf_uffd_zeropage(struct vmwkvm_memfault *mf, uint64_t hva, uint64_t len)
{
	struct uffdio_zeropage z = { .range = { .start = hva, .len = len }, .mode = 0 };
	int e = uffd_ioctl_retry(mf, UFFDIO_ZEROPAGE, &z);
	if (e == -EEXIST)
		return 1;
	return e;
}

int vk_mf_uffd_continue(struct vmwkvm_memfault *mf, uint64_t hva, uint64_t len, bool wp)
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

