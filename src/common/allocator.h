// The process's memory allocator. hra links jemalloc when it is found at build
// time (Debian's libjemalloc-dev) and configures it never to return freed pages
// to the kernel: a training step frees and reallocates the same ~1 GB of
// activations, logits and gradients each time, and glibc (which maps every block
// above 32 MB afresh) or jemalloc's default decay refault them page by page
// (2.1 million minor faults and 8 s of system time in 15 s of bench_train's
// LoRA step at dim 512). MALLOC_CONF in the environment overrides the setting.
#pragma once

#include <string>

namespace hra {

// "jemalloc 5.3.0 (freed pages kept)", "glibc malloc", ...: what malloc() is in
// this process, found from where the dynamic linker resolved `malloc`.
std::string allocator_description();

// Returns freed pages to the kernel now (jemalloc: purges every arena; glibc:
// malloc_trim), so that a peak-memory reading (VmHWM) taken next starts from
// the live memory only: with freed pages kept, one case's garbage would count
// in the next case's peak.
void release_free_memory();

// Whether this build linked jemalloc (HRA_WITH_JEMALLOC and libjemalloc-dev found).
bool built_with_jemalloc();

}  // namespace hra
