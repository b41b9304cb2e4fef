/**
 * @file vmwkvm/memfault.h
 * @brief Memory-fault dispatcher: route guest memory faults per guest-physical range,
 *        with no lost write.
 *
 * A ::vmwkvm_memfault knows the guest's RAM regions (like memslots: GPA, size, host
 * address, and whether the memory is anonymous or memfd/shmem) and a table of handlers,
 * each for a GPA range and an access mask. Faults reach the handlers as one kind of
 * record whatever reported them:
 *
 * - **userfaultfd** (::VMWKVM_MF_SRC_UFFD): write-protect (WP), MISSING and MINOR faults,
 *   taken by the VMM's threads or by KVM on behalf of a vCPU. The library opens the
 *   userfaultfd the way KVM needs it (never `UFFD_USER_MODE_ONLY`: that mode does not see
 *   faults KVM takes inside the kernel), through `/dev/userfaultfd` or userfaultfd(2).
 *   Serve it from the VMM's own loop (vmwkvm_memfault_fd() + vmwkvm_memfault_dispatch())
 *   or from a library thread (vmwkvm_memfault_start()).
 * - **`KVM_EXIT_MEMORY_FAULT`** (::VMWKVM_MF_SRC_MEMORY_FAULT_EXIT): recognised only when
 *   `KVM_RUN` failed with EFAULT or EHWPOISON (for any other result `exit_reason` is stale).
 * - **`KVM_EXIT_MMIO` inside guest RAM** (::VMWKVM_MF_SRC_MMIO_ON_RAM): when KVM emulates a
 *   guest access to RAM the VMM mprotect()ed (always on hosts whose KVM emulates guest
 *   code, such as kvm_pvm; for writes to a `KVM_MEM_READONLY` slot on every host), the
 *   access comes back as an MMIO exit. The library runs the handler, then performs the
 *   access on guest RAM itself: a write lands in RAM, a read returns RAM's bytes.
 * - **Proposed, unmerged kernel forms**, decoded only under a dialect the VMM names in
 *   vmwkvm_memfault_opts::dialects, never assumed: KVM Userfault
 *   (::VMWKVM_MF_SRC_KVM_USERFAULT) and permission faults reported as memory-fault exits
 *   (::VMWKVM_MF_SRC_PERM_FAULT).
 *
 * A handler answers with an action (struct vmwkvm_mf_action) that the library carries
 * out: resolve (unprotect, fill with given bytes, fill with zeroes, or complete this one
 * access and keep the protection), keep the access blocked and retry later, or fail (the
 * VMM decides what the guest sees).
 *
 * @par Write protection: mechanisms and the traps the library handles
 * vmwkvm_memfault_protect() uses userfaultfd write protection where the kernel offers it
 * for the region's kind of memory (anonymous: `UFFD_FEATURE_PAGEFAULT_FLAG_WP`;
 * memfd/shmem: `UFFD_FEATURE_WP_HUGETLBFS_SHMEM`), else mprotect(); vmwkvm_memfault_mechanism()
 * says which one a region uses. With mprotect, vCPU writes arrive as MMIO exits on hosts
 * whose KVM emulates the access, but as a bare `KVM_RUN` EFAULT (which carries no address
 * and cannot be attributed) on hosts that run guest code natively: prefer userfaultfd.
 * - *Untouched anonymous memory*: without `UFFD_FEATURE_WP_UNPOPULATED` (Linux 6.4),
 *   write-protecting a never-populated anonymous page does nothing and its first write
 *   would go unreported. Without the feature the library populates the range first
 *   (MADV_POPULATE_READ, which maps the shared zero page), or, with
 *   ::VMWKVM_MF_OPT_NO_POPULATE, refuses with -EOPNOTSUPP.
 * - *MADV_DONTNEED / MADV_REMOVE on write-protected anonymous memory* drops the protection
 *   (the kernel zaps the page table entries, protection bits included). While any page of
 *   an anonymous region is write-protected through userfaultfd the library therefore also
 *   registers the region in MISSING mode (the "missing guard"): the next access to a page
 *   emptied that way is reported as a MISSING fault, which the library maps back onto the
 *   protection it still records (a write reaches the WRITE handler with
 *   ::VMWKVM_MF_FLAG_REMOVED; a read re-populates the page write-protected). The guard is
 *   dropped again by an unprotect that covers the whole region. memfd/shmem keeps its
 *   protection across both calls (the kernel leaves markers) and needs no guard.
 *   Handlers with ::VMWKVM_MF_ACCESS_REMOVE are told about each remove event.
 * - *Events unread*: while a remove event is unread, resolution ioctls fail with EAGAIN;
 *   the library then reads the pending events and retries. A UFFDIO_COPY that finds the
 *   page already present (EEXIST) counts as resolved and the waiters are woken. Note that
 *   the kernel makes a MADV_DONTNEED/MADV_REMOVE caller on a registered region wait until
 *   its remove event is read: keep the descriptor served (service thread or event loop).
 *
 * @par Concurrency and lifetime
 * The region and handler tables are immutable snapshots replaced copy-on-write; readers
 * (the fault service, vCPU threads in vmwkvm_memfault_handle_exit()) pin the snapshot they
 * use with a reference taken under a briefly held read lock. vmwkvm_memfault_remove_range()
 * and vmwkvm_memfault_remove_region() publish a new snapshot and then wait until no thread
 * holds an older one (a grace period), so that when they return the removed handler is
 * neither running nor going to be called again and its context may be freed. Called from
 * inside a handler they do not wait for the caller's own dispatch. Lookup is a binary
 * search (O(log n)) in sorted arrays. No fault is lost when a handler or region goes
 * away: faults then take the default action, and faults parked for a removed region are
 * released (see vmwkvm_memfault_remove_region()).
 *
 * @par Handler rules
 * A handler runs on the thread that serves the fault: the userfaultfd service (one thread
 * at a time) or the vCPU thread for exits. While it runs, the faulting thread is blocked.
 * It must not touch guest RAM other than through vmwkvm_mf_record::data (and the library's
 * functions): on the userfaultfd service thread an access to a page that itself needs
 * service would wait for the very thread that runs the handler. A handler may be called
 * more than once for the same page (several threads faulting at once, or a fault racing
 * with a protection change); treat every call as "this access may happen now".
 */
