#include "io/peft_folder.h"

#include <filesystem>

#include "common/error.h"
#include "io/atomic_file.h"

namespace hra::io {

namespace fs = std::filesystem;

PeftFolder read_peft_folder(const std::string& dir) {
    if (!fs::is_directory(dir)) throw Error("adapter folder does not exist", {dir});
    PeftFolder f;
    f.config_path = (fs::path(dir) / kAdapterConfigName).string();
    f.weights_path = (fs::path(dir) / kAdapterWeightsName).string();
    if (!fs::is_regular_file(f.config_path)) throw Error("missing adapter_config.json", {dir});
    if (!fs::is_regular_file(f.weights_path)) {
        if (fs::exists(fs::path(dir) / "adapter_model.bin"))
            throw Error("only adapter_model.bin (a Python pickle) is present; hra reads safetensors only "
                        "(re-save the adapter with safe_serialization=True)",
                        {dir});
        throw Error("missing adapter_model.safetensors", {dir});
    }
    f.config_text = read_file(f.config_path);
    f.weights = std::make_shared<SafetensorsFile>(SafetensorsFile::open(f.weights_path));
    return f;
}

void write_peft_folder(const std::string& dir, const std::string& config_text, const NamedTensors& tensors) {
    make_dirs(dir);
    save_safetensors((fs::path(dir) / kAdapterWeightsName).string(), tensors, {{"format", "pt"}});
    write_file_atomically((fs::path(dir) / kAdapterConfigName).string(), config_text);
}

}  // namespace hra::io
