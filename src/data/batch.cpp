#include "data/batch.h"

#include <algorithm>

#include <torch/torch.h>

#include "common/error.h"

namespace hra {

PaddedBatch pad_batch(const TokenRows& ids, const PadOptions& o, const TokenRows& labels, const TokenRows& types) {
    if (!labels.empty() && labels.size() != ids.size()) throw Error("pad_batch: labels and ids have different row counts");
    if (!types.empty() && types.size() != ids.size()) throw Error("pad_batch: types and ids have different row counts");
    size_t len = 0;
    for (const auto* r : ids) len = std::max(len, r->size());
    const auto b = static_cast<int64_t>(ids.size()), t = static_cast<int64_t>(len);
    PaddedBatch out;
    out.ids = torch::full({b, t}, o.pad_id, torch::kLong);
    out.mask = torch::zeros({b, t}, torch::kLong);
    if (!labels.empty()) out.labels = torch::full({b, t}, -100, torch::kLong);
    if (!types.empty()) out.types = torch::zeros({b, t}, torch::kLong);
    auto* pi = out.ids.data_ptr<int64_t>();
    auto* pm = out.mask.data_ptr<int64_t>();
    auto* pl = labels.empty() ? nullptr : out.labels.data_ptr<int64_t>();
    auto* pt = types.empty() ? nullptr : out.types.data_ptr<int64_t>();
    for (size_t i = 0; i < ids.size(); ++i) {
        const auto& row = *ids[i];
        if (pl && labels[i]->size() != row.size()) throw Error("pad_batch: a label row differs in length from its ids");
        if (pt && types[i]->size() != row.size()) throw Error("pad_batch: a type row differs in length from its ids");
        const size_t offset = i * len + (o.left ? len - row.size() : 0);
        std::copy(row.begin(), row.end(), pi + offset);
        std::fill(pm + offset, pm + offset + row.size(), 1);
        if (pl) std::copy(labels[i]->begin(), labels[i]->end(), pl + offset);
        if (pt) std::copy(types[i]->begin(), types[i]->end(), pt + offset);
        out.tokens += static_cast<int64_t>(row.size());
    }
    return out;
}

}  // namespace hra
