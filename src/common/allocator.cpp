#include "common/allocator.h"

#include <dlfcn.h>
#include <malloc.h>

#include <cstring>

#ifdef HRA_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>

// Read by jemalloc at its first allocation (before main); MALLOC_CONF overrides it.
// -1: freed pages stay mapped, so the next step reuses them without page faults
// (the high-water mark stays resident; a long-lived `hra serve` keeps its peak).
const char* malloc_conf = "dirty_decay_ms:-1,muzzy_decay_ms:-1";
#endif

namespace hra {

bool built_with_jemalloc() {
#ifdef HRA_HAVE_JEMALLOC
    return true;
#else
    return false;
#endif
}

void release_free_memory() {
#ifdef HRA_HAVE_JEMALLOC
    // "arena.<MALLCTL_ARENAS_ALL>.purge": every arena's dirty and muzzy pages back to the kernel.
    if (built_with_jemalloc() && mallctl("arena.4096.purge", nullptr, nullptr, nullptr, 0) == 0) return;
#endif
    malloc_trim(0);
}

std::string allocator_description() {
    Dl_info where{};
    void* m = dlsym(RTLD_DEFAULT, "malloc");
    const bool jemalloc = m && dladdr(m, &where) && where.dli_fname && std::strstr(where.dli_fname, "jemalloc");
#ifdef HRA_HAVE_JEMALLOC
    if (jemalloc) {
        const char* version = nullptr;
        size_t size = sizeof version;
        std::string s = "jemalloc";
        if (mallctl("version", &version, &size, nullptr, 0) == 0 && version) {
            s += " ";
            s += std::string(version).substr(0, std::string(version).find('-'));
        }
        ssize_t decay = 0;
        size = sizeof decay;
        if (mallctl("arenas.dirty_decay_ms", &decay, &size, nullptr, 0) == 0)
            s += decay < 0 ? " (freed pages kept)" : " (dirty pages decay in " + std::to_string(decay) + " ms)";
        return s;
    }
#endif
    if (jemalloc) return "jemalloc (preloaded)";
    if (m && where.dli_fname && std::strstr(where.dli_fname, "libc.so")) return "glibc malloc";
    return m && where.dli_fname ? std::string("malloc from ") + where.dli_fname : "unknown malloc";
}

}  // namespace hra
