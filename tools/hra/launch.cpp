#include "launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "common/error.h"
#include "common/log.h"

extern char** environ;

namespace hra::cli {

namespace {

std::vector<std::string> g_args;
std::vector<pid_t> g_children;

extern "C" void forward_signal(int sig) {
    for (pid_t p : g_children)
        if (p > 0) kill(p, sig);
}

int free_port() {
    const int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) throw Error("--nproc: cannot open a socket to find a free port");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        close(s);
        throw Error("--nproc: cannot find a free port on 127.0.0.1");
    }
    close(s);
    return ntohs(a.sin_port);
}

int exit_code(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}

}  // namespace

void set_program_args(int argc, char** argv) { g_args.assign(argv, argv + argc); }

int launch_workers(int nproc) {
    if (g_args.empty()) throw Error("--nproc: the command line is unknown");
    const int port = free_port();
    // argv and each worker's environment are built before fork: between fork
    // and exec a multi-threaded process may only make async-signal-safe calls.
    std::vector<char*> argv;
    for (auto& a : g_args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<std::string> base_env;
    for (char** e = environ; *e; ++e) {
        const std::string kv = *e, key = kv.substr(0, kv.find('='));
        if (key != "RANK" && key != "LOCAL_RANK" && key != "WORLD_SIZE" && key != "MASTER_ADDR" && key != "MASTER_PORT")
            base_env.push_back(kv);
    }
    std::vector<std::vector<std::string>> envs(static_cast<size_t>(nproc), base_env);
    std::vector<std::vector<char*>> envps(static_cast<size_t>(nproc));
    for (int r = 0; r < nproc; ++r) {
        auto& e = envs[static_cast<size_t>(r)];
        e.push_back("RANK=" + std::to_string(r));
        e.push_back("LOCAL_RANK=" + std::to_string(r));
        e.push_back("WORLD_SIZE=" + std::to_string(nproc));
        e.push_back("MASTER_ADDR=127.0.0.1");
        e.push_back("MASTER_PORT=" + std::to_string(port));
        for (auto& s : e) envps[static_cast<size_t>(r)].push_back(s.data());
        envps[static_cast<size_t>(r)].push_back(nullptr);
    }
    static const char kExecFailed[] = "hra: cannot start a worker (exec failed)\n";
    std::fflush(nullptr);
    for (int r = 0; r < nproc; ++r) {
        const pid_t pid = fork();
        if (pid < 0) throw Error("--nproc: fork failed");
        if (pid == 0) {
            execve("/proc/self/exe", argv.data(), envps[static_cast<size_t>(r)].data());
            (void)!write(STDERR_FILENO, kExecFailed, sizeof kExecFailed - 1);
            _exit(127);
        }
        g_children.push_back(pid);
    }
    struct sigaction sa {};
    sa.sa_handler = forward_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);

    int failure = 0, interrupted = 0;
    size_t alive = g_children.size();
    auto deadline = std::chrono::steady_clock::time_point::max();
    bool term_sent = false;  // SIGTERM went out; at the deadline SIGKILL follows
    while (alive > 0) {
        int status = 0;
        const pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno != EINTR) break;
        if (pid <= 0) {
            const auto now = std::chrono::steady_clock::now();
            if (now > deadline && !term_sent) {
                forward_signal(SIGTERM);
                term_sent = true;
                deadline = now + std::chrono::seconds(20);
            } else if (now > deadline) {
                forward_signal(SIGKILL);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            continue;
        }
        for (auto& p : g_children)
            if (p == pid) p = -1;
        --alive;
        const int code = exit_code(status);
        if (code == 130) {
            // The others stop at the same step; one that does not (it was still
            // loading when the signal came) is stopped after a minute.
            interrupted = 130;
            if (alive > 0 && deadline == std::chrono::steady_clock::time_point::max()) {
                deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
                term_sent = false;
            }
        } else if (code != 0 && !failure) {
            failure = code;
            log_error("worker process " + std::to_string(pid) + " failed (exit " + std::to_string(code) + "); stopping the others");
            forward_signal(SIGTERM);
            term_sent = true;
            deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        }
    }
    return failure ? failure : interrupted;
}

}  // namespace hra::cli
