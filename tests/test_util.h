// Helpers shared by the tests.
#pragma once

#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/error.h"

namespace hra::test {

// max|a − b| / max|b| (the relative error the PEFT parity checks use).
inline double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
    auto ad = a.detach().to(torch::kCPU, torch::kDouble), bd = b.detach().to(torch::kCPU, torch::kDouble);
    const double scale = bd.abs().max().item<double>();
    const double diff = (ad - bd).abs().max().item<double>();
    return scale > 0 ? diff / scale : diff;
}

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
    return (a.detach().to(torch::kCPU, torch::kDouble) - b.detach().to(torch::kCPU, torch::kDouble)).abs().max().item<double>();
}

// A fresh empty folder under the system temp dir, removed by the destructor.
class TempDir {
public:
    TempDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "hra-test-XXXXXX").string();
        char* made = mkdtemp(pattern.data());
        if (!made) throw std::runtime_error("mkdtemp failed");
        path_ = made;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return path_; }
    std::string operator/(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }

private:
    std::string path_;
};

// The repo's test fixtures folder (compiled in), or an override from the environment.
inline std::string fixture_dir(const char* env_var, const std::string& repo_subdir) {
    if (const char* env = std::getenv(env_var); env && *env) return env;
    return std::string(HRA_TEST_FIXTURES) + "/" + repo_subdir;
}

// The message of the hra::Error that `f` throws; "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

// Parity executables: one line per check with its largest relative error.
struct ParityReport {
    int width = 34;
    int failures = 0, checks = 0;
    void check(const std::string& what, double err, double tol) {
        const bool ok = err <= tol;
        ++checks;
        std::printf("  %-4s %-*s max rel err %.2e (tol %.0e)\n", ok ? "OK" : "FAIL", width, what.c_str(), err, tol);
        failures += ok ? 0 : 1;
    }
};

// The fixture folders of a parity program: the subfolders holding
// io.safetensors of $env_var, or of the repo's copies (then exactly `expected`
// of them), sorted. None, or a lost repo folder, is a failure in `rep`.
inline std::vector<std::string> parity_folders(const char* env_var, const std::string& repo_subdir, size_t expected,
                                               ParityReport& rep) {
    const char* env = std::getenv(env_var);
    const bool from_env = env && *env;
    const std::string root = from_env ? env : std::string(HRA_TEST_FIXTURES) + "/" + repo_subdir;
    std::printf("parity against %s\n", root.c_str());
    std::vector<std::string> dirs;
    for (const auto& e : std::filesystem::directory_iterator(root))
        if (e.is_directory() && std::filesystem::exists(e.path() / "io.safetensors")) dirs.push_back(e.path().string());
    std::sort(dirs.begin(), dirs.end());
    if (dirs.empty()) rep.check("fixture folders (io.safetensors) found", 1.0, 0);
    if (!from_env && dirs.size() != expected)
        rep.check("repo fixture folders: " + std::to_string(dirs.size()) + " of " + std::to_string(expected), 1.0, 0);
    return dirs;
}

// A parity program's summary line and exit status.
inline int parity_exit(const ParityReport& rep, size_t folders) {
    if (rep.failures) {
        std::printf("%d checks failed (%zu folders)\n", rep.failures, folders);
        return 1;
    }
    std::printf("all checks passed (%zu folders)\n", folders);
    return 0;
}

#ifdef HRA_TEST_FIXTURES
// A file or folder of tests/fixtures.
inline std::string fixture(const std::string& rel) { return std::string(HRA_TEST_FIXTURES) + "/" + rel; }
#endif

// A file of the repository's bundled data folder (data/).
inline std::string data_file(const std::string& name) { return std::string(HRA_DATA_DIR) + "/" + name; }

#ifdef HRA_EXE
struct Result {
    int code;
    std::string out, err;
};

inline std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// Runs the hra executable with `args`; stdout and stderr go through files in `dir`.
inline Result run_hra(const std::string& args, const TempDir& dir) {
    const std::string out = dir / "stdout.txt", err = dir / "stderr.txt";
    const std::string cmd = std::string(HRA_EXE) + " " + args + " >" + out + " 2>" + err;
    const int status = std::system(cmd.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

// `hra convert llama2c` of the bundled stories260K into dir/name (a real 260K-parameter Llama).
inline Result convert_stories260k(const TempDir& dir, const std::string& name = "s260") {
    return run_hra("-q convert llama2c --model " + data_file("stories260K/stories260K.bin") + " --tokenizer " +
                       data_file("stories260K/tok512.bin") + " --out " + (dir / name),
                   dir);
}
#endif

}  // namespace hra::test
