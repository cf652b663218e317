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
    std::fflush(nullptr);
    for (int r = 0; r < nproc; ++r) {
        const pid_t pid = fork();
        if (pid < 0) throw Error("--nproc: fork failed");
        if (pid == 0) {
            setenv("RANK", std::to_string(r).c_str(), 1);
            setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
            setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
            setenv("MASTER_ADDR", "127.0.0.1", 1);
            setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
            std::vector<char*> argv;
            for (auto& a : g_args) argv.push_back(const_cast<char*>(a.c_str()));
            argv.push_back(nullptr);
            execv("/proc/self/exe", argv.data());
            std::perror("hra: exec");
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
    while (alive > 0) {
        int status = 0;
        const pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno != EINTR) break;
        if (pid <= 0) {
            if (std::chrono::steady_clock::now() > deadline) forward_signal(SIGKILL);
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            continue;
        }
        for (auto& p : g_children)
            if (p == pid) p = -1;
        --alive;
        const int code = exit_code(status);
        if (code == 130) interrupted = 130;
        else if (code != 0 && !failure) {
            failure = code;
            std::fprintf(stderr, "hra: worker process %d failed (exit %d); stopping the others\n", static_cast<int>(pid), code);
            forward_signal(SIGTERM);
            deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        }
    }
    return failure ? failure : interrupted;
}

}  // namespace hra::cli
