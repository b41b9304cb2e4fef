/* Probe group: userfaultfd items (probe_uffd.c). Not installed. */
#ifndef VMWKVM_LIB_PROBE_UFFD_H
#define VMWKVM_LIB_PROBE_UFFD_H

#include "probe/items.h"

/* Adds the userfaultfd group's items to p. */
void vk_probe_uffd(struct vmwkvm_probe *p);
/* Adds them all as UNKNOWN with the reason `why` (userfaultfd probing not asked for). */
void vk_probe_uffd_skipped(struct vmwkvm_probe *p, const char *why);

#endif