#ifndef VMWKVM_MEMFAULT_H
#define VMWKVM_MEMFAULT_H

#include <vmwkvm/common.h>
#include <vmwkvm/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

struct kvm_run;

/** Opaque per-VM memory-fault dispatcher. */
typedef struct vmwkvm_memfault vmwkvm_memfault;

/** Access bits: what a handler wants to see (vmwkvm_mf_range::access) and what a fault was
 *  (vmwkvm_mf_record::access). */
enum vmwkvm_mf_access {
	VMWKVM_MF_ACCESS_MISSING = 1u << 0, /**< the page is not populated (userfaultfd MISSING, KVM Userfault) */
	VMWKVM_MF_ACCESS_READ = 1u << 1,    /**< a read of a protected page */
	VMWKVM_MF_ACCESS_WRITE = 1u << 2,   /**< a write of a (write-)protected page */
	VMWKVM_MF_ACCESS_MINOR = 1u << 3,   /**< memfd/shmem page in the page cache but not mapped (userfaultfd MINOR) */
	VMWKVM_MF_ACCESS_EXEC = 1u << 4,    /**< an instruction fetch (permission-fault dialect only) */
	VMWKVM_MF_ACCESS_REMOVE = 1u << 5,  /**< notification: the VMM discarded the range (MADV_DONTNEED/REMOVE) */
};
/** Every access bit. */
#define VMWKVM_MF_ACCESS_ALL 0x3fu

/** Who reported a fault. */
enum vmwkvm_mf_source {
	VMWKVM_MF_SRC_NONE = 0,              /**< none */
	VMWKVM_MF_SRC_UFFD = 1,              /**< userfaultfd message */
	VMWKVM_MF_SRC_MEMORY_FAULT_EXIT = 2, /**< mainline `KVM_EXIT_MEMORY_FAULT` (KVM_RUN -1, EFAULT/EHWPOISON) */
	VMWKVM_MF_SRC_MMIO_ON_RAM = 3,       /**< `KVM_EXIT_MMIO` whose address lies in guest RAM */
	VMWKVM_MF_SRC_KVM_USERFAULT = 4,     /**< proposed KVM Userfault: memory-fault exit with the USERFAULT flag */
	VMWKVM_MF_SRC_PERM_FAULT = 5,        /**< proposed permission fault: memory-fault exit with read/write/exec flags */
};
/** Number of ::vmwkvm_mf_source values (size of vmwkvm_mf_stats::faults). */
#define VMWKVM_MF_SRC_COUNT 6

/** Flags in vmwkvm_mf_record::flags. */
enum vmwkvm_mf_record_flag {
	VMWKVM_MF_FLAG_PRIVATE = 1u << 0,        /**< memory-fault exit with KVM_MEMORY_EXIT_FLAG_PRIVATE (guest_memfd) */
	VMWKVM_MF_FLAG_UNPOPULATED = 1u << 1,    /**< the page holds no data yet (reads as zeroes); vmwkvm_mf_record::data points to zeroes */
	VMWKVM_MF_FLAG_REMOVED = 1u << 2,        /**< the range was discarded by the VMM after it was protected or registered */
	VMWKVM_MF_FLAG_ACCESS_UNKNOWN = 1u << 3, /**< the kernel did not say read or write: both bits are set in access */
	VMWKVM_MF_FLAG_PROTECTED = 1u << 4,      /**< the page was protected through this library when the fault was seen */
	VMWKVM_MF_FLAG_TRUNCATED = 1u << 5,      /**< the kernel's range extended past guest RAM; the record covers the RAM part */
};

/** What the library does with a fault (vmwkvm_mf_action::kind). */
enum vmwkvm_mf_action_kind {
	VMWKVM_MF_ACT_DEFAULT = 0,    /**< whatever the library pre-filled (the same as leaving the action untouched) */
	VMWKVM_MF_ACT_UNPROTECT = 1,  /**< remove the protection of the faulting page(s) and let the access proceed
					   (MISSING: a zero page; MINOR: map the page-cache page) */
	VMWKVM_MF_ACT_FILL = 2,       /**< put vmwkvm_mf_action::data (record size bytes) at the record's range, then as UNPROTECT */
	VMWKVM_MF_ACT_ZERO = 3,       /**< put zeroes at the record's range, then as UNPROTECT */
	VMWKVM_MF_ACT_ALLOW_ONCE = 4, /**< let this one access proceed and keep the protection: the library performs the
					   access itself for MMIO exits; a read MISSING fault on a write-protected page is
					   populated still protected; elsewhere (the CPU retries the access) as UNPROTECT */
	VMWKVM_MF_ACT_RETRY = 5,      /**< keep the access blocked and ask again later */
	VMWKVM_MF_ACT_FAIL = 6,       /**< do nothing; report vmwkvm_mf_action::error to the VMM (see each source) */
};

