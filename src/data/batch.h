// The one padded-batch builder: token rows of different lengths into
// [B, T] tensors with an attention mask, optional labels and token types,
// padded on the right (training, scoring) or on the left (batched generation).
// Used by every training task, evaluation and perplexity.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace hra {

struct PaddedBatch {
    at::Tensor ids, mask;  // [B, T] int64; mask 1 on real tokens
    at::Tensor labels;     // [B, T] int64, -100 on padding (defined when labels were given)
    at::Tensor types;      // [B, T] int64, 0 on padding (defined when types were given)
    int64_t tokens = 0;    // real tokens
};

struct PadOptions {
    int64_t pad_id = 0;
    bool left = false;  // pad on the left (generation) instead of the right
};

using TokenRows = std::vector<const std::vector<int64_t>*>;

// labels / types: one row per ids row with the same length, or empty.
PaddedBatch pad_batch(const TokenRows& ids, const PadOptions& options, const TokenRows& labels = {},
                      const TokenRows& types = {});

}  // namespace hra
