#!/usr/bin/env bash
# Fuzzing with sanitizers: builds every reader and its libFuzzer target with
# clang, AddressSanitizer and UndefinedBehaviorSanitizer (build-fuzz/), then
# each target replays its corpus (fuzz/corpus/<target>: seeds and past crashes)
# and fuzzes for HRA_FUZZ_SECONDS (default 30). Any crash, sanitizer report or
# exception other than hra::Error fails; the input is left in build-fuzz/crash-*.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${HRA_FUZZ_SECONDS:-30}"
cmake -S fuzz -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DHRA_FUZZ_SECONDS="$seconds" \
    -DCMAKE_UNITY_BUILD="${HRA_UNITY_BUILD:-ON}" >/dev/null
cmake --build build-fuzz -j"$(nproc)"
ctest --test-dir build-fuzz --output-on-failure -j"$(nproc)"
