#!/usr/bin/env bash
# Run the whole test suite of a preset N times in a row and count the runs that failed:
#   ./scripts/repeat-tests.sh [preset] [N]     (default: default 20)
# Builds first (like scripts/test.sh). Prints one line per run and, at the end, every test
# that failed at least once with its count; exits 1 if any run failed.
# The runs are local: where /dev/kvm is absent the kvm-labelled tests skip in them. There,
#   scripts/nested-kvm/run-in-qemu.sh -B build -t 36000 -- \
#       ctest --test-dir "$PWD/build" -L kvm --repeat until-fail:20
# repeats them in the nested KVM (one boot; hours under TCG).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
preset="${1:-default}"
n="${2:-20}"
jobs="$(nproc 2>/dev/null || echo 2)"
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" --parallel "$jobs" >/dev/null
log=$(mktemp -d "${TMPDIR:-/tmp}/vmwkvm-repeat.XXXXXX")
failed_runs=0
declare -A fails=()
for i in $(seq 1 "$n"); do
	start=$SECONDS
	rc=0
	ctest --preset "$preset" --parallel "$jobs" >"$log/run$i.log" 2>&1 || rc=$?
	summary=$(grep -E '^[0-9]+% tests passed' "$log/run$i.log" || echo "no summary")
	skipped=$(grep -c '\*\*\*Skipped\|(Skipped)' "$log/run$i.log" || true)
	echo "run $i/$n: $summary, ctest status $rc, $((SECONDS - start)) s"
	if [[ $rc -ne 0 ]]; then
		failed_runs=$((failed_runs + 1))
		while read -r t; do
			[[ -n $t ]] && fails[$t]=$((${fails[$t]:-0} + 1))
		done < <(sed -n 's/^[[:space:]]*[0-9]* - \([^ ]*\) (\(Failed\|Timeout\|Not Run\|SEGFAULT\|Subprocess aborted\).*/\1/p' "$log/run$i.log")
	fi
done
echo "preset $preset: $((n - failed_runs)) of $n runs passed, $failed_runs failed (logs in $log)"
for t in "${!fails[@]}"; do
	echo "  failed ${fails[$t]}x: $t"
done
[[ $failed_runs -eq 0 ]]
