// Fused masked discriminative-query gather (DQ_CA core, spec 9.3-9.4.1).
//
// Semantics: reference.py in this folder (the spec); C API: masked_query_gather.h.
// Symbols: BN object rows, P pixels, Q queries, C = 256 channels, H heads of D = C/H channels.
//
// Design
// ------
// 1. mqg_argmax_kernel: grid (splits, ceil(Q/16), BN), 256 threads = 8 warps. A block owns one
//    object row bn, a chunk of up to 16 queries (K^ of the chunk lives in shared memory as fp32)
//    and a contiguous range of pixels. One warp handles one pixel at a time: lane l loads the
//    channels [8l, 8l+8) (coalesced, vectorised), the warp reduces ||x||^2 once per pixel,
//    every lane divides its 8 values by max(||x||, 1e-12) (like F.normalize), then for each
//    query the lane's 8-channel partial dot product is summed over the G = D/8 lanes of its head
//    with xor shuffles. fp32 accumulation for both dtypes.
//
//    Argmax with first-index tie-breaking and the all-blocked-row rule are folded into one
//    64-bit key per candidate, compared with unsigned max:
//        bit 63      1 if the pixel is allowed for the query (q < Q/2: foreground,
//                    q >= Q/2: background), else 0
//        bits 62..31 the score mapped to an order-preserving uint32 (-0 -> +0, NaN canonical)
//        bits 30..0  0x7fffffff - p (a smaller pixel index gives a larger key)
//    The maximum key is the best allowed pixel (highest score, then lowest p) when any pixel
//    is allowed, and otherwise the best pixel overall -- exactly "a row blocked at every pixel
//    is fully unblocked" -- without a separate pass that counts foreground pixels. Max is
//    associative and commutative, so per-lane running maxima, a shared-memory atomicMax per
//    block and a global atomicMax across pixel splits give the same, deterministic result.
//    This is the comparison `score > best || (score == best && p < best_p)` of a running
//    argmax, made order-independent.
// 2. mqg_gather_kernel: one warp per (bn, h, q) decodes the key, reloads that pixel, computes
//    X^ exactly as kernel 1 does (same code, same reduction order) and writes the head slice of
//    `gathered` and the index.
//
// The key workspace (BN*H*Q uint64) is zeroed with cudaMemsetAsync first; key 0 is below any
// candidate's key, so "no candidate" never wins.
//
// When compiled by torch.utils.cpp_extension (TORCH_EXTENSION_NAME defined) this file also
// provides the Python binding used by torch_op.py; the CMake build compiles it without torch.

#include "masked_query_gather.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>
#include <cstdio>

namespace s3rt_mqg
{

constexpr int kChannels = S3RT_MQG_CHANNELS; // C, fixed
constexpr int kLaneChannels = 8;             // channels per lane: 32 lanes x 8 = 256
constexpr int kWarps = 8;                    // warps per block
constexpr int kThreads = kWarps * 32;
constexpr int kQueryChunk = 16;              // queries per block (K^ chunk in shared memory)
constexpr int kMaxHeads = S3RT_MQG_MAX_HEADS;
constexpr int kMinPixelsPerBlock = 64;       // at least 8 pixels per warp before splitting P further
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kNormEps = 1e-12f;

static_assert(kChannels == 32 * kLaneChannels, "one warp covers the channel vector");

// ---- loads / stores of 8 consecutive channels (16-byte aligned) -------------------------------

__device__ __forceinline__ void load8(float const* __restrict__ src, float (&v)[8])
{
    float4 const a = __ldg(reinterpret_cast<float4 const*>(src));
    float4 const b = __ldg(reinterpret_cast<float4 const*>(src) + 1);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

__device__ __forceinline__ float half_bits_to_float(unsigned bits)
{
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits & 0xffffu)));
}

