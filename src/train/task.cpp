#include "train/task.h"

#include "common/error.h"

namespace hra {

const std::vector<TaskInfo>& task_registry() {
    static const std::vector<TaskInfo> tasks = [] {
        std::vector<TaskInfo> all;
        for (auto family : {causal_lm_tasks, glue_tasks, mlm_tasks, text_to_image_tasks})
            for (auto& t : family()) all.push_back(std::move(t));
        return all;
    }();
    return tasks;
}

const TaskInfo& find_task(const std::string& name) {
    std::string names;
    for (const auto& t : task_registry()) {
        if (t.name == name) return t;
        names += (names.empty() ? "" : ", ") + t.name;
    }
    throw Error("unknown task '" + name + "' (tasks: " + names + ")");
}

std::set<std::string> task_specific_options() {
    std::set<std::string> out;
    for (const auto& t : task_registry()) out.insert(t.options.begin(), t.options.end());
    return out;
}

}  // namespace hra
