// Files the command line reads besides data and models: a --config file (YAML or JSON, expanded
// into a subcommand's options) and the DreamBooth prompt list. The first byte picks the reader.
#include <CLI/CLI.hpp>

#include "config_file.h"
#include "eval/dreambooth_prompts.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const auto& path = hra::fuzz::input_file(data + 1, size - 1, ".txt");
    if (data[0] & 1) {
        hra::fuzz::expect_named_errors([&] { (void)hra::eval::DreamBoothPrompts::load(path); });
        return 0;
    }
    // A subcommand with each kind of option hra's commands have.
    static CLI::App app;
    static CLI::App* sub = [] {
        static int64_t steps = 0;
        static double lr = 0;
        static std::vector<std::string> targets;
        static bool packing = false;
        CLI::App* s = app.add_subcommand("train");
        s->add_option("--max-steps", steps);
        s->add_option("--lr", lr);
        s->add_option("--target-modules", targets);
        s->add_flag("--packing", packing);
        hra::cli::add_config_option(s);
        return s;
    }();
    hra::fuzz::expect_named_errors([&] { (void)hra::cli::expand_config(sub, {"--max-steps", "3", "--config", path}); });
    return 0;
}