__device__ __forceinline__ void load8(__half const* __restrict__ src, float (&v)[8])
{
    uint4 const u = __ldg(reinterpret_cast<uint4 const*>(src));
    // little endian: the lower 16 bits of each 32-bit word hold the lower channel
    v[0] = half_bits_to_float(u.x); v[1] = half_bits_to_float(u.x >> 16);
    v[2] = half_bits_to_float(u.y); v[3] = half_bits_to_float(u.y >> 16);
    v[4] = half_bits_to_float(u.z); v[5] = half_bits_to_float(u.z >> 16);
    v[6] = half_bits_to_float(u.w); v[7] = half_bits_to_float(u.w >> 16);
}

__device__ __forceinline__ void store8(float* __restrict__ dst, float const (&v)[8])
{
    reinterpret_cast<float4*>(dst)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(dst)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

__device__ __forceinline__ unsigned pack_half2(float lo, float hi)
{
    unsigned const l = __half_as_ushort(__float2half_rn(lo));
    unsigned const h = __half_as_ushort(__float2half_rn(hi));
    return l | (h << 16);
}

__device__ __forceinline__ void store8(__half* __restrict__ dst, float const (&v)[8])
{
    uint4 u;
    u.x = pack_half2(v[0], v[1]);
    u.y = pack_half2(v[2], v[3]);
    u.z = pack_half2(v[4], v[5]);
    u.w = pack_half2(v[6], v[7]);
    *reinterpret_cast<uint4*>(dst) = u;
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

__device__ __forceinline__ bool mask_at(void const* __restrict__ mask, int mask_type, int64_t i)
{
    return mask_type == S3RT_MQG_MASK_INT32 ? __ldg(static_cast<int32_t const*>(mask) + i) != 0
                                            : __ldg(static_cast<uint8_t const*>(mask) + i) != 0;
}

// ---- X^ of one pixel: every lane holds its 8 channels; identical code in both kernels ---------

__device__ __forceinline__ void normalise8(float (&v)[8])
{
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i)
    {
        ss = fmaf(v[i], v[i], ss);
    }
    // xor butterfly: every lane ends with the same sum (each step adds a symmetric pair)
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
    {
        ss += __shfl_xor_sync(kFullMask, ss, off);
    }
    float const den = fmaxf(sqrtf(ss), kNormEps);
#pragma unroll
    for (int i = 0; i < 8; ++i)
    {
        v[i] = v[i] / den;
    }
}

// ---- argmax keys -----------------------------------------------------------------------------

__device__ __forceinline__ unsigned long long make_key(bool allowed, float score, int64_t p)
{
    unsigned bits = __float_as_uint(score);
    if (score == 0.f)
    {
        bits = 0u; // -0 == +0: equal scores must tie and fall back to the pixel index
    }
    if (score != score)
    {
        bits = 0x7fc00000u; // one NaN, above +inf (torch.argmax treats NaN as the maximum)
    }
    unsigned const ordered = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    unsigned const inv_p = 0x7fffffffu - static_cast<unsigned>(p);
    return (static_cast<unsigned long long>(allowed) << 63) | (static_cast<unsigned long long>(ordered) << 31)
        | static_cast<unsigned long long>(inv_p);
}

__device__ __forceinline__ int64_t key_pixel(unsigned long long key, int64_t num_pixels)
{
    int64_t const p = static_cast<int64_t>(0x7fffffffu - static_cast<unsigned>(key & 0x7fffffffull));
    return (key != 0ull && p < num_pixels) ? p : 0; // key 0 cannot happen for P >= 1
}

// Position of channel c of query row j in the shared K^ chunk. Lane l reads its channels
// [8l, 8l+4) and [8l+4, 8l+8) as two float4; swapping the halves for lanes with bit 2 set
// makes each quarter-warp's 16-byte reads hit 8 distinct bank groups.
__device__ __forceinline__ int key_slot(int j, int c)
{
    int const lane = c >> 3;
    int const half = (c >> 2) & 1;
    return j * kChannels + lane * kLaneChannels + 4 * (half ^ ((lane >> 2) & 1)) + (c & 3);
}

// ---- kernel 1: scores + running argmax keys --------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kThreads) mqg_argmax_kernel(T const* __restrict__ pixel,
    T const* __restrict__ query_key, void const* __restrict__ foreground, int mask_type,
    unsigned long long* __restrict__ keys, int64_t num_pixels, int num_queries, int num_heads,
    int64_t pixels_per_split)
{
    __shared__ __align__(16) float s_key[kQueryChunk * kChannels];
    __shared__ unsigned long long s_best[kMaxHeads * kQueryChunk];

    int const tid = threadIdx.x;
    int const lane = tid & 31;
    int const warp = tid >> 5;
    int64_t const bn = blockIdx.z;
    int const q0 = blockIdx.y * kQueryChunk;
    int const qc = min(kQueryChunk, num_queries - q0); // queries in this chunk (uniform)
    int const half_q = num_queries / 2;                // q < Q/2: foreground queries

    // K^ chunk -> shared (fp32, swizzled); rows beyond the chunk are zero and never read
    T const* key_rows = query_key + (bn * num_queries + q0) * kChannels;
    for (int i = tid; i < kQueryChunk * kChannels; i += kThreads)
    {
        int const j = i / kChannels;
        int const c = i - j * kChannels;
        s_key[key_slot(j, c)] = j < qc ? to_float(key_rows[static_cast<int64_t>(j) * kChannels + c]) : 0.f;
    }
    for (int i = tid; i < kMaxHeads * kQueryChunk; i += kThreads)
    {
        s_best[i] = 0ull;
    }
    __syncthreads();

    int const head_lanes = (kChannels / num_heads) / kLaneChannels; // G: lanes per head, power of 2
    int const head = lane / head_lanes;
    int const swap = (lane >> 2) & 1;
    float const* my_key = s_key + lane * kLaneChannels;

    unsigned long long best[kQueryChunk];
#pragma unroll
    for (int j = 0; j < kQueryChunk; ++j)
    {
        best[j] = 0ull;
    }

    int64_t const p_begin = static_cast<int64_t>(blockIdx.x) * pixels_per_split;
    int64_t const p_end = min(num_pixels, p_begin + pixels_per_split);
    T const* rows = pixel + bn * num_pixels * kChannels + lane * kLaneChannels;
    int64_t const mask_row = bn * num_pixels;

    int64_t p = p_begin + warp;
    float next[8];
    if (p < p_end)
    {
        load8(rows + p * kChannels, next);
    }
    for (; p < p_end; p += kWarps)
    {
        float x[8];
#pragma unroll
        for (int i = 0; i < 8; ++i)
        {
            x[i] = next[i];
        }
        bool const is_fg = mask_at(foreground, mask_type, mask_row + p);
        if (p + kWarps < p_end)
        {
            load8(rows + (p + kWarps) * kChannels, next); // prefetch this warp's next pixel
        }
        normalise8(x);

#pragma unroll
        for (int j = 0; j < kQueryChunk; ++j)
        {
            if (j < qc)
            {
                float4 const k_lo = *reinterpret_cast<float4 const*>(my_key + j * kChannels + 4 * swap);
                float4 const k_hi = *reinterpret_cast<float4 const*>(my_key + j * kChannels + 4 * (1 - swap));
                float dot = 0.f;
                dot = fmaf(x[0], k_lo.x, dot);
                dot = fmaf(x[1], k_lo.y, dot);
                dot = fmaf(x[2], k_lo.z, dot);
                dot = fmaf(x[3], k_lo.w, dot);
                dot = fmaf(x[4], k_hi.x, dot);
                dot = fmaf(x[5], k_hi.y, dot);
                dot = fmaf(x[6], k_hi.z, dot);
                dot = fmaf(x[7], k_hi.w, dot);
                for (int off = 1; off < head_lanes; off <<= 1)
                {
                    dot += __shfl_xor_sync(kFullMask, dot, off);
                }
                bool const allowed = is_fg == (q0 + j < half_q);
                unsigned long long const cand = make_key(allowed, dot, p);
                best[j] = cand > best[j] ? cand : best[j];
            }
        }
    }

    // block reduction: one lane per head group -> shared, then one global atomic per (h, q)
    if ((lane & (head_lanes - 1)) == 0)
    {
#pragma unroll
        for (int j = 0; j < kQueryChunk; ++j)
        {
            if (j < qc && best[j] != 0ull)
            {
                atomicMax(&s_best[head * kQueryChunk + j], best[j]);
            }
        }
    }
    __syncthreads();
    for (int i = tid; i < num_heads * kQueryChunk; i += kThreads)
    {
        int const h = i / kQueryChunk;
        int const j = i - h * kQueryChunk;
        if (j < qc && s_best[i] != 0ull)
        {
            atomicMax(&keys[(bn * num_heads + h) * num_queries + q0 + j], s_best[i]);
        }
    }
}

