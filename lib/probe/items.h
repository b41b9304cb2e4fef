/* The probe's item store and run context (items.c), used by every probe group file.
 * Not installed. */
#ifndef VMWKVM_LIB_PROBE_ITEMS_H
#define VMWKVM_LIB_PROBE_ITEMS_H

#include "core/internal.h"

#define VK_PROBE_MAX_ITEMS 128
#define VK_PROBE_REASON_MAX 400
#define VK_PROBE_NAME_MAX 48

struct vk_probe_entry {
	struct vmwkvm_probe_item item;
	char name[VK_PROBE_NAME_MAX];
	char reason[VK_PROBE_REASON_MAX];
};

struct vmwkvm_probe {
	size_t n;
	bool overflow;
	struct vk_probe_entry e[VK_PROBE_MAX_ITEMS];
};

/* What the probe works with while it runs. */
struct vk_probe_ctx {
	int kvm_fd;           /* -1 when unusable */
	bool kvm_fd_owned;
	bool api_ok;
	int vm_fd;            /* -1 when none */
	bool vm_fd_scratch;   /* created (and closed) by the probe */
	const struct vmwkvm_vm *handle; /* the caller's library VM handle, or NULL */
	uint32_t flags;       /* VMWKVM_PROBE_F_* */
	int requested;        /* dialect asked for (may be AUTO) */
	struct vmwkvm_proposed_numbers numbers;
	char kvm_unusable[160]; /* why there is no /dev/kvm fd */
	char vm_unusable[200];  /* why there is no VM fd */
};

void vk_probe_add(struct vmwkvm_probe *p, uint32_t id, uint32_t group, uint32_t scope, const char *key,
		  uint32_t state, bool has_value, int64_t value, uint32_t number, int err, const char *fmt, ...)
	VK_PRINTF(11, 12);
const struct vmwkvm_probe_item *vk_probe_get(const struct vmwkvm_probe *p, uint32_t id, uint32_t scope);
/* "EINTR (interrupted)" */
int vk_probe_errstr(char *buf, size_t len, int err);

#endif
