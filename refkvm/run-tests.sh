#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# refkvm/run-tests.sh BUILD_DIR: the refkvm stage of CI. Builds (or reuses) the reference
# KVM modules, then boots the nested QEMU guest twice (scripts/nested-kvm/run-in-qemu.sh):
#   1. the packaged bookworm-backports KVM: refkvm-smoke --stock and the probe test
#      (the proposed numbers must be absent there);
#   2. the reference KVM (--refkvm): refkvm-smoke (raw ioctls, every behaviour) and
#      ctest -L refkvm on BUILD_DIR (the library against a real KVM_RUN).
# A guest kernel that dies while booting is retried by run-in-qemu.sh; one that dies
# after the tests started (status 125) is retried once here. Prints each step's time.
set -euo pipefail
SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SELF_DIR/.." && pwd)
BUILD=${1:?usage: refkvm/run-tests.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
[ -x "$BUILD/tests/refkvm_test_refkvm_probe" ] || { echo "refkvm: no refkvm tests in $BUILD (build it first)" >&2; exit 2; }
T0=$SECONDS
step() { echo "refkvm: $* ($((SECONDS - T0)) s so far)"; }

t=$SECONDS
MODDIR=$("$SELF_DIR/build.sh" | tail -1)
step "modules ready in $((SECONDS - t)) s: $MODDIR"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cc -O2 -Wall -static -o "$WORK/refkvm-smoke" "$SELF_DIR/refkvm-smoke.c"
cp "$SELF_DIR/guest-tests.sh" "$WORK/"

CARRY=(--carry "$WORK" --carry "$(command -v ctest)")
for d in /usr/share/cmake-3.*; do [ -d "$d" ] && CARRY+=(--carry "$d"); done

# run-in-qemu with one retry when the guest died after the tests started (125)
nested() {
	local rc=0
	"$REPO_DIR/scripts/nested-kvm/run-in-qemu.sh" -B "$BUILD" "${CARRY[@]}" -t 900 "$@" || rc=$?
	if [ "$rc" = 125 ]; then
		echo "refkvm: the guest died during the run (125); once more"
		rc=0
		"$REPO_DIR/scripts/nested-kvm/run-in-qemu.sh" -B "$BUILD" "${CARRY[@]}" -t 900 "$@" || rc=$?
	fi
	return "$rc"
}

rc=0
t=$SECONDS
nested --kernel-suite backports -- sh "$WORK/guest-tests.sh" stock "$BUILD" "$WORK/refkvm-smoke" || rc=1
step "stock KVM checks: $([ $rc = 0 ] && echo passed || echo FAILED) in $((SECONDS - t)) s"
t=$SECONDS
r2=0
nested --refkvm-dir "$MODDIR" -- sh "$WORK/guest-tests.sh" refkvm "$BUILD" "$WORK/refkvm-smoke" || r2=1
step "reference KVM checks: $([ $r2 = 0 ] && echo passed || echo FAILED) in $((SECONDS - t)) s"
[ $r2 = 0 ] || rc=1
echo "refkvm: total $((SECONDS - T0)) s"
exit $rc
