/* Dialect confirmation by behaviour on a scratch VM. See dialect_probe.h. */
#include "core/dialect_probe.h"

#include "core/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *ename(int err)
{
	switch (err < 0 ? -err : err) {
	case 0: return "0";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EINTR: return "EINTR";
	case EIO: return "EIO";
	case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case ENODEV: return "ENODEV";
	case EINVAL: return "EINVAL";
	case EMFILE: return "EMFILE";
	case ENOTTY: return "ENOTTY";
	case ENOSPC: return "ENOSPC";
	case ENOSYS: return "ENOSYS";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	default: return "an unexpected errno";
	}
}

const char *vk_feat_state_name(int state)
{
	switch (state) {
	case VK_FEAT_ABSENT: return "absent";
	case VK_FEAT_PRESENT: return "present";
	case VK_FEAT_UNVERIFIED: return "unverified";
	default: return "invalid";
	}
}

static void VK_PRINTF(3, 4) feat_set(struct vk_feat *f, int state, const char *fmt, ...)
{
	f->state = state;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->reason, sizeof(f->reason), fmt, ap);
	va_end(ap);
}

static void note_err(struct vk_dialect_report *r, int err)
{
	if (!r->err && err < 0)
		r->err = err;
}

int vk_vmware_backdoor_param(void)
{
	char buf[16];
	int r = vk_read_file(VK_VMWARE_BACKDOOR_PARAM_PATH, buf, sizeof(buf));
	if (r < 0)
		return r;
	if (r >= 1 && (buf[0] == 'Y' || buf[0] == 'y' || buf[0] == '1'))
		return 1;
	if (r >= 1 && (buf[0] == 'N' || buf[0] == 'n' || buf[0] == '0'))
		return 0;
	return -EIO;
}

/* ------------------------------------------------------------------ scratch VM */

struct scratch {
	int kvm_fd;
	bool kvm_owned;
	int vm_fd;
	int vcpu_fd;
	int err;        /* why there is no scratch VM */
	char what[96];  /* which step failed */
};

static void scratch_open(struct scratch *s, int kvm_fd)
{
	s->kvm_fd = kvm_fd;
	s->kvm_owned = false;
	s->vm_fd = -1;
	s->vcpu_fd = -1;
	s->err = 0;
	s->what[0] = '\0';
	if (s->kvm_fd < 0) {
		int fd = vk_open("/dev/kvm", O_RDWR);
		if (fd < 0) {
			s->err = fd;
			snprintf(s->what, sizeof(s->what), "open(/dev/kvm)");
			return;
		}
		s->kvm_fd = fd;
		s->kvm_owned = true;
	}
	int vm = vk_ioctl(s->kvm_fd, KVM_CREATE_VM, (void *)0);
	if (vm < 0) {
		s->err = vm;
		snprintf(s->what, sizeof(s->what), "KVM_CREATE_VM (scratch VM)");
		return;
	}
	s->vm_fd = vm;
}

static int scratch_vcpu(struct scratch *s)
{
	if (s->vcpu_fd >= 0)
		return 0;
	int v = vk_ioctl(s->vm_fd, KVM_CREATE_VCPU, (void *)0);
	if (v < 0)
		return v;
	s->vcpu_fd = v;
	return 0;
}

static void scratch_close(struct scratch *s)
{
	if (s->vcpu_fd >= 0)
		vk_close(s->vcpu_fd);
	if (s->vm_fd >= 0)
		vk_close(s->vm_fd);
	if (s->kvm_owned && s->kvm_fd >= 0)
		vk_close(s->kvm_fd);
	s->vcpu_fd = s->vm_fd = -1;
	s->kvm_owned = false;
}

/* ------------------------------------------------------------------ per dialect */

static const char *const feat_names[3] = { "backdoor", "hypercall", "nested backdoor" };

static struct vk_feat *feat_at(struct vk_dialect_report *r, int i)
{
	return i == 0 ? &r->backdoor : i == 1 ? &r->hypercall : &r->nested;
}

static void report_init(struct vk_dialect_report *r, int requested, int dialect)
{
	memset(r, 0, sizeof(*r));
	r->requested = requested;
	r->dialect = dialect;
	for (int i = 0; i < 3; i++) {
		feat_at(r, i)->state = VK_FEAT_ABSENT;
		feat_at(r, i)->check_value = -1;
	}
}

/* Text appended to reasons when an explicitly requested number collides with mainline. */
static void collision_note(char *buf, size_t len, uint32_t cap)
{
	const char *owner = vmwkvm_mainline_cap_name(cap);
	if (owner)
		snprintf(buf, len, " (note: %u is %s upstream)", cap, owner);
	else
		buf[0] = '\0';
}