// ---- kernel 2: decode + gather epilogue --------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kThreads) mqg_gather_kernel(T const* __restrict__ pixel,
    unsigned long long const* __restrict__ keys, T* __restrict__ gathered, void* __restrict__ index,
    int index_type, int64_t batch_objects, int64_t num_pixels, int num_queries, int num_heads)
{
    int const lane = threadIdx.x & 31;
    int64_t const t = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); // (bn, h, q) flat
    if (t >= batch_objects * num_heads * num_queries)
    {
        return; // whole warp
    }
    int const q = static_cast<int>(t % num_queries);
    int const h = static_cast<int>((t / num_queries) % num_heads);
    int64_t const bn = t / (static_cast<int64_t>(num_queries) * num_heads);

    int64_t const p = key_pixel(keys[t], num_pixels);
    float x[8];
    load8(pixel + (bn * num_pixels + p) * kChannels + lane * kLaneChannels, x);
    normalise8(x);

    int const head_lanes = (kChannels / num_heads) / kLaneChannels;
    if (lane / head_lanes == h)
    {
        store8(gathered + (bn * num_queries + q) * kChannels + lane * kLaneChannels, x);
    }
    if (lane == 0)
    {
        if (index_type == S3RT_MQG_INDEX_INT32)
        {
            static_cast<int32_t*>(index)[t] = static_cast<int32_t>(p);
        }
        else
        {
            static_cast<int64_t*>(index)[t] = p;
        }
    }
}

