// Launchers of the tensor-core attention (the block code is kernels/attention_flash2.cuh), behind
// kernels/attention.h's interface: the same tensors, scratch, masking rule and preconditions as the SIMT kernels.
#include "kernels/attention.h"
#include "kernels/attention_flash2.cuh"
#include "kernels/cuda_common.h"
#include "kernels/device_utils.cuh"

namespace stapo {

namespace {

static_assert(flash2::ForwardTiles<128>::bytes <= MAX_BLOCK_SMEM &&
                  flash2::DkvTiles<128, true>::bytes <= MAX_BLOCK_SMEM && flash2::DqTiles<128>::bytes <= MAX_BLOCK_SMEM,
              "flash2 tiles exceed shared memory");

// This block's place in a (tiles, heads, rows) grid, the longest blocks launched first (flash2::longest_first).
template <bool TILE0_LONGEST>
__device__ __forceinline__ flash2::BlockPlace place_longest_first() {
  const unsigned index = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  return flash2::longest_first(index, gridDim.x, gridDim.y, gridDim.z, TILE0_LONGEST);
}

// The tiles each kernel streams: the layouts' defaults, or with NARROW (attention_flash2_narrow_*) 32 rows in all
// three (at D = 128 the backward's already are).
template <int D, bool NARROW>
using ForwardLayout = flash2::ForwardTiles<D, NARROW ? 32 : flash2::ForwardTiles<D>::BK>;
template <int D, bool DQ_ATOMIC, bool NARROW>
using DkvLayout = flash2::DkvTiles<D, DQ_ATOMIC, NARROW ? 32 : flash2::DkvTiles<D>::BQ>;
template <int D, bool NARROW>
using DqLayout = flash2::DqTiles<D, NARROW ? 32 : flash2::DqTiles<D>::BK>;

template <int D, bool NARROW>
__global__ void __launch_bounds__(flash2::THREADS) flash2_forward_kernel(flash2::Params p) {
  extern __shared__ __align__(128) unsigned char flash2_smem[];
  const flash2::BlockPlace b = place_longest_first<false>();
  flash2::forward_block<D, ForwardLayout<D, NARROW>::BK>(p, flash2_smem, b.tile, b.head, b.row);
}

template <int D, bool DQ_ATOMIC, bool NARROW>
__global__ void __launch_bounds__(flash2::THREADS) flash2_dkv_kernel(flash2::Params p) {
  extern __shared__ __align__(128) unsigned char flash2_smem[];
  const flash2::BlockPlace b = place_longest_first<true>();
  flash2::dkv_block<D, DQ_ATOMIC, DkvLayout<D, DQ_ATOMIC, NARROW>::BQ>(p, flash2_smem, b.tile, b.head, b.row);
}

__global__ void __launch_bounds__(flash2::THREADS) flash2_dq_convert_kernel(flash2::Params p, size_t count) {
  flash2::dq_convert_block(p, count, blockIdx.x);
}

template <int D, bool NARROW>
__global__ void __launch_bounds__(flash2::THREADS) flash2_dq_kernel(flash2::Params p) {
  extern __shared__ __align__(128) unsigned char flash2_smem[];
  const flash2::BlockPlace b = place_longest_first<false>();
  flash2::dq_block<D, DqLayout<D, NARROW>::BK>(p, flash2_smem, b.tile, b.head, b.row);
}

// What both directions read; the caller adds the outputs (and the backward's inputs).
flash2::Params flash2_params(const AttentionShape& s, const bf16* q, const bf16* k, const bf16* v,
                             const int32_t* segments) {
  flash2::Params p{};
  p.q = q;
  p.k = k;
  p.v = v;
  p.segments = segments;
  p.T = s.T;
  p.H = s.H;
  p.Hkv = s.Hkv;
  p.window = s.window;
  p.scale = 1.0f / sqrtf((float)s.D);
  return p;
}

// A layout's shared memory at this T (its tile flags grow with T), refused with the op named past what a block has.
template <typename L>
size_t flash2_smem_bytes(const AttentionShape& s, const char* op) {
  const size_t bytes = L::smem_bytes(s.T);
  STAPO_CHECK(bytes <= MAX_BLOCK_SMEM, op, ": T = ", s.T, " needs ", bytes, " bytes of shared memory per block (with ",
              "its tile flags, one byte per tile of the row), more than the ", MAX_BLOCK_SMEM, " a block may have: ",
              "use shorter rows");
  return bytes;
}

template <int D, bool NARROW>
void forward_launch(const char* op, const flash2::Params& p, const AttentionShape& s, cudaStream_t stream) {
  using L = ForwardLayout<D, NARROW>;
  const size_t smem = flash2_smem_bytes<L>(s, op);
  allow_smem(flash2_forward_kernel<D, NARROW>, smem);
  flash2_forward_kernel<D, NARROW><<<dim3(ceil_div(s.T, L::BQ), s.H, s.rows), flash2::THREADS, smem, stream>>>(p);
  cudaCheck(cudaGetLastError());
}

// The dk, dv grid, then the dq grid or (DQ_ATOMIC: p.dq_accum zeroed by the caller) the accumulator's conversion.
template <int D, bool DQ_ATOMIC, bool NARROW>
void backward_launch(const char* op, const flash2::Params& p, const AttentionShape& s, cudaStream_t stream) {
  static_assert(!(DQ_ATOMIC && NARROW), "the atomic dQ step takes the default query tile");
  using Lkv = DkvLayout<D, DQ_ATOMIC, NARROW>;
  const size_t smem_dkv = flash2_smem_bytes<Lkv>(s, op);
  allow_smem(flash2_dkv_kernel<D, DQ_ATOMIC, NARROW>, smem_dkv);
  flash2_dkv_kernel<D, DQ_ATOMIC, NARROW>
      <<<dim3(ceil_div(s.T, Lkv::BK), s.Hkv, s.rows), flash2::THREADS, smem_dkv, stream>>>(p);
  cudaCheck(cudaGetLastError());
  if constexpr (DQ_ATOMIC) {
    const size_t count = (size_t)s.rows * s.T * s.H * D;
    flash2_dq_convert_kernel<<<(unsigned)((count / 8 + flash2::THREADS - 1) / flash2::THREADS), flash2::THREADS, 0,
                               stream>>>(p, count);
  } else {
    using Lq = DqLayout<D, NARROW>;
    const size_t smem_dq = flash2_smem_bytes<Lq>(s, op);
    allow_smem(flash2_dq_kernel<D, NARROW>, smem_dq);
    flash2_dq_kernel<D, NARROW><<<dim3(ceil_div(s.T, Lq::BQ), s.H, s.rows), flash2::THREADS, smem_dq, stream>>>(p);
  }
  cudaCheck(cudaGetLastError());
}

// What every backward starts with (the playground's versions too): the checks, δ into `delta`, the parameters.
flash2::Params flash2_backward_params(const char* op, float* delta, bf16* dq, bf16* dk, bf16* dv, const bf16* dout,
                                      const bf16* out, const float* lse, const bf16* q, const bf16* k, const bf16* v,
                                      const AttentionShape& shape, const int32_t* segments, cudaStream_t stream) {
  attention_check(shape, op, {{"dq", dq}, {"dk", dk}, {"dv", dv}, {"dout", dout}, {"q", q}, {"k", k}, {"v", v}});
  attention_delta(delta, dout, out, shape, stream);
  flash2::Params p = flash2_params(shape, q, k, v, segments);
  p.lse = lse;
  p.dout = dout;
  p.delta = delta;
  p.dq = dq;
  p.dk = dk;
  p.dv = dv;
  return p;
}

// The backwards: the above, then the launches (atomic: dq_accum zeroed first; never NARROW).
template <bool NARROW>
void flash2_backward(const char* op, float* dq_accum, float* delta, bf16* dq, bf16* dk, bf16* dv, const bf16* dout,
                     const bf16* out, const float* lse, const bf16* q, const bf16* k, const bf16* v,
                     const AttentionShape& shape, const int32_t* segments, cudaStream_t stream) {
  flash2::Params p =
      flash2_backward_params(op, delta, dq, dk, dv, dout, out, lse, q, k, v, shape, segments, stream);
  p.dq_accum = dq_accum;
  if constexpr (!NARROW) {
    if (dq_accum) {
      cudaCheck(cudaMemsetAsync(dq_accum, 0, sizeof(float) * shape.rows * shape.T * shape.H * shape.D, stream));
      if (shape.D == 64)
        backward_launch<64, true, false>(op, p, shape, stream);
      else
        backward_launch<128, true, false>(op, p, shape, stream);
      return;
    }
  }
  if (shape.D == 64)
    backward_launch<64, false, NARROW>(op, p, shape, stream);
  else
    backward_launch<128, false, NARROW>(op, p, shape, stream);
}

template <bool NARROW>
void flash2_forward(const char* op, bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                    const AttentionShape& shape, const int32_t* segments, cudaStream_t stream) {
  attention_check(shape, op, {{"out", out}, {"q", q}, {"k", k}, {"v", v}});
  flash2::Params p = flash2_params(shape, q, k, v, segments);
  p.out = out;
  p.lse_out = lse;
  if (shape.D == 64)
    forward_launch<64, NARROW>(op, p, shape, stream);
  else
    forward_launch<128, NARROW>(op, p, shape, stream);
}

}  // namespace

void attention_flash2_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                              const AttentionShape& shape, const int32_t* segments, cudaStream_t stream) {
  flash2_forward<false>("attention_flash2_forward", out, lse, q, k, v, shape, segments, stream);
}