/**
 * One fault as a handler sees it. When a fault spans several handler ranges (or a range
 * and unhandled memory) each handler is called once with the part inside its range.
 */
struct vmwkvm_mf_record {
	uint64_t gpa;          /**< first guest-physical byte of this handler's part */
	uint64_t size;         /**< bytes in this part */
	uint64_t fault_gpa;    /**< the faulting address as reported (exact where the kernel says it) */
	uint64_t fault_size;   /**< bytes of the whole fault (a page for userfaultfd, the access width for MMIO) */
	void *host;            /**< host address of @ref gpa in the region's mapping (do not touch: see Handler rules) */
	const void *data;      /**< readable bytes of [gpa, gpa+size) as they are now, or NULL if the library cannot
				    provide them cheaply (valid during the call only) */
	uint32_t access;       /**< enum vmwkvm_mf_access bits */
	uint32_t source;       /**< enum vmwkvm_mf_source */
	uint32_t flags;        /**< enum vmwkvm_mf_record_flag bits */
	int32_t tid;           /**< faulting thread id (userfaultfd with UFFD_FEATURE_THREAD_ID), 0 if unknown */
	vmwkvm_vcpu *vcpu;     /**< the vCPU for exits, NULL when unknown */
	uint64_t raw_flags;    /**< the kernel's flags: uffd_msg pagefault.flags or memory_fault.flags */
	uint64_t region_gpa;   /**< base of the region holding @ref gpa */
	int32_t error;         /**< in a record handed back after ::VMWKVM_MF_EXIT_FAILED: the negative errno */
	uint32_t pad;          /**< zero */
	uint64_t reserved[4];  /**< zero */
};

/** A handler's answer. The library pre-fills it with the default for the fault. */
struct vmwkvm_mf_action {
	uint32_t kind;        /**< enum vmwkvm_mf_action_kind */
	int32_t error;        /**< ::VMWKVM_MF_ACT_FAIL: negative errno reported to the VMM (0 means -EFAULT) */
	const void *data;     /**< ::VMWKVM_MF_ACT_FILL: vmwkvm_mf_record::size bytes, valid until the handler's
				   caller returns (the library copies them before that) */
	uint64_t reserved[2]; /**< zero */
};

/**
 * Fault handler.
 * @param mf  the dispatcher
 * @param rec the fault (this handler's part)
 * @param act pre-filled with the default action; change it to answer
 * @param ctx vmwkvm_mf_range::ctx
 * @return 0 to use @p act; a negative errno means ::VMWKVM_MF_ACT_FAIL with that error.
 */
typedef int (*vmwkvm_mf_handler)(vmwkvm_memfault *mf, const struct vmwkvm_mf_record *rec,
				 struct vmwkvm_mf_action *act, void *ctx);

/** Kinds of guest memory (vmwkvm_mf_region::kind). */
enum vmwkvm_mf_mem_kind {
	VMWKVM_MF_MEM_ANON = 0,  /**< private anonymous memory (MAP_PRIVATE|MAP_ANONYMOUS) */
	VMWKVM_MF_MEM_SHMEM = 1, /**< memfd, shmem or MAP_SHARED|MAP_ANONYMOUS */
};

/** Flags in vmwkvm_mf_region::flags. */
enum vmwkvm_mf_region_flag {
	VMWKVM_MF_REGION_HAS_FD = 1u << 0,   /**< vmwkvm_mf_region::fd and fd_offset describe the memory (memfd) */
	VMWKVM_MF_REGION_NO_ALIAS = 1u << 1, /**< do not create a second writable mapping of shmem memory */
};

/** A guest RAM region. Zero-fill, then set @ref sz. */
struct vmwkvm_mf_region {
	size_t sz;                       /**< sizeof(struct vmwkvm_mf_region) */
	uint64_t gpa;                    /**< guest-physical base (page aligned) */
	uint64_t size;                   /**< bytes (page multiple, > 0) */
	void *host;                      /**< the VMM's mapping (page aligned), as given to KVM_SET_USER_MEMORY_REGION */
	uint32_t kind;                   /**< enum vmwkvm_mf_mem_kind */
	uint32_t flags;                  /**< enum vmwkvm_mf_region_flag bits */
	int32_t fd;                      /**< memfd of the memory, with ::VMWKVM_MF_REGION_HAS_FD (borrowed) */
	uint32_t page_size;              /**< host page size of the mapping (0: 4096; 2 MiB for hugetlbfs) */
	uint64_t fd_offset;              /**< offset of @ref gpa's byte in @ref fd */
	unsigned long *userfault_bitmap; /**< KVM Userfault dialect: the memslot's bitmap (one bit per page, bit 0 = gpa),
					      cleared by the library when it resolves a KVM Userfault exit; NULL otherwise */
	uint64_t reserved[4];            /**< must be zero */
};

/** A handler range. Zero-fill, then set @ref sz. */
struct vmwkvm_mf_range {
	size_t sz;             /**< sizeof(struct vmwkvm_mf_range) */
	uint64_t gpa;          /**< first byte (any alignment) */
	uint64_t size;         /**< bytes (> 0) */
	uint32_t access;       /**< enum vmwkvm_mf_access bits this handler wants (non-zero) */
	uint32_t reserved0;    /**< must be zero */
	vmwkvm_mf_handler fn;  /**< the handler */
	void *ctx;             /**< passed to @ref fn */
	uint64_t reserved[4];  /**< must be zero */
};