// ---- host side ---------------------------------------------------------------------------------

bool is_aligned(void const* ptr, uintptr_t bytes)
{
    return (reinterpret_cast<uintptr_t>(ptr) % bytes) == 0;
}

int choose_splits(int64_t batch_objects, int64_t query_chunks, int64_t num_pixels)
{
    int device = 0;
    int sm_count = 0;
    if (cudaGetDevice(&device) != cudaSuccess
        || cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sm_count < 1)
    {
        (void) cudaGetLastError(); // clear: fall back to a fixed guess
        sm_count = 16;
    }
    int64_t const target_blocks = 4ll * sm_count;                 // a few resident blocks per SM
    int64_t const rows = batch_objects * query_chunks;
    int64_t splits = (target_blocks + rows - 1) / rows;
    int64_t const max_splits = (num_pixels + kMinPixelsPerBlock - 1) / kMinPixelsPerBlock;
    splits = splits < max_splits ? splits : max_splits;
    splits = splits < 1 ? 1 : splits;
    return static_cast<int>(splits);
}

template <typename T>
cudaError_t launch(void const* pixel, void const* query_key, void const* foreground, void* gathered, void* index,
    unsigned long long* keys, int64_t batch_objects, int64_t num_pixels, int num_queries, int num_heads,
    int mask_type, int index_type, cudaStream_t stream)
{
    int64_t const query_chunks = (num_queries + kQueryChunk - 1) / kQueryChunk;
    int const splits = choose_splits(batch_objects, query_chunks, num_pixels);
    int64_t const pixels_per_split = (num_pixels + splits - 1) / splits;
    size_t const key_bytes = s3rt_mqg_workspace_size(batch_objects, num_heads, num_queries);

    cudaError_t err = cudaMemsetAsync(keys, 0, key_bytes, stream);
    if (err != cudaSuccess)
    {
        return err;
    }
    dim3 const grid1(static_cast<unsigned>(splits), static_cast<unsigned>(query_chunks),
        static_cast<unsigned>(batch_objects));
    mqg_argmax_kernel<T><<<grid1, kThreads, 0, stream>>>(static_cast<T const*>(pixel),
        static_cast<T const*>(query_key), foreground, mask_type, keys, num_pixels, num_queries, num_heads,
        pixels_per_split);
    err = cudaGetLastError();
    if (err != cudaSuccess)
    {
        return err;
    }
    int64_t const warps = batch_objects * num_heads * num_queries;
    unsigned const grid2 = static_cast<unsigned>((warps + kWarps - 1) / kWarps);
    mqg_gather_kernel<T><<<grid2, kThreads, 0, stream>>>(static_cast<T const*>(pixel), keys,
        static_cast<T*>(gathered), index, index_type, batch_objects, num_pixels, num_queries, num_heads);
    return cudaGetLastError();
}

} // namespace s3rt_mqg

