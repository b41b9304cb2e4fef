/*
 * walk_probe.c: ask the running kernel what it offers VMware guests, the way a VMM does
 * before it creates its VMs. The documentation shows the part marked probe.
 *
 * Works with or without /dev/kvm: a missing /dev/kvm is an answer ("unknown" items with
 * the reason), not an error. Exit status 0 when the probe is consistent (every item has a
 * valid state and a reason), 1 otherwise.
 */
#include <stdio.h>

#include <vmwkvm/vmwkvm.h>

static int check_items(const vmwkvm_probe *probe)
{
	size_t n = vmwkvm_probe_count(probe);
	for (size_t i = 0; i < n; i++) {
		const struct vmwkvm_probe_item *it = vmwkvm_probe_item(probe, i);
		if (!it || !it->reason || !it->name || it->state > VMWKVM_PROBE_PRESENT)
			return 1;
	}
	return n > 0 ? 0 : 1;
}

int main(void)
{
	//! [probe]
	vmwkvm_probe *probe;
	int r = vmwkvm_probe_new(NULL, &probe); /* opens /dev/kvm; VM items on a scratch VM */
	if (r < 0) {
		fprintf(stderr, "vmwkvm_probe_new: %s\n", vmwkvm_strerror(r));
		return 1;
	}
	if (vmwkvm_probe_kvm_usable(probe) != 1) {
		const struct vmwkvm_probe_item *dev =
			vmwkvm_probe_find(probe, VMWKVM_PROBE_KVM_DEVICE, VMWKVM_PROBE_SCOPE_HOST);
		printf("KVM is not usable here: %s\n", dev ? dev->reason : "?");
	}
	/* what this kernel lets a VMM do for VMware guests, each answer with its reason */
	for (size_t i = 0; i < vmwkvm_probe_count(probe); i++) {
		const struct vmwkvm_probe_item *it = vmwkvm_probe_item(probe, i);
		if (it->group != VMWKVM_PROBE_GROUP_VMWARE && it->group != VMWKVM_PROBE_GROUP_NESTED)
			continue;
		printf("%-32s %-7s %-7s %s\n", it->name, vmwkvm_probe_scope_name(it->scope),
		       vmwkvm_probe_state_name(it->state), it->reason);
	}
	//! [probe]
	int bad = check_items(probe);
	vmwkvm_probe_free(probe);
	return bad;
}
