// Matrix products with a skinny side (an adapter's r columns) on a multi-core CPU.
//
// OpenBLAS (0.3.21, OpenMP) threads a product such as rows[n, d]·V[d, 8] badly:
// on this project's 2-core machine two of its threads took 1,086 µs for
// n=1024, d=2048, r=8, one thread 629 µs, and two single-threaded calls on half
// the rows each 317 µs (the same for rowsᵀ·P: 1,244 / 847 / 433 µs). No maintained
// library offers this split, so it is written here: the rows of the first factor
// are cut into one block per thread and each block is one BLAS call inside an
// ATen parallel region (where OpenBLAS and MKL run single-threaded). Under 2 M
// multiply-adds, or when autograd would record the product (an operand requires
// grad and grad mode is on), a product is one at::mm / at::addmm on one BLAS thread
// (OpenBLAS's own threads were slower on these shapes); with one thread, inside a
// parallel region or off the CPU, a plain call. The blocks run with the caller's
// thread-local state (grad mode, InferenceMode).
// The source must be compiled with OpenMP (src/CMakeLists.txt): without it
// at::parallel_for runs the blocks one after another, as in the fuzz build.
#pragma once

#include <ATen/core/Tensor.h>

namespace hra::core {

// a·b for a [n, k], b [k, m] (any strides, e.g. a transposed view).
at::Tensor mm_by_rows(const at::Tensor& a, const at::Tensor& b);

// beta·c + alpha·a·b, c [n, m].
at::Tensor addmm_by_rows(const at::Tensor& c, const at::Tensor& a, const at::Tensor& b, double beta, double alpha);

}  // namespace hra::core
