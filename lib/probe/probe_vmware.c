/* Probe items of the vmware and nested groups: module parameter, per-dialect policy,
 * active dialect, per-VM state, nested backdoor, origin reporting. */
#include "probe/probe_vmware.h"

#include "core/dialect_probe.h"
#include "probe/items.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Result of evaluating one dialect on this kernel. */
struct dialect_eval {
	uint32_t state;   /* PRESENT: usable (confirmed); ABSENT: refused (reason); UNKNOWN */
	uint32_t allow;   /* VMWKVM_PROBE_ALLOW_* the dialect would let a VMM turn on */
	bool confirmed;   /* the dialect itself is usable here (verified) */
	uint32_t hypercall_exit;
	int err;
	char reason[VK_DIALECT_REASON_MAX];
	uint32_t nested_state;
	char nested_reason[VK_DIALECT_REASON_MAX];
};

_Static_assert(VMWKVM_PROBE_ALLOW_BACKDOOR == VMWKVM_POLICY_BACKDOOR && VMWKVM_PROBE_ALLOW_HYPERCALL == VMWKVM_POLICY_HYPERCALL &&
		       VMWKVM_PROBE_ALLOW_NESTED == VMWKVM_POLICY_NESTED_BACKDOOR &&
		       VMWKVM_PROBE_ALLOW_BACKDOOR == VMWKVM_SINGLE_CAP_ENABLE_BACKDOOR &&
		       VMWKVM_PROBE_ALLOW_HYPERCALL == VMWKVM_SINGLE_CAP_ENABLE_HYPERCALL &&
		       VMWKVM_PROBE_ALLOW_NESTED == VMWKVM_SINGLE_CAP_ENABLE_NESTED_BACKDOOR,
	       "probe policy bits are the proposal's bits");

static uint32_t feat_probe_state(int s)
{
	return s == VK_FEAT_PRESENT ? VMWKVM_PROBE_PRESENT : s == VK_FEAT_ABSENT ? VMWKVM_PROBE_ABSENT
										 : VMWKVM_PROBE_UNKNOWN;
}

static void eval_none(const struct vk_probe_ctx *c, struct dialect_eval *d, int param, const char *pwhy)
{
	d->nested_state = VMWKVM_PROBE_ABSENT;
	snprintf(d->nested_reason, sizeof(d->nested_reason),
		 "mainline re-injects a #GP taken in L2 into L1: L0 never answers backdoor calls made in L2");
	if (!c->api_ok) {
		d->state = VMWKVM_PROBE_UNKNOWN;
		snprintf(d->reason, sizeof(d->reason), "no usable KVM to apply it to: %s",
			 c->kvm_unusable[0] ? c->kvm_unusable : "KVM_GET_API_VERSION did not answer 12");
		return;
	}
	if (param < 0) {
		d->state = VMWKVM_PROBE_UNKNOWN;
		snprintf(d->reason, sizeof(d->reason),
			 "mainline: no per-VM switch; only the global kvm.enable_vmware_backdoor, which is unknown: %.150s",
			 pwhy);
		return;
	}
	d->state = VMWKVM_PROBE_PRESENT;
	d->confirmed = true;
	d->allow = param == 1 ? VMWKVM_PROBE_ALLOW_BACKDOOR : 0;
	snprintf(d->reason, sizeof(d->reason),
		 "mainline: no per-VM switch; kvm.enable_vmware_backdoor=%c (read-only) gives every VM %s; "
		 "hypercalls never reach userspace",
		 param == 1 ? 'Y' : 'N', param == 1 ? "the backdoor" : "no backdoor");
}

/* A proposed dialect through the dialect confirmation (lib/dialect_probe.h). When the
 * dialect was not requested explicitly, numbers that mainline gave to another feature are
 * never touched (as in auto mode): they are withheld from the check and reported as such. */
