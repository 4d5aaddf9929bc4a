// Playground: causal GQA attention with packed rows and a sliding window (kernels/attention.cu).
// Build: make attention   Run: ./attention [version]
// Versions:
//   1: naive: one warp per (query, head) streaming every visible key with an online softmax, no tiling.
//      Correct and obvious; a baseline for what tiling buys.
//   2: the mainline flash-attention kernels: 64-query × 64-key tiles in shared memory, 4×4 register
//      micro-tiles, online softmax; backward as two atomic-free kernels (dk/dv per key tile, dq per query tile).
//   3: cuDNN's fused SDPA through kernels/attention_cudnn.h (build: make attention CUDNN=1), the yardstick for
//      2. It takes one sequence per row, so its validation batch is one sequence and padding per row.
// Validates the chosen version (and the backward) against the CPU twin on a small batch (packed for 1 and 2),
// then times it on a Llama-3-8B-shaped batch and prints achieved TFLOP/s (causal: half the dense FLOPs).
#include <functional>
#include <memory>

#include "dev/cuda/common.h"
#include "kernels/attention.cu"
#include "model/ops/attention.h"
#ifdef STAPO_HAVE_CUDNN
#include "kernels/attention_cudnn.h"
#endif

using namespace playground;

// Version 1: one warp per (token, head) of row blockIdx.y; lanes split D, the warp reduces each score.
__global__ void attention_naive_kernel(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                                       const int32_t* segments, int T, int H, int Hkv, int D, int window,
                                       float scale) {
  const size_t warp = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const int h = (int)(warp % H), i = (int)(warp / H);
  if (i >= T) return;
  const size_t row_base = (size_t)blockIdx.y * T;
  const int32_t* seg = segments + row_base;
  const int hk = h / (H / Hkv);
  float acc[4] = {0, 0, 0, 0};  // D ≤ 128: lane owns channels lane + 32·c
  float m = -INFINITY, l = 0.0f;
  const bf16* qv = q + ((row_base + i) * H + h) * D;
  const int first = window > 0 ? max(0, i - window + 1) : 0;
  for (int j = first; j <= i; ++j) {
    if (seg[i] < 0 || seg[j] != seg[i]) continue;
    const bf16* kv = k + ((row_base + j) * Hkv + hk) * D;
    float s = 0.0f;
    for (int d = lane; d < D; d += 32) s += __bfloat162float(qv[d]) * __bfloat162float(kv[d]);
    s = stapo::warp_sum(s) * scale;
    const float m_new = fmaxf(m, s), correction = expf(m - m_new), p = expf(s - m_new);
    l = l * correction + p;
    const bf16* vv = v + ((row_base + j) * Hkv + hk) * D;
    for (int c = 0; c < D / 32; ++c) acc[c] = acc[c] * correction + p * __bfloat162float(vv[lane + 32 * c]);
    m = m_new;
  }
  bf16* o = out + ((row_base + i) * H + h) * D;
  for (int c = 0; c < D / 32; ++c) o[lane + 32 * c] = __float2bfloat16_rn(l > 0 ? acc[c] / l : 0.0f);
  if (lane == 0) lse[(row_base + i) * H + h] = l > 0 ? m + logf(l) : -INFINITY;
}

void attention_forward_version(int version, bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                               const stapo::AttentionShape& s, const int32_t* segments) {
  if (version == 1) {
    dim3 grid((unsigned)(((size_t)s.T * s.H * 32 + 255) / 256), s.rows);
    attention_naive_kernel<<<grid, 256>>>(out, lse, q, k, v, segments, s.T, s.H, s.Hkv, s.D, s.window,
                                          1.0f / sqrtf((float)s.D));
    cudaCheck(cudaGetLastError());
  } else {
    stapo::attention_forward(out, lse, q, k, v, s, segments, 0);
  }
}

