/* The userfaultfd fault source and its service thread (uffd.c). Not installed. */
#ifndef VMWKVM_LIB_MEMFAULT_UFFD_H
#define VMWKVM_LIB_MEMFAULT_UFFD_H

#include "memfault/memfault_internal.h"

/* stop the service thread, if any, and wait for it (vmwkvm_memfault_free) */
void vk_mf_svc_stop_all(struct vmwkvm_memfault *mf);

#endif
