// Playground: causal GQA attention with packed rows and a sliding window (kernels/attention.cu).
// Build: make attention   Run: ./attention [version]
// Versions:
//   1: naive: one warp per (query, head) streaming every visible key with an online softmax, no tiling.
//      Correct and obvious; a baseline for what tiling buys.
//   2: the mainline flash-attention kernels: 64-query × 64-key tiles in shared memory, 4×4 register
//      micro-tiles, online softmax; backward as two atomic-free kernels (dk/dv per key tile, dq per query tile).
//   3: cuDNN's fused SDPA through kernels/attention_cudnn.h (build: make attention CUDNN=1), the yardstick for
//      2. It takes one sequence per row, so its validation batch is one sequence and padding per row.
//   4: version 2's tiles, masking and online softmax with its two products on tensor cores (WMMA, bf16
//      16×16×16, fp32 accumulate): Q, K, V and P in shared memory as bf16, S = Q·Kᵀ and the tile's P·V written
//      to fp32 shared memory by the warps, then read back in version 2's per-thread layout. P is rounded to
//      bf16 for P·V, as FlashAttention does. Forward only: its backward is version 2's. A step towards
//      tensor-core kernels in kernels/attention.cu, promoted only once it validates and wins here.
// Validates the chosen version (and the backward) against the CPU twin on small batches (packed except for
// 3), then times it on a Llama-3-8B- and a Llama-3.2-1B-shaped batch and prints achieved TFLOP/s (causal:
// half the dense FLOPs).
#include <mma.h>

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

// Version 4. Shared memory, in order (every array starts on a 32-byte boundary, as WMMA needs): q, k, v as bf16
// (64, D+8); scores fp32 (64, 68); probabilities bf16 (64, 72); the tile's P·V fp32 (64, D+4); key segments.
// The padding keeps WMMA's leading dimensions multiples of 16 bytes and staggers rows across banks.
namespace tensor_core {
using namespace stapo;  // the mainline's tile helpers and constants
namespace wmma = nvcuda::wmma;
constexpr int TC_BQ = 64, TC_BK = 64, TC_WARPS = ATTN_THREADS / 32;
constexpr int TC_LDS = TC_BK + 4, TC_LDP = TC_BK + 8;

template <int D>
struct TcForwardSmem {
  static constexpr int LDH = D + 8, LDO = D + 4;
  static constexpr size_t q = 0, k = q + sizeof(bf16) * TC_BQ * LDH, v = k + sizeof(bf16) * TC_BK * LDH,
                          s = v + sizeof(bf16) * TC_BK * LDH, p = s + sizeof(float) * TC_BQ * TC_LDS,
                          o = p + sizeof(bf16) * TC_BQ * TC_LDP, seg = o + sizeof(float) * TC_BQ * LDO,
                          bytes = seg + sizeof(int) * TC_BK;
};

// rows × D bf16 rows (global row stride `stride`) → bf16 shared memory with row stride D+8, 16 bytes at a
// time; rows ≥ valid are zero.
template <int D>
__device__ inline void load_tile_bf16(bf16* dst, const bf16* src, int rows, int valid, size_t stride) {
  constexpr int VECS = D / 8;
  for (int idx = threadIdx.x; idx < rows * VECS; idx += blockDim.x) {
    const int r = idx / VECS, c = (idx % VECS) * 8;
    uint4 x = make_uint4(0, 0, 0, 0);
    if (r < valid) x = *reinterpret_cast<const uint4*>(src + r * stride + c);
    *reinterpret_cast<uint4*>(dst + r * (D + 8) + c) = x;
  }
}

// out (ROWS × COLS, fp32, row stride ldo) = a (ROWS × K, bf16 row-major, lda) · b, where b is (K × COLS)
// read column-major from (COLS × K) rows (B_ROWS_ARE_COLS: b = rowsᵀ, e.g. Kᵀ) or row-major (K × COLS).
// The 16×16 output tiles are dealt round-robin to the block's warps.
template <int ROWS, int COLS, int K, bool B_ROWS_ARE_COLS>
__device__ inline void wmma_product(float* out, int ldo, const bf16* a, int lda, const bf16* b, int ldb) {
  using BLayout = typename std::conditional<B_ROWS_ARE_COLS, wmma::col_major, wmma::row_major>::type;
  const int warp = threadIdx.x / 32;
  for (int tile = warp; tile < (ROWS / 16) * (COLS / 16); tile += TC_WARPS) {
    const int tr = tile / (COLS / 16), tc = tile % (COLS / 16);
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int kk = 0; kk < K / 16; ++kk) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, BLayout> fb;
      wmma::load_matrix_sync(fa, a + tr * 16 * lda + kk * 16, lda);
      wmma::load_matrix_sync(fb, B_ROWS_ARE_COLS ? b + tc * 16 * ldb + kk * 16 : b + kk * 16 * ldb + tc * 16, ldb);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(out + tr * 16 * ldo + tc * 16, acc, ldo, wmma::mem_row_major);
  }
}