/** Proposed memory-fault exit forms, decoded only when named in vmwkvm_memfault_opts::dialects. */
enum vmwkvm_mf_dialect {
	/** "kvm-userfault": James Houghton's KVM Userfault series (v1-v3, unmerged): a vCPU
	 *  access to a page whose bit is set in the memslot's userfault bitmap fails KVM_RUN
	 *  with EFAULT and a memory-fault exit carrying KVM_MEMORY_EXIT_FLAG_USERFAULT (1<<4). */
	VMWKVM_MF_DIALECT_KVM_USERFAULT = 1u << 0,
	/** "perm-fault": the permission-fault form discussed in Feb 2025 (a guest write to a page
	 *  the VMM mprotect()ed reported as a memory-fault exit with its address). Modelled with
	 *  the access flags of Anish Moorthy's memory-fault series, READ 1<<0, WRITE 1<<1,
	 *  EXEC 1<<2 (the bits mainline left free below PRIVATE 1<<3). */
	VMWKVM_MF_DIALECT_PERM_FAULT = 1u << 1,
};

/** Write-protection mechanisms. */
enum vmwkvm_mf_mechanism {
	VMWKVM_MF_MECH_AUTO = 0,     /**< options: userfaultfd WP where available, else mprotect */
	VMWKVM_MF_MECH_UFFD_WP = 1,  /**< userfaultfd write protection */
	VMWKVM_MF_MECH_MPROTECT = 2, /**< mprotect() */
};

/** Protection kinds (vmwkvm_memfault_protect()). */
enum vmwkvm_mf_prot {
	VMWKVM_MF_PROT_NONE = 0,   /**< not protected */
	VMWKVM_MF_PROT_WRITE = 1,  /**< writes trap */
	VMWKVM_MF_PROT_ACCESS = 2, /**< reads and writes trap (mprotect PROT_NONE only) */
};

/** Flags in vmwkvm_memfault_opts::flags. */
enum vmwkvm_mf_opt_flag {
	VMWKVM_MF_OPT_NO_UFFD = 1u << 0,      /**< never open a userfaultfd */
	VMWKVM_MF_OPT_REQUIRE_UFFD = 1u << 1, /**< fail vmwkvm_memfault_new() if no userfaultfd can be opened */
	VMWKVM_MF_OPT_NO_POPULATE = 1u << 2,  /**< without WP_UNPOPULATED, refuse (-EOPNOTSUPP) to write-protect anonymous
					       memory instead of populating it */
};

/** Options for vmwkvm_memfault_new(). Zero-fill, then set @ref sz. */
struct vmwkvm_memfault_opts {
	size_t sz;                  /**< sizeof(struct vmwkvm_memfault_opts) */
	uint32_t flags;             /**< enum vmwkvm_mf_opt_flag bits */
	uint32_t mechanism;         /**< enum vmwkvm_mf_mechanism for write protection (AUTO) */
	uint32_t default_action;    /**< action for parts of a fault no handler covers (0: the library's default, see
					 vmwkvm_memfault_dispatch()) */
	uint32_t dialects;          /**< enum vmwkvm_mf_dialect bits to decode (0: mainline only) */
	uint64_t userfault_flag;    /**< KVM Userfault flag bit in memory_fault.flags (0: 1<<4) */
	uint64_t perm_read_flag;    /**< permission-fault dialect READ flag (0: 1<<0) */
	uint64_t perm_write_flag;   /**< permission-fault dialect WRITE flag (0: 1<<1) */
	uint64_t perm_exec_flag;    /**< permission-fault dialect EXEC flag (0: 1<<2) */
	uint32_t retry_interval_us; /**< how often the service thread retries parked faults (0: 1000) */
	uint32_t reserved0;         /**< must be zero */
	uint64_t reserved[6];       /**< must be zero */
};

/** Counters (vmwkvm_memfault_stats()). Set @ref sz before the call. */
struct vmwkvm_mf_stats {
	size_t sz;                               /**< sizeof(struct vmwkvm_mf_stats) */
	uint64_t faults[VMWKVM_MF_SRC_COUNT];    /**< faults seen, per enum vmwkvm_mf_source */
	uint64_t handler_calls;                  /**< handler invocations */
	uint64_t unhandled;                      /**< fault parts no handler covered (default action taken) */
	uint64_t retries;                        /**< ::VMWKVM_MF_ACT_RETRY answers */
	uint64_t failures;                       /**< ::VMWKVM_MF_ACT_FAIL answers and failed resolutions */
	uint64_t remove_events;                  /**< userfaultfd remove events */
	uint64_t eagain;                         /**< resolution ioctls that met EAGAIN (events unread) */
	uint64_t eexist;                         /**< resolutions that found the page present already */
	uint64_t wakes;                          /**< explicit UFFDIO_WAKE calls (stale or duplicate faults) */
	uint64_t parked;                         /**< userfaultfd faults blocked now (retry or failed) */
	uint64_t populated_bytes;                /**< bytes populated before write protection (no WP_UNPOPULATED) */
	uint64_t reserved[8];                    /**< zero */
};

