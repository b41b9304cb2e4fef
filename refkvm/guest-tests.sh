#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Runs inside the nested QEMU guest (refkvm/run-tests.sh puts it there).
#   guest-tests.sh stock  BUILD SMOKE   packaged KVM: proposed numbers absent
#   guest-tests.sh refkvm BUILD SMOKE   reference KVM: smoke checks + ctest -L refkvm
mode=$1 build=$2 smoke=$3
rc=0
if [ "$mode" = stock ]; then
	echo "[refkvm] stock KVM: raw checks"
	"$smoke" --stock || rc=1
	echo "[refkvm] stock KVM: vmwkvm-probe reports the dialects absent"
	VMWKVM_REFKVM=stock ctest --no-tests=error --test-dir "$build" -R '^refkvm/test_refkvm_probe$' --output-on-failure || rc=1
else
	echo "[refkvm] reference KVM: raw checks (refkvm-smoke)"
	"$smoke" || rc=1
	echo "[refkvm] reference KVM: library tests (ctest -L refkvm)"
	VMWKVM_REFKVM=1 ctest --no-tests=error --test-dir "$build" -L refkvm --output-on-failure || rc=1
fi
exit $rc
