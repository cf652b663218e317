#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU and a CUDA build of PyTorch
# (python3 -c 'import torch' must work, with numpy). Builds hra against that
# libtorch 2.x in build-gpu/, runs the parity executables (the LLaMA family's
# also with the model on CUDA: HRA_TEST_DEVICE=cuda), trains stories260K
# with LoRA and with HRA for 8 steps on CPU and on CUDA (per-step loss
# agreement between the devices), then trains a random-weight ~1.1B LLaMA
# shape (TinyLlama's: hidden 2048, 22 layers, GQA 32/4, vocab 32000) in
# bfloat16 on CUDA, HRA vs LoRA r=8 on q_proj and v_proj, batch 4 x 512, and
# prints tokens/s and the CUDA allocator's peak memory. Meant to finish in
# under 10 minutes.
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
    build-gpu/tests/$t >"build-gpu/$t.log" 2>&1 && echo "$t (CPU): OK" || { echo "$t (CPU): FAILED"; tail -20 "build-gpu/$t.log"; }
done
# The LLaMA-family parity (float64 and float32 against transformers, every output and gradient) on the GPU.
HRA_TEST_DEVICE=cuda build-gpu/tests/llama_parity >build-gpu/llama_parity-cuda.log 2>&1 && echo "llama_parity (CUDA): OK" ||
    { echo "llama_parity (CUDA): FAILED"; grep FAIL build-gpu/llama_parity-cuda.log | head -20; }
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

# ~1.1B LLaMA shape, random bfloat16 weights, written as safetensors by python.
mkdir -p "$work/llama1b"
cp "$work/s260/tokenizer.json" "$work/s260/tokenizer_config.json" "$work/llama1b/"
$py - "$work/llama1b" <<'PY'
import json, struct, sys, torch
d = sys.argv[1]
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632,
       "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
       "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "bos_token_id": 1,
       "eos_token_id": 2, "torch_dtype": "bfloat16"}
json.dump(cfg, open(f"{d}/config.json", "w"), indent=2)
h, f, kv = 2048, 5632, 2048 * 4 // 32
shapes = {"model.embed_tokens.weight": (32000, h), "model.norm.weight": (h,), "lm_head.weight": (32000, h)}
for i in range(22):
    p = f"model.layers.{i}."
    shapes.update({p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                   p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                   p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h), p + "mlp.down_proj.weight": (h, f),
                   p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,)})
header, off = {}, 0
for k, s in shapes.items():
    n = 2 * torch.Size(s).numel()
    header[k] = {"dtype": "BF16", "shape": list(s), "data_offsets": [off, off + n]}
    off += n
hb = json.dumps(header).encode()
hb += b" " * (-len(hb) % 8)
g = torch.Generator(device="cuda").manual_seed(0)
with open(f"{d}/model.safetensors", "wb") as out:
    out.write(struct.pack("<Q", len(hb)) + hb)
    for k, s in shapes.items():
        t = torch.ones(s, dtype=torch.bfloat16) if len(s) == 1 else \
            (torch.randn(s, device="cuda", generator=g) * 0.02).to(torch.bfloat16).cpu()
        out.write(t.view(torch.int16).numpy().tobytes())
PY
python3 - >"$work/long.jsonl" <<'PY'
import json, random
random.seed(0)
words = "once upon a time there was a little girl named lily she liked to play in the park with her dog".split()
for _ in range(64):
    print(json.dumps({"text": " ".join(random.choice(words) for _ in range(700))}))
PY
printf '\n~1.1B LLaMA shape, bfloat16 base, batch 4 x 512, r=8 on q_proj and v_proj, CUDA\n'
printf '| method | tokens/s | peak MB |\n|---|---|---|\n'
for method in hra lora; do
    $hra -q train --model "$work/llama1b" --data "$work/long.jsonl" --format text --max-length 512 --method $method \
        --target-modules q_proj v_proj --batch-size 4 --max-steps 10 --dtype bfloat16 --device cuda \
        --out "$work/big-$method" >/dev/null
    $py - "$work/big-$method/metrics.jsonl" $method <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])][2:]
tps = sorted(r["tokens_per_s"] for r in rows)[len(rows) // 2]
print(f"| {sys.argv[2]} | {tps:.0f} | {max(r['peak_mem_mb'] for r in rows):.0f} |")
PY
done
