#!/usr/bin/env bash
# Configures and builds hra (Release) in ./build with all cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
