#!/usr/bin/env bash
# On a fresh Debian/Ubuntu machine: install the dependencies (apt-get, via sudo when not root),
# build with the default preset, and run the main demonstration.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash .ci/run --deps-only
cmake --preset default
cmake --build --preset default --parallel "$(nproc 2>/dev/null || echo 2)"
# The demonstration (exits non-zero, with one line saying why, where /dev/kvm is unusable):
exec ./build/tools/probe/vmwkvm-probe "$@"
