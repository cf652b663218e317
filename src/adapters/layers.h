// Adaptable layers: hra::Linear and hra::Conv2d.
//
// Models declare the layers that adapters may target with these types. Each
// holds its frozen `weight` and `bias` under exactly those names (so HF
// checkpoint keys load unchanged) and an ordered set of named adapters,
// registered as children of a submodule "adapters" (parameter names like
// `q_proj.adapters.default.hra_u`). Injection attaches adapters by qualified
// module name; nothing is ever swapped out of the module tree.
//
// Several active adapters compose as in PEFT: multiplicative ones (HRA) as
// W·H_a·H_b in activation order, additive ones (LoRA) as + Σ ΔW·x.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "adapters/adapter.h"

namespace hra {

// Where a layer applies its multiplicative adapters (W·H) during forward.
//  Input:     x·Hᵀ on the activations, then the frozen base op (no in×in tensor).
//  Weight:    W·H on the weight, then the base op with it (no in×in tensor).
//  Reference: the method's materialised matrix (PEFT's loop for HRA; tests and benchmarks).
//  Auto:      the cheaper of Input and Weight for this call (see resolve_strategy).
// HRA names them wy_input / wy_weight (adapters/hra.h).
enum class MultiplyPath { Auto, Input, Weight, Reference };

// While alive, new layers on this thread allocate their parameters without
// initialising them (for models whose weights are loaded right after).
class SkipInitGuard {
public:
    SkipInitGuard();
    ~SkipInitGuard();
    SkipInitGuard(const SkipInitGuard&) = delete;
    SkipInitGuard& operator=(const SkipInitGuard&) = delete;
    static bool active();

private:
    bool previous_;
};

class AdaptableLayer : public torch::nn::Module {
public:
    torch::Tensor weight;  // Linear [out, in]; Conv2d [out, in, kh, kw]
    torch::Tensor bias;    // [out], undefined when the layer has none

    const LayerShape& shape() const { return shape_; }
    // Qualified name in the model (set on injection, used in error messages).
    const std::string& qualified_name() const { return qualified_name_; }
    void set_qualified_name(std::string name) { qualified_name_ = std::move(name); }

    // Adapters, in the order they were added.
    void add_adapter(const std::string& name, std::shared_ptr<AdapterImpl> adapter);
    void delete_adapter(const std::string& name);
    bool has_adapter(const std::string& name) const;
    std::shared_ptr<AdapterImpl> adapter(const std::string& name) const;
    const std::vector<std::string>& adapter_names() const { return names_; }

    // Active adapters in order; names this layer does not hold are ignored.
    void set_active(const std::vector<std::string>& names);
    std::vector<std::string> active() const;
    // Disabling unmerges first (as PEFT's forward does), then uses the base layer.
    void enable_adapters(bool on);
    bool adapters_enabled() const { return enabled_; }

    // Merges the given adapters (default: the active, not yet merged ones) into
    // `weight`. safe: compute on a copy and refuse a non-finite result (hra::Error).
    void merge(bool safe = false, const std::vector<std::string>& names = {});
    // With safe: computes the merge and throws as merge() would, writing nothing.
    void check_merge(bool safe, const std::vector<std::string>& names = {}) const;
    // Unmerges everything merged, last in first out.
    void unmerge();
    const std::vector<std::string>& merged_adapters() const { return merged_; }
    // Drops every adapter, keeping `weight` as it is (merged adapters stay merged in).
    void unload();

    MultiplyPath strategy = MultiplyPath::Auto;
    // The path forward() takes for input x with the active adapters.
    MultiplyPath resolve_strategy(const torch::Tensor& x) const;

    torch::Tensor forward(const torch::Tensor& x);

    // [out, d] view of the weight.
    torch::Tensor flat_weight() const { return weight.reshape({shape_.out, shape_.flat_in()}); }

    // Geometry hooks implemented by Linear and Conv2d.
    // The base operation with a given flat weight and bias.
    virtual torch::Tensor base_forward(const torch::Tensor& x, const torch::Tensor& w_flat,
                                       const torch::Tensor& b) const = 0;
    // Input as rows [..., d] such that base_forward(x) = from_rows(rows·Wᵀ + b).
    virtual torch::Tensor to_rows(const torch::Tensor& x) const = 0;
    virtual torch::Tensor from_rows(const torch::Tensor& y, const torch::Tensor& x) const = 0;
    // Number of rows to_rows(x) would give.
    virtual int64_t rows_of(const torch::Tensor& x) const = 0;

protected:
    explicit AdaptableLayer(LayerShape shape);
    void init_parameters(bool with_bias);
    std::string adapters_summary() const;  // ", adapters=[default:HRA]" or ""

private:
    std::vector<std::shared_ptr<AdapterImpl>> active_adapters() const;
    std::vector<std::string> to_merge(const std::vector<std::string>& names) const;
    torch::Tensor merge_result(const std::vector<std::string>& todo, bool safe) const;
    // W_flat with adapter a merged in (undo: taken out), by this layer's strategy.
    torch::Tensor merged_weight(const AdapterImpl& a, const torch::Tensor& w_flat, bool undo) const;
    std::string where() const;

    LayerShape shape_;
    std::string qualified_name_;
    std::shared_ptr<torch::nn::Module> container_;
    std::vector<std::string> names_;
    std::vector<std::shared_ptr<AdapterImpl>> adapters_;
    std::vector<std::string> active_;
    std::vector<std::string> merged_;
    bool enabled_ = true;
};

class LinearImpl : public AdaptableLayer {
public:
    LinearImpl(int64_t in_features, int64_t out_features, bool with_bias = true);
    // A layer whose weight is `shared_weight` itself (tied embeddings), no bias.
    explicit LinearImpl(const torch::Tensor& shared_weight);

    torch::Tensor base_forward(const torch::Tensor& x, const torch::Tensor& w_flat,
                               const torch::Tensor& b) const override;
    torch::Tensor to_rows(const torch::Tensor& x) const override { return x; }
    torch::Tensor from_rows(const torch::Tensor& y, const torch::Tensor&) const override { return y; }
    int64_t rows_of(const torch::Tensor& x) const override;
    void pretty_print(std::ostream& stream) const override;
};
TORCH_MODULE(Linear);

struct Conv2dOptions {
    int64_t in_channels = 0, out_channels = 0;
    std::array<int64_t, 2> kernel{1, 1}, stride{1, 1}, padding{0, 0}, dilation{1, 1};
    int64_t groups = 1;
    bool bias = true;
};

class Conv2dImpl : public AdaptableLayer {
public:
    explicit Conv2dImpl(const Conv2dOptions& options);

    torch::Tensor base_forward(const torch::Tensor& x, const torch::Tensor& w_flat,
                               const torch::Tensor& b) const override;
    torch::Tensor to_rows(const torch::Tensor& x) const override;
    torch::Tensor from_rows(const torch::Tensor& y, const torch::Tensor& x) const override;
    int64_t rows_of(const torch::Tensor& x) const override;
    void pretty_print(std::ostream& stream) const override;

private:
    bool pointwise() const;  // 1×1, stride 1, no padding: rows are just the pixels
    std::array<int64_t, 2> output_size(const torch::Tensor& x) const;
};
TORCH_MODULE(Conv2d);

}  // namespace hra
