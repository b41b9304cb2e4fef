/* Probe group: vmware and nested items (probe_vmware.c). Not installed. */
#ifndef VMWKVM_LIB_PROBE_VMWARE_H
#define VMWKVM_LIB_PROBE_VMWARE_H

#include "probe/items.h"

/* Adds the vmware and nested groups' items to p. */
void vk_probe_vmware(struct vmwkvm_probe *p, struct vk_probe_ctx *c);

#endif
