/* Per-VM VMware policy: the enable sequences of each dialect, with rollback. See vmwkvm/policy.h. */
#include "core/dialect_probe.h"
#include "core/internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Internal marker in vm->policy_confirmed: a set call succeeded on this VM. */
#define POLICY_SET_DONE (1u << 31)

static const uint32_t policy_bits[3] = { VMWKVM_POLICY_BACKDOOR, VMWKVM_POLICY_HYPERCALL,
					 VMWKVM_POLICY_NESTED_BACKDOOR };

int vmwkvm_policy_flags_format(uint32_t flags, char *buf, size_t len)
{
	if (!buf || !len)
		return -EINVAL;
	static const char *const names[3] = { "backdoor", "hypercall", "nested" };
	char tmp[64];
	size_t n = 0;
	tmp[0] = '\0';
	if (!flags)
		n = (size_t)snprintf(tmp, sizeof(tmp), "none");
	for (int i = 0; i < 3; i++)
		if (flags & policy_bits[i])
			n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "%s%s", n ? "," : "", names[i]);
	if (flags & ~(uint32_t)VMWKVM_POLICY_ALL)
		n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "%s0x%x", n ? "," : "",
				      (unsigned)(flags & ~(uint32_t)VMWKVM_POLICY_ALL));
	snprintf(buf, len, "%s", tmp);
	return (int)n;
}

int vmwkvm_policy_flags_parse(const char *text, uint32_t *out)
{
	if (!text || !out)
		return -EINVAL;
	uint32_t f = 0;
	const char *p = text;
	while (*p) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l == 8 && strncmp(p, "backdoor", l) == 0)
			f |= VMWKVM_POLICY_BACKDOOR;
		else if (l == 9 && strncmp(p, "hypercall", l) == 0)
			f |= VMWKVM_POLICY_HYPERCALL;
		else if ((l == 6 && strncmp(p, "nested", l) == 0) || (l == 15 && strncmp(p, "nested_backdoor", l) == 0))
			f |= VMWKVM_POLICY_NESTED_BACKDOOR;
		else if (!(l == 4 && strncmp(p, "none", l) == 0))
			return -EINVAL;
		if (!e)
			break;
		p = e + 1;
		if (!*p)
			return -EINVAL; /* trailing comma */
	}
	if (p == text && !*p)
		return -EINVAL; /* empty */
	*out = f;
	return 0;
}

/* The kernel's default for a VM nobody configured: the backdoor iff the module parameter is Y. */
static uint32_t default_flags(int param)
{
	return param == 1 ? VMWKVM_POLICY_BACKDOOR : 0;
}

static uint32_t in_force_locked(const struct vmwkvm_vm *vm, int param)
{
	if (vm->dialect != VMWKVM_DIALECT_NONE && (vm->policy_confirmed & POLICY_SET_DONE))
		return vm->policy_flags;
	return default_flags(param);
}

static void refuse(const struct vmwkvm_vm *vm, uint32_t flags, const char *dialect, const char *why)
{
	char f[64];
	vmwkvm_policy_flags_format(flags, f, sizeof(f));
	vk_warn("VM fd %d: VMware policy '%s' not possible: dialect %s: %s", vm->vm_fd, f, dialect, why);
}

/* Dialect none: succeed only for exactly what the global parameter already gives. */
static int set_none(struct vmwkvm_vm *vm, uint32_t flags, const char *why)
{
	int param = vk_vmware_backdoor_param();
	char reason[3 * VK_DIALECT_REASON_MAX + 192];
	if (param < 0) {
		snprintf(reason, sizeof(reason), "%s; kvm.enable_vmware_backdoor unreadable (%s)", why,
			 vmwkvm_strerror(param));
		refuse(vm, flags, "none", reason);
		return -EOPNOTSUPP;
	}
	uint32_t have = default_flags(param);
	if (flags != have) {
		snprintf(reason, sizeof(reason), "%s; the global kvm.enable_vmware_backdoor=%c gives '%s' to every VM",
			 why, param ? 'Y' : 'N', param ? "backdoor" : "none");
		refuse(vm, flags, "none", reason);
		return -EOPNOTSUPP;
	}
	vm->policy_flags = flags;
	vm->policy_confirmed = flags | POLICY_SET_DONE;
	vm->hypercall_exit = 0;
	vk_info("VM fd %d: VMware policy '%s' already in force through kvm.enable_vmware_backdoor=%c (dialect none)",
		vm->vm_fd, param ? "backdoor" : "none", param ? 'Y' : 'N');
	return 0;
}

