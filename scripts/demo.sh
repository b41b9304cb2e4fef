#!/usr/bin/env bash
# On a fresh Debian/Ubuntu machine: install the dependencies (apt-get, via sudo when not root),
# build with the default preset, show what this kernel offers (vmwkvm-probe), then run the main
# demonstration: the example VMM vmwkvm-minivmm running its bundled demo guest on real KVM
# (console output, GETVERSION, an RPCI channel with cookies, guestinfo over LB and HB).
# Exits with the demo's status: 0 when every answer the guest checked was right.
# Where this machine has no /dev/kvm, the probe and the demo run inside a nested KVM under
# QEMU (scripts/nested-kvm/run-in-qemu.sh: TCG, emulated AMD SVM, a Debian kernel fetched
# with apt-get download; about a minute); VMWKVM_NESTED=0 runs them here instead, where
# vmwkvm-minivmm exits 2 with one line saying why.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash .ci/run --deps-only
cmake --preset default
cmake --build --preset default --parallel "$(nproc 2>/dev/null || echo 2)"
if [[ ! -e /dev/kvm && "${VMWKVM_NESTED:-1}" != 0 ]]; then
	echo "==== /dev/kvm is absent here: probe and demo run in a nested KVM (scripts/nested-kvm/run-in-qemu.sh)"
	rc=0
	scripts/nested-kvm/run-in-qemu.sh -B "$PWD/build" -t 900 --carry "$PWD/scripts/demo-steps.sh" -- \
		sh "$PWD/scripts/demo-steps.sh" "$PWD/build" "$@" || rc=$?
	exit "$rc"
fi
exec scripts/demo-steps.sh "$PWD/build" "$@"