/**
 * Create a dispatcher.
 *
 * Unless ::VMWKVM_MF_OPT_NO_UFFD is set, opens a userfaultfd (non-blocking, close-on-exec,
 * not user-mode-only): first `/dev/userfaultfd` with USERFAULTFD_IOC_NEW, then
 * userfaultfd(2). If neither is permitted the dispatcher still works with mprotect() and
 * exits only, and logs one line naming what is missing (access to `/dev/userfaultfd`,
 * CAP_SYS_PTRACE, or `vm.unprivileged_userfaultfd=1`); with ::VMWKVM_MF_OPT_REQUIRE_UFFD it
 * fails instead. Requests the features a VMM needs: PAGEFAULT_FLAG_WP, WP_HUGETLBFS_SHMEM,
 * WP_UNPOPULATED, EVENT_REMOVE, MISSING_SHMEM, MINOR_SHMEM, THREAD_ID, EXACT_ADDRESS (each
 * only if the kernel offers it; see vmwkvm_memfault_uffd_features()).
 * @param vm   the VM handle (may be NULL; only remembered)
 * @param opts options, or NULL for defaults
 * @param out  receives the dispatcher
 * @return 0; -EINVAL (NULL @p out, bad @p opts, unknown mechanism/action/dialect bits),
 *         -ENOMEM, -EPERM (::VMWKVM_MF_OPT_REQUIRE_UFFD or mechanism ::VMWKVM_MF_MECH_UFFD_WP,
 *         and userfaultfd not permitted), or the negative errno of opening userfaultfd (with
 *         ::VMWKVM_MF_OPT_REQUIRE_UFFD or mechanism ::VMWKVM_MF_MECH_UFFD_WP).
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_memfault_new(vmwkvm_vm *vm, const struct vmwkvm_memfault_opts *opts,
				   vmwkvm_memfault **out);

/**
 * Free a dispatcher: stops the service thread, unregisters every region from userfaultfd
 * (which releases blocked threads: their accesses then complete on the memory as it is),
 * restores mprotect()ed pages to read-write, and closes the library's descriptors.
 * @param mf dispatcher, or NULL (no-op)
 * @par Thread-safety
 * Not safe against concurrent use of @p mf; no vCPU may be inside
 * vmwkvm_memfault_handle_exit() and no thread inside vmwkvm_memfault_dispatch().
 */
VMWKVM_API void vmwkvm_memfault_free(vmwkvm_memfault *mf);

/**
 * Tell the dispatcher about a guest RAM region.
 *
 * For shmem memory the library creates a second, writable mapping of the same pages
 * (from vmwkvm_mf_region::fd, or by mremap() of a MAP_SHARED mapping) unless
 * ::VMWKVM_MF_REGION_NO_ALIAS is set; it uses it to complete accesses to protected pages
 * without lifting the protection. The region's write-protection mechanism is fixed here
 * (vmwkvm_memfault_mechanism()); with userfaultfd WP the region is registered in WP mode
 * at once. The mapping must stay valid until vmwkvm_memfault_remove_region().
 * @param mf dispatcher
 * @param r  the region (copied)
 * @return 0; -EINVAL (NULL argument, bad r->sz, non-zero reserved fields, unaligned or
 *         empty range, GPA or host range wrapping, unknown kind or flags, page_size not a
 *         power of two >= 4096), -EEXIST (overlaps a known region in GPA or host address),
 *         -ENOMEM, or the negative errno of creating the alias or of UFFDIO_REGISTER.
 * @par Thread-safety
 * Safe; serialised with other table changes.
 */
VMWKVM_API int vmwkvm_memfault_add_region(vmwkvm_memfault *mf, const struct vmwkvm_mf_region *r);

/**
 * Forget a region. Waits for a grace period (see the file description), then
 * unregisters it from userfaultfd, which wakes every thread blocked on it (their accesses
 * complete on the memory as it is: a never-populated page reads as zeroes), drops the
 * faults parked for it, restores mprotect()ed pages to read-write and unmaps the alias.
 * A later exit in its range is no longer RAM (::VMWKVM_MF_EXIT_NOT_OURS). Handler ranges
 * are not removed with it.
 * @param mf  dispatcher
 * @param gpa the region's base, exactly as added
 * @return 0; -EINVAL (NULL @p mf), -ENOENT (no region starts at @p gpa).
 * @par Thread-safety
 * Safe, also from inside a handler (then it does not wait for the caller's own dispatch).
 */
VMWKVM_API int vmwkvm_memfault_remove_region(vmwkvm_memfault *mf, uint64_t gpa);

/**
 * Add a handler for a GPA range.
 *
 * Ranges need not lie inside a region (a region added later is covered at once) and may
 * be adjacent but never overlap. A range asking for ::VMWKVM_MF_ACCESS_MISSING or
 * ::VMWKVM_MF_ACCESS_MINOR registers the regions it overlaps with userfaultfd in that
 * mode (MINOR: shmem regions only): from then on, first touches of their unpopulated pages
 * block until the fault is dispatched.
 * @param mf dispatcher
 * @param r  the range (copied)
 * @return 0; -EINVAL (NULL argument, bad r->sz, zero size, range wrapping, no access bit
 *         or unknown bits, NULL handler, non-zero reserved fields), -EEXIST (overlaps a
 *         range), -EOPNOTSUPP (MINOR asked for without userfaultfd or on anonymous memory;
 *         MISSING without userfaultfd unless the KVM Userfault dialect is in force, whose
 *         exits are MISSING faults too), -ENOMEM, or the negative errno of UFFDIO_REGISTER.
 * @par Thread-safety
 * Safe; serialised with other table changes.
 */
VMWKVM_API int vmwkvm_memfault_add_range(vmwkvm_memfault *mf, const struct vmwkvm_mf_range *r);

/**
 * Remove a handler range. When this returns, the handler is not running (except in the
 * calling thread, when called from inside it) and will not be called again; faults in the
 * range then take the default action.
 * @param mf   dispatcher
 * @param gpa  the range's first byte, exactly as added
 * @param size the range's size, exactly as added
 * @return 0; -EINVAL (NULL @p mf), -ENOENT (no such range).
 * @par Thread-safety
 * Safe, also from inside a handler.
 */
