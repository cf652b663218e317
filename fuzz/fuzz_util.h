// Shared by the libFuzzer targets: readers that take a path get the input
// through a file in /dev/shm (or TMPDIR); hra::Error is the expected outcome
// of bad input, anything else (a crash, a sanitizer report, another exception
// escaping) is a finding.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "common/log.h"

namespace hra::fuzz {

// A file holding the current input; the same path for every input of a process.
// Removed when the process exits normally (libFuzzer's end of -max_total_time or -runs); after a
// crash it stays, beside the artifact libFuzzer writes.
inline const std::string& input_file(const uint8_t* data, size_t size, const char* suffix = "") {
    static const std::string path = [suffix] {
        const char* dir = std::getenv("HRA_FUZZ_TMP");
        return std::string(dir ? dir : "/dev/shm") + "/hra-fuzz-" + std::to_string(getpid()) + suffix;
    }();
    static const bool registered = [] {
        // A copy no destructor frees: atexit callbacks run after the statics made before them
        // are destroyed, so the callback must not read `path`.
        static char name[4096];
        std::snprintf(name, sizeof name, "%s", path.c_str());
        std::atexit([] { std::remove(name); });
        return true;
    }();
    (void)registered;
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) std::abort();
    if (size && std::fwrite(data, 1, size, f) != size) std::abort();
    std::fclose(f);
    return path;
}

// Runs `f`; hra::Error (bad input, named) is fine.
template <class F>
void expect_named_errors(F&& f) {
    static const bool quiet = [] {
        set_log_level(LogLevel::Error);
        return true;
    }();
    (void)quiet;
    try {
        f();
    } catch (const Error&) {
    }
}

}  // namespace hra::fuzz
