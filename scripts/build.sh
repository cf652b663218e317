#!/usr/bin/env bash
# Configures and builds hra (Release) in ./build with all cores.
set -euo pipefail
cd "$(dirname "$0")/.."
# Unity build by default (sources compiled eight to a unit: each unit pays ~10 s to load
# libtorch's precompiled header, so a fresh build takes about half the time);
# HRA_UNITY_BUILD=OFF builds file by file, quicker to rebuild after editing one file.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_UNITY_BUILD="${HRA_UNITY_BUILD:-ON}"
cmake --build build -j"$(nproc)"
