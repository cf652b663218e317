#include "adapters/peft_model.h"

#include <regex>
#include <set>
#include <unordered_set>

#include <torch/torch.h>

#include "adapters/method.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strings.h"
#include "io/peft_folder.h"

namespace hra {

using ModulePtr = std::shared_ptr<torch::nn::Module>;

// A module listed in modules_to_save: its parameters train and are saved; the
// original values are kept so that disabling adapters gives the base model.
struct PeftModel::SavedModule {
    std::string adapter;
    std::string key;
    std::vector<std::pair<std::string, torch::Tensor>> params;
    std::vector<torch::Tensor> stash;  // originals (or, while disabled, the trained values)
    bool swapped = false;              // true while the originals are installed

    void swap() {
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < params.size(); ++i) {
            auto tmp = params[i].second.detach().clone();
            params[i].second.copy_(stash[i]);
            stash[i] = tmp;
        }
        swapped = !swapped;
    }
    torch::Tensor trained(size_t i) const { return swapped ? stash[i] : params[i].second; }
};

namespace {

std::regex compile(const std::string& pattern, const char* what) {
    try {
        return std::regex(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
        throw Error("invalid regular expression '" + pattern + "': " + e.what(), {"", what});
    }
}

// The base model's modules with their names, leaving out adapter internals.
std::vector<std::pair<std::string, ModulePtr>> model_modules(const torch::nn::Module& base) {
    std::unordered_set<const torch::nn::Module*> internal;
    auto all = base.named_modules("", /*include_self=*/false);
    for (const auto& item : all) {
        if (!dynamic_cast<AdaptableLayer*>(item.value().get())) continue;
        for (const auto& child : item.value()->modules(/*include_self=*/false)) internal.insert(child.get());
    }
    std::vector<std::pair<std::string, ModulePtr>> out;
    for (const auto& item : all)
        if (!internal.count(item.value().get())) out.emplace_back(item.key(), item.value());
    return out;
}

std::string with_commas(int64_t n) {
    std::string s = std::to_string(n), out;
    int count = 0;
    for (auto it = s.rbegin(); it != s.rend(); ++it) {
        if (count && count % 3 == 0 && *it != '-') out.push_back(',');
        out.push_back(*it);
        ++count;
    }
    return std::string(out.rbegin(), out.rend());
}

}  // namespace

PeftModel::PeftModel(std::shared_ptr<torch::nn::Module> base, InjectOptions options)
    : base_(std::move(base)), options_(std::move(options)) {
    if (!base_) throw Error("PeftModel needs a base model");
}

std::vector<std::pair<std::string, AdaptableLayer*>> PeftModel::adaptable_layers() const {
    std::vector<std::pair<std::string, AdaptableLayer*>> out;
    for (const auto& [key, m] : model_modules(*base_))
        if (auto* layer = dynamic_cast<AdaptableLayer*>(m.get())) out.emplace_back(key, layer);
    return out;
}

std::vector<std::string> PeftModel::resolve_targets(const AdapterConfig& config) const {
    ModuleSelector targets = config.target_modules;
    if (!targets.is_set()) {
        if (options_.default_targets.empty())
            throw Error("target_modules is not set and there is no default for model type '" + options_.model_type +
                            "'; set target_modules",
                        {"", "target_modules"});
        targets = ModuleSelector::of(options_.default_targets);
    }
    const auto modules = model_modules(*base_);
    std::set<std::string> exact;  // names that match exactly (all-linear resolves to these)
    if (targets.kind == ModuleSelector::Kind::AllLinear) {
        for (const auto& [key, m] : modules) {
            auto* layer = dynamic_cast<AdaptableLayer*>(m.get());
            if (!layer || layer->shape().kind != LayerShape::Kind::Linear) continue;
            if (std::find(options_.output_layers.begin(), options_.output_layers.end(), key) !=
                options_.output_layers.end())
                continue;
            exact.insert(key);
        }
    } else if (targets.kind == ModuleSelector::Kind::Names) {
        exact.insert(targets.names.begin(), targets.names.end());
    }
    std::regex target_re, exclude_re;
    if (targets.kind == ModuleSelector::Kind::Regex) target_re = compile(targets.pattern, "target_modules");
    if (config.exclude_modules.kind == ModuleSelector::Kind::Regex)
        exclude_re = compile(config.exclude_modules.pattern, "exclude_modules");
    std::vector<std::regex> save_res;
    if (config.modules_to_save)
        for (const auto& m : *config.modules_to_save) save_res.push_back(compile("(^|.*\\.)" + m + "($|\\..*)", "modules_to_save"));
    std::vector<std::regex> layer_res;
    const bool use_layers = config.layers_to_transform && !config.layers_to_transform->empty();
    if (use_layers) {
        if (config.layers_pattern.empty()) {
            layer_res.push_back(compile(R"(.*?\.[^.]*\.(\d+)\.)", "layers_pattern"));
        } else {
            for (const auto& p : config.layers_pattern) layer_res.push_back(compile(".*?\\." + p + "\\.(\\d+)\\.", "layers_pattern"));
        }
    }

    auto matches = [&](const std::string& key) {
        // PEFT's check_target_module_exists, in its order.
        const auto& ex = config.exclude_modules;
        if (ex.kind == ModuleSelector::Kind::Regex && std::regex_match(key, exclude_re)) return false;
        if (ex.kind == ModuleSelector::Kind::Names)
            for (const auto& n : ex.names)
                if (key == n || ends_with(key, "." + n)) return false;
        for (const auto& re : save_res)
            if (std::regex_match(key, re)) return false;
        if (targets.kind == ModuleSelector::Kind::Regex) return std::regex_match(key, target_re);
        if (exact.count(key)) return true;
        if (targets.kind != ModuleSelector::Kind::Names) return false;
        bool found = false;
        for (const auto& n : targets.names) found = found || ends_with(key, "." + n);
        if (found && use_layers) {
            std::smatch m;
            bool have = false;
            for (const auto& re : layer_res)
                if (std::regex_search(key, m, re, std::regex_constants::match_continuous)) {
                    have = true;
                    break;
                }
            if (!have) return false;
            const int64_t index = std::stoll(m[1].str());
            const auto& list = *config.layers_to_transform;
            found = std::find(list.begin(), list.end(), index) != list.end();
        }
        return found;
    };

    std::vector<std::string> out;
    for (const auto& [key, m] : modules) {
        if (!matches(key)) continue;
        if (!dynamic_cast<AdaptableLayer*>(m.get()))
            throw Error("Target module '" + key + "' (" + m->name() +
                            ") is not supported: only hra::Linear and hra::Conv2d layers take adapters",
                        {"", "target_modules"});
        out.push_back(key);
    }
    if (out.empty())
        throw Error("Target modules " + targets.describe() +
                        " not found in the base model. Please check the target modules and try again.",
                    {"", "target_modules"});
    return out;
}

std::vector<std::string> PeftModel::add_adapter(const std::string& name, const AdapterConfig& config) {
    config.validate();
    for (const auto& e : entries_)
        if (e.first == name) throw Error("an adapter named '" + name + "' already exists");
    Entry entry;
    entry.config = config;
    entry.modules = resolve_targets(config);
    if (config.target_modules.kind == ModuleSelector::Kind::AllLinear)
        entry.config.target_modules = ModuleSelector::of(entry.modules);
    // As PEFT, an unset target_modules is saved as the model type's defaults that were used.
    if (!config.target_modules.is_set() && !options_.default_targets.empty())
        entry.config.target_modules = ModuleSelector::of(options_.default_targets);

    std::map<std::string, ModulePtr> by_name;
    for (auto& [key, m] : model_modules(*base_)) by_name[key] = m;

    std::vector<AdaptableLayer*> done;
    try {
        for (const auto& key : entry.modules) {
            auto* layer = dynamic_cast<AdaptableLayer*>(by_name.at(key).get());
            auto wtype = layer->weight.scalar_type();
            // As PEFT with autocast_adapter_dtype: float16/bfloat16 bases get float32 adapters.
            auto dtype = (wtype == torch::kDouble || wtype == torch::kFloat) ? wtype : torch::kFloat;
            auto options = torch::TensorOptions().dtype(dtype).device(layer->weight.device());
            std::shared_ptr<AdapterImpl> adapter;
            try {
                adapter = adapter_method(config.peft_type).make(layer->shape(), config, options);
            } catch (const Error& e) {
                throw Error(e.message(), {"", key});
            }
            adapter->train(layer->is_training());
            layer->set_qualified_name(key);
            layer->add_adapter(name, adapter);
            if (!enabled_) layer->enable_adapters(false);
            done.push_back(layer);
        }
    } catch (...) {
        for (auto* layer : done) layer->delete_adapter(name);
        throw;
    }

    // Trainable biases.
    if (config.bias == "all") {
        for (const auto& [key, m] : model_modules(*base_))
            if (m->named_parameters(false).contains("bias")) entry.bias_keys.push_back(key);
    } else if (config.bias != "none") {
        for (const auto& key : entry.modules)
            if (by_name.at(key)->named_parameters(false).contains("bias")) entry.bias_keys.push_back(key);
    }

    // modules_to_save: PEFT wraps every module whose name ends with an entry.
    if (config.modules_to_save) {
        std::vector<std::string> chosen;
        for (const auto& m : *config.modules_to_save) {
            bool any = false;
            for (const auto& [key, mod] : model_modules(*base_)) {
                if (!ends_with(key, m)) continue;
                any = true;
                bool nested = false;
                for (const auto& c : chosen) nested = nested || key == c || key.rfind(c + ".", 0) == 0;
                if (nested) continue;
                for (const auto& s : saved_modules_)
                    if (s->key == key)
                        throw Error("module '" + key + "' is already in modules_to_save of adapter '" + s->adapter +
                                        "'; hra keeps one trained copy per module",
                                    {"", "modules_to_save"});
                if (dynamic_cast<AdaptableLayer*>(mod.get()) && !dynamic_cast<AdaptableLayer*>(mod.get())->adapter_names().empty())
                    throw Error("module '" + key + "' is both adapted and in modules_to_save", {"", "modules_to_save"});
                chosen.push_back(key);
                auto saved = std::make_shared<SavedModule>();
                saved->adapter = name;
                saved->key = key;
                for (const auto& p : mod->named_parameters(true)) {
                    saved->params.emplace_back(p.key(), p.value());
                    saved->stash.push_back(p.value().detach().clone());
                }
                saved_modules_.push_back(saved);
            }
            if (!any) warn_once("modules_to_save entry '" + m + "' matches no module of the model");
        }
    }

    entries_.emplace_back(name, std::move(entry));
    if (active_.empty()) {
        set_active_adapters({name});
    } else {
        for (auto& [key, layer] : adaptable_layers()) layer->set_active(active_);
        apply_trainability();
    }
    return entries_.back().second.modules;
}

void PeftModel::apply_trainability() {
    // PEFT: the base model is frozen; the active adapters train unless in inference mode.
    std::unordered_set<const c10::TensorImpl*> adapter_params;
    for (auto& [key, layer] : adaptable_layers())
        for (const auto& n : layer->adapter_names())
            for (auto& p : layer->adapter(n)->parameters()) adapter_params.insert(p.unsafeGetTensorImpl());
    for (auto& p : base_->parameters())
        if (!adapter_params.count(p.unsafeGetTensorImpl())) p.set_requires_grad(false);
    std::map<std::string, ModulePtr> by_name;
    for (auto& [key, m] : model_modules(*base_)) by_name[key] = m;
    for (const auto& [n, e] : entries_) {
        const bool on = std::find(active_.begin(), active_.end(), n) != active_.end() && !e.config.inference_mode;
        for (const auto& key : e.modules)
            for (auto& p : dynamic_cast<AdaptableLayer*>(by_name.at(key).get())->adapter(n)->parameters())
                p.set_requires_grad(on);
        if (!on) continue;
        for (const auto& key : e.bias_keys) by_name.at(key)->named_parameters(false)["bias"].set_requires_grad(true);
        for (const auto& s : saved_modules_)
            if (s->adapter == n)
                for (auto& [pn, p] : s->params) p.set_requires_grad(true);
    }
}

const PeftModel::Entry& PeftModel::entry(const std::string& name) const {
    for (const auto& e : entries_)
        if (e.first == name) return e.second;
    throw Error("no adapter named '" + name + "'");
}

std::vector<std::string> PeftModel::adapter_names() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.push_back(e.first);
    return out;
}

