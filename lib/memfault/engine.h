/* The dispatch engine shared by every fault source (engine.c). Not installed. */
#ifndef VMWKVM_LIB_MEMFAULT_ENGINE_H
#define VMWKVM_LIB_MEMFAULT_ENGINE_H

#include "memfault/memfault_internal.h"

/* Run the handlers for f over table t. Sets f->verdict (MF_VERDICT_RESOLVE, RETRY, FAIL).
 * Returns 0 or -ENOMEM. */
int vk_mf_run_handlers(struct vmwkvm_memfault *mf, struct mf_table *t, struct mf_fault *f);
void vk_mf_fault_fini(struct mf_fault *f);
/* true when every piece overlapping [gpa, gpa+len) asks to keep the protection */
bool vk_mf_keep_protection(const struct mf_fault *f, uint64_t gpa, uint64_t len);
/* fill a record for the whole fault */
void vk_mf_fault_record(const struct vmwkvm_memfault *mf, const struct mf_table *t, const struct mf_fault *f,
			struct vmwkvm_mf_record *rec);

#endif
