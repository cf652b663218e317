// Activation checkpointing: run a block without keeping its activations and
// recompute it in backward (with the RNG state of the first run, so dropout
// draws the same masks). libtorch's C++ API has no torch.utils.checkpoint;
// this is its reentrant variant as one autograd node.
#pragma once

#include <functional>

#include <ATen/core/Tensor.h>

namespace hra {

// fn(x) with its intermediate activations freed; gradients reach x and every
// parameter fn uses, exactly as without checkpointing. Outside grad mode this
// is fn(x).
at::Tensor checkpointed(std::function<at::Tensor(const at::Tensor&)> fn, const at::Tensor& x);

}  // namespace hra
