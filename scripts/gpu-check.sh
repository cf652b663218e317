#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU and a CUDA build of PyTorch
# (python3 -c 'import torch' must work). Builds hra against that libtorch 2.x
# in build-gpu/, runs the parity executables, then trains stories260K with
# LoRA and with HRA for 8 steps on CPU and on CUDA and prints one table:
# per-step loss agreement between the devices, tokens/s and peak memory
# (the CUDA allocator's peak on the GPU). Meant to finish in under 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
prefix=$($py -c 'import torch; print(torch.utils.cmake_prefix_path)')
$py -c 'import torch; assert torch.cuda.is_available(), "no CUDA device visible"'
nccl=OFF
if [ "$($py -c 'import torch; print(int(torch.distributed.is_nccl_available()))')" = 1 ]; then nccl=ON; fi
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" -DHRA_WITH_NCCL=$nccl \
    -DHRA_BUILD_BENCH=OFF >/dev/null
cmake --build build-gpu -j"$(nproc)" --target hra peft_parity llama_parity deberta_parity
for t in peft_parity llama_parity deberta_parity; do
    build-gpu/tests/$t >"build-gpu/$t.log" 2>&1 && echo "$t: OK" || { echo "$t: FAILED"; tail -20 "build-gpu/$t.log"; }
done
hra=build-gpu/tools/hra/hra
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$hra -q convert llama2c --model data/stories260K/stories260K.bin --tokenizer data/stories260K/tok512.bin --out "$work/s260"
head -n 200 tests/fixtures/gsm8k/test.jsonl >"$work/g.jsonl"
printf '| method | device | steps | tokens/s | peak MB | max rel. loss diff vs CPU |\n|---|---|---|---|---|---|\n'
for method in lora hra; do
    for device in cpu cuda; do
        $hra -q train --model "$work/s260" --data "$work/g.jsonl" --method $method --target-regex all-linear \
            --batch-size 8 --max-steps 8 --max-length 256 --lr 1e-3 --device $device --out "$work/$method-$device" >/dev/null
    done
    $py - "$work/$method-cpu/metrics.jsonl" "$work/$method-cuda/metrics.jsonl" "$method" <<'PY'
import json, sys
cpu = [json.loads(l) for l in open(sys.argv[1])]
gpu = [json.loads(l) for l in open(sys.argv[2])]
diff = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(cpu, gpu))
for name, rows in (("cpu", cpu), ("cuda", gpu)):
    tps = sorted(r["tokens_per_s"] for r in rows[2:])[len(rows[2:]) // 2]
    print(f"| {sys.argv[3]} | {name} | {len(rows)} | {tps:.0f} | {rows[-1]['peak_mem_mb']:.0f} | {diff:.2e} |")
PY
done