int main(int argc, char** argv) {
  const int version = argc > 1 ? std::atoi(argv[1]) : 2;
  if (version < 1 || version > 3) {
    std::printf("usage: %s [1|2|3]\n", argv[0]);
    return 2;
  }
#ifdef STAPO_HAVE_CUDNN
  std::unique_ptr<stapo::CudnnAttention> cudnn;
  if (version == 3) cudnn = std::make_unique<stapo::CudnnAttention>();
#else
  if (version == 3) {
    std::printf("version 3 needs cuDNN: make attention CUDNN=1\n");
    return 2;
  }
#endif
  print_device();
  std::printf("version %d\n", version);
  for (int pass = 0; pass < 2; ++pass) {
    const bool bench = pass == 1;
    // rows, T, H, Hkv, D, window
    const stapo::AttentionShape s = bench ? stapo::AttentionShape{4, 2048, 32, 8, 128, 0}
                                          : stapo::AttentionShape{2, 300, 8, 2, 128, 100};
    const size_t N = (size_t)s.rows * s.T, nq = N * s.H * s.D, nkv = N * s.Hkv * s.D;
    std::vector<int32_t> segments(N);
    for (size_t i = 0; i < N; ++i) {
      const int p = (int)(i % s.T);
      // Two packed sequences then padding; version 3 takes one sequence per row.
      segments[i] = bench ? 0 : p < 120 ? 0 : p < 280 ? (version == 3 ? 0 : 1) : -1;
    }
    auto q = random_normal(nq, 1.0f, 1), k = random_normal(nkv, 1.0f, 2), v = random_normal(nkv, 1.0f, 3),
         dout = random_normal(nq, 1.0f, 4);
    bf16 *d_q = to_device_bf16(q), *d_k = to_device_bf16(k), *d_v = to_device_bf16(v), *d_dout = to_device_bf16(dout);
    bf16 *d_out = device_alloc<bf16>(nq), *d_dq = device_alloc<bf16>(nq), *d_dk = device_alloc<bf16>(nkv),
         *d_dv = device_alloc<bf16>(nkv);
    float *d_lse = device_alloc<float>(N * s.H), *d_scratch = device_alloc<float>(N * s.H);
    int32_t* d_segments = to_device(segments);
    std::function<void()> forward = [&] { attention_forward_version(version, d_out, d_lse, d_q, d_k, d_v, s, d_segments); };
    std::function<void()> backward = [&] {
      stapo::attention_backward(d_dq, d_dk, d_dv, d_scratch, d_dout, d_out, d_lse, d_q, d_k, d_v, s, d_segments, 0);
    };
#ifdef STAPO_HAVE_CUDNN
    if (cudnn) {
      cudnn->set_rows(segments, s.rows, s.T, 0);
      forward = [&] { cudnn->forward(d_out, d_lse, d_q, d_k, d_v, s, 0); };
      backward = [&] { cudnn->backward(d_dq, d_dk, d_dv, d_dout, d_out, d_lse, d_q, d_k, d_v, s, 0); };
    }
#endif
    if (!bench) {
      std::printf("validate rows=%d T=%d H=%d Hkv=%d D=%d window=%d (%s + padding)\n", s.rows, s.T, s.H, s.Hkv,
                  s.D, s.window, version == 3 ? "one sequence" : "packed");
      std::vector<float> out(nq), lse(N * s.H), dq(nq), dk(nkv), dv(nkv);
      stapo::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s, segments.data());
      stapo::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), q.data(),
                                k.data(), v.data(), s, segments.data());
      forward();
      backward();
      cudaCheck(cudaDeviceSynchronize());
      validate("out", from_device_bf16(d_out, nq), out, 1e-2);
      validate("dq", from_device_bf16(d_dq, nq), dq, 2e-2);
      validate("dk", from_device_bf16(d_dk, nkv), dk, 2e-2);
      validate("dv", from_device_bf16(d_dv, nkv), dv, 2e-2);
    } else {
      const float fwd = time_ms(forward, 5), bwd = time_ms(backward, 5);
      // Causal: half of 4·N·T·H·D (QKᵀ and PV); the backward recomputes QKᵀ twice and does 4 more products
      // (dV, dP twice, dK, dQ): counted as 2.5× the forward's useful work.
      const double flops = 4.0 * N * s.T * s.H * s.D / 2;
      std::printf("rows=%d T=%d H=%d Hkv=%d D=%d  forward %.2f ms (%.1f TFLOP/s)  backward %.2f ms (%.1f TFLOP/s)\n",
                  s.rows, s.T, s.H, s.Hkv, s.D, fwd, flops / fwd / 1e9, bwd, 2.5 * flops / bwd / 1e9);
    }
    for (void* p : {(void*)d_q, (void*)d_k, (void*)d_v, (void*)d_dout, (void*)d_out, (void*)d_dq, (void*)d_dk,
                    (void*)d_dv, (void*)d_lse, (void*)d_scratch, (void*)d_segments})
      cudaCheck(cudaFree(p));
  }
  return 0;
}
