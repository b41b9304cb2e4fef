/*
 * Internal structures of the memory-fault dispatcher (lib/memfault/). Not installed.
 * The functions are declared by layer, each header by the file that defines them, and a
 * file calls only the layers below it (lib/memfault/README.md):
 *   memfault.c   the object, regions and ranges (top)
 *   uffd.c       userfaultfd source and service thread     kvm_exit.c  KVM-exit source
 *   protect.c    protection and guest-RAM access            engine.c    dispatch engine
 *   table.c      region/range tables, pinning, grace period
 *   uffd_io.c    userfaultfd ioctls and message queues (bottom)
 *
 * Tables. The regions and handler ranges live in an immutable snapshot (struct mf_table)
 * that writers replace copy-on-write under mf->wlock. Readers pin the current snapshot:
 * they take mf->pin_lock for reading just long enough to load mf->cur and increment its
 * reference count. A writer swaps mf->cur under the write side of pin_lock, moves the old
 * snapshot to the retired list and drops the reference mf->cur held; a retired snapshot is
 * freed by whoever drops its last reference. The writer then waits on gc_cond until no
 * retired snapshot as old as the one it replaced is left (ignoring the ones its own thread
 * pinned, if it runs inside a handler): a grace period, after which nothing can use a
 * removed handler or region. The wait happens after wlock is released, so that a handler
 * may change the tables while another thread waits for it.
 * Regions are heap objects shared by consecutive snapshots; a removed region's resources
 * (alias mapping, page states) are released after the grace period.
 *
 * Page state. Each region has one byte per page (pst[]) saying how the library protected
 * it (PST_WP / PST_ACC and whether with mprotect: PST_MPROT) and whether a remove event
 * emptied it (PST_REMOVED). It is written only under mf->prot_lock, before the kernel
 * protects a page and after the kernel unprotects it, so a fault always finds the page's
 * protection recorded.
 */
#ifndef VMWKVM_LIB_MEMFAULT_INTERNAL_H
#define VMWKVM_LIB_MEMFAULT_INTERNAL_H

#include "core/internal.h"

#include <string.h>

#include <vmwkvm/memfault.h>

/* smallest page of a region (and of the zero and scratch buffers) */
#define MF_MIN_PAGE 4096u

/* page state bits */
#define PST_WP 0x01u      /* write-protected by the library */
#define PST_ACC 0x02u     /* access-protected (PROT_NONE) */
#define PST_MPROT 0x04u   /* the protection is an mprotect() (else userfaultfd WP) */
#define PST_REMOVED 0x08u /* emptied by a remove event since it was last filled */
#define PST_PROT (PST_WP | PST_ACC)

struct mf_region {
	uint64_t gpa, size;
	uint8_t *hva;
	uint32_t kind;
	uint32_t flags;
	int fd;
	uint64_t fd_off;
	uint32_t page_size;
	unsigned page_shift;
	uint64_t npages;
	unsigned long *uf_bitmap;
	uint8_t *alias;       /* writable second mapping, or NULL */
	int alias_how;        /* 0 none, 1 mmap of fd, 2 mremap */
	int mech;             /* VMWKVM_MF_MECH_UFFD_WP or VMWKVM_MF_MECH_MPROTECT */
	_Atomic uint8_t *pst; /* npages bytes */
	/* userfaultfd registration, under mf->prot_lock */
	uint64_t uffd_modes;  /* registered UFFDIO_REGISTER_MODE_* bits */
	bool guard;           /* MISSING mode added only as the missing guard */
	atomic_long nprot;    /* pages with PST_PROT set */
	bool dead;            /* removed (no new registrations) */
	struct mf_region *next_dead; /* on mf->deferred until no old table can reach it */
	uint64_t dead_gen;           /* newest table generation that may still reach it */
};

struct mf_range {
	uint64_t gpa, size; /* [gpa, gpa + size); size > 0, no wrap */
	uint32_t access;
	vmwkvm_mf_handler fn;
	void *ctx;
};

struct mf_table {
	atomic_long refs;
	uint64_t gen;              /* publication number (1, 2, ...) */
	struct mf_table *next_retired;
	size_t nreg;
	struct mf_region **by_gpa; /* sorted by gpa */
	struct mf_region **by_hva; /* sorted by hva */
	size_t nrange;
	struct mf_range *ranges;   /* sorted by gpa */
};

/* A fault parked on the userfaultfd side (the faulting thread stays blocked). */
struct mf_pending {
	uint64_t hva;     /* exact faulting address */
	uint64_t flags;   /* uffd_msg pagefault.flags */
	uint32_t tid;
	uint8_t state;    /* MFP_NEW, MFP_RETRY, MFP_FAILED */
	uint8_t seen;     /* already processed in this dispatch round */
};
#define MFP_NEW 0
#define MFP_RETRY 1
#define MFP_FAILED 2
#define MFP_DONE 3

/* A remove event waiting to be told to the handlers. */
struct mf_note {
	uint64_t start, end; /* host addresses */
};

enum mf_stat {
	ST_HANDLER_CALLS,
	ST_UNHANDLED,
	ST_RETRIES,
	ST_FAILURES,
	ST_REMOVE_EVENTS,
	ST_EAGAIN,
	ST_EEXIST,
	ST_WAKES,
	ST_POPULATED,
	ST_COUNT
};

struct vmwkvm_memfault {
	vmwkvm_vm *vm;
	uint32_t flags;
	uint32_t mechanism;
	uint32_t default_action;
	uint32_t dialects;
	uint64_t userfault_flag, perm_read, perm_write, perm_exec;
	uint32_t retry_us;