const AdapterConfig& PeftModel::config(const std::string& name) const { return entry(name).config; }
const std::vector<std::string>& PeftModel::adapted_modules(const std::string& name) const { return entry(name).modules; }

void PeftModel::set_active_adapters(const std::vector<std::string>& names) {
    for (const auto& n : names) entry(n);
    active_ = names;
    for (auto& [key, layer] : adaptable_layers()) layer->set_active(active_);
    if (!names.empty()) apply_trainability();
}

void PeftModel::enable_adapters(bool on) {
    if (on == enabled_) return;
    for (auto& [key, layer] : adaptable_layers()) layer->enable_adapters(on);
    for (auto& s : saved_modules_) s->swap();
    enabled_ = on;
}

void PeftModel::merge(bool safe, const std::vector<std::string>& names) {
    for (const auto& n : names) entry(n);
    std::vector<std::pair<AdaptableLayer*, std::vector<std::string>>> plan;
    for (auto& [key, layer] : adaptable_layers()) {
        std::vector<std::string> here;
        for (const auto& n : names.empty() ? active_ : names)
            if (layer->has_adapter(n)) here.push_back(n);
        if (!here.empty()) plan.emplace_back(layer, here);
    }
    // safe: every layer is checked before any weight changes (twice the compute, no extra memory).
    if (safe)
        for (auto& [layer, here] : plan) layer->check_merge(true, here);
    for (auto& [layer, here] : plan) layer->merge(false, here);
}

