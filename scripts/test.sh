#!/usr/bin/env bash
# Build with a CMake preset and run every test:  ./scripts/test.sh [default|asan|tsan]
# Installs the dependencies first (apt-get, via sudo when not root; VMWKVM_SKIP_DEPS=1 skips
# that, as .ci/run does after its own install). Where this machine has no /dev/kvm, the
# kvm-labelled tests skip in the local run (exit 77) and then run against a real, nested KVM
# inside QEMU (scripts/nested-kvm/run-in-qemu.sh; several minutes under TCG): a test that
# passes only where no vCPU runs is not passing. VMWKVM_NESTED=0 leaves the nested run out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
preset="${1:-default}"
case "$preset" in
default) bdir=build ;;
asan | tsan | fuzz) bdir="build-$preset" ;;
*) echo "usage: $0 [default|asan|tsan]" >&2; exit 2 ;;
esac
jobs="$(nproc 2>/dev/null || echo 2)"
[[ "${VMWKVM_SKIP_DEPS:-0}" == 1 ]] || bash .ci/run --deps-only
cmake --preset "$preset"
cmake --build --preset "$preset" --parallel "$jobs"
rc=0
ctest --preset "$preset" --parallel "$jobs" || rc=$?
if [[ ! -e /dev/kvm && "${VMWKVM_NESTED:-1}" != 0 && "$preset" != fuzz ]]; then
	echo "==== /dev/kvm is absent here: the kvm-labelled tests of $bdir run in a nested KVM"
	start=$SECONDS
	r=0
	scripts/nested-kvm/run-in-qemu.sh -B "$PWD/$bdir" -t 1500 --env CLICOLOR=0 --env TERM=dumb || r=$?
	echo "==== nested KVM ($bdir): status $r after $((SECONDS - start)) s"
	case $r in
	0) ;;
	124 | 125) echo "nested KVM: the guest did not finish (runner status $r): real-KVM tests NOT RUN" >&2; rc=1 ;;
	*) rc=1 ;;
	esac
fi
exit "$rc"