template <int D>
__global__ void __launch_bounds__(ATTN_THREADS, 1)
    attention_forward_tc_kernel(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                                const int32_t* segments, int T, int H, int Hkv, int window, float scale) {
  using L = TcForwardSmem<D>;
  constexpr int DC = D / 16, R = ATTN_ROWS_PER_THREAD, SC = TC_BK / 16;
  extern __shared__ __align__(128) unsigned char smem_tc[];
  bf16* q_s = reinterpret_cast<bf16*>(smem_tc + L::q);
  bf16* k_s = reinterpret_cast<bf16*>(smem_tc + L::k);
  bf16* v_s = reinterpret_cast<bf16*>(smem_tc + L::v);
  float* s_s = reinterpret_cast<float*>(smem_tc + L::s);
  bf16* p_s = reinterpret_cast<bf16*>(smem_tc + L::p);
  float* o_s = reinterpret_cast<float*>(smem_tc + L::o);
  int* seg_k_s = reinterpret_cast<int*>(smem_tc + L::seg);

  const int q0 = blockIdx.x * TC_BQ, h = blockIdx.y, hk = h / (H / Hkv);
  const int group = threadIdx.x / 16, lane = threadIdx.x % 16;
  const size_t row_base = (size_t)blockIdx.z * T;
  const int32_t* seg = segments + row_base;
  const int q_valid = min(TC_BQ, T - q0);
  load_tile_bf16<D>(q_s, q + (row_base + q0) * H * D + (size_t)h * D, TC_BQ, q_valid, (size_t)H * D);

  int seg_q[R];
  float m[R], l[R], acc[R][DC];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int iq = q0 + group * R + i;
    seg_q[i] = iq < T ? seg[iq] : -1;
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < DC; ++c) acc[i][c] = 0.0f;
  }

  const int kv_end = q0 + q_valid;  // causal: no key after the tile's last query
  for (int k0 = first_visible_key(q0, window); k0 < kv_end; k0 += TC_BK) {
    const int k_valid = min(TC_BK, T - k0);
    __syncthreads();  // the previous tile's K, V, P and P·V are no longer read
    if (threadIdx.x < TC_BK) seg_k_s[threadIdx.x] = (int)threadIdx.x < k_valid ? seg[k0 + threadIdx.x] : -1;
    __syncthreads();
    if (!block_any_visible<TC_BK, true>(q0, k0, seg_q, seg_k_s, window, group, lane)) continue;
    load_tile_bf16<D>(k_s, k + (row_base + k0) * Hkv * D + (size_t)hk * D, TC_BK, k_valid, (size_t)Hkv * D);
    load_tile_bf16<D>(v_s, v + (row_base + k0) * Hkv * D + (size_t)hk * D, TC_BK, k_valid, (size_t)Hkv * D);
    __syncthreads();
    wmma_product<TC_BQ, TC_BK, D, true>(s_s, TC_LDS, q_s, L::LDH, k_s, L::LDH);  // S = Q·Kᵀ
    __syncthreads();

    // Online softmax exactly as version 2, on the scores the warps left in shared memory.
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int row = group * R + i, iq = q0 + row;
      float sv[SC], tile_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < SC; ++j) {
        const int kj = lane + 16 * j;
        sv[j] = attention_visible(iq, k0 + kj, seg_q[i], seg_k_s[kj], window) ? s_s[row * TC_LDS + kj] * scale
                                                                               : -INFINITY;
        tile_max = fmaxf(tile_max, sv[j]);
      }
      const float m_new = fmaxf(m[i], half_warp_max(tile_max));
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // nothing visible yet: exp(−inf − 0) = 0, no NaN
      const float correction = expf(m[i] - m_use);
      float row_sum = 0.0f;