void attention_flash2_backward(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* out,
                               const float* lse, const bf16* q, const bf16* k, const bf16* v,
                               const AttentionShape& shape, const int32_t* segments, cudaStream_t stream) {
  flash2_backward<false>("attention_flash2_backward", nullptr, scratch, dq, dk, dv, dout, out, lse, q, k, v, shape,
                         segments, stream);
}

void attention_flash2_narrow_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                                     const AttentionShape& shape, const int32_t* segments, cudaStream_t stream) {
  flash2_forward<true>("attention_flash2_narrow_forward", out, lse, q, k, v, shape, segments, stream);
}

void attention_flash2_narrow_backward(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout,
                                      const bf16* out, const float* lse, const bf16* q, const bf16* k, const bf16* v,
                                      const AttentionShape& shape, const int32_t* segments, cudaStream_t stream) {
  flash2_backward<true>("attention_flash2_narrow_backward", nullptr, scratch, dq, dk, dv, dout, out, lse, q, k, v,
                        shape, segments, stream);
}

size_t attention_flash2_backward_atomic_scratch_floats(const AttentionShape& shape) {
  return attention_backward_scratch_floats(shape) * (shape.D + 1);
}

void attention_flash2_backward_atomic(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* out,
                                      const float* lse, const bf16* q, const bf16* k, const bf16* v,
                                      const AttentionShape& shape, const int32_t* segments, cudaStream_t stream) {
  check_aligned16(scratch, "attention_flash2_backward_atomic", "scratch");  // the conversion reads it as float4
  flash2_backward<false>("attention_flash2_backward_atomic", scratch,
                         scratch + attention_backward_scratch_floats(shape) * shape.D, dq, dk, dv, dout, out, lse, q,
                         k, v, shape, segments, stream);
}

}  // namespace stapo
