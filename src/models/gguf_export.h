// LLaMA-family model folders (with adapters merged) and LoRA adapters as GGUF
// files that llama.cpp (and so Ollama, LM Studio, node-llama-cpp) loads:
// llama.cpp's tensor names and metadata keys, q/k rows back in llama.cpp's
// interleaved RoPE order, a SentencePiece-style ("llama") vocabulary.
#pragma once

#include <string>
#include <vector>

#include "io/gguf.h"

namespace hra {

struct GgufExportReport {
    uint64_t bytes = 0;
    int tensors = 0;
    int fallback_tensors = 0;  // 2-D tensors written as f16 because their rows do not fit Q8_0's blocks
    int64_t vocab = 0;
};

// The model folder with `adapter_dirs` merged in (none: the model alone).
// 2-D weights in `type`; 1-D ones (norms) stay f32, as llama.cpp's converter does.
// hra::Error naming the folder for what llama.cpp's "llama" architecture cannot
// hold (biases, rope scaling other than the default, a non-SentencePiece vocabulary).
GgufExportReport export_gguf_model(const std::string& model_dir, const std::vector<std::string>& adapter_dirs,
                                   const std::string& out_path, io::GgmlType type);

// A LoRA adapter (or an HRA adapter, through its exact LoRA form) as a llama.cpp
// LoRA GGUF (general.type "adapter"), applied at run time by llama.cpp's --lora.
GgufExportReport export_gguf_lora(const std::string& model_dir, const std::string& adapter_dir,
                                  const std::string& out_path, io::GgmlType type);

// GGUF name of a LLaMA tensor under Hugging Face's name ("model.layers.3.self_attn.q_proj.weight"
// -> "blk.3.attn_q.weight"); empty when llama.cpp has no such tensor.
std::string gguf_tensor_name(const std::string& hf_name);

// llama.cpp's q/k row order from Hugging Face's (rotate-half pairs to interleaved pairs), per head.
at::Tensor gguf_permute_rows(const at::Tensor& w, int64_t heads);

}  // namespace hra