static void eval_proposed(const struct vk_probe_ctx *c, int dialect, struct dialect_eval *d)
{
	const char *dn = vmwkvm_dialect_name(dialect);
	bool explicit_req = c->requested == dialect;
	struct vmwkvm_proposed_numbers n = c->numbers;
	uint32_t *nums[3];
	if (dialect == VMWKVM_DIALECT_RUSIN_V2) {
		nums[0] = &n.rusin_cap_backdoor;
		nums[1] = &n.rusin_cap_hypercall;
		nums[2] = &n.rusin_cap_nested;
	} else {
		nums[0] = nums[1] = nums[2] = &n.single_cap;
	}
	uint32_t withheld[3] = { 0, 0, 0 };
	if (!explicit_req)
		for (int i = 0; i < 3; i++)
			if (*nums[i] && vmwkvm_mainline_cap_name(*nums[i])) {
				withheld[i] = *nums[i];
				*nums[i] = 0;
			}

	struct vk_dialect_report r;
	if (c->flags & VMWKVM_PROBE_F_NO_SCRATCH_VM) {
		d->state = VMWKVM_PROBE_UNKNOWN;
		d->nested_state = VMWKVM_PROBE_UNKNOWN;
		if (withheld[0]) {
			d->state = d->nested_state = VMWKVM_PROBE_ABSENT;
			snprintf(d->reason, sizeof(d->reason), "%s: %u is %s upstream; not used unless %s is requested", dn,
				 withheld[0], vmwkvm_mainline_cap_name(withheld[0]), dn);
		} else {
			snprintf(d->reason, sizeof(d->reason),
				 "%s: not confirmed: scratch VMs were disabled (VMWKVM_PROBE_F_NO_SCRATCH_VM)", dn);
		}
		snprintf(d->nested_reason, sizeof(d->nested_reason), "%s", d->reason);
		return;
	}
	int e = vk_dialect_probe(c->kvm_fd, &n, dialect, &r);
	if (e < 0) {
		d->state = d->nested_state = VMWKVM_PROBE_UNKNOWN;
		d->err = e;
		snprintf(d->reason, sizeof(d->reason), "%s: dialect check failed: %s", dn, vmwkvm_errno_name(e));
		snprintf(d->nested_reason, sizeof(d->nested_reason), "%s", d->reason);
		return;
	}
	struct vk_feat *f[3] = { &r.backdoor, &r.hypercall, &r.nested };
	for (int i = 0; i < 3; i++)
		if (withheld[i])
			snprintf(f[i]->reason, sizeof(f[i]->reason), "%s: %u is %s upstream; not used unless %s is requested",
				 dn, withheld[i], vmwkvm_mainline_cap_name(withheld[i]), dn);
	d->err = r.err;
	d->hypercall_exit = r.hypercall_exit;
	static const uint32_t bits[3] = { VMWKVM_PROBE_ALLOW_BACKDOOR, VMWKVM_PROBE_ALLOW_HYPERCALL,
					  VMWKVM_PROBE_ALLOW_NESTED };
	bool any_unverified = false;
	for (int i = 0; i < 3; i++) {
		if (f[i]->state == VK_FEAT_PRESENT)
			d->allow |= bits[i];
		if (f[i]->state == VK_FEAT_UNVERIFIED)
			any_unverified = true;
	}
	if (r.confirmed) {
		/* usable; what it allows is fully known only when no feature is unverified */
		d->confirmed = true;
		d->state = any_unverified ? VMWKVM_PROBE_UNKNOWN : VMWKVM_PROBE_PRESENT;
		/* name a feature the dialect does not give here: an unverified one first */
		const struct vk_feat *odd = NULL;
		for (int i = 0; i < 3 && !odd; i++)
			if (f[i]->state == VK_FEAT_UNVERIFIED)
				odd = f[i];
		for (int i = 0; i < 3 && !odd; i++)
			if (f[i]->state != VK_FEAT_PRESENT)
				odd = f[i];
		if (odd)
			snprintf(d->reason, sizeof(d->reason), "%.120s; but %.190s", r.reason, odd->reason);
		else
			snprintf(d->reason, sizeof(d->reason), "%s", r.reason);
	} else {
		d->state = any_unverified ? VMWKVM_PROBE_UNKNOWN : VMWKVM_PROBE_ABSENT;
		/* the backdoor feature carries the dialect's deciding reason */
		snprintf(d->reason, sizeof(d->reason), "%s", withheld[0] ? f[0]->reason : r.reason);
	}
	d->nested_state = feat_probe_state(r.nested.state);
	snprintf(d->nested_reason, sizeof(d->nested_reason), "%s", r.nested.reason);
}

static const struct {
	int dialect;
	uint32_t policy_id;
	uint32_t nested_id;
	const char *key;
} dialect_items[] = {
	{ VMWKVM_DIALECT_NONE, VMWKVM_PROBE_VMWARE_POLICY_NONE, VMWKVM_PROBE_NESTED_POLICY_NONE, "policy_none" },
	{ VMWKVM_DIALECT_RUSIN_V2, VMWKVM_PROBE_VMWARE_POLICY_RUSIN_V2, VMWKVM_PROBE_NESTED_POLICY_RUSIN_V2,
	  "policy_rusin_v2" },
	{ VMWKVM_DIALECT_SINGLE_CAP, VMWKVM_PROBE_VMWARE_POLICY_SINGLE_CAP, VMWKVM_PROBE_NESTED_POLICY_SINGLE_CAP,
	  "policy_single_cap" },
};

