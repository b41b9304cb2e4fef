/*
 * Dialect confirmation by behaviour (internal; owner: policy area, issue 5).
 *
 * FOR CALLERS (probe.c, policy.c, the vmwkvm-probe tool through the probe API):
 *
 *     struct vk_dialect_report r;
 *     int e = vk_dialect_probe(kvm_fd, &numbers, dialect, &r);
 *
 *   kvm_fd   the /dev/kvm fd to create the scratch VM from, or -1 to let the function open
 *            (and close again) /dev/kvm when it needs it
 *   numbers  the proposed numbers to examine (a VM's vm->numbers, or vk_proposed_snapshot())
 *   dialect  the requested dialect: VMWKVM_DIALECT_AUTO, _NONE, _RUSIN_V2 or _SINGLE_CAP
 *   returns  0 with @p r filled (always, whatever the kernel answered), or -EINVAL for a
 *            NULL pointer / unknown dialect. Never fails because of the kernel: ioctl
 *            failures become VK_FEAT_UNVERIFIED with the ioctl and errno in the reason.
 *
 * For each feature (backdoor, hypercall, nested backdoor) the report says absent, present
 * or present-but-unverified, with a reason string. KVM_CHECK_EXTENSION is never trusted
 * alone: a feature is PRESENT only when its dialect's behaviour was confirmed on a scratch
 * VM created from @p kvm_fd (and closed again; the caller's VM is never touched):
 *   - KVM_CHECK_EXTENSION on the scratch VM answers what the proposal says
 *     (rusin-v2: 1 for each cap; single-cap: a mask containing the feature's bit);
 *   - KVM_ENABLE_CAP with an invalid args[0] (rusin-v2: 2; single-cap: a bit outside the
 *     mask) is rejected with EINVAL;
 *   - KVM_ENABLE_CAP with a valid value before any vCPU succeeds;
 *   - after KVM_CREATE_VCPU, the vCPU-guarded enable (rusin-v2 BACKDOOR, the single cap)
 *     is refused with EINVAL.
 * The dialect counts as confirmed when its vCPU-guarded cap passed all four checks
 * (rusin-v2 HYPERCALL/NESTED have no vCPU rule in v2, so they are PRESENT only when
 * their own enable contract holds AND the dialect is confirmed). ABSENT means the kernel
 * said no or contradicted the proposal (the reason says which answer); UNVERIFIED means
 * the kernel answered the capability but a check could not be made (an ioctl failed with
 * another errno, no scratch VM, no vCPU).
 *
 * Safety rule: in auto mode a number that vmwkvm_mainline_cap_name() knows is never
 * touched at all (no CHECK_EXTENSION, no ENABLE_CAP); the feature is ABSENT with a reason
 * such as "rusin-v2: 240 is KVM_CAP_ARM_EL2 upstream; not used in auto mode". When a
 * dialect is requested explicitly, colliding numbers are examined by behaviour (the
 * caller asked for them), and the reason notes the collision.
 *
 * Auto mode examines single-cap, then rusin-v2, and reports the first confirmed one
 * (report.dialect); if none is confirmed, report.dialect is VMWKVM_DIALECT_NONE and each
 * feature's reason joins the reasons of both dialects.
 *
 * Thread-safety: no shared state; every kernel access goes through the sys layer.
 */
#ifndef VMWKVM_LIB_DIALECT_PROBE_H
#define VMWKVM_LIB_DIALECT_PROBE_H

#include <stdbool.h>
#include <stdint.h>

#include <vmwkvm/dialect.h>

/* Feature state. */
enum vk_feat_state {
	VK_FEAT_ABSENT = 0,     /* the kernel cannot (or the number is unusable) */
	VK_FEAT_PRESENT = 1,    /* confirmed by behaviour on a scratch VM */
	VK_FEAT_UNVERIFIED = 2, /* the kernel answers the cap, but a behaviour check could not be made */
};

#define VK_DIALECT_REASON_MAX 320

struct vk_feat {
	int state;          /* enum vk_feat_state */
	uint32_t cap;       /* the capability examined (0: none) */
	long check_value;   /* KVM_CHECK_EXTENSION answer on the scratch VM; -1 if not asked, <-1 = -errno */
	char reason[VK_DIALECT_REASON_MAX];
};

struct vk_dialect_report {
	int requested;           /* as passed (may be VMWKVM_DIALECT_AUTO) */
	int dialect;             /* the dialect reported (never AUTO); NONE if auto confirmed nothing */
	bool confirmed;          /* the dialect's behaviour fingerprint held on a scratch VM */
	uint64_t valid_mask;     /* single-cap: CHECK_EXTENSION value; rusin-v2: 1 if answered */
	uint32_t hypercall_exit; /* exit reason of the dialect's VMware hypercall exit (0: none) */
	int err;                 /* first unexpected -errno met while probing (0: none) */
	struct vk_feat backdoor;
	struct vk_feat hypercall;
	struct vk_feat nested;
	char reason[VK_DIALECT_REASON_MAX]; /* one-line summary */
};

int vk_dialect_probe(int kvm_fd, const struct vmwkvm_proposed_numbers *numbers, int dialect,
		     struct vk_dialect_report *out);

/* Name of a feature state: "absent", "present", "unverified". */
const char *vk_feat_state_name(int state);

/* The global kvm.enable_vmware_backdoor module parameter through the sys layer
 * (vk_read_file): 1 for Y, 0 for N, -ENOENT when the file is absent (KVM not loaded or
 * too old), another -errno when unreadable, -EIO when the content is neither Y nor N. */
int vk_vmware_backdoor_param(void);

#define VK_VMWARE_BACKDOOR_PARAM_PATH "/sys/module/kvm/parameters/enable_vmware_backdoor"

#endif
