#!/usr/bin/env bash
# On a fresh Debian/Ubuntu machine: install the dependencies (apt-get, via sudo when not root),
# build with the default preset, show what this kernel offers (vmwkvm-probe), then run the main
# demonstration: the example VMM vmwkvm-minivmm running its bundled demo guest on real KVM
# (console output, GETVERSION, an RPCI channel with cookies, guestinfo over LB and HB).
# Exits with the demo's status: 0 when every answer the guest checked was right; 2 with one
# line on stderr when /dev/kvm is absent or not usable.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash .ci/run --deps-only
cmake --preset default
cmake --build --preset default --parallel "$(nproc 2>/dev/null || echo 2)"
echo "==== vmwkvm-probe (what this kernel offers)"
./build/tools/probe/vmwkvm-probe || true
echo "==== vmwkvm-minivmm --guest build/guests/minivmm_demo.bin"
rc=0
./build/examples/minivmm/vmwkvm-minivmm --guest ./build/guests/minivmm_demo.bin \
	--guestinfo-dump ./build/demo-guestinfo.txt "$@" || rc=$?
if [[ $rc -eq 0 ]]; then
	echo "==== guestinfo store at exit (build/demo-guestinfo.txt)"
	cat ./build/demo-guestinfo.txt
fi
exit "$rc"
