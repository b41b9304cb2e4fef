/* Region and handler-range tables (table.c). Not installed. */
#ifndef VMWKVM_LIB_MEMFAULT_TABLE_H
#define VMWKVM_LIB_MEMFAULT_TABLE_H

#include "memfault/memfault_internal.h"

/* ---- readers: pin the current snapshot ---- */
struct mf_table *vk_mf_pin(struct vmwkvm_memfault *mf);
void vk_mf_unpin(struct vmwkvm_memfault *mf, struct mf_table *t);
struct mf_region *vk_mf_region_by_gpa(const struct mf_table *t, uint64_t gpa);
struct mf_region *vk_mf_region_by_hva(const struct mf_table *t, uint64_t hva);
/* first range whose end is above gpa (index into t->ranges), or t->nrange */
size_t vk_mf_range_lower(const struct mf_table *t, uint64_t gpa);

/* ---- writers (under mf->wlock unless said otherwise) ---- */
/* insertion points of a region by GPA / by host address */
size_t vk_mf_region_pos_gpa(const struct mf_table *t, uint64_t gpa);
size_t vk_mf_region_pos_hva(const struct mf_table *t, uint64_t hva);
struct mf_table *vk_mf_table_alloc(size_t nreg, size_t nrange);
void vk_mf_table_free(struct mf_table *t);
/* copy of t with region add inserted (NULL: none) and region del removed (NULL: none) */
struct mf_table *vk_mf_table_regions(const struct mf_table *t, struct mf_region *add, const struct mf_region *del);
/* copy of t with range add inserted (NULL: none) and range index del_idx removed ((size_t)-1: none) */
struct mf_table *vk_mf_table_ranges(const struct mf_table *t, const struct mf_range *add, size_t del_idx);
/* Publish t as the current table. Returns the generation of the table it replaced, for
 * vk_mf_grace_wait(). */
uint64_t vk_mf_table_publish(struct vmwkvm_memfault *mf, struct mf_table *t);
/* Wait until no thread but this one uses a table of generation <= gen (caller holds no
 * lock of the library). */
void vk_mf_grace_wait(struct vmwkvm_memfault *mf, uint64_t gen);

/* ---- regions ---- */
void vk_mf_region_free_mem(struct mf_region *r);
/* Release a region no table reaches any more: forget its queued faults, unregister it from
 * userfaultfd (if unregister), undo the library's mprotect()s, unmap its alias, free it. */
void vk_mf_region_release(struct vmwkvm_memfault *mf, struct mf_region *r, bool unregister);

#endif