VMWKVM_API int vmwkvm_memfault_remove_range(vmwkvm_memfault *mf, uint64_t gpa, uint64_t size);

/**
 * A descriptor for the VMM's event loop: it polls readable when userfaultfd messages are
 * waiting or vmwkvm_memfault_kick() was called. Then call vmwkvm_memfault_dispatch().
 * The descriptor belongs to the dispatcher (do not close it).
 * @param mf dispatcher
 * @return the descriptor; -EINVAL (NULL @p mf), -EPERM (no userfaultfd: see
 *         vmwkvm_memfault_new(); the reason was logged), -EOPNOTSUPP (::VMWKVM_MF_OPT_NO_UFFD),
 *         or the negative errno of creating the epoll/eventfd descriptors.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_memfault_fd(vmwkvm_memfault *mf);

/**
 * Serve userfaultfd once, without blocking: read every waiting message, handle events
 * (remove), run the handlers of page faults and carry out their actions, and retry parked
 * faults. Library defaults for parts no handler covers: a write-protect fault is
 * unprotected; a MISSING fault on an unprotected page gets a zero page; a read MISSING
 * fault on a write-protected page is populated still protected, a write one unprotected;
 * a MINOR fault is mapped; a fault on memory outside every region is woken.
 * A ::VMWKVM_MF_ACT_FAIL answer parks the fault (its thread stays blocked) until
 * vmwkvm_memfault_resolve() covers it or its region is removed.
 * @param mf dispatcher
 * @return the number of faults resolved (>= 0); -EINVAL (NULL @p mf), -EPERM or
 *         -EOPNOTSUPP (no userfaultfd), or the negative errno of reading userfaultfd.
 * @par Thread-safety
 * Safe; calls are serialised (one thread serves at a time, others wait). Must not be
 * called from a handler.
 */
VMWKVM_API int vmwkvm_memfault_dispatch(vmwkvm_memfault *mf);

/**
 * Number of userfaultfd faults the dispatcher keeps blocked (retry or failed answers).
 * When non-zero, the VMM's loop should call vmwkvm_memfault_dispatch() again after a
 * while even if the descriptor stays quiet.
 * @param mf dispatcher
 * @return the count, or -EINVAL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_memfault_pending(vmwkvm_memfault *mf);

/**
 * Make vmwkvm_memfault_fd() readable (and wake the service thread) so that parked faults
 * are retried now.
 * @param mf dispatcher
 * @return 0; -EINVAL, or -EPERM/-EOPNOTSUPP without userfaultfd.
 * @par Thread-safety
 * Safe, also from handlers and signal-free contexts of any thread.
 */
VMWKVM_API int vmwkvm_memfault_kick(vmwkvm_memfault *mf);

/**
 * Start a library thread that serves userfaultfd (vmwkvm_memfault_dispatch() whenever the
 * descriptor is readable, and every vmwkvm_memfault_opts::retry_interval_us while faults
 * are parked). The thread blocks every signal, so signals the VMM directs at its process
 * (a watchdog's SIGALRM, vCPU kicks) reach the VMM's threads.
 * @param mf dispatcher
 * @return 0; -EINVAL, -EALREADY (running), -EPERM/-EOPNOTSUPP without userfaultfd, or the
 *         negative errno of pthread_create().
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_memfault_start(vmwkvm_memfault *mf);

/**
 * Stop the service thread and wait for it (a dispatch in progress completes first).
 * @param mf dispatcher
 * @return 0; -EINVAL, -ESRCH (not running), -EDEADLK (called from the service thread).
 * @par Thread-safety
 * Safe; not from a handler running on the service thread.
 */
VMWKVM_API int vmwkvm_memfault_stop(vmwkvm_memfault *mf);

/** vmwkvm_memfault_handle_exit() results. */
enum vmwkvm_mf_exit_result {
	VMWKVM_MF_EXIT_NOT_OURS = 0, /**< not a memory fault on known RAM: the VMM handles the exit */
	VMWKVM_MF_EXIT_HANDLED = 1,  /**< done: re-enter KVM_RUN */
	VMWKVM_MF_EXIT_RETRY = 2,    /**< a handler asked to retry: call again later, before re-entering */
	VMWKVM_MF_EXIT_FAILED = 3,   /**< a handler failed (or the access cannot be completed): the record says
					  which part and why; the VMM decides what the guest sees */
};

/**
 * Handle the vCPU's last KVM_RUN result if it is a memory fault on guest RAM.
 *
 * Recognised: (1) `KVM_RUN` failed with EFAULT or EHWPOISON and `exit_reason` is
 * KVM_EXIT_MEMORY_FAULT (any other failure leaves `exit_reason` stale and is not ours);
 * its flags are decoded (PRIVATE; KVM Userfault and permission faults only under their
 * dialects; otherwise the access is unknown and both READ and WRITE are set). (2) A
 * successful run with KVM_EXIT_MMIO whose first byte lies in a region: the handlers run,
 * then the library performs the access on RAM (through the region's alias, directly when
 * the page is not protected, or through /proc/self/mem for private anonymous memory):
 * the write lands, or RAM's bytes go into `mmio.data`. An access that crosses a page or
 * a region boundary is split; an access that leaves guest RAM gets ::VMWKVM_MF_EXIT_FAILED
 * with -ERANGE and nothing is done.
 *
 * For exits the CPU retries (memory-fault exits) ::VMWKVM_MF_ACT_ALLOW_ONCE acts as
 * UNPROTECT; for KVM Userfault, resolving clears the pages' bits in the region's
 * userfault bitmap (after the data is written). For a mainline memory-fault exit no part
 * of which any handler covers, the result is ::VMWKVM_MF_EXIT_NOT_OURS.
 * @param mf         dispatcher
 * @param vcpu       the vCPU that ran
 * @param run_result what vmwkvm_vcpu_run() returned (or, for a VMM's own KVM_RUN, 0 on
 *                   success and -errno on failure)
 * @param rec        optional: receives the whole fault (HANDLED, RETRY) or the failing part
 *                   with vmwkvm_mf_record::error (FAILED)
 * @return an enum vmwkvm_mf_exit_result, or -EINVAL (NULL @p mf or @p vcpu, MMIO length
 *         outside 1..8).
 * @par Thread-safety
 * Safe for different vCPUs concurrently; call from the vCPU's thread.
 */