extern "C" int s3rt_mqg_is_supported(int64_t channels, int64_t num_heads, int64_t num_queries)
{
    if (channels != S3RT_MQG_CHANNELS || num_queries < 1)
    {
        return 0;
    }
    // D = C/H >= 8 and a power-of-two number of lanes per head
    return (num_heads == 1 || num_heads == 2 || num_heads == 4 || num_heads == 8 || num_heads == 16
               || num_heads == 32)
        ? 1
        : 0;
}

extern "C" size_t s3rt_mqg_workspace_size(int64_t batch_objects, int64_t num_heads, int64_t num_queries)
{
    if (batch_objects <= 0 || num_heads <= 0 || num_queries <= 0)
    {
        return 0;
    }
    return static_cast<size_t>(batch_objects * num_heads * num_queries) * sizeof(unsigned long long);
}

extern "C" int s3rt_masked_query_gather(void const* pixel, void const* query_key, void const* foreground,
    void* gathered, void* index, void* workspace, size_t workspace_bytes, int64_t batch_objects, int64_t num_pixels,
    int64_t num_queries, int64_t channels, int64_t num_heads, s3rt_mqg_dtype dtype, s3rt_mqg_mask_type mask_type,
    s3rt_mqg_index_type index_type, cudaStream_t stream)
{
    using namespace s3rt_mqg;
    if ((dtype != S3RT_MQG_FLOAT32 && dtype != S3RT_MQG_FLOAT16)
        || (mask_type != S3RT_MQG_MASK_UINT8 && mask_type != S3RT_MQG_MASK_INT32)
        || (index_type != S3RT_MQG_INDEX_INT64 && index_type != S3RT_MQG_INDEX_INT32))
    {
        return S3RT_MQG_ERROR_BAD_ENUM;
    }
    if (batch_objects < 0 || num_queries < 0 || num_pixels < 1 || num_pixels > 0x7fffffffll
        || batch_objects > 65535 || (num_queries + kQueryChunk - 1) / kQueryChunk > 65535)
    {
        return S3RT_MQG_ERROR_UNSUPPORTED_SHAPE;
    }
    if (batch_objects == 0 || num_queries == 0)
    {
        return S3RT_MQG_SUCCESS; // empty output, nothing to launch
    }
    if (!s3rt_mqg_is_supported(channels, num_heads, num_queries))
    {
        return S3RT_MQG_ERROR_UNSUPPORTED_SHAPE;
    }
    if (pixel == nullptr || query_key == nullptr || foreground == nullptr || gathered == nullptr || index == nullptr
        || workspace == nullptr)
    {
        return S3RT_MQG_ERROR_NULL_POINTER;
    }
    if (!is_aligned(pixel, 16) || !is_aligned(query_key, 16) || !is_aligned(gathered, 16)
        || !is_aligned(workspace, 8) || !is_aligned(index, index_type == S3RT_MQG_INDEX_INT64 ? 8 : 4)
        || !is_aligned(foreground, mask_type == S3RT_MQG_MASK_INT32 ? 4 : 1))
    {
        return S3RT_MQG_ERROR_MISALIGNED;
    }
    if (workspace_bytes < s3rt_mqg_workspace_size(batch_objects, num_heads, num_queries))
    {
        return S3RT_MQG_ERROR_WORKSPACE;
    }
    // An error left pending by earlier work would be returned by cudaGetLastError() after our
    // launch and blamed on it: refuse to launch and report it as "pending", leaving it in place.
    cudaError_t const pending = cudaPeekAtLastError();
    if (pending != cudaSuccess)
    {
        return S3RT_MQG_STATUS_CUDA_PENDING + static_cast<int>(pending);
    }
    auto* keys = static_cast<unsigned long long*>(workspace);
    int const q = static_cast<int>(num_queries);
    int const h = static_cast<int>(num_heads);
    cudaError_t const err = dtype == S3RT_MQG_FLOAT16
        ? launch<__half>(pixel, query_key, foreground, gathered, index, keys, batch_objects, num_pixels, q, h,
            mask_type, index_type, stream)
        : launch<float>(pixel, query_key, foreground, gathered, index, keys, batch_objects, num_pixels, q, h,
            mask_type, index_type, stream);
    return err == cudaSuccess ? S3RT_MQG_SUCCESS : S3RT_MQG_STATUS_CUDA_LAUNCH + static_cast<int>(err);
}