void PeftModel::unmerge() {
    for (auto& [key, layer] : adaptable_layers())
        if (!layer->merged_adapters().empty()) layer->unmerge();
}

void PeftModel::merge_and_unload(bool safe) {
    if (!enabled_) enable_adapters(true);
    merge(safe);
    for (auto& [key, layer] : adaptable_layers()) layer->unload();
    saved_modules_.clear();  // the trained values stay in the model
    entries_.clear();
    active_.clear();
}

void PeftModel::delete_adapter(const std::string& name) {
    const Entry& e = entry(name);
    std::map<std::string, ModulePtr> by_name;
    for (auto& [key, m] : model_modules(*base_)) by_name[key] = m;
    for (const auto& key : e.modules) dynamic_cast<AdaptableLayer*>(by_name.at(key).get())->delete_adapter(name);
    for (auto it = saved_modules_.begin(); it != saved_modules_.end();) {
        if ((*it)->adapter == name) {
            if (!(*it)->swapped) (*it)->swap();  // put the originals back
            it = saved_modules_.erase(it);
        } else {
            ++it;
        }
    }
    active_.erase(std::remove(active_.begin(), active_.end(), name), active_.end());
    for (auto it = entries_.begin(); it != entries_.end(); ++it)
        if (it->first == name) {
            entries_.erase(it);
            break;
        }
}

