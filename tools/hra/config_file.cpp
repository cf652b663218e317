#include "config_file.h"

#include <sstream>

#include <yaml-cpp/yaml.h>

namespace hra::cli {

namespace {

class YamlConfig : public CLI::Config {
public:
    std::string to_config(const CLI::App*, bool, bool, std::string) const override { return ""; }

    std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
        std::stringstream ss;
        ss << input.rdbuf();
        YAML::Node root;
        try {
            root = YAML::Load(ss.str());
        } catch (const YAML::Exception& e) {
            throw CLI::ConversionError(std::string("config file: ") + e.what());
        }
        std::vector<CLI::ConfigItem> items;
        if (root.IsNull()) return items;
        if (!root.IsMap()) throw CLI::ConversionError("config file: expected a mapping of option names to values");
        for (const auto& kv : root) {
            CLI::ConfigItem item;
            item.name = kv.first.as<std::string>();
            for (auto& c : item.name)
                if (c == '_') c = '-';
            const YAML::Node& v = kv.second;
            if (v.IsSequence()) {
                for (const auto& e : v) item.inputs.push_back(e.as<std::string>());
            } else if (v.IsScalar()) {
                item.inputs.push_back(v.as<std::string>());
            } else if (v.IsNull()) {
                continue;
            } else {
                throw CLI::ConversionError("config file: '" + item.name + "' must be a value or a list");
            }
            items.push_back(std::move(item));
        }
        return items;
    }
};

}  // namespace

std::shared_ptr<CLI::Config> yaml_config_formatter() { return std::make_shared<YamlConfig>(); }

}  // namespace hra::cli