extern "C" cudaError_t s3rt_mqg_status_cuda_error(int status)
{
    if (status >= S3RT_MQG_STATUS_CUDA_PENDING)
    {
        return static_cast<cudaError_t>(status - S3RT_MQG_STATUS_CUDA_PENDING);
    }
    if (status >= S3RT_MQG_STATUS_CUDA_LAUNCH)
    {
        return static_cast<cudaError_t>(status - S3RT_MQG_STATUS_CUDA_LAUNCH);
    }
    return cudaSuccess;
}

extern "C" char const* s3rt_mqg_status_string(int status)
{
    switch (status)
    {
    case S3RT_MQG_SUCCESS: return "success";
    case S3RT_MQG_ERROR_UNSUPPORTED_SHAPE:
        return "unsupported shape: need C == 256, num_heads in {1,2,4,8,16,32}, 1 <= P < 2^31, BN <= 65535";
    case S3RT_MQG_ERROR_MISALIGNED:
        return "misaligned pointer: pixel, query_key and gathered must be 16-byte aligned";
    case S3RT_MQG_ERROR_BAD_ENUM: return "unknown dtype, mask type or index type";
    case S3RT_MQG_ERROR_NULL_POINTER: return "null pointer argument";
    case S3RT_MQG_ERROR_WORKSPACE: return "workspace smaller than s3rt_mqg_workspace_size()";
    default: break;
    }
    cudaError_t const err = s3rt_mqg_status_cuda_error(status);
    if (err == cudaSuccess)
    {
        return "unknown status";
    }
    thread_local char message[256];
    std::snprintf(message, sizeof(message), "%s (cudaError_t %d, %s): %s",
        status >= S3RT_MQG_STATUS_CUDA_PENDING ? "CUDA error pending before this launch (left by earlier work, or CUDA could not initialise); nothing launched"
                                               : "CUDA error in this launch",
        static_cast<int>(err), cudaGetErrorName(err), cudaGetErrorString(err));
    return message;
}