void PeftModel::set_strategy(MultiplyPath s) {
    for (auto& [key, layer] : adaptable_layers()) layer->strategy = s;
}

std::vector<torch::Tensor> PeftModel::trainable_parameters() const {
    std::vector<torch::Tensor> out;
    for (const auto& p : base_->parameters())
        if (p.requires_grad()) out.push_back(p);
    return out;
}

int64_t PeftModel::trainable_parameter_count() const {
    int64_t n = 0;
    for (const auto& p : trainable_parameters()) n += p.numel();
    return n;
}

int64_t PeftModel::parameter_count() const {
    int64_t n = 0;
    for (const auto& p : base_->parameters()) n += p.numel();
    return n;
}

std::string PeftModel::trainable_summary() const {
    const int64_t trainable = trainable_parameter_count(), all = parameter_count();
    char pct[32];
    std::snprintf(pct, sizeof pct, "%.4f", all ? 100.0 * static_cast<double>(trainable) / static_cast<double>(all) : 0.0);
    return "trainable params: " + with_commas(trainable) + " || all params: " + with_commas(all) +
           " || trainable%: " + pct;
}

torch::Tensor PeftModel::orthogonality_penalty(core::PenaltyForm form) const {
    torch::Tensor total;
    std::map<std::string, ModulePtr> by_name;
    for (auto& [key, m] : model_modules(*base_)) by_name[key] = m;
    for (const auto& n : active_) {
        const Entry& e = entry(n);
        for (const auto& key : e.modules) {
            auto p = dynamic_cast<AdaptableLayer*>(by_name.at(key).get())->adapter(n)->orthogonality_penalty(form);
            if (p.defined()) total = total.defined() ? total + p : p;
        }
    }
    return total.defined() ? total : torch::zeros({});
}

