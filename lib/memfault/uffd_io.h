/* userfaultfd ioctls and message queues (uffd_io.c). Not installed. */
#ifndef VMWKVM_LIB_MEMFAULT_UFFD_IO_H
#define VMWKVM_LIB_MEMFAULT_UFFD_IO_H

#include "memfault/memfault_internal.h"

int vk_mf_uffd_open(struct vmwkvm_memfault *mf);
void vk_mf_uffd_close(struct vmwkvm_memfault *mf);
/* the error of an operation that needs the userfaultfd when there is none */
int vk_mf_uffd_unavailable(const struct vmwkvm_memfault *mf);
int vk_mf_uffd_ensure_fds(struct vmwkvm_memfault *mf);
/* (re-)register region r with at least `modes`; under prot_lock */
int vk_mf_uffd_register(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t modes);
int vk_mf_uffd_unregister(struct vmwkvm_memfault *mf, struct mf_region *r);
/* read what the fd has into mf->pend / mf->notes (caller holds q_lock); 0 or -errno */
int vk_mf_uffd_read_msgs_locked(struct vmwkvm_memfault *mf);
/* empty the kick eventfd (caller holds q_lock) */
void vk_mf_uffd_drain_kick_locked(struct vmwkvm_memfault *mf);
/* UFFDIO_WRITEPROTECT on [hva, hva+len) with EAGAIN handling */
int vk_mf_uffd_wp(struct vmwkvm_memfault *mf, uint64_t hva, uint64_t len, bool wp, bool dontwake);
int vk_mf_uffd_wake(struct vmwkvm_memfault *mf, uint64_t hva, uint64_t len);
/* UFFDIO_COPY: 0 copied, 1 the page was present already (waiters woken), or -errno */
int vk_mf_uffd_copy(struct vmwkvm_memfault *mf, uint64_t hva, const void *src, uint64_t len, bool wp);
int vk_mf_uffd_zeropage(struct vmwkvm_memfault *mf, uint64_t hva, uint64_t len);
int vk_mf_uffd_continue(struct vmwkvm_memfault *mf, uint64_t hva, uint64_t len, bool wp);
/* forget queued faults in [hva, hva+len) (their threads were released by the caller) */
void vk_mf_uffd_forget(struct vmwkvm_memfault *mf, uint64_t hva, uint64_t len);
/* true on the thread serving userfaultfd for mf (inside vmwkvm_memfault_dispatch) */
bool vk_mf_in_dispatch(const struct vmwkvm_memfault *mf);
/* mark this thread as serving mf (NULL: none) */
void vk_mf_set_serving(const struct vmwkvm_memfault *mf);
/* test hook: features the library must pretend the kernel lacks (set before new()) */
void vk_mf_test_mask_features(uint64_t mask);
uint64_t vk_mf_test_masked_features(void);

#endif
