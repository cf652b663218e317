// The hra command line: one file per subcommand, registered here.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace hra::cli {

// Each subcommand adds itself to the app and returns itself with the function
// that runs it once parsed.
struct Command {
    CLI::App* app;
    std::function<int()> run;
};
Command add_inspect(CLI::App& app);
Command add_export_lora(CLI::App& app);
Command add_export(CLI::App& app);
Command add_convert(CLI::App& app);
Command add_generate(CLI::App& app);
Command add_merge(CLI::App& app);
Command add_train(CLI::App& app);
// `hra train ... --out RUN --resume`: the run's recorded settings (RUN/config.json's
// command_line) added for every option not given; argv after "train".
std::vector<std::string> expand_resume(CLI::App* train, const std::vector<std::string>& args);
Command add_eval(CLI::App& app);
Command add_demo(CLI::App& app);
Command add_tokenize(CLI::App& app);
Command add_sd(CLI::App& app);
// `hra sd eval-subject` (sd_subject.cpp), added by add_sd.
Command add_sd_eval_subject(CLI::App& sd);
// `hra sd eval-control` (sd_control.cpp), added by add_sd.
Command add_sd_eval_control(CLI::App& sd);

}  // namespace hra::cli