#pragma unroll
      for (int j = 0; j < SC; ++j) {
        // The sum takes the bf16 probability that P·V will use, so the normalisation matches the product.
        const bf16 p = __float2bfloat16_rn(expf(sv[j] - m_use));
        row_sum += __bfloat162float(p);
        p_s[row * TC_LDP + lane + 16 * j] = p;
      }
      l[i] = l[i] * correction + half_warp_sum(row_sum);
      m[i] = m_new;
#pragma unroll
      for (int c = 0; c < DC; ++c) acc[i][c] *= correction;
    }
    __syncthreads();  // P complete
    wmma_product<TC_BQ, D, TC_BK, false>(o_s, L::LDO, p_s, TC_LDP, v_s, L::LDH);  // this tile's P·V
    __syncthreads();
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
      for (int c = 0; c < DC; ++c) acc[i][c] += o_s[(group * R + i) * L::LDO + lane + 16 * c];
  }

#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int iq = q0 + group * R + i;
    if (iq >= T) continue;
    const size_t head = (row_base + iq) * H + h;
    const float inv_l = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
#pragma unroll
    for (int c = 0; c < DC; ++c) out[head * D + lane + 16 * c] = __float2bfloat16_rn(acc[i][c] * inv_l);
    if (lane == 0) lse[head] = l[i] > 0.0f ? m[i] + logf(l[i]) : -INFINITY;
  }
}

template <int D>
void attention_forward_tc(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                          const stapo::AttentionShape& s, const int32_t* segments) {
  constexpr size_t smem = TcForwardSmem<D>::bytes;
  allow_smem(attention_forward_tc_kernel<D>, smem);
  dim3 grid(ceil_div(s.T, TC_BQ), s.H, s.rows);
  attention_forward_tc_kernel<D><<<grid, ATTN_THREADS, smem>>>(out, lse, q, k, v, segments, s.T, s.H, s.Hkv,
                                                               s.window, 1.0f / sqrtf((float)D));
  cudaCheck(cudaGetLastError());
}

}  // namespace tensor_core

void attention_forward_version(int version, bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                               const stapo::AttentionShape& s, const int32_t* segments) {
  if (version == 1) {
    dim3 grid((unsigned)(((size_t)s.T * s.H * 32 + 255) / 256), s.rows);
    attention_naive_kernel<<<grid, 256>>>(out, lse, q, k, v, segments, s.T, s.H, s.Hkv, s.D, s.window,
                                          1.0f / sqrtf((float)s.D));
    cudaCheck(cudaGetLastError());
  } else if (version == 4) {
    if (s.D == 64)
      tensor_core::attention_forward_tc<64>(out, lse, q, k, v, s, segments);
    else
      tensor_core::attention_forward_tc<128>(out, lse, q, k, v, s, segments);
  } else {
    stapo::attention_forward(out, lse, q, k, v, s, segments, 0);
  }
}

int main(int argc, char** argv) {
  const int version = argc > 1 ? std::atoi(argv[1]) : 2;
  if (version < 1 || version > 4) {
    std::printf("usage: %s [1|2|3|4]\n", argv[0]);
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
  // Validation at both head dims (a packed row with a window; and padding), then timing on a Llama-3-8B-shaped
  // batch and on dev/bench/gpu_step_config.json's (Llama-3.2-1B, D = 64). rows, T, H, Hkv, D, window.
  const struct {
    stapo::AttentionShape shape;
    bool bench;
  } passes[] = {{{2, 300, 8, 2, 128, 100}, false},
                {{2, 300, 4, 1, 64, 0}, false},
                {{4, 2048, 32, 8, 128, 0}, true},
                {{8, 1024, 32, 8, 64, 0}, true}};
  for (const auto& pass : passes) {
    const bool bench = pass.bench;
    const stapo::AttentionShape& s = pass.shape;
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
