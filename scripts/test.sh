#!/usr/bin/env bash
# Build with a CMake preset and run every test:  ./scripts/test.sh [default|asan|tsan]
# (tests needing /dev/kvm are reported as skipped where it is absent)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
preset="${1:-default}"
jobs="$(nproc 2>/dev/null || echo 2)"
cmake --preset "$preset"
cmake --build --preset "$preset" --parallel "$jobs"
ctest --preset "$preset" --parallel "$jobs"
