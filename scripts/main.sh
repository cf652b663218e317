#!/usr/bin/env bash
# The main job: `hra demo` fine-tunes the bundled stories260K with HRA and
# with LoRA on a small task and prints the before/after table (no downloads).
# Installs and builds first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash scripts/install-deps.sh; fi
bash scripts/build.sh
exec build/tools/hra/hra demo "$@"