	/* tables */
	pthread_rwlock_t pin_lock;
	struct mf_table *cur;
	pthread_mutex_t wlock;
	pthread_mutex_t gc_lock;
	pthread_cond_t gc_cond;
	struct mf_table *retired;
	atomic_int grace_waiters;    /* writers waiting for retired tables to drain */
	uint64_t gen;                /* generation of the last table published (under wlock) */
	struct mf_region *deferred;  /* removed regions to release once mf->retired is empty */

	/* protection changes and userfaultfd registrations */
	pthread_mutex_t prot_lock;

	/* userfaultfd */
	int uffd;          /* -1 when none */
	int uffd_err;      /* why none (negative errno), 0 if opened or not asked for */
	uint64_t features; /* negotiated */
	int epfd, kickfd;  /* lazily created (vmwkvm_memfault_fd / start) */
	atomic_bool kicked; /* kickfd was written since the last drain */
	pthread_mutex_t fd_lock;
	pthread_mutex_t uffd_lock; /* serialises serving (held while handlers run) */
	pthread_mutex_t q_lock;    /* reading the uffd, the queues below; held briefly, takes no other lock */
	struct mf_pending *pend;   /* faults read and not yet resolved */
	size_t npend, cappend;
	struct mf_note *notes;     /* remove events not yet told to handlers */
	size_t nnotes, capnotes;
	atomic_int nparked;
	/* Zero buffer and page composition buffer (the latter used under uffd_lock) of
	 * max_page bytes. A region with bigger pages replaces them before it is published;
	 * the old ones stay allocated until vmwkvm_memfault_free() (a thread may still use
	 * them), so a user loads each pointer once per fault, after pinning the table. */
	uint8_t *_Atomic zero;
	uint8_t *_Atomic scratch;
	size_t max_page;           /* under wlock */
	void *old_bufs[64];        /* replaced buffers (under wlock); two per page-size step */
	size_t nold_bufs;

	/* service thread */
	pthread_mutex_t svc_lock;
	pthread_t svc;
	bool svc_running;
	atomic_bool svc_stop;

	/* /proc/self/mem, for completing accesses on protected private anonymous memory */
	atomic_int procmem;
	/* /proc/self/pagemap, for vmwkvm_memfault_save() on anonymous memory (-1 until used) */
	atomic_int pagemap;

	/* counters */
	atomic_ullong faults[VMWKVM_MF_SRC_COUNT];
	atomic_ullong stat[ST_COUNT];
};

/* ---- counters ---- */
static inline void vk_mf_count(struct vmwkvm_memfault *mf, enum mf_stat s, uint64_t n)
{
	atomic_fetch_add_explicit(&mf->stat[s], n, memory_order_relaxed);
}

/* ---- a fault on its way through the dispatch engine (engine.h) ---- */
#define MF_MAX_INLINE_PIECES 8
struct mf_piece {
	uint64_t gpa, size;
	uint32_t kind;       /* resolved kind: UNPROTECT, FILL, ZERO, ALLOW_ONCE */
	const void *data;    /* FILL */
	bool handled;
};
struct mf_fault {
	/* input */
	uint64_t gpa, size;   /* the whole fault, inside RAM */
	uint64_t fault_gpa, fault_size;
	uint32_t access, flags, source;
	int32_t tid;
	vmwkvm_vcpu *vcpu;
	uint64_t raw_flags;
	uint32_t default_kind; /* for unhandled parts (before opts.default_action) */
	/* readable bytes of [gpa, gpa+size) or NULL */
	const uint8_t *data;
	/* output */
	int verdict;          /* VMWKVM_MF_ACT_* : resolve kinds collapse to 0 */
	int error;
	struct vmwkvm_mf_record fail_rec;
	struct mf_piece inl[MF_MAX_INLINE_PIECES];
	struct mf_piece *pieces;
	size_t npieces, cappieces;
	bool any_handler;
};
#define MF_VERDICT_RESOLVE 0

/* Copy between guest RAM and the library. Guest memory is shared with agents whose order the
 * kernel, not the C memory model, guarantees (a writer sleeps in a fault until the library
 * is done); under ThreadSanitizer the copy is made of relaxed atomic accesses so that the
 * tool, which cannot see that order, does not report it. */
static inline void vk_mf_guest_copy(void *dst, const void *src, size_t n)
{
#if defined(__SANITIZE_THREAD__)
	for (size_t i = 0; i < n; i++)
		__atomic_store_n((uint8_t *)dst + i, __atomic_load_n((const uint8_t *)src + i, __ATOMIC_RELAXED),
				 __ATOMIC_RELAXED);
#else
	memcpy(dst, src, n);
#endif
}
static inline void vk_mf_guest_zero(void *dst, size_t n)
{
#if defined(__SANITIZE_THREAD__)
	for (size_t i = 0; i < n; i++)
		__atomic_store_n((uint8_t *)dst + i, 0, __ATOMIC_RELAXED);
#else
	memset(dst, 0, n);
#endif
}

/* ---- page state ---- */
static inline uint64_t vk_mf_page_index(const struct mf_region *r, uint64_t gpa)
{
	return (gpa - r->gpa) >> r->page_shift;
}
static inline uint8_t vk_mf_pst(const struct mf_region *r, uint64_t gpa)
{
	return atomic_load_explicit(&r->pst[vk_mf_page_index(r, gpa)], memory_order_acquire);
}

#endif
