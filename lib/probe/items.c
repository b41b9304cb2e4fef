/* The probe's item store (struct vmwkvm_probe), the names of states, scopes, groups and
 * errnos, and the public accessors of a finished probe. Every probe group file adds its
 * items here; this file calls no group. */
#include "probe/items.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ names */

const char *vmwkvm_probe_state_name(uint32_t state)
{
	switch (state) {
	case VMWKVM_PROBE_UNKNOWN: return "unknown";
	case VMWKVM_PROBE_ABSENT: return "absent";
	case VMWKVM_PROBE_PRESENT: return "present";
	default: return "invalid";
	}
}

const char *vmwkvm_probe_scope_name(uint32_t scope)
{
	switch (scope) {
	case VMWKVM_PROBE_SCOPE_SYSTEM: return "system";
	case VMWKVM_PROBE_SCOPE_VM: return "vm";
	case VMWKVM_PROBE_SCOPE_HOST: return "host";
	case VMWKVM_PROBE_SCOPE_LIBRARY: return "library";
	default: return "invalid";
	}
}

const char *vmwkvm_probe_group_name(uint32_t group)
{
	switch (group) {
	case VMWKVM_PROBE_GROUP_KVM: return "kvm";
	case VMWKVM_PROBE_GROUP_CAPS: return "caps";
	case VMWKVM_PROBE_GROUP_VMWARE: return "vmware";
	case VMWKVM_PROBE_GROUP_NESTED: return "nested";
	case VMWKVM_PROBE_GROUP_USERFAULTFD: return "userfaultfd";
	case VMWKVM_PROBE_GROUP_LIBRARY: return "library";
	default: return "invalid";
	}
}

const char *vmwkvm_errno_name(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case 0: return "0";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EINTR: return "EINTR";
	case EIO: return "EIO";
	case ENXIO: return "ENXIO";
	case E2BIG: return "E2BIG";
	case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case ENODEV: return "ENODEV";
	case ENOTDIR: return "ENOTDIR";
	case EINVAL: return "EINVAL";
	case ENFILE: return "ENFILE";
	case EMFILE: return "EMFILE";
	case ENOTTY: return "ENOTTY";
	case ENOSPC: return "ENOSPC";
	case EROFS: return "EROFS";
	case ERANGE: return "ERANGE";
	case ENOSYS: return "ENOSYS";
	case EPROTO: return "EPROTO";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case ETIMEDOUT: return "ETIMEDOUT";
	case EHWPOISON: return "EHWPOISON";
	default: return "E?";
	}
}

/* ------------------------------------------------------------------ item store */

void vk_probe_add(struct vmwkvm_probe *p, uint32_t id, uint32_t group, uint32_t scope, const char *key,
		  uint32_t state, bool has_value, int64_t value, uint32_t number, int err, const char *fmt, ...)
{
	if (p->n >= VK_PROBE_MAX_ITEMS) {
		p->overflow = true;
		return;
	}
	struct vk_probe_entry *e = &p->e[p->n++];
	memset(e, 0, sizeof(*e));
	e->item.id = id;
	e->item.group = group;
	e->item.scope = scope;
	e->item.state = state;
	e->item.has_value = has_value ? 1 : 0;
	e->item.value = has_value ? value : 0;
	e->item.number = number;
	e->item.err = err > 0 ? -err : err;
	snprintf(e->name, sizeof(e->name), "%s.%s", vmwkvm_probe_group_name(group), key);
	e->item.name = e->name;
	e->item.key = e->name + strlen(vmwkvm_probe_group_name(group)) + 1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->reason, sizeof(e->reason), fmt, ap);
	va_end(ap);
	e->item.reason = e->reason;
}

const struct vmwkvm_probe_item *vk_probe_get(const struct vmwkvm_probe *p, uint32_t id, uint32_t scope)
{
	for (size_t i = 0; i < p->n; i++)
		if (p->e[i].item.id == id && p->e[i].item.scope == scope)
			return &p->e[i].item;
	return NULL;
}

int vk_probe_errstr(char *buf, size_t len, int err)
{
	return snprintf(buf, len, "%s (%s)", vmwkvm_errno_name(err), vmwkvm_strerror(err));
}
/* ------------------------------------------------------------------ accessors */

void vmwkvm_probe_free(vmwkvm_probe *probe)
{
	free(probe);
}

size_t vmwkvm_probe_count(const vmwkvm_probe *probe)
{
	return probe ? probe->n : 0;
}

const struct vmwkvm_probe_item *vmwkvm_probe_item(const vmwkvm_probe *probe, size_t index)
{
	if (!probe || index >= probe->n) {
		errno = EINVAL;
		return NULL;
	}
	return &probe->e[index].item;
}

const struct vmwkvm_probe_item *vmwkvm_probe_find(const vmwkvm_probe *probe, uint32_t id, uint32_t scope)
{
	if (!probe) {
		errno = EINVAL;
		return NULL;
	}
	const struct vmwkvm_probe_item *it = vk_probe_get(probe, id, scope);
	if (!it)
		errno = ENOENT;
	return it;
}

int vmwkvm_probe_kvm_usable(const vmwkvm_probe *probe)
{
	if (!probe)
		return -EINVAL;
	const struct vmwkvm_probe_item *dev = vk_probe_get(probe, VMWKVM_PROBE_KVM_DEVICE, VMWKVM_PROBE_SCOPE_HOST);
	const struct vmwkvm_probe_item *api =
		vk_probe_get(probe, VMWKVM_PROBE_KVM_API_VERSION, VMWKVM_PROBE_SCOPE_SYSTEM);
	return dev && api && dev->state == VMWKVM_PROBE_PRESENT && api->state == VMWKVM_PROBE_PRESENT ? 1 : 0;
}
