#include "models/hint_encoder.h"

#include <torch/nn/modules/activation.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/diffusion_layers.h"
#include "models/model_weights.h"

namespace hra {

HintEncoderImpl::HintEncoderImpl(const HintEncoderConfig& config) : config_(config) {
    if (config.hidden.size() != 7 || config.in_channels < 1 || config.out_channels < 1 || config.strided < 0 || config.strided > 3)
        throw Error("a hint encoder has 7 hidden widths, positive in/out channels and 0 to 3 stride-2 convolutions (ldm's input_hint_block)");
    block_ = torch::nn::Sequential();
    int64_t in = config.in_channels;
    for (size_t i = 0; i < config.hidden.size(); ++i) {
        if (config.hidden[i] < 1) throw Error("a hint encoder width must be positive");
        const int64_t stride = (i == 2 || i == 4 || i == 6) && static_cast<int64_t>(i / 2) <= config.strided ? 2 : 1;
        block_->push_back(diffusion_conv(in, config.hidden[i], 3, stride, 1));
        block_->push_back(torch::nn::SiLU());
        in = config.hidden[i];
    }
    auto last = diffusion_conv(in, config.out_channels, 3, 1, 1);
    {
        torch::NoGradGuard ng;
        last->weight.zero_();
        last->bias.zero_();
    }
    block_->push_back(last);
    register_module("input_hint_block", block_);
}

torch::Tensor HintEncoderImpl::forward(const torch::Tensor& hint) {
    if (hint.dim() != 4 || hint.size(1) != config_.in_channels)
        throw Error("the hint must be [B, " + std::to_string(config_.in_channels) + ", H, W], got " + c10::str(hint.sizes()));
    if (hint.size(2) % factor() != 0 || hint.size(3) % factor() != 0)
        throw Error("the hint's height and width must be multiples of " + std::to_string(factor()) + " (" +
                    std::to_string(config_.strided) + " stride-2 convolutions), got " + c10::str(hint.sizes()));
    return block_->forward(hint);
}

void save_hint_encoder(const HintEncoder& encoder, const std::string& dir) {
    io::NamedTensors t;
    for (const auto& p : encoder->named_parameters()) t.emplace_back(p.key(), p.value().detach());
    io::save_safetensors((std::filesystem::path(dir) / "hint_encoder.safetensors").string(), t, {{"format", "pt"}});
    const auto& c = encoder->config();
    const nlohmann::json j = {{"in_channels", c.in_channels}, {"hidden", c.hidden}, {"out_channels", c.out_channels},
                              {"strided", c.strided}, {"layout", "ldm input_hint_block"}};
    io::write_file_atomically((std::filesystem::path(dir) / "hint_encoder.json").string(), j.dump(2) + "\n");
}

HintEncoder load_hint_encoder(const std::string& dir) {
    const auto config_file = (std::filesystem::path(dir) / "hint_encoder.json").string();
    const auto j = io::read_json_file(config_file);
    HintEncoderConfig c;
    try {
        c.in_channels = j.at("in_channels").get<int64_t>();
        c.hidden = j.at("hidden").get<std::vector<int64_t>>();
        c.out_channels = j.at("out_channels").get<int64_t>();
        c.strided = j.at("strided").get<int64_t>();
    } catch (const nlohmann::json::exception& e) {
        throw Error(std::string("not a hint encoder config (in_channels, hidden, out_channels, strided): ") + e.what(), {config_file});
    }
    HintEncoder enc{nullptr};
    try {
        enc = HintEncoder(c);
    } catch (const Error& e) {
        throw e.in_file(config_file);
    }
    std::map<std::string, torch::Tensor> params;
    for (const auto& p : enc->named_parameters()) params[p.key()] = p.value();
    const auto weights = (std::filesystem::path(dir) / "hint_encoder.safetensors").string();
    try {
        load_named_weights(params, io::WeightStore::open(weights));
    } catch (const Error& e) {
        throw e.in_file(weights);
    }
    return enc;
}

}  // namespace hra
