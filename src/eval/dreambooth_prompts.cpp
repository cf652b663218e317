#include "eval/dreambooth_prompts.h"

#include <fstream>

#include "common/error.h"

namespace hra::eval {

namespace {

// `  'text'.format(unique_token, class_token),` (the comma optional) -> text. Parsed by hand:
// libstdc++'s std::regex recurses per character, and a long line overflowed the stack.
bool prompt_line(const std::string& line, std::string& prompt) {
    static const std::string tail = "'.format(unique_token, class_token)";
    auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; };
    size_t begin = 0, end = line.size();
    while (begin < end && is_space(line[begin])) ++begin;
    while (end > begin && is_space(line[end - 1])) --end;
    if (end > begin && line[end - 1] == ',') --end;
    if (end - begin < tail.size() + 1 || line[begin] != '\'' || line.compare(end - tail.size(), tail.size(), tail) != 0) return false;
    prompt = line.substr(begin + 1, end - tail.size() - begin - 1);
    return prompt.find_first_of("\r\n") == std::string::npos;  // the regex's '.' matched neither
}

}  // namespace

DreamBoothPrompts DreamBoothPrompts::load(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw Error("cannot open the prompt list", {path});
    DreamBoothPrompts p;
    enum { None, Classes, Object, Live } part = None;
    std::string line;
    long no = 0;
    while (std::getline(in, line)) {
        ++no;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line == "Classes") { part = Classes; continue; }
        if (line == "Object Prompts") { part = Object; continue; }
        if (line == "Live Subject Prompts") { part = Live; continue; }
        std::string prompt;
        if (part == Classes && line.find(',') != std::string::npos && line != "subject_name,class") {
            const auto comma = line.find(',');
            p.classes[line.substr(0, comma)] = line.substr(comma + 1);
        } else if ((part == Object || part == Live) && prompt_line(line, prompt)) {
            (part == Object ? p.object_prompts : p.live_prompts).push_back(prompt);
        } else if ((part == Object || part == Live) && line.find(".format(") != std::string::npos) {
            throw Error("cannot read this prompt line", {path, "", no});
        }
    }
    if (p.classes.empty() || p.object_prompts.size() != 25 || p.live_prompts.size() != 25)
        throw Error("expected a class list and 25 object and 25 live-subject prompts, found " + std::to_string(p.classes.size()) +
                        " classes, " + std::to_string(p.object_prompts.size()) + " and " + std::to_string(p.live_prompts.size()) + " prompts",
                    {path});
    return p;
}

DreamBoothPrompts DreamBoothPrompts::bundled() { return load(std::string(HRA_DATA_DIR) + "/dreambooth/prompts_and_classes.txt"); }

const std::string& DreamBoothPrompts::class_of(const std::string& subject) const {
    auto it = classes.find(subject);
    if (it == classes.end()) throw Error("unknown DreamBooth subject '" + subject + "'");
    return it->second;
}

bool DreamBoothPrompts::is_live(const std::string& subject) const {
    const auto& c = class_of(subject);
    return c == "cat" || c == "dog";
}

std::string DreamBoothPrompts::prompt(const std::string& subject, int index, bool seed_protocol, const std::string& token) const {
    const auto& list = seed_protocol || is_live(subject) ? live_prompts : object_prompts;
    if (index < 0 || index >= static_cast<int>(list.size()))
        throw Error("prompt index " + std::to_string(index) + " is out of 0.." + std::to_string(list.size() - 1));
    std::string out = list[static_cast<size_t>(index)];
    for (const auto& [key, value] : {std::pair<std::string, std::string>{"{0}", token}, {"{1}", class_of(subject)}}) {
        const auto at = out.find(key);
        if (at != std::string::npos) out.replace(at, key.size(), value);
    }
    return out;
}

}  // namespace hra::eval
