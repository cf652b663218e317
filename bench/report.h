// The display reporter that --benchmark_format names, with a hook the programs use to record what
// their own tables need. Their tables and notes go to stderr, so that stdout is the reporter's
// alone (JSON with --benchmark_format=json).
#pragma once

#include <unistd.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

namespace hra::bench {

using Runs = std::vector<benchmark::BenchmarkReporter::Run>;
// Sees every batch of runs and returns those to report (all of them, or a selection).
using RunsHook = std::function<Runs(const Runs&)>;

template <class Base>
class Hooked : public Base {
public:
    template <class... A>
    explicit Hooked(RunsHook hook, A... args) : Base(args...), hook_(std::move(hook)) {}
    void ReportRuns(const Runs& runs) override {
        const Runs shown = hook_(runs);
        if (!shown.empty()) Base::ReportRuns(shown);
    }

private:
    RunsHook hook_;
};

// Reads --benchmark_format from argv (call before benchmark::Initialize): json gives Google
// Benchmark's JSON reporter, anything else its console table.
inline std::unique_ptr<benchmark::BenchmarkReporter> reporter_for(int argc, char** argv, RunsHook hook) {
    std::string format = "console";
    for (int i = 1; i < argc; ++i)
        if (std::strncmp(argv[i], "--benchmark_format=", 19) == 0) format = argv[i] + 19;
    if (format == "json") return std::make_unique<Hooked<benchmark::JSONReporter>>(std::move(hook));
    const auto options = isatty(STDOUT_FILENO) ? benchmark::ConsoleReporter::OO_ColorTabular : benchmark::ConsoleReporter::OO_Tabular;
    return std::make_unique<Hooked<benchmark::ConsoleReporter>>(std::move(hook), options);
}

}  // namespace hra::bench