/*
 * Check the enable contract of one cap on the scratch VM: ENABLE_CAP(cap, bad) must fail
 * with EINVAL and ENABLE_CAP(cap, good) must succeed. Returns 1 if it held, 0 if the
 * kernel contradicted it (feature ABSENT), -1 if a check could not be made (UNVERIFIED).
 */
static int enable_contract(struct vk_dialect_report *r, struct vk_feat *f, const char *dname, int vm_fd,
			   uint32_t cap, uint64_t bad, uint64_t good, const char *note)
{
	int e = vk_enable_cap(vm_fd, cap, bad);
	if (e == 0) {
		feat_set(f, VK_FEAT_ABSENT,
			 "%s: KVM_ENABLE_CAP(%u, 0x%llx) accepted an invalid value: not the proposed cap%s", dname, cap,
			 (unsigned long long)bad, note);
		return 0;
	}
	if (e != -EINVAL) {
		note_err(r, e);
		feat_set(f, VK_FEAT_UNVERIFIED,
			 "%s: KVM_ENABLE_CAP(%u, 0x%llx) failed with %s instead of EINVAL; behaviour not confirmed%s",
			 dname, cap, (unsigned long long)bad, ename(e), note);
		return -1;
	}
	e = vk_enable_cap(vm_fd, cap, good);
	if (e == -EINVAL) {
		feat_set(f, VK_FEAT_ABSENT, "%s: KVM_ENABLE_CAP(%u, 0x%llx) before any vCPU refused with EINVAL%s",
			 dname, cap, (unsigned long long)good, note);
		return 0;
	}
	if (e < 0) {
		note_err(r, e);
		feat_set(f, VK_FEAT_UNVERIFIED, "%s: KVM_ENABLE_CAP(%u, 0x%llx) before any vCPU failed with %s%s", dname,
			 cap, (unsigned long long)good, ename(e), note);
		return -1;
	}
	return 1;
}

/* After the first vCPU, ENABLE_CAP(cap, good) must be refused with EINVAL. Same return convention. */
static int vcpu_rule(struct vk_dialect_report *r, struct vk_feat *f, const char *dname, struct scratch *s,
		     uint32_t cap, uint64_t good, const char *note)
{
	int e = scratch_vcpu(s);
	if (e < 0) {
		note_err(r, e);
		feat_set(f, VK_FEAT_UNVERIFIED,
			 "%s: KVM_CREATE_VCPU on the scratch VM failed with %s; the only-before-vCPUs rule of %u is "
			 "not confirmed%s",
			 dname, ename(e), cap, note);
		return -1;
	}
	e = vk_enable_cap(s->vm_fd, cap, good);
	if (e == 0) {
		feat_set(f, VK_FEAT_ABSENT,
			 "%s: KVM_ENABLE_CAP(%u, 0x%llx) accepted after a vCPU exists: not the proposed behaviour%s",
			 dname, cap, (unsigned long long)good, note);
		return 0;
	}
	if (e != -EINVAL) {
		note_err(r, e);
		feat_set(f, VK_FEAT_UNVERIFIED,
			 "%s: KVM_ENABLE_CAP(%u) after a vCPU failed with %s instead of EINVAL; not confirmed%s", dname,
			 cap, ename(e), note);
		return -1;
	}
	return 1;
}

