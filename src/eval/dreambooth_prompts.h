// The DreamBooth dataset's prompt list (prompts_and_classes.txt), as the subject-driven
// evaluation and demo read it.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace hra::eval {

// prompts_and_classes.txt of the DreamBooth dataset: subject → class noun, the
// 25 object and 25 live-subject prompts ({0} the unique token, {1} the class).
struct DreamBoothPrompts {
    std::map<std::string, std::string> classes;
    std::vector<std::string> object_prompts, live_prompts;

    static DreamBoothPrompts load(const std::string& path);
    static DreamBoothPrompts bundled();  // data/dreambooth/prompts_and_classes.txt
    // Live subjects are the cats and dogs (their class noun is cat or dog).
    bool is_live(const std::string& subject) const;
    const std::string& class_of(const std::string& subject) const;  // hra::Error for an unknown subject
    // The prompt of run (subject, index). `seed_protocol`: the live list for
    // every subject, as the seed's evaluate.py does (object subjects' prompts
    // 10–19 then name other scenes than were generated); else the subject's own list.
    std::string prompt(const std::string& subject, int index, bool seed_protocol, const std::string& token = "qwe") const;
};

}  // namespace hra::eval
