// --smoke: every benchmark program runs its smallest case once and checks no
// target (CI runs this to keep the programs working; its times mean nothing).
#pragma once

#include <cstring>

namespace hra::bench {

// Removes --smoke from argv (before Google Benchmark sees it); true when it was there.
inline bool take_smoke_flag(int& argc, char** argv) {
    bool found = false;
    int kept = 1;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--smoke") == 0)
            found = true;
        else
            argv[kept++] = argv[i];
    }
    argc = kept;
    argv[argc] = nullptr;
    return found;
}

}  // namespace hra::bench