static void probe_rusin(int kvm_fd, const struct vmwkvm_proposed_numbers *n, bool automode, int requested,
			struct vk_dialect_report *r)
{
	static const char dn[] = "rusin-v2";
	report_init(r, requested, VMWKVM_DIALECT_RUSIN_V2);
	r->hypercall_exit = n->rusin_exit_vmware;
	const uint32_t caps[3] = { n->rusin_cap_backdoor, n->rusin_cap_hypercall, n->rusin_cap_nested };
	bool cand[3] = { false, false, false };
	char note[3][80];
	for (int i = 0; i < 3; i++) {
		struct vk_feat *f = feat_at(r, i);
		f->cap = caps[i];
		note[i][0] = '\0';
		const char *owner = caps[i] ? vmwkvm_mainline_cap_name(caps[i]) : NULL;
		if (!caps[i])
			feat_set(f, VK_FEAT_ABSENT, "%s: no number assigned for the %s cap (VMWKVM_PROPOSED)", dn,
				 feat_names[i]);
		else if (automode && owner)
			feat_set(f, VK_FEAT_ABSENT, "%s: %u is %s upstream; not used in auto mode", dn, caps[i], owner);
		else {
			cand[i] = true;
			collision_note(note[i], sizeof(note[i]), caps[i]);
		}
	}
	if (cand[1] && !r->hypercall_exit) {
		cand[1] = false;
		feat_set(&r->hypercall, VK_FEAT_ABSENT, "%s: no exit reason assigned for the VMware hypercall exit", dn);
	} else if (cand[1] && automode && vmwkvm_mainline_exit_name(r->hypercall_exit)) {
		/* exit 40 is KVM_EXIT_TDX upstream: never decode it as VMware unless asked by name */
		cand[1] = false;
		feat_set(&r->hypercall, VK_FEAT_ABSENT, "%s: exit %u is %s upstream; not used in auto mode", dn,
			 r->hypercall_exit, vmwkvm_mainline_exit_name(r->hypercall_exit));
	}
	if (!cand[0]) {
		/* without the backdoor cap the dialect cannot be confirmed: touch nothing */
		for (int i = 1; i < 3; i++)
			if (cand[i])
				feat_set(feat_at(r, i), VK_FEAT_ABSENT,
					 "%s: dialect not confirmable: its backdoor cap is unusable (%s)", dn,
					 r->backdoor.reason);
		snprintf(r->reason, sizeof(r->reason), "%s", r->backdoor.reason);
		return;
	}
	struct scratch s;
	scratch_open(&s, kvm_fd);
	if (s.vm_fd < 0) {
		note_err(r, s.err);
		for (int i = 0; i < 3; i++)
			if (cand[i])
				feat_set(feat_at(r, i), VK_FEAT_UNVERIFIED, "%s: %s failed with %s; cap %u not examined",
					 dn, s.what, ename(s.err), caps[i]);
		snprintf(r->reason, sizeof(r->reason), "%s: no scratch VM (%s: %s)", dn, s.what, ename(s.err));
		scratch_close(&s);
		return;
	}
	/* 1. CHECK_EXTENSION on the scratch VM: the proposal answers 1 */
	for (int i = 0; i < 3; i++) {
		if (!cand[i])
			continue;
		struct vk_feat *f = feat_at(r, i);
		int v = vk_check_extension(s.vm_fd, caps[i]);
		f->check_value = v;
		if (v < 0) {
			note_err(r, v);
			feat_set(f, VK_FEAT_UNVERIFIED, "%s: KVM_CHECK_EXTENSION(%u) failed with %s%s", dn, caps[i],
				 ename(v), note[i]);
			cand[i] = false;
		} else if (v == 0) {
			feat_set(f, VK_FEAT_ABSENT, "%s: KVM_CHECK_EXTENSION(%u) = 0: not offered by this kernel%s", dn,
				 caps[i], note[i]);
			cand[i] = false;
		} else if (v != 1) {
			feat_set(f, VK_FEAT_ABSENT,
				 "%s: KVM_CHECK_EXTENSION(%u) = %d, the proposal answers 1: another feature%s", dn,
				 caps[i], v, note[i]);
			cand[i] = false;
		}
	}
	if (r->backdoor.check_value == 1)
		r->valid_mask = 1;
	/* 2. enable contract before any vCPU (backdoor, hypercall, nested) */
	int ok[3] = { 0, 0, 0 };
	for (int i = 0; i < 3; i++)
		if (cand[i])
			ok[i] = enable_contract(r, feat_at(r, i), dn, s.vm_fd, caps[i], 2, 1, note[i]);
	/* 3. only the backdoor cap is refused after the first vCPU */
	if (ok[0] == 1)
		ok[0] = vcpu_rule(r, &r->backdoor, dn, &s, caps[0], 1, note[0]);
	scratch_close(&s);
	r->confirmed = ok[0] == 1;
	if (r->confirmed)
		feat_set(&r->backdoor, VK_FEAT_PRESENT,
			 "%s: confirmed on a scratch VM: KVM_CHECK_EXTENSION(%u) = 1, ENABLE_CAP(%u, 2) EINVAL, "
			 "ENABLE_CAP(%u, 1) accepted, refused after the first vCPU%s",
			 dn, caps[0], caps[0], caps[0], note[0]);
	for (int i = 1; i < 3; i++) {
		if (ok[i] != 1)
			continue;
		if (r->confirmed)
			feat_set(feat_at(r, i), VK_FEAT_PRESENT,
				 "%s: KVM_CHECK_EXTENSION(%u) = 1, ENABLE_CAP(%u, 2) EINVAL, ENABLE_CAP(%u, 1) accepted; "
				 "dialect confirmed by its backdoor cap%s",
				 dn, caps[i], caps[i], caps[i], note[i]);
		else
			feat_set(feat_at(r, i), VK_FEAT_UNVERIFIED,
				 "%s: cap %u behaves as proposed, but the dialect is not confirmed (backdoor: %s)", dn,
				 caps[i], vk_feat_state_name(r->backdoor.state));
	}
	if (r->confirmed)
		snprintf(r->reason, sizeof(r->reason), "%s confirmed on a scratch VM (caps %u/%u/%u, exit %u)", dn,
			 caps[0], caps[1], caps[2], r->hypercall_exit);
	else
		snprintf(r->reason, sizeof(r->reason), "%s", r->backdoor.reason);
}

