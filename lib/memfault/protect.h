/* Page protection and guest-RAM access (protect.c; caller holds no lock). Not installed. */
#ifndef VMWKVM_LIB_MEMFAULT_PROTECT_H
#define VMWKVM_LIB_MEMFAULT_PROTECT_H

#include "memfault/memfault_internal.h"

/* unprotect pages [gpa, gpa+len) of region r (page aligned, inside r). dontwake: keep
 * userfaultfd waiters asleep. */
int vk_mf_unprotect_region(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t gpa, uint64_t len,
			   bool dontwake);
/* write / read guest RAM of region r (inside r) whatever its protection */
int vk_mf_ram_write(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t gpa, const void *src, size_t len);
int vk_mf_ram_read(struct vmwkvm_memfault *mf, struct mf_region *r, uint64_t gpa, void *dst, size_t len);

#endif
