// The one place that knows libtorch 1.13 from 2.x. Debian's libtorch is 1.13
// (CPU); CUDA builds use libtorch 2.x through -DCMAKE_PREFIX_PATH.
#pragma once

#include <ATen/ATen.h>
#include <torch/version.h>
#if defined(HRA_WITH_CUDA)  // set by CMake for a CUDA libtorch (Debian ships the headers without CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#define HRA_TORCH_HAS_CUDA 1
#else
#define HRA_TORCH_HAS_CUDA 0
#endif

#if TORCH_VERSION_MAJOR >= 2
#define HRA_TORCH_HAS_SDPA 1
#else
#define HRA_TORCH_HAS_SDPA 0
#endif

namespace hra::compat {

// Whether the fused scaled-dot-product attention op exists in this libtorch.
constexpr bool has_fused_attention() { return HRA_TORCH_HAS_SDPA != 0; }

#if HRA_TORCH_HAS_SDPA
// softmax(q·kᵀ/√d + mask)·v with libtorch's fused kernel; q, k, v [B, H, T, D]
// (k and v already repeated to H heads), mask additive, broadcastable.
inline at::Tensor fused_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& mask) {
    return at::scaled_dot_product_attention(q, k, v, mask, 0.0, /*is_causal=*/false);
}
#endif

// scale·(a·b) for batched matrices, as diffusers' baddbmm(empty, a, b, beta=0,
// alpha=scale). libtorch 1.13's small-matrix CPU kernel reads the uninitialised
// result when beta is 0 (NaN leaks in at random), so the input is
// zeros and beta 1: the same numbers on every version.
inline at::Tensor scaled_bmm(const at::Tensor& a, const at::Tensor& b, double scale) {
    return at::baddbmm(at::zeros({a.size(0), a.size(1), b.size(2)}, a.options()), a, b, /*beta=*/1.0, /*alpha=*/scale);
}

// Peak bytes the CUDA caching allocator handed out on `device` (-1 without CUDA).
inline double cuda_peak_allocated_bytes(int device) {
#if HRA_TORCH_HAS_CUDA
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
    return static_cast<double>(
        stats.allocated_bytes[static_cast<size_t>(c10::cuda::CUDACachingAllocator::StatType::AGGREGATE)].peak);
#else
    (void)device;
    return -1;
#endif
}

// Waits for the device's queued work (timing); nothing on CPU.
inline void cuda_synchronize(const c10::Device& device) {
#if HRA_TORCH_HAS_CUDA
    if (device.is_cuda()) c10::cuda::device_synchronize();
#else
    (void)device;
#endif
}

}  // namespace hra::compat