/* A bit outside mask (bit 63 first, as the least likely to be assigned), 0 if the mask is full. */
static uint64_t invalid_bit(uint64_t mask)
{
	for (int b = 63; b >= 0; b--)
		if (!(mask & (1ull << b)))
			return 1ull << b;
	return 0;
}

static void probe_single(int kvm_fd, const struct vmwkvm_proposed_numbers *n, bool automode, int requested,
			 struct vk_dialect_report *r)
{
	static const char dn[] = "single-cap";
	report_init(r, requested, VMWKVM_DIALECT_SINGLE_CAP);
	r->hypercall_exit = n->single_exit;
	uint32_t cap = n->single_cap;
	for (int i = 0; i < 3; i++)
		feat_at(r, i)->cap = cap;
	char note[80] = "";
	const char *owner = cap ? vmwkvm_mainline_cap_name(cap) : NULL;
	if (!cap || (automode && owner)) {
		for (int i = 0; i < 3; i++) {
			if (!cap)
				feat_set(feat_at(r, i), VK_FEAT_ABSENT,
					 "%s: no number assigned to KVM_CAP_X86_VMWARE (VMWKVM_PROPOSED single.cap)", dn);
			else
				feat_set(feat_at(r, i), VK_FEAT_ABSENT, "%s: %u is %s upstream; not used in auto mode", dn,
					 cap, owner);
		}
		snprintf(r->reason, sizeof(r->reason), "%s", r->backdoor.reason);
		return;
	}
	collision_note(note, sizeof(note), cap);
	struct scratch s;
	scratch_open(&s, kvm_fd);
	if (s.vm_fd < 0) {
		note_err(r, s.err);
		for (int i = 0; i < 3; i++)
			feat_set(feat_at(r, i), VK_FEAT_UNVERIFIED, "%s: %s failed with %s; cap %u not examined", dn, s.what,
				 ename(s.err), cap);
		snprintf(r->reason, sizeof(r->reason), "%s: no scratch VM (%s: %s)", dn, s.what, ename(s.err));
		scratch_close(&s);
		return;
	}
	int v = vk_check_extension(s.vm_fd, cap);
	for (int i = 0; i < 3; i++)
		feat_at(r, i)->check_value = v;
	int ok = 0;
	struct vk_feat tmp;
	memset(&tmp, 0, sizeof(tmp));
	if (v < 0) {
		note_err(r, v);
		feat_set(&tmp, VK_FEAT_UNVERIFIED, "%s: KVM_CHECK_EXTENSION(%u) failed with %s%s", dn, cap, ename(v), note);
		ok = -1;
	} else if (v == 0) {
		feat_set(&tmp, VK_FEAT_ABSENT, "%s: KVM_CHECK_EXTENSION(%u) = 0: not offered by this kernel%s", dn, cap,
			 note);
	} else {
		uint64_t mask = (uint64_t)(unsigned)v;
		r->valid_mask = mask;
		uint64_t good = mask & VMWKVM_SINGLE_CAP_ENABLE_BACKDOOR ? VMWKVM_SINGLE_CAP_ENABLE_BACKDOOR
									  : mask & (~mask + 1);
		uint64_t bad = invalid_bit(mask);
		if (!bad) {
			feat_set(&tmp, VK_FEAT_ABSENT, "%s: KVM_CHECK_EXTENSION(%u) = 0x%x has no invalid bit to test%s",
				 dn, cap, (unsigned)v, note);
		} else {
			ok = enable_contract(r, &tmp, dn, s.vm_fd, cap, bad, good, note);
			if (ok == 1)
				ok = vcpu_rule(r, &tmp, dn, &s, cap, good, note);
		}
	}
	scratch_close(&s);
	r->confirmed = ok == 1;
	static const uint64_t bits[3] = { VMWKVM_SINGLE_CAP_ENABLE_BACKDOOR, VMWKVM_SINGLE_CAP_ENABLE_HYPERCALL,
					  VMWKVM_SINGLE_CAP_ENABLE_NESTED_BACKDOOR };
	for (int i = 0; i < 3; i++) {
		struct vk_feat *f = feat_at(r, i);
		if (!r->confirmed) {
			f->state = tmp.state;
			memcpy(f->reason, tmp.reason, sizeof(f->reason));
		} else if (!(r->valid_mask & bits[i])) {
			feat_set(f, VK_FEAT_ABSENT, "%s: bit 0x%llx (%s) not in the valid mask 0x%llx%s", dn,
				 (unsigned long long)bits[i], feat_names[i], (unsigned long long)r->valid_mask, note);
		} else if (i == 1 && !r->hypercall_exit) {
			feat_set(f, VK_FEAT_ABSENT, "%s: no exit reason assigned for the VMware hypercall exit "
						    "(VMWKVM_PROPOSED single.exit)", dn);
		} else if (i == 1 && automode && vmwkvm_mainline_exit_name(r->hypercall_exit)) {
			feat_set(f, VK_FEAT_ABSENT, "%s: exit %u is %s upstream; not used in auto mode", dn,
				 r->hypercall_exit, vmwkvm_mainline_exit_name(r->hypercall_exit));
		} else {
			feat_set(f, VK_FEAT_PRESENT,
				 "%s: confirmed on a scratch VM: KVM_CHECK_EXTENSION(%u) = 0x%llx, invalid bit rejected, "
				 "enable accepted, refused after the first vCPU%s",
				 dn, cap, (unsigned long long)r->valid_mask, note);
		}
	}
	if (r->confirmed)
		snprintf(r->reason, sizeof(r->reason), "%s confirmed on a scratch VM (cap %u, mask 0x%llx, exit %u)", dn,
			 cap, (unsigned long long)r->valid_mask, r->hypercall_exit);
	else
		snprintf(r->reason, sizeof(r->reason), "%s", tmp.reason);
}

