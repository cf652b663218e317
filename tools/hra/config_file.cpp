#include "config_file.h"

#include <filesystem>

#include <algorithm>
#include <set>

#include <yaml-cpp/yaml.h>

#include "common/error.h"

namespace hra::cli {

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            const size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

}  // namespace

std::string nearest_option_hint(const CLI::App* sub, const std::string& name) {
    std::string best;
    size_t best_d = std::string::npos;
    for (const auto* opt : sub->get_options())
        for (const auto& n : opt->get_lnames()) {
            const size_t d = edit_distance(name, n);
            if (d < best_d) best_d = d, best = n;
        }
    if (best.empty() || best_d > std::max<size_t>(2, name.size() / 3)) return "";
    return " (did you mean --" + best + "?)";
}

void add_config_option(CLI::App* sub) {
    static std::string ignored;
    sub->add_option("--config", ignored, "YAML or JSON file whose keys are these option names (flags win)");
}

std::vector<std::string> expand_config(CLI::App* sub, const std::vector<std::string>& args) {
    std::string path;
    std::set<std::string> given;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a.rfind("--", 0) != 0) continue;
        const size_t eq = a.find('=');
        const std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
        given.insert(name);
        if (name == "config") path = eq != std::string::npos ? a.substr(eq + 1) : (i + 1 < args.size() ? args[i + 1] : "");
    }
    if (path.empty()) return args;
    if (!std::filesystem::is_regular_file(path)) throw Error("the config file is not a readable file", {path});
    YAML::Node root;
    try {
        root = YAML::LoadFile(path);
    } catch (const YAML::BadFile&) {
        throw Error("cannot read the config file", {path});
    } catch (const YAML::Exception& e) {
        throw Error(std::string("invalid YAML/JSON: ") + e.what(), {path, "", static_cast<long>(e.mark.line + 1)});
    }
    std::vector<std::string> out = args;
    if (root.IsNull()) return out;
    if (!root.IsMap()) throw Error("expected a mapping of option names to values", {path});
    for (const auto& kv : root) {
        if (!kv.first.IsScalar()) throw Error("option names must be plain words (a key here is a list or a mapping)", {path});
        std::string key = kv.first.as<std::string>();
        for (auto& c : key)
            if (c == '_') c = '-';
        const CLI::Option* opt = sub->get_option_no_throw("--" + key);
        if (!opt || key == "config")
            throw Error("unknown option in the config file" + nearest_option_hint(sub, key), {path, kv.first.as<std::string>()});
        // Every alias of the option counts as given.
        bool on_command_line = false;
        for (const auto& n : opt->get_lnames()) on_command_line = on_command_line || given.count(n);
        if (on_command_line) continue;
        const YAML::Node& v = kv.second;
        if (v.IsNull()) continue;
        std::vector<std::string> values;
        if (v.IsSequence()) {
            for (const auto& e : v) {
                if (!e.IsScalar()) throw Error("a list's items must be plain values (this one nests a list or a mapping)", {path, key});
                values.push_back(e.as<std::string>());
            }
        } else if (v.IsScalar()) {
            values.push_back(v.as<std::string>());
        } else {
            throw Error("must be a value or a list", {path, key});
        }
        if (opt->get_expected_min() == 0) {  // a flag: true gives it, false gives its --no- form when it has one
            const std::string& b = values.size() == 1 ? values[0] : std::string();
            if (b == "true" || b == "True" || b == "1") {
                out.push_back("--" + key);
            } else if (b == "false" || b == "False" || b == "0") {
                const auto& names = opt->get_lnames();
                if (std::find(names.begin(), names.end(), "no-" + key) != names.end()) out.push_back("--no-" + key);
            } else {
                throw Error("a switch takes true or false, not '" + b + "'", {path, key});
            }
            continue;
        }
        out.push_back("--" + key);
        out.insert(out.end(), values.begin(), values.end());
    }
    return out;
}

}  // namespace hra::cli