VMWKVM_API int vmwkvm_memfault_handle_exit(vmwkvm_memfault *mf, vmwkvm_vcpu *vcpu, int run_result,
					   struct vmwkvm_mf_record *rec);

/**
 * vmwkvm_memfault_handle_exit() on a bare `struct kvm_run` (for VMMs that do not wrap
 * their vCPUs, and for tests).
 * @param mf         dispatcher
 * @param run        the vCPU's kvm_run
 * @param run_size   bytes mapped at @p run (at least sizeof(struct kvm_run))
 * @param run_result as for vmwkvm_memfault_handle_exit()
 * @param vcpu       reported in records (may be NULL)
 * @param rec        optional, as for vmwkvm_memfault_handle_exit()
 * @return as vmwkvm_memfault_handle_exit(); -EINVAL also for NULL @p run or a short @p run_size.
 * @par Thread-safety
 * As vmwkvm_memfault_handle_exit().
 */
VMWKVM_API int vmwkvm_memfault_handle_run(vmwkvm_memfault *mf, struct kvm_run *run, size_t run_size,
					  int run_result, vmwkvm_vcpu *vcpu, struct vmwkvm_mf_record *rec);

/**
 * Protect a GPA range with the region's mechanism.
 *
 * ::VMWKVM_MF_PROT_WRITE: userfaultfd WP (registering the missing guard on anonymous
 * memory, and populating first when WP_UNPOPULATED is absent) or mprotect(PROT_READ).
 * ::VMWKVM_MF_PROT_ACCESS: mprotect(PROT_NONE) whatever the mechanism (reads then trap
 * only as MMIO exits on emulating hosts). The protection is recorded before the kernel
 * applies it, so a fault that arrives at once is attributed correctly.
 * @param mf   dispatcher
 * @param gpa  page-aligned start
 * @param len  page-multiple length (> 0); the range may span adjacent regions
 * @param kind enum vmwkvm_mf_prot (WRITE or ACCESS)
 * @return the mechanism used (enum vmwkvm_mf_mechanism; with several regions, that of the
 *         last one); -EINVAL (NULL @p mf, unaligned or empty range, bad @p kind),
 *         -ENOENT (part of the range is not in a region), -EOPNOTSUPP (see
 *         ::VMWKVM_MF_OPT_NO_POPULATE), -EDEADLK (the range would have to be populated and
 *         the caller is a handler on the userfaultfd service thread, which would wait for
 *         itself), -EAGAIN (events stayed unread), or the negative
 *         errno of UFFDIO_REGISTER/UFFDIO_WRITEPROTECT/mprotect(). On failure part of the
 *         range may be protected: vmwkvm_memfault_protection() tells.
 * @par Thread-safety
 * Safe (protection changes are serialised).
 */
VMWKVM_API int vmwkvm_memfault_protect(vmwkvm_memfault *mf, uint64_t gpa, uint64_t len, int kind);

/**
 * vmwkvm_memfault_protect() with ::VMWKVM_MF_PROT_WRITE.
 * @param mf  dispatcher
 * @param gpa page-aligned start
 * @param len page-multiple length
 * @return as vmwkvm_memfault_protect().
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_memfault_write_protect(vmwkvm_memfault *mf, uint64_t gpa, uint64_t len);

/**
 * Remove the protection of a GPA range (userfaultfd WP cleared, which wakes blocked
 * writers; mprotect back to read-write) and release faults parked in it. An unprotect
 * covering a whole anonymous region also drops its missing guard.
 * @param mf  dispatcher
 * @param gpa page-aligned start
 * @param len page-multiple length (> 0)
 * @return 0; -EINVAL, -ENOENT (part of the range is not in a region), -EAGAIN, or the
 *         negative errno of UFFDIO_WRITEPROTECT/mprotect().
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_memfault_unprotect(vmwkvm_memfault *mf, uint64_t gpa, uint64_t len);

/**
 * Protection of the page holding @p gpa, as the library recorded it.
 * @param mf  dispatcher
 * @param gpa any address in the page
 * @return enum vmwkvm_mf_prot; -EINVAL, -ENOENT (not in a region).
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_memfault_protection(vmwkvm_memfault *mf, uint64_t gpa);

/**
 * The write-protection mechanism in force for the region holding @p gpa.
 * @param mf  dispatcher
 * @param gpa any address in the region
 * @return ::VMWKVM_MF_MECH_UFFD_WP or ::VMWKVM_MF_MECH_MPROTECT; -EINVAL, -ENOENT.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_memfault_mechanism(vmwkvm_memfault *mf, uint64_t gpa);

/**
 * Carry out an action on a GPA range from outside a handler, whether or not a fault is
 * pending there, and release the faults parked in it: ::VMWKVM_MF_ACT_UNPROTECT (as
 * vmwkvm_memfault_unprotect(); MISSING pages get zero pages), ::VMWKVM_MF_ACT_FILL
 * (@p data, @p len bytes: UFFDIO_COPY on unpopulated pages of MISSING-registered memory,
 * else written into RAM; then unprotected), ::VMWKVM_MF_ACT_ZERO. Used by lazy-restore
 * prefetchers and to answer faults a handler failed.
 * @param mf   dispatcher
 * @param gpa  page-aligned start
 * @param len  page-multiple length (> 0)
 * @param kind enum vmwkvm_mf_action_kind (UNPROTECT, FILL or ZERO)
 * @param data ::VMWKVM_MF_ACT_FILL: @p len bytes; otherwise NULL
 * @return 0; -EINVAL, -ENOENT, or the negative errno of the resolution ioctl.
 * @par Thread-safety
 * Safe; also from handlers.
 */