std::vector<PeftModel::KeyedTensor> PeftModel::keyed_tensors(const std::string& name) const {
    const Entry& e = entry(name);
    const std::string prefix = kPeftKeyPrefix;
    std::map<std::string, ModulePtr> by_name;
    for (auto& [key, m] : model_modules(*base_)) by_name[key] = m;
    std::vector<KeyedTensor> out;
    for (const auto& key : e.modules) {
        auto* layer = dynamic_cast<AdaptableLayer*>(by_name.at(key).get());
        for (const auto& [rel, t] : layer->adapter(name)->peft_tensors()) out.push_back({prefix + key + "." + rel, {}, t});
    }
    for (const auto& key : e.bias_keys) {
        // A module in modules_to_save is saved whole below.
        bool saved_whole = false;
        for (const auto& s : saved_modules_)
            saved_whole = saved_whole || (s->adapter == name && (key == s->key || key.rfind(s->key + ".", 0) == 0));
        if (saved_whole) continue;
        auto& mod = by_name.at(key);
        auto bias = mod->named_parameters(false)["bias"];
        auto* layer = dynamic_cast<AdaptableLayer*>(mod.get());
        // PEFT stores an adapted layer's bias under its wrapped base layer.
        if (layer && !layer->adapter_names().empty()) {
            out.push_back({prefix + key + ".base_layer.bias", {prefix + key + ".bias"}, bias});
        } else {
            out.push_back({prefix + key + ".bias", {}, bias});
        }
    }
    for (const auto& s : saved_modules_) {
        if (s->adapter != name) continue;
        for (size_t i = 0; i < s->params.size(); ++i) {
            const auto& pn = s->params[i].first;
            out.push_back({prefix + s->key + "." + pn, {prefix + s->key + ".modules_to_save." + pn}, s->trained(i)});
        }
    }
    return out;
}

io::NamedTensors PeftModel::adapter_state_dict(const std::string& name) const {
    io::NamedTensors out;
    for (const auto& kt : keyed_tensors(name)) out.emplace_back(kt.key, kt.tensor.detach());
    return out;
}

void PeftModel::save_adapter(const std::string& dir, const std::string& name) const {
    AdapterConfig c = entry(name).config;
    c.inference_mode = true;  // as PEFT's save_pretrained writes it
    io::write_peft_folder(dir, adapter_config_json(c), adapter_state_dict(name));
}

void PeftModel::load_adapter(const std::string& dir, const std::string& name, bool trainable) {
    io::PeftFolder folder = io::read_peft_folder(dir);
    AdapterConfig c = parse_adapter_config(folder.config_text, folder.config_path);
    c.inference_mode = !trainable;
    try {
        add_adapter(name, c);
    } catch (const Error& e) {
        throw e.in_file(folder.config_path);
    }
    try {
        const auto& file = *folder.weights;
        auto kts = keyed_tensors(name);
        std::map<std::string, size_t> lookup;
        for (size_t i = 0; i < kts.size(); ++i) {
            lookup[kts[i].key] = i;
            for (const auto& alt : kts[i].alternatives) lookup[alt] = i;
        }
        std::vector<bool> filled(kts.size(), false);
        torch::NoGradGuard no_grad;
        for (const auto& fname : file.names()) {
            auto it = lookup.find(fname);
            if (it == lookup.end())
                throw Error("unexpected key: the model has no adapted module or saved tensor for it",
                            {folder.weights_path, fname});
            auto& kt = kts[it->second];
            auto t = file.tensor(fname);
            if (t.sizes() != kt.tensor.sizes())
                throw Error("shape " + c10::str(t.sizes()) + " does not fit the model's " + c10::str(kt.tensor.sizes()),
                            {folder.weights_path, fname});
            if (filled[it->second]) throw Error("tensor given twice (under two key spellings)", {folder.weights_path, fname});
            if (kt.tensor.is_floating_point() && !t.is_floating_point())
                throw Error(std::string("dtype ") + c10::toString(t.scalar_type()) + " where the adapter needs floating-point values",
                            {folder.weights_path, fname});
            if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>())
                throw Error("holds non-finite values (NaN or inf): the adapter would turn every output into NaN",
                            {folder.weights_path, fname});
            kt.tensor.detach().copy_(t.to(kt.tensor.scalar_type()));
            filled[it->second] = true;
        }
        for (size_t i = 0; i < kts.size(); ++i)
            if (!filled[i]) throw Error("missing key", {folder.weights_path, kts[i].key});
    } catch (...) {
        delete_adapter(name);
        throw;
    }
}

}  // namespace hra