static int set_rusin(struct vmwkvm_vm *vm, uint32_t flags, const struct vk_dialect_report *rep, uint32_t prev)
{
	const struct vk_feat *feats[3] = { &rep->backdoor, &rep->hypercall, &rep->nested };
	uint32_t changed = 0; /* bits whose cap was written with a new value */
	int r = 0;
	int i;
	for (i = 0; i < 3; i++) {
		uint32_t bit = policy_bits[i];
		if (feats[i]->state != VK_FEAT_PRESENT) {
			/* not requested (checked by the caller): nothing to switch off */
			continue;
		}
		uint64_t want = (flags & bit) ? 1 : 0;
		r = vk_enable_cap(vm->vm_fd, feats[i]->cap, want);
		if (r < 0) {
			if (i == 0 && r == -EINVAL) {
				vk_warn("VM fd %d: KVM_ENABLE_CAP(%u, %llu) refused with EINVAL although rusin-v2 accepts it "
					"before vCPUs: a vCPU exists that the library was not told of",
					vm->vm_fd, feats[i]->cap, (unsigned long long)want);
				r = -EBUSY;
			} else {
				vk_warn("VM fd %d: rusin-v2 KVM_ENABLE_CAP(%u, %llu) failed: %s", vm->vm_fd,
					feats[i]->cap, (unsigned long long)want, vmwkvm_strerror(r));
			}
			break;
		}
		if (((prev & bit) != 0) != (want != 0))
			changed |= bit;
	}
	if (r == 0) {
		vm->policy_flags = flags;
		vm->policy_confirmed = flags | POLICY_SET_DONE;
		vm->hypercall_exit = (flags & VMWKVM_POLICY_HYPERCALL) ? rep->hypercall_exit : 0;
		return 0;
	}
	/* undo, last step first, so the previous policy stays in force */
	uint32_t actual = prev;
	for (int j = i - 1; j >= 0; j--) {
		uint32_t bit = policy_bits[j];
		if (!(changed & bit))
			continue;
		uint64_t old = (prev & bit) ? 1 : 0;
		int u = vk_enable_cap(vm->vm_fd, feats[j]->cap, old);
		if (u < 0) {
			vk_err("VM fd %d: undoing KVM_ENABLE_CAP(%u) back to %llu failed: %s; that switch stays %s",
			       vm->vm_fd, feats[j]->cap, (unsigned long long)old, vmwkvm_strerror(u),
			       old ? "off" : "on");
			actual ^= bit;
		}
	}
	if (actual != prev) {
		vm->policy_flags = actual;
		vm->policy_confirmed = actual | POLICY_SET_DONE;
		vm->hypercall_exit = (actual & VMWKVM_POLICY_HYPERCALL) ? rep->hypercall_exit : 0;
	}
	return r;
}

static int set_single(struct vmwkvm_vm *vm, uint32_t flags, const struct vk_dialect_report *rep)
{
	uint32_t cap = rep->backdoor.cap;
	int r = vk_enable_cap(vm->vm_fd, cap, flags);
	if (r == -EINVAL) {
		vk_warn("VM fd %d: KVM_ENABLE_CAP(%u, 0x%x) refused with EINVAL although the mask is valid (0x%llx): "
			"a vCPU exists that the library was not told of",
			vm->vm_fd, cap, (unsigned)flags, (unsigned long long)rep->valid_mask);
		return -EBUSY;
	}
	if (r < 0) {
		vk_warn("VM fd %d: single-cap KVM_ENABLE_CAP(%u, 0x%x) failed: %s", vm->vm_fd, cap, (unsigned)flags,
			vmwkvm_strerror(r));
		return r; /* the kernel stores the mask only on success: nothing to undo */
	}
	vm->policy_flags = flags;
	vm->policy_confirmed = flags | POLICY_SET_DONE;
	vm->hypercall_exit = (flags & VMWKVM_POLICY_HYPERCALL) ? rep->hypercall_exit : 0;
	return 0;
}

