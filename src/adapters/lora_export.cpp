#include "adapters/lora_export.h"

#include <torch/torch.h>

#include "adapters/peft_model.h"
#include "common/error.h"
#include "common/strings.h"
#include "core/householder.h"
#include "io/output_folder.h"
#include "io/peft_folder.h"
#include "io/weights.h"

namespace hra {

namespace {

const std::string kHraSuffix = ".hra_u";

// A and B shaped for a layer whose weight has `weight_sizes` (2-D Linear, 4-D Conv2d).
void add_factors(io::NamedTensors& out, const std::string& module_key, const LoraFactors& f,
                 c10::IntArrayRef weight_sizes) {
    const int64_t r = f.A.size(0);
    if (weight_sizes.size() == 4) {
        out.emplace_back(module_key + ".lora_A.weight",
                         f.A.reshape({r, weight_sizes[1], weight_sizes[2], weight_sizes[3]}).contiguous());
        out.emplace_back(module_key + ".lora_B.weight", f.B.reshape({weight_sizes[0], r, 1, 1}).contiguous());
    } else {
        out.emplace_back(module_key + ".lora_A.weight", f.A.contiguous());
        out.emplace_back(module_key + ".lora_B.weight", f.B.contiguous());
    }
}

}  // namespace

LoraFactors hra_to_lora(const at::Tensor& hra_u, bool apply_gs, const at::Tensor& w_flat) {
    if (hra_u.dim() != 2 || w_flat.dim() != 2 || w_flat.size(1) != hra_u.size(0))
        throw Error("HRA vectors " + c10::str(hra_u.sizes()) + " do not fit a weight of shape " +
                    c10::str(w_flat.sizes()));
    torch::NoGradGuard no_grad;
    const auto work = (hra_u.scalar_type() == torch::kDouble || w_flat.scalar_type() == torch::kDouble)
                          ? torch::kDouble
                          : torch::kFloat;
    auto h = core::make_reflector(hra_u.to(work), apply_gs);
    auto w = w_flat.to(work);
    return {h.v.t().contiguous(), -torch::mm(torch::mm(w, h.v), h.t)};
}

AdapterConfig lora_config_for(const AdapterConfig& hra) {
    AdapterConfig c = AdapterConfig::of("LORA");
    c.r = hra.r;
    c.set("lora_alpha", hra.r);
    c.set("lora_dropout", 0.0);
    c.target_modules = hra.target_modules;
    c.exclude_modules = hra.exclude_modules;
    c.layers_to_transform = hra.layers_to_transform;
    c.layers_pattern = hra.layers_pattern;
    c.bias = hra.bias == "hra_only" ? "lora_only" : hra.bias;
    c.modules_to_save = hra.modules_to_save;
    c.task_type = hra.task_type;
    c.base_model_name_or_path = hra.base_model_name_or_path;
    c.revision = hra.revision;
    c.inference_mode = true;
    return c;
}

LoraExport hra_adapter_as_lora(const std::string& hra_dir, const std::string& base_weights) {
    io::PeftFolder folder = io::read_peft_folder(hra_dir);
    AdapterConfig hc = parse_adapter_config(folder.config_text, folder.config_path);
    if (hc.peft_type != "HRA")
        throw Error("expected an HRA adapter, found peft_type " + hc.peft_type, {folder.config_path, "peft_type"});
    io::WeightStore base = io::WeightStore::open(base_weights);
    AdapterConfig lc = lora_config_for(hc);
    std::vector<std::string> modules;
    io::NamedTensors out;
    const std::string prefix = kPeftKeyPrefix;
    for (const auto& key : folder.weights->names()) {
        if (!ends_with(key, kHraSuffix)) {
            out.emplace_back(key, folder.weights->tensor(key).clone());
            continue;
        }
        if (key.rfind(prefix, 0) != 0)
            throw Error("key does not start with '" + prefix + "'", {folder.weights_path, key});
        const std::string module = key.substr(prefix.size(), key.size() - prefix.size() - kHraSuffix.size());
        const std::string wkey = module + ".weight";
        if (!base.contains(wkey))
            throw Error("the base weights have no '" + wkey + "' for this adapter tensor", {folder.weights_path, key});
        auto w = base.get(wkey);
        if (w.dim() != 2 && w.dim() != 4)
            throw Error("base weight has " + std::to_string(w.dim()) + " dimensions; expected a Linear or Conv2d weight",
                        {base.path(), wkey});
        auto u = folder.weights->tensor(key);
        if (!u.is_floating_point() || !torch::isfinite(u).all().item<bool>())
            throw Error("the HRA vectors must be finite floating-point values (a NaN adapter exports a NaN LoRA)", {folder.weights_path, key});
        if (u.dim() != 2 || u.size(1) != hc.r)
            throw Error("expected [d, " + std::to_string(hc.r) + "] for r=" + std::to_string(hc.r) + ", got " +
                            c10::str(u.sizes()),
                        {folder.weights_path, key});
        LoraFactors f;
        try {
            f = hra_to_lora(u, hc.get<bool>("apply_GS"), w.reshape({w.size(0), -1}));
        } catch (const Error& e) {
            throw Error(e.message(), {folder.weights_path, key});
        }
        add_factors(out, prefix + module, f, w.sizes());
        modules.push_back(module);
    }
    if (modules.empty()) throw Error("no '*.hra_u' tensors in the adapter", {folder.weights_path});
    lc.target_modules = ModuleSelector::of(modules);
    return {std::move(lc), std::move(out), static_cast<int>(modules.size())};
}

int export_lora_folder(const std::string& hra_dir, const std::string& base_weights, const std::string& out_dir,
                       bool overwrite) {
    io::OutputFolder out_folder(out_dir, overwrite);  // refused before the work
    LoraExport e = hra_adapter_as_lora(hra_dir, base_weights);
    io::write_peft_folder(out_folder.temp_path(), adapter_config_json(e.config), e.tensors);
    out_folder.commit();
    return e.layers;
}

}  // namespace hra
