// Exact LoRA form of HRA: W·H = W − W·V·T·Vᵀ = W + B·A with A = Vᵀ and
// B = −W·V·T (V = Û, or Q in Gram-Schmidt mode with T = 2I). With
// lora_alpha = r the LoRA scaling is 1, so any LoRA runtime reproduces the
// HRA layer exactly (up to rounding).
#pragma once

#include <string>
#include <utility>

#include "adapters/config.h"
#include "io/safetensors.h"

namespace hra {

struct LoraFactors {
    at::Tensor A;  // [r, d]
    at::Tensor B;  // [out, r]
};

// For one layer: hra_u [d, r] and the base weight flattened to [out, d].
// Computed in float64 when either input is float64, else float32.
LoraFactors hra_to_lora(const at::Tensor& hra_u, bool apply_gs, const at::Tensor& w_flat);

// The LoRA config that serves an HRA config (same targets, r, bias,
// modules_to_save; lora_alpha = r, no dropout).
AdapterConfig lora_config_for(const AdapterConfig& hra_config);

// An HRA PEFT folder plus the base weights as LoRA: its config and tensors
// under PEFT's keys (what export_lora_folder writes), and the layer count.
struct LoraExport {
    AdapterConfig config;
    io::NamedTensors tensors;
    int layers = 0;
};
LoraExport hra_adapter_as_lora(const std::string& hra_dir, const std::string& base_weights);

// File to file: an HRA PEFT folder plus the base weights (a .safetensors file
// or a model folder) to a LoRA PEFT folder (conv layers get A [r, C, kh, kw]
// and B [out, r, 1, 1]; trained biases and modules_to_save travel unchanged).
// Returns the number of layers.
// An existing non-empty out_dir is refused unless overwrite.
int export_lora_folder(const std::string& hra_dir, const std::string& base_weights, const std::string& out_dir,
                       bool overwrite = false);

}  // namespace hra
