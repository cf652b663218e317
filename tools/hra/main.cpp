// hra: Householder Reflection Adaptation toolkit, command-line entry point.
#include <algorithm>
#include <cstdio>
#include <vector>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>
#include <torch/version.h>

#include "commands.h"
#include "config_file.h"
#include "launch.h"
#include "common/error.h"
#include "common/log.h"
#include "common/runtime.h"

int main(int argc, char** argv) {
    hra::cli::set_program_args(argc, argv);
    CLI::App app{"hra: fine-tune with Householder Reflection Adaptation (and LoRA), PEFT-compatible", "hra"};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string("hra ") + HRA_VERSION + " (libtorch " + TORCH_VERSION + ")");
    int threads = 0;
    app.add_option("--threads", threads, "intra-op threads (default: OMP_NUM_THREADS, else all online CPUs)")
        ->envname("HRA_THREADS")
        ->check(CLI::NonNegativeNumber);
    bool quiet = false, verbose = false;
    app.add_flag("-q,--quiet", quiet, "print only warnings and errors on stderr (no summaries, step lines, progress)");
    app.add_flag("-v,--verbose", verbose, "also print debug details on stderr");

    const std::vector<hra::cli::Command> commands = {
        hra::cli::add_demo(app),
        hra::cli::add_train(app),
        hra::cli::add_eval(app),
        hra::cli::add_generate(app),
        hra::cli::add_merge(app),
        hra::cli::add_export_lora(app),
        hra::cli::add_export(app),
        hra::cli::add_convert(app),
        hra::cli::add_inspect(app),
        hra::cli::add_tokenize(app),
        hra::cli::add_sd(app),
    };

    // Settings from `--config FILE` of a subcommand join the command line.
    std::vector<std::string> args(argv + 1, argv + argc);
    // `hra sd train-subject ...` is `hra train --task dreambooth ...`, `hra sd train-control ...` `hra train --task control ...`.
    for (size_t i = 0; i + 1 < args.size(); ++i)
        if (args[i] == "sd" && (args[i + 1] == "train-subject" || args[i + 1] == "train-control")) {
            const std::string task = args[i + 1] == "train-subject" ? "dreambooth" : "control";
            args[i] = "train";
            args[i + 1] = "--task";
            args.insert(args.begin() + static_cast<long>(i) + 2, task);
            break;
        }
    try {
        for (size_t i = 0; i < args.size(); ++i) {
            CLI::App* sub = nullptr;
            for (const auto& c : commands)
                if (c.app->get_name() == args[i]) sub = c.app;
            if (!sub) continue;
            std::vector<std::string> rest(args.begin() + static_cast<long>(i) + 1, args.end());
            rest = hra::cli::expand_config(sub, rest);
            if (sub->get_name() == "train") rest = hra::cli::expand_resume(sub, rest);
            args.resize(i + 1);
            args.insert(args.end(), rest.begin(), rest.end());
            break;
        }
    } catch (const hra::Error& e) {
        hra::log_error(e.what());
        return 1;
    }
    std::reverse(args.begin(), args.end());  // CLI11 takes the arguments reversed
    try {
        app.parse(args);
    } catch (const CLI::ParseError& e) {
        const int code = app.exit(e);
        // An unknown long option: name the nearest one of the subcommand it was given to.
        const CLI::App* sub = &app;
        for (const auto& c : commands)
            if (c.app->parsed()) sub = c.app;
        for (const auto* s : sub->get_subcommands({}))
            if (s->parsed()) sub = s;
        for (const auto& a : args) {
            if (a.rfind("--", 0) != 0 || a.size() < 3) continue;
            const std::string name = a.substr(2, a.find('=') == std::string::npos ? std::string::npos : a.find('=') - 2);
            if (sub->get_option_no_throw("--" + name) || app.get_option_no_throw("--" + name)) continue;
            const std::string hint = hra::cli::nearest_option_hint(sub, name);
            if (!hint.empty()) std::fprintf(stderr, "hra: unknown option --%s%s\n", name.c_str(), hint.c_str());
        }
        return code;
    }
    try {
        if (quiet && verbose) throw hra::Error("--quiet and --verbose exclude each other");
        hra::set_log_level(quiet ? hra::LogLevel::Warning : verbose ? hra::LogLevel::Debug : hra::LogLevel::Info);
        hra::init_runtime(threads);
        for (const auto& c : commands)
            if (c.app->parsed()) return c.run();
        return 2;
    } catch (const hra::Error& e) {
        hra::log_error(e.what());
        return 1;
    } catch (const c10::Error& e) {
        // libtorch's messages carry a backtrace; keep the first line.
        std::string msg = e.what_without_backtrace();
        hra::log_error(msg.substr(0, msg.find('\n')));
        return 1;
    } catch (const std::exception& e) {
        hra::log_error(e.what());
        return 1;
    }
}