int vmwkvm_vm_set_vmware_policy(vmwkvm_vm *vm, uint32_t flags)
{
	if (!vm)
		return -EINVAL;
	if (flags & ~(uint32_t)VMWKVM_POLICY_ALL) {
		vk_warn("VM fd %d: VMware policy: unknown flags 0x%x", vm->vm_fd,
			(unsigned)(flags & ~(uint32_t)VMWKVM_POLICY_ALL));
		return -EINVAL;
	}
	if ((flags & VMWKVM_POLICY_NESTED_BACKDOOR) && !(flags & VMWKVM_POLICY_BACKDOOR)) {
		vk_warn("VM fd %d: VMware policy: the nested backdoor needs the backdoor", vm->vm_fd);
		return -EINVAL;
	}
	pthread_mutex_lock(&vm->lock);
	int r;
	if (atomic_load(&vm->vcpu_count) > 0) {
		vk_warn("VM fd %d: VMware policy can only change before the first vCPU (%d exist)", vm->vm_fd,
			atomic_load(&vm->vcpu_count));
		r = -EBUSY;
		goto out;
	}
	if (vm->dialect == VMWKVM_DIALECT_NONE && vm->dialect_requested != VMWKVM_DIALECT_AUTO) {
		r = set_none(vm, flags, "none requested");
		goto out;
	}
	int asked = vm->dialect_requested == VMWKVM_DIALECT_AUTO ? VMWKVM_DIALECT_AUTO : vm->dialect;
	struct vk_dialect_report rep;
	r = vk_dialect_probe(vm->kvm_fd, &vm->numbers, asked, &rep);
	if (r < 0)
		goto out;
	if (rep.dialect == VMWKVM_DIALECT_NONE) {
		/* say why each requested switch is unavailable (auto: the reasons of both dialects) */
		char why[3 * VK_DIALECT_REASON_MAX + 64];
		size_t n = 0;
		why[0] = '\0';
		const struct vk_feat *fs[3] = { &rep.backdoor, &rep.hypercall, &rep.nested };
		for (int i = 0; i < 3 && n < sizeof(why); i++)
			if (flags & policy_bits[i])
				n += (size_t)snprintf(why + n, sizeof(why) - n, "%s%s: %s", n ? " | " : "",
						      i == 0 ? "backdoor" : i == 1 ? "hypercall" : "nested", fs[i]->reason);
		r = set_none(vm, flags, n ? why : rep.reason);
		goto out;
	}
	if (rep.dialect != vm->dialect) {
		char why[VK_DIALECT_REASON_MAX + 64];
		snprintf(why, sizeof(why), "the VM resolved to dialect %s but the scratch VM confirmed %s",
			 vmwkvm_dialect_name(vm->dialect), vmwkvm_dialect_name(rep.dialect));
		refuse(vm, flags, vmwkvm_dialect_name(vm->dialect), why);
		r = -EOPNOTSUPP;
		goto out;
	}
	const struct vk_feat *feats[3] = { &rep.backdoor, &rep.hypercall, &rep.nested };
	for (int i = 0; i < 3; i++) {
		if ((flags & policy_bits[i]) && feats[i]->state != VK_FEAT_PRESENT) {
			char why[VK_DIALECT_REASON_MAX + 32];
			snprintf(why, sizeof(why), "%s %s: %s", i == 0 ? "backdoor" : i == 1 ? "hypercall" : "nested",
				 vk_feat_state_name(feats[i]->state), feats[i]->reason);
			refuse(vm, flags, vmwkvm_dialect_name(rep.dialect), why);
			r = -EOPNOTSUPP;
			goto out;
		}
	}
	if (!rep.confirmed) {
		refuse(vm, flags, vmwkvm_dialect_name(rep.dialect), rep.reason);
		r = -EOPNOTSUPP;
		goto out;
	}
	int param = vk_vmware_backdoor_param();
	uint32_t prev = in_force_locked(vm, param < 0 ? 0 : param);
	if (rep.dialect == VMWKVM_DIALECT_RUSIN_V2)
		r = set_rusin(vm, flags, &rep, prev);
	else
		r = set_single(vm, flags, &rep);
	if (r == 0) {
		char f[64];
		vmwkvm_policy_flags_format(flags, f, sizeof(f));
		vk_info("VM fd %d: VMware policy '%s' in force (dialect %s%s)", vm->vm_fd, f,
			vmwkvm_dialect_name(rep.dialect),
			(flags & VMWKVM_POLICY_HYPERCALL) ? ", hypercall exit decoded" : "");
	}
out:
	pthread_mutex_unlock(&vm->lock);
	return r;
}

int vmwkvm_vm_get_vmware_policy(vmwkvm_vm *vm, struct vmwkvm_vmware_policy *out)
{
	if (!vm || !out || out->sz < sizeof(size_t))
		return -EINVAL;
	struct vmwkvm_vmware_policy p;
	memset(&p, 0, sizeof(p));
	p.sz = sizeof(p);
	int param = vk_vmware_backdoor_param();
	p.module_param = param >= 0 ? param : VMWKVM_PARAM_UNKNOWN;
	p.param_err = param < 0 ? param : 0;
	pthread_mutex_lock(&vm->lock);
	p.dialect = vm->dialect;
	bool done = vm->policy_confirmed & POLICY_SET_DONE;
	if (vm->dialect != VMWKVM_DIALECT_NONE && done) {
		p.flags = vm->policy_flags;
		p.confirmed = vm->policy_confirmed & VMWKVM_POLICY_ALL;
	} else {
		p.flags = default_flags(param);
		p.confirmed = param >= 0 ? p.flags : 0;
	}
	p.hypercall_exit = vm->hypercall_exit;
	p.set_called = done;
	pthread_mutex_unlock(&vm->lock);
	size_t sz = out->sz < sizeof(p) ? out->sz : sizeof(p);
	memcpy((char *)out + sizeof(size_t), (char *)&p + sizeof(size_t), sz - sizeof(size_t));
	return 0;
}
