// JSON configs: config.json of LLaMA-family and DeBERTa models, adapter_config.json.
#include "adapters/config.h"
#include "fuzz_util.h"
#include "models/deberta_config.h"
#include "models/llama_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    hra::fuzz::expect_named_errors([&] { (void)hra::parse_llama_config(text, "config.json"); });
    hra::fuzz::expect_named_errors([&] { (void)hra::parse_deberta_config(text, "config.json"); });
    hra::fuzz::expect_named_errors([&] {
        auto c = hra::parse_adapter_config(text, "adapter_config.json");
        (void)hra::adapter_config_json(c);
    });
    return 0;
}