#define VM_ADD(p, id, group, key, state, hv, val, num, err, ...) \
	vk_probe_add((p), (id), (group), VMWKVM_PROBE_SCOPE_VM, (key), (state), (hv), (val), (num), (err), __VA_ARGS__)

void vk_probe_vmware(struct vmwkvm_probe *p, struct vk_probe_ctx *c)
{
	/* the global module parameter */
	char pwhy[160];
	int param = vk_vmware_backdoor_param();
	if (param < 0) {
		char es[80];
		vk_probe_errstr(es, sizeof(es), param);
		if (param == -EIO)
			snprintf(pwhy, sizeof(pwhy), "%s holds neither Y nor N", VK_VMWARE_BACKDOOR_PARAM_PATH);
		else
			snprintf(pwhy, sizeof(pwhy), "reading %s failed: %s", VK_VMWARE_BACKDOOR_PARAM_PATH, es);
		vk_probe_add(p, VMWKVM_PROBE_VMWARE_BACKDOOR_PARAM, VMWKVM_PROBE_GROUP_VMWARE, VMWKVM_PROBE_SCOPE_HOST,
			     "backdoor_param", VMWKVM_PROBE_UNKNOWN, false, 0, 0, param, "%s", pwhy);
	} else {
		pwhy[0] = '\0';
		vk_probe_add(p, VMWKVM_PROBE_VMWARE_BACKDOOR_PARAM, VMWKVM_PROBE_GROUP_VMWARE, VMWKVM_PROBE_SCOPE_HOST,
			     "backdoor_param", param ? VMWKVM_PROBE_PRESENT : VMWKVM_PROBE_ABSENT, true, param, 0, 0,
			     "kvm.enable_vmware_backdoor = %c (global, read-only at run time)", param ? 'Y' : 'N');
	}

	/* each dialect: what it would allow on this kernel */
	struct dialect_eval ev[3];
	memset(ev, 0, sizeof(ev));
	eval_none(c, &ev[0], param, pwhy);
	eval_proposed(c, VMWKVM_DIALECT_RUSIN_V2, &ev[1]);
	eval_proposed(c, VMWKVM_DIALECT_SINGLE_CAP, &ev[2]);
	for (size_t i = 0; i < 3; i++) {
		VM_ADD(p, dialect_items[i].policy_id, VMWKVM_PROBE_GROUP_VMWARE, dialect_items[i].key, ev[i].state,
		       ev[i].state == VMWKVM_PROBE_PRESENT, ev[i].allow, 0, ev[i].err, "%s", ev[i].reason);
		VM_ADD(p, dialect_items[i].nested_id, VMWKVM_PROBE_GROUP_NESTED, dialect_items[i].key,
		       ev[i].nested_state, ev[i].nested_state != VMWKVM_PROBE_UNKNOWN,
		       ev[i].nested_state == VMWKVM_PROBE_PRESENT, 0, 0, "%s", ev[i].nested_reason);
	}

	/* the active dialect: the handle's, the requested one, or (auto) the first confirmed */
	int active;
	uint32_t astate;
	char awhy[VK_DIALECT_REASON_MAX + 64];
	if (c->handle)
		active = c->handle->dialect;
	else if (c->requested != VMWKVM_DIALECT_AUTO)
		active = c->requested;
	else if (ev[2].confirmed)
		active = VMWKVM_DIALECT_SINGLE_CAP;
	else if (ev[1].confirmed)
		active = VMWKVM_DIALECT_RUSIN_V2;
	else
		active = VMWKVM_DIALECT_NONE;
	const struct dialect_eval *a = &ev[active == VMWKVM_DIALECT_SINGLE_CAP ? 2 : active == VMWKVM_DIALECT_RUSIN_V2 ? 1 : 0];
	astate = a->confirmed ? VMWKVM_PROBE_PRESENT : a->state == VMWKVM_PROBE_PRESENT ? VMWKVM_PROBE_UNKNOWN : a->state;
	snprintf(awhy, sizeof(awhy), "%.300s", a->reason);
	if (active == VMWKVM_DIALECT_NONE && c->requested == VMWKVM_DIALECT_AUTO && !c->handle &&
	    (ev[1].state == VMWKVM_PROBE_UNKNOWN || ev[2].state == VMWKVM_PROBE_UNKNOWN)) {
		/* auto fell back to none, but a proposed dialect could not be checked */
		const struct dialect_eval *u = ev[2].state == VMWKVM_PROBE_UNKNOWN ? &ev[2] : &ev[1];
		astate = VMWKVM_PROBE_UNKNOWN;
		snprintf(awhy, sizeof(awhy), "auto fell back to none, but a proposed dialect could not be checked: %.200s",
			 u->reason);
	}
	VM_ADD(p, VMWKVM_PROBE_VMWARE_DIALECT, VMWKVM_PROBE_GROUP_VMWARE, "dialect", astate, true, active, 0, a->err,
	       "%s (requested %s), %s: %.220s", vmwkvm_dialect_name(active), vmwkvm_dialect_name(c->requested),
	       astate == VMWKVM_PROBE_PRESENT ? "verified" : "not verified", awhy);

	/* the VM's backdoor and hypercall state under the active dialect */
	const char *an = vmwkvm_dialect_name(active);
	struct vmwkvm_vmware_policy pol;
	memset(&pol, 0, sizeof(pol));
	pol.sz = sizeof(pol);
	if (c->handle && active != VMWKVM_DIALECT_NONE &&
	    vmwkvm_vm_get_vmware_policy((vmwkvm_vm *)(uintptr_t)c->handle, &pol) == 0) {
		bool bd = pol.flags & VMWKVM_POLICY_BACKDOOR, hc = pol.flags & VMWKVM_POLICY_HYPERCALL;
		VM_ADD(p, VMWKVM_PROBE_VMWARE_BACKDOOR, VMWKVM_PROBE_GROUP_VMWARE, "backdoor",
		       bd ? VMWKVM_PROBE_PRESENT : VMWKVM_PROBE_ABSENT, true, bd, 0, 0,
		       "%s: the VM's policy has the backdoor %s%s", an, bd ? "on" : "off",
		       bd && (pol.confirmed & VMWKVM_POLICY_BACKDOOR) ? " (confirmed by the kernel)" : "");
		VM_ADD(p, VMWKVM_PROBE_VMWARE_HYPERCALL, VMWKVM_PROBE_GROUP_VMWARE, "hypercall",
		       hc ? VMWKVM_PROBE_PRESENT : VMWKVM_PROBE_ABSENT, true, hc, 0, 0,
		       "%s: the VM's policy %s hypercalls%s", an, hc ? "forwards" : "does not forward",
		       hc && pol.hypercall_exit ? " (decoded from its exit)" : "");
	} else if (active != VMWKVM_DIALECT_NONE && c->vm_fd < 0) {
		VM_ADD(p, VMWKVM_PROBE_VMWARE_BACKDOOR, VMWKVM_PROBE_GROUP_VMWARE, "backdoor", VMWKVM_PROBE_UNKNOWN, false, 0,
		       0, 0, "%s: %s", an, c->vm_unusable);
		VM_ADD(p, VMWKVM_PROBE_VMWARE_HYPERCALL, VMWKVM_PROBE_GROUP_VMWARE, "hypercall", VMWKVM_PROBE_UNKNOWN, false,
		       0, 0, 0, "%s: %s", an, c->vm_unusable);
	} else if (active == VMWKVM_DIALECT_NONE || c->vm_fd_scratch) {
		/* mainline, or a fresh VM under a proposed dialect: the backdoor follows the module
		 * parameter, hypercalls are off */
		if (param < 0)
			VM_ADD(p, VMWKVM_PROBE_VMWARE_BACKDOOR, VMWKVM_PROBE_GROUP_VMWARE, "backdoor", VMWKVM_PROBE_UNKNOWN,
			       false, 0, 0, param, "%s: a VM's backdoor follows kvm.enable_vmware_backdoor, unknown: %.150s", an,
			       pwhy);
		else
			VM_ADD(p, VMWKVM_PROBE_VMWARE_BACKDOOR, VMWKVM_PROBE_GROUP_VMWARE, "backdoor",
			       param ? VMWKVM_PROBE_PRESENT : VMWKVM_PROBE_ABSENT, true, param, 0, 0,
			       "%s: %s follows kvm.enable_vmware_backdoor = %c", an,
			       active == VMWKVM_DIALECT_NONE ? "every VM" : "a new VM", param ? 'Y' : 'N');
		if (active == VMWKVM_DIALECT_NONE)
			VM_ADD(p, VMWKVM_PROBE_VMWARE_HYPERCALL, VMWKVM_PROBE_GROUP_VMWARE, "hypercall", VMWKVM_PROBE_ABSENT,
			       true, 0, 0, 0,
			       "none: a VMCALL/VMMCALL with the VMware magic gets -1 or -1000 in RAX from KVM and never "
			       "exits to userspace");
		else
			VM_ADD(p, VMWKVM_PROBE_VMWARE_HYPERCALL, VMWKVM_PROBE_GROUP_VMWARE, "hypercall", VMWKVM_PROBE_ABSENT,
			       true, 0, 0, 0, "%s: off in a new VM until the VMM enables it%s", an,
			       (a->allow & VMWKVM_PROBE_ALLOW_HYPERCALL) ? " (the dialect allows it)" : "");
	} else {
		VM_ADD(p, VMWKVM_PROBE_VMWARE_BACKDOOR, VMWKVM_PROBE_GROUP_VMWARE, "backdoor", VMWKVM_PROBE_UNKNOWN, false, 0,
		       0, 0, "%s: the per-VM state cannot be read back from a bare VM fd (pass a library VM handle)", an);
		VM_ADD(p, VMWKVM_PROBE_VMWARE_HYPERCALL, VMWKVM_PROBE_GROUP_VMWARE, "hypercall", VMWKVM_PROBE_UNKNOWN, false,
		       0, 0, 0, "%s: the per-VM state cannot be read back from a bare VM fd (pass a library VM handle)", an);
	}

	/* nested */
	VM_ADD(p, VMWKVM_PROBE_NESTED_BACKDOOR, VMWKVM_PROBE_GROUP_NESTED, "backdoor_l0", a->nested_state,
	       a->nested_state != VMWKVM_PROBE_UNKNOWN, a->nested_state == VMWKVM_PROBE_PRESENT, 0, 0,
	       "under the active dialect %s: %.200s", an, a->nested_reason);
	const struct vmwkvm_probe_item *gm = vk_probe_get(p, VMWKVM_PROBE_CAP_X86_GUEST_MODE, VMWKVM_PROBE_SCOPE_VM);
	if (!gm || gm->state == VMWKVM_PROBE_UNKNOWN)
		gm = vk_probe_get(p, VMWKVM_PROBE_CAP_X86_GUEST_MODE, VMWKVM_PROBE_SCOPE_SYSTEM);
	if (!gm || gm->state == VMWKVM_PROBE_UNKNOWN)
		VM_ADD(p, VMWKVM_PROBE_NESTED_ORIGIN, VMWKVM_PROBE_GROUP_NESTED, "origin", VMWKVM_PROBE_UNKNOWN, false, 0,
		       VMWKVM_UAPI_CAP_X86_GUEST_MODE, gm ? gm->err : 0, "KVM_CAP_X86_GUEST_MODE unknown: %s",
		       gm ? gm->reason : "not asked");
	else
		VM_ADD(p, VMWKVM_PROBE_NESTED_ORIGIN, VMWKVM_PROBE_GROUP_NESTED, "origin", gm->state, true, gm->value,
		       VMWKVM_UAPI_CAP_X86_GUEST_MODE, 0, "%s",
		       gm->state == VMWKVM_PROBE_PRESENT
			       ? "KVM_CAP_X86_GUEST_MODE present: each exit says whether L1 or L2 was running"
			       : "KVM_CAP_X86_GUEST_MODE absent: the origin of a call (L1 or L2) is reported as unknown");

	/* nested virtualization in the vendor module */
	static const char *const nested_params[] = { "/sys/module/kvm_intel/parameters/nested",
						     "/sys/module/kvm_amd/parameters/nested" };
	char buf[16];
	int last = -ENOENT;
	bool done = false;
	for (size_t i = 0; i < 2 && !done; i++) {
		int r = vk_read_file(nested_params[i], buf, sizeof(buf));
		if (r < 0) {
			if (r != -ENOENT)
				last = r;
			continue;
		}
		bool on = buf[0] == 'Y' || buf[0] == 'y' || buf[0] == '1';
		vk_probe_add(p, VMWKVM_PROBE_NESTED_VIRT, VMWKVM_PROBE_GROUP_NESTED, VMWKVM_PROBE_SCOPE_HOST, "virt",
			     on ? VMWKVM_PROBE_PRESENT : VMWKVM_PROBE_ABSENT, true, on, 0, 0, "%s = %c", nested_params[i],
			     on ? 'Y' : 'N');
		done = true;
	}
	if (!done) {
		char es[80];
		vk_probe_errstr(es, sizeof(es), last);
		vk_probe_add(p, VMWKVM_PROBE_NESTED_VIRT, VMWKVM_PROBE_GROUP_NESTED, VMWKVM_PROBE_SCOPE_HOST, "virt",
			     VMWKVM_PROBE_UNKNOWN, false, 0, 0, last,
			     "neither kvm_intel nor kvm_amd reports a nested parameter (%s): this KVM backend does not say",
			     es);
	}
}
