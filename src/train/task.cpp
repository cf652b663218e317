#include "train/task.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

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

EvalTotals evaluate_in_batches(const TrainOptions& o, int64_t size,
                               const std::function<BatchLoss(const std::vector<int64_t>& rows, at::Generator* gen)>& loss) {
    torch::NoGradGuard ng;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + 104729);
    const int64_t bs = o.eval_batch_size > 0 ? o.eval_batch_size : o.batch_size;
    EvalTotals t;
    for (int64_t start = 0; start < size; start += bs) {
        std::vector<int64_t> rows;
        for (int64_t i = start; i < std::min(size, start + bs); ++i) rows.push_back(i);
        const auto l = loss(rows, &gen);
        t.sum += l.sum.item<double>();
        t.count += l.count;
    }
    return t;
}

}  // namespace hra
