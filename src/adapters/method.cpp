#include "adapters/method.h"

#include <algorithm>
#include <cctype>

#include "common/error.h"
#include "common/strings.h"

namespace hra {

// Each method's file defines its entry.
AdapterMethod hra_method();
AdapterMethod lora_method();

namespace {

std::vector<AdapterMethod> builtin_methods() { return {hra_method(), lora_method()}; }

std::string upper(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return s;
}

}  // namespace

const std::vector<AdapterMethod>& adapter_methods() {
    static const std::vector<AdapterMethod> methods = builtin_methods();
    return methods;
}

static const AdapterMethod* find_method(const std::string& key) {
    const std::string k = upper(key);
    for (const auto& m : adapter_methods())
        if (m.peft_type == k || upper(m.name) == k) return &m;
    return nullptr;
}

const AdapterMethod& adapter_method(const std::string& key) {
    if (const auto* m = find_method(key)) return *m;
    std::vector<std::string> known;
    for (const auto& m : adapter_methods()) known.push_back(m.peft_type);
    throw Error("unsupported adapter method '" + key + "' (hra reads " + join_names(known) + " adapters)");
}

bool is_adapter_method(const std::string& key) { return find_method(key) != nullptr; }

const AdapterMethod* find_peft_type(const std::string& peft_type) {
    for (const auto& m : adapter_methods())
        if (m.peft_type == peft_type) return &m;
    return nullptr;
}

std::vector<std::string> adapter_method_names() {
    std::vector<std::string> out;
    for (const auto& m : adapter_methods()) out.push_back(m.name);
    return out;
}

}  // namespace hra