static void probe_none(int requested, struct vk_dialect_report *r)
{
	report_init(r, requested, VMWKVM_DIALECT_NONE);
	for (int i = 0; i < 3; i++)
		feat_set(feat_at(r, i), VK_FEAT_ABSENT,
			 "none: mainline KVM has no per-VM VMware switch; only the global kvm.enable_vmware_backdoor");
	snprintf(r->reason, sizeof(r->reason), "none: mainline; no per-VM VMware uAPI");
}

int vk_dialect_probe(int kvm_fd, const struct vmwkvm_proposed_numbers *numbers, int dialect,
		     struct vk_dialect_report *out)
{
	if (!numbers || !out)
		return -EINVAL;
	switch (dialect) {
	case VMWKVM_DIALECT_NONE:
		probe_none(dialect, out);
		return 0;
	case VMWKVM_DIALECT_RUSIN_V2:
		probe_rusin(kvm_fd, numbers, false, dialect, out);
		return 0;
	case VMWKVM_DIALECT_SINGLE_CAP:
		probe_single(kvm_fd, numbers, false, dialect, out);
		return 0;
	case VMWKVM_DIALECT_AUTO:
		break;
	default:
		return -EINVAL;
	}
	struct vk_dialect_report rs, rr;
	probe_single(kvm_fd, numbers, true, dialect, &rs);
	if (rs.confirmed) {
		*out = rs;
		return 0;
	}
	probe_rusin(kvm_fd, numbers, true, dialect, &rr);
	if (rr.confirmed) {
		*out = rr;
		return 0;
	}
	report_init(out, dialect, VMWKVM_DIALECT_NONE);
	out->err = rs.err ? rs.err : rr.err;
	for (int i = 0; i < 3; i++) {
		struct vk_feat *f = feat_at(out, i);
		const struct vk_feat *a = feat_at(&rs, i), *b = feat_at(&rr, i);
		f->state = (a->state == VK_FEAT_UNVERIFIED || b->state == VK_FEAT_UNVERIFIED) ? VK_FEAT_UNVERIFIED
											       : VK_FEAT_ABSENT;
		snprintf(f->reason, sizeof(f->reason), "%.150s; %.150s", a->reason, b->reason);
	}
	snprintf(out->reason, sizeof(out->reason), "auto: no proposed dialect confirmed (%.130s; %.130s)", rs.reason,
		 rr.reason);
	return 0;
}
