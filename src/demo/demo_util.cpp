#include "demo/demo_util.h"

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <iostream>

#include <ATen/Parallel.h>

#include "common/error.h"
#include "io/atomic_file.h"

namespace hra::demo_util {

std::vector<nlohmann::json> run_forked(const std::vector<ForkedJob>& jobs, int64_t parallel) {
    parallel = std::max<int64_t>(1, parallel);
    std::vector<nlohmann::json> results(jobs.size());
    struct Child {
        pid_t pid;
        size_t job;
    };
    std::vector<Child> running;
    std::vector<std::string> failures;
    // Waits for one child, reads its result file (or notes why there is none).
    auto reap = [&]() {
        int status = 0;
        const pid_t pid = ::waitpid(-1, &status, 0);
        if (pid < 0) throw Error(std::string("waiting for a demo run: ") + std::strerror(errno));
        const auto it = std::find_if(running.begin(), running.end(), [pid](const Child& c) { return c.pid == pid; });
        if (it == running.end()) return;
        const ForkedJob& job = jobs[it->job];
        nlohmann::json got;
        try {
            got = nlohmann::json::parse(io::read_file(job.result_file));
        } catch (const std::exception&) {
            got = {{"error", WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                                 : "exit status " + std::to_string(WEXITSTATUS(status)) + " and no result"}};
        }
        if (got.contains("error")) failures.push_back(job.name + ": " + got["error"].get<std::string>());
        results[it->job] = got;
        running.erase(it);
    };
    for (size_t i = 0; i < jobs.size(); ++i) {
        while (static_cast<int64_t>(running.size()) >= parallel) reap();
        std::error_code ec;
        std::filesystem::remove(jobs[i].result_file, ec);
        std::fflush(nullptr);  // nothing buffered is written twice
        std::cout.flush();
        std::cerr.flush();
        const pid_t pid = ::fork();
        if (pid < 0) throw Error(std::string("starting a demo run: ") + std::strerror(errno));
        if (pid == 0) {
            // The child: one intra-op thread (with one, ATen and OpenBLAS never enter an OpenMP team, the
            // parent's pool stays untouched), the job, its JSON, and _exit (no destructors of the parent's state).
            int code = 0;
            nlohmann::json out;
            try {
                at::set_num_threads(1);
                out = jobs[i].run();
            } catch (const std::exception& e) {
                out = {{"error", e.what()}}, code = 1;
            } catch (...) {
                out = {{"error", "unknown exception"}}, code = 1;
            }
            try {
                io::write_file_atomically(jobs[i].result_file, out.dump());
            } catch (const std::exception& e) {
                std::fprintf(stderr, "%s: %s\n", jobs[i].name.c_str(), e.what());
                code = 1;
            }
            std::fflush(nullptr);
            ::_exit(code);
        }
        running.push_back({pid, i});
    }
    while (!running.empty()) reap();
    if (!failures.empty()) {
        std::string all;
        for (const auto& f : failures) all += (all.empty() ? "" : "; ") + f;
        throw Error("demo runs failed: " + all);
    }
    return results;
}

}  // namespace hra::demo_util