// ================================================================================================
// torch extension binding (only when built by torch.utils.cpp_extension, see torch_op.py)
// ================================================================================================
#ifdef TORCH_EXTENSION_NAME
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

namespace
{

at::Tensor aligned16(at::Tensor t)
{
    t = t.contiguous();
    if (reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0)
    {
        t = t.clone(at::MemoryFormat::Contiguous); // fresh allocation: aligned
    }
    return t;
}

std::tuple<at::Tensor, at::Tensor> masked_query_gather_cuda(
    at::Tensor const& pixel, at::Tensor const& query_key, at::Tensor const& foreground, int64_t num_heads)
{
    TORCH_CHECK(pixel.is_cuda() && query_key.is_cuda() && foreground.is_cuda(),
        "s3rt::masked_query_gather (CUDA): all inputs must be CUDA tensors");
    TORCH_CHECK(pixel.device() == query_key.device() && pixel.device() == foreground.device(),
        "s3rt::masked_query_gather (CUDA): inputs on different devices");
    TORCH_CHECK(pixel.dim() == 3 && query_key.dim() == 3 && foreground.dim() == 2,
        "s3rt::masked_query_gather (CUDA): expected pixel (BN, P, C), query_key (BN, Q, C), foreground (BN, P)");
    TORCH_CHECK(pixel.scalar_type() == query_key.scalar_type()
            && (pixel.scalar_type() == at::kFloat || pixel.scalar_type() == at::kHalf),
        "s3rt::masked_query_gather (CUDA): pixel and query_key must both be float32 or both float16");
    int64_t const bn = pixel.size(0);
    int64_t const p = pixel.size(1);
    int64_t const c = pixel.size(2);
    int64_t const q = query_key.size(1);
    TORCH_CHECK(query_key.size(0) == bn && query_key.size(2) == c && foreground.size(0) == bn
            && foreground.size(1) == p,
        "s3rt::masked_query_gather (CUDA): inconsistent shapes");

    c10::cuda::CUDAGuard const guard(pixel.device());
    at::Tensor const px = aligned16(pixel);
    at::Tensor const qk = aligned16(query_key);
    at::Tensor fg = foreground;
    if (fg.scalar_type() != at::kBool && fg.scalar_type() != at::kByte)
    {
        fg = fg.ne(0);
    }
    fg = fg.contiguous();

    at::Tensor gathered = at::empty({bn, q, c}, px.options());
    at::Tensor index = at::empty({bn, num_heads, q}, px.options().dtype(at::kLong));
    size_t const ws_bytes = s3rt_mqg_workspace_size(bn, num_heads, q);
    at::Tensor workspace
        = at::empty({static_cast<int64_t>(ws_bytes / sizeof(int64_t)) + 1}, px.options().dtype(at::kLong));

    int const status = s3rt_masked_query_gather(px.data_ptr(), qk.data_ptr(), fg.data_ptr(), gathered.data_ptr(),
        index.data_ptr(), workspace.data_ptr(), ws_bytes, bn, p, q, c, num_heads,
        px.scalar_type() == at::kHalf ? S3RT_MQG_FLOAT16 : S3RT_MQG_FLOAT32, S3RT_MQG_MASK_UINT8,
        S3RT_MQG_INDEX_INT64, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(status == S3RT_MQG_SUCCESS, "s3rt::masked_query_gather (CUDA): ", s3rt_mqg_status_string(status));
    return {gathered, index};
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("masked_query_gather", &masked_query_gather_cuda,
        "Fused masked discriminative-query gather: (pixel, query_key, foreground, num_heads) -> (gathered, index)");
    m.def("is_supported", &s3rt_mqg_is_supported, "1 if the kernel handles (channels, num_heads, num_queries)");
}
#endif // TORCH_EXTENSION_NAME
