// Fused masked discriminative-query gather (DQ_CA core, spec 9.3-9.4.1): C API.
//
// The semantics are defined by reference.py in this folder (masked_query_gather_numpy/_torch):
//
//   pixel       (BN, P, C)  float/half   pixel tokens + positional embedding, not normalised
//   query_key   (BN, Q, C)  float/half   K^, already L2-normalised over C
//   foreground  (BN, P)     uint8/int32  nonzero = foreground for this object row
//   X^ = pixel / max(||pixel||_2, 1e-12);   heads = H contiguous channel slices of D = C/H
//   s[bn,h,p,q] = <X^[bn,p,h-slice], K^[bn,q,h-slice]>
//   q <  Q/2 reads only foreground pixels, q >= Q/2 only background pixels; a row whose
//   allowed set is empty reads all pixels
//   index[bn,h,q]            = argmax_p s[bn,h,:,q]  (first index on ties)
//   gathered[bn,q,h-slice]   = X^[bn, index[bn,h,q], h-slice]
//
// Outputs: gathered (BN, Q, C) in the input dtype, index (BN, H, Q) int64 or int32.
// All tensors dense row-major (contiguous); pixel, query_key and gathered 16-byte aligned.
// Supported sizes: C == 256 and H in {1, 2, 4, 8, 16, 32} (D >= 8); any Q >= 1, P >= 1,
// BN <= 65535. Scores are accumulated in fp32 for both dtypes.
//
// This header is C-compatible (ctypes, the torch extension, the TensorRT plugin).

#ifndef S3RT_MASKED_QUERY_GATHER_H
#define S3RT_MASKED_QUERY_GATHER_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum
{
    S3RT_MQG_FLOAT32 = 0,
    S3RT_MQG_FLOAT16 = 1
} s3rt_mqg_dtype;

typedef enum
{
    S3RT_MQG_MASK_UINT8 = 0, // torch.bool / uint8 (1 byte per pixel)
    S3RT_MQG_MASK_INT32 = 1  // int32 (TensorRT plugins take no bool tensors)
} s3rt_mqg_mask_type;

typedef enum
{
    S3RT_MQG_INDEX_INT64 = 0,
    S3RT_MQG_INDEX_INT32 = 1
} s3rt_mqg_index_type;

// Status codes, all in the kernel's own range (never a raw cudaError_t):
//   0                                    success
//   negative                             invalid call, nothing launched
//   S3RT_MQG_STATUS_CUDA_LAUNCH  + err   this call's memset or kernel launch failed with cudaError_t err
//   S3RT_MQG_STATUS_CUDA_PENDING + err   err was pending before the launch (cudaPeekAtLastError): left by
//                                        earlier work, or CUDA could not initialise; nothing launched and
//                                        the error is left in place for its owner
// Use s3rt_mqg_status_cuda_error() to get err back and s3rt_mqg_status_string() for a message.
#define S3RT_MQG_SUCCESS 0
#define S3RT_MQG_ERROR_UNSUPPORTED_SHAPE (-1)
#define S3RT_MQG_ERROR_MISALIGNED (-2)
#define S3RT_MQG_ERROR_BAD_ENUM (-3)
#define S3RT_MQG_ERROR_NULL_POINTER (-4)
#define S3RT_MQG_ERROR_WORKSPACE (-5)
#define S3RT_MQG_STATUS_CUDA_LAUNCH 100000
#define S3RT_MQG_STATUS_CUDA_PENDING 200000

// Fixed geometry of the kernel.
#define S3RT_MQG_CHANNELS 256
#define S3RT_MQG_MAX_HEADS 32

// 1 when the fused kernel handles (C, H, Q), else 0 (callers then use the reference).
int s3rt_mqg_is_supported(int64_t channels, int64_t num_heads, int64_t num_queries);

// Bytes of device workspace the launch needs: one 64-bit argmax key per (bn, h, q).
size_t s3rt_mqg_workspace_size(int64_t batch_objects, int64_t num_heads, int64_t num_queries);

// Enqueue the fused op on `stream` (asynchronous; the workspace must stay alive until it ran).
int s3rt_masked_query_gather(void const* pixel, void const* query_key, void const* foreground, void* gathered,
    void* index, void* workspace, size_t workspace_bytes, int64_t batch_objects, int64_t num_pixels,
    int64_t num_queries, int64_t channels, int64_t num_heads, s3rt_mqg_dtype dtype, s3rt_mqg_mask_type mask_type,
    s3rt_mqg_index_type index_type, cudaStream_t stream);

// A short description of a status code (never NULL; CUDA statuses are formatted into a
// thread-local buffer that the next call on the same thread overwrites).
char const* s3rt_mqg_status_string(int status);

// The cudaError_t inside a CUDA status (launch or pending), else cudaSuccess.
cudaError_t s3rt_mqg_status_cuda_error(int status);

#ifdef __cplusplus
} // extern "C"
#endif

#endif // S3RT_MASKED_QUERY_GATHER_H
