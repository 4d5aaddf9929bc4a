// Launchers of the tensor-core attention (the block code is kernels/attention_flash2.cuh), behind
// kernels/attention.h's interface: the same tensors, scratch, masking rule and preconditions as the SIMT kernels.
#include "kernels/attention.h"
#include "kernels/attention_flash2.cuh"
#include "kernels/cuda_common.h"
#include "kernels/device_utils.cuh"

namespace stapo {

namespace {

static_assert(flash2::ForwardTiles<128>::bytes <= MAX_BLOCK_SMEM && flash2::DkvTiles<128>::bytes <= MAX_BLOCK_SMEM &&
                  flash2::DqTiles<128>::bytes <= MAX_BLOCK_SMEM,
              "flash2 tiles exceed shared memory");

// Causal work grows with the query tile: the last tiles are launched first, so the long blocks start early
// (FlashAttention-2's order). The dk/dv blocks are longest for the first key tiles, their natural order.
template <int D>
__global__ void __launch_bounds__(flash2::THREADS) flash2_forward_kernel(flash2::Params p) {
  extern __shared__ __align__(128) unsigned char flash2_smem[];
  flash2::forward_block<D>(p, flash2_smem, gridDim.x - 1 - blockIdx.x, blockIdx.y, blockIdx.z);
}

template <int D>
__global__ void __launch_bounds__(flash2::THREADS) flash2_dkv_kernel(flash2::Params p) {
  extern __shared__ __align__(128) unsigned char flash2_smem[];
  flash2::dkv_block<D>(p, flash2_smem, blockIdx.x, blockIdx.y, blockIdx.z);
}

template <int D>
__global__ void __launch_bounds__(flash2::THREADS) flash2_dq_kernel(flash2::Params p) {
  extern __shared__ __align__(128) unsigned char flash2_smem[];
  flash2::dq_block<D>(p, flash2_smem, gridDim.x - 1 - blockIdx.x, blockIdx.y, blockIdx.z);
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

template <int D>
void forward_launch(const flash2::Params& p, const AttentionShape& s, cudaStream_t stream) {
  using L = flash2::ForwardTiles<D>;
  allow_smem(flash2_forward_kernel<D>, L::bytes);
  flash2_forward_kernel<D><<<dim3(ceil_div(s.T, L::BQ), s.H, s.rows), flash2::THREADS, L::bytes, stream>>>(p);
  cudaCheck(cudaGetLastError());
}

template <int D>
void backward_launch(const flash2::Params& p, const AttentionShape& s, cudaStream_t stream) {
  using Lkv = flash2::DkvTiles<D>;
  using Lq = flash2::DqTiles<D>;
  allow_smem(flash2_dkv_kernel<D>, Lkv::bytes);
  allow_smem(flash2_dq_kernel<D>, Lq::bytes);
  flash2_dkv_kernel<D><<<dim3(ceil_div(s.T, Lkv::BK), s.Hkv, s.rows), flash2::THREADS, Lkv::bytes, stream>>>(p);
  cudaCheck(cudaGetLastError());
  flash2_dq_kernel<D><<<dim3(ceil_div(s.T, Lq::BQ), s.H, s.rows), flash2::THREADS, Lq::bytes, stream>>>(p);
  cudaCheck(cudaGetLastError());
}

}  // namespace

void attention_flash2_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                              const AttentionShape& shape, const int32_t* segments, cudaStream_t stream) {
  attention_check(shape, "attention_flash2_forward", {{"out", out}, {"q", q}, {"k", k}, {"v", v}});
  flash2::Params p = flash2_params(shape, q, k, v, segments);
  p.out = out;
  p.lse_out = lse;
  if (shape.D == 64)
    forward_launch<64>(p, shape, stream);
  else
    forward_launch<128>(p, shape, stream);
}

void attention_flash2_backward(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* out,
                               const float* lse, const bf16* q, const bf16* k, const bf16* v,
                               const AttentionShape& shape, const int32_t* segments, cudaStream_t stream) {
  attention_check(shape, "attention_flash2_backward",
                  {{"dq", dq}, {"dk", dk}, {"dv", dv}, {"dout", dout}, {"q", q}, {"k", k}, {"v", v}});
  attention_delta(scratch, dout, out, shape, stream);
  flash2::Params p = flash2_params(shape, q, k, v, segments);
  p.lse = lse;
  p.dout = dout;
  p.delta = scratch;
  p.dq = dq;
  p.dk = dk;
  p.dv = dv;
  if (shape.D == 64)
    backward_launch<64>(p, shape, stream);
  else
    backward_launch<128>(p, shape, stream);
}

}  // namespace stapo