VMWKVM_API int vmwkvm_memfault_resolve(vmwkvm_memfault *mf, uint64_t gpa, uint64_t len, int kind,
				       const void *data);

/** Flags of vmwkvm_memfault_save(). */
enum vmwkvm_mf_save_flag {
	VMWKVM_MF_SAVE_UNPROTECT = 1u << 0, /**< once copied, remove the range's protection (as vmwkvm_memfault_unprotect()) */
	VMWKVM_MF_SAVE_STREAM = 1u << 1,    /**< write @p dst with streaming (non-temporal) stores where the CPU has them and
					         @p dst is 16-byte aligned: for copies not read again soon (a snapshot) */
};

/**
 * Copy guest RAM into a buffer without faulting, then, with ::VMWKVM_MF_SAVE_UNPROTECT,
 * remove its protection: the saving step of a lazy snapshot for a whole batch of pages.
 *
 * The bytes are those of [gpa, gpa+len) now, whatever the protection: write-protected pages
 * are read through the VMM's mapping, access-protected ones as
 * vmwkvm_memfault_handle_exit() reads them (alias mapping of memfd/shmem memory,
 * /proc/self/mem for private anonymous memory). Pages of anonymous regions that hold no
 * data (never populated, or emptied by MADV_DONTNEED), as /proc/self/pagemap tells, are not
 * read: their bytes in @p dst are zeroes. Reading one would be a MISSING fault through the
 * missing guard (a round trip through the fault service, and on the service thread a
 * deadlock). The kernel shows the marker that write protection leaves on such a page only
 * to CAP_SYS_ADMIN; without it, or without pagemap, such pages are read (which a thread
 * other than the service thread may do).
 *
 * For a snapshot equal to memory at one instant, the caller makes sure no write reaches the
 * range between protection and this call (typically: the range is write-protected and its
 * WRITE handler saves a page the same way before letting a write in), and that no handler
 * saves a page of the range while this call copies it.
 * @param mf    dispatcher
 * @param gpa   page-aligned start (aligned to the region's pages)
 * @param len   page-multiple length (> 0); the range may span adjacent regions
 * @param dst   @p len bytes
 * @param flags enum vmwkvm_mf_save_flag bits
 * @return the number of 4 KiB pages written as zeroes without being read (>= 0, at most
 *         INT_MAX); -EINVAL (NULL @p mf or @p dst, unaligned or empty range, unknown
 *         flags), -ENOENT (part of the range is not in a region), -EDEADLK (called on the
 *         userfaultfd service thread and a page may be a never-populated one that cannot be
 *         told apart: see above), -EOPNOTSUPP (an access-protected page cannot be read), or
 *         the negative errno of the unprotect. On failure part of @p dst may be written and
 *         part of the range unprotected.
 * @par Thread-safety
 * Safe, also from handlers; calls for different ranges may run in parallel (the unprotect
 * steps are serialised).
 */
VMWKVM_API int vmwkvm_memfault_save(vmwkvm_memfault *mf, uint64_t gpa, uint64_t len, void *dst, uint32_t flags);

/**
 * The userfaultfd features in force (as negotiated by UFFDIO_API).
 * @param mf       dispatcher
 * @param features receives the feature bits (UFFD_FEATURE_*)
 * @return 0; -EINVAL, -EPERM/-EOPNOTSUPP without userfaultfd.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_memfault_uffd_features(vmwkvm_memfault *mf, uint64_t *features);

/**
 * Read the counters.
 * @param mf  dispatcher
 * @param out receives them; out->sz must be set
 * @return 0; -EINVAL (NULL argument, out->sz too small).
 * @par Thread-safety
 * Safe (each counter is read atomically; the set is not a snapshot).
 */
VMWKVM_API int vmwkvm_memfault_stats(vmwkvm_memfault *mf, struct vmwkvm_mf_stats *out);

/**
 * Name of a source ("uffd", "memory-fault-exit", "mmio-on-ram", "kvm-userfault", "perm-fault").
 * @param source enum vmwkvm_mf_source
 * @return a static string; "unknown" for other values; never NULL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API const char *vmwkvm_memfault_source_name(int source);

/**
 * Name of an action kind ("default", "unprotect", "fill", "zero", "allow-once", "retry", "fail").
 * @param kind enum vmwkvm_mf_action_kind
 * @return a static string; "unknown" for other values; never NULL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API const char *vmwkvm_memfault_action_name(int kind);

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_MEMFAULT_H */
