// Playground: causal GQA attention with packed rows and a sliding window (kernels/attention.cu,
// kernels/attention_flash2.cu).
// Build: make attention (CUDNN=1 adds version 3)   Run: ./attention [version ...]   (default: 2 5 6 7 8 9)
// Versions:
//   1: naive: one warp per (query, head) streaming every visible key with an online softmax, no tiling.
//      Correct and obvious; a baseline for what tiling buys (forward only: its backward is version 2's).
//   2: the SIMT flash kernels (kernels/attention.cu, train_stapo's --attention flash): 64-query × 64-key tiles
//      in fp32 shared memory, 4×4 register micro-tiles, online softmax; backward as two atomic-free kernels
//      (dk/dv per key tile, dq per query tile).
//   3: cuDNN's fused SDPA through kernels/attention_cudnn.h, the yardstick. It takes one sequence per row, so
//      its validation batch is one sequence and padding per row.
//   4: version 2's tiles, masking and online softmax with its products on tensor cores through WMMA (bf16
//      16×16×16, fp32 accumulate), every product written to fp32 shared memory and read back in version 2's
//      per-thread layout; P and dS rounded to bf16 for their products. The first tensor-core step, kept to
//      measure what register-resident fragments (5) buy over it.
//   5: FlashAttention-2's design on mma.sync (kernels/attention_flash2.cu, train_stapo's --attention flash2):
//      bf16 m16n8k16 with fp32 accumulation, ldmatrix from padded shared memory, cp.async double buffering, S
//      kept in registers and reused as P, softmax with quad shuffles; the same two atomic-free backward kernels.
//   6: version 5's forward with FlashAttention-2's atomic backward (kernels/attention_flash2.cu's
//      attention_flash2_backward_atomic, train_stapo's --attention flash2-atomic): the dk/dv kernel also adds each
//      query tile's dS·K to an fp32 dq accumulator with atomic adds, then a small kernel converts it; 5 tile
//      products instead of 7, dq's last bits vary run to run.
//   7: version 5's kernels asking for more resident blocks per SM (launch bounds; below), trading spills for
//      occupancy: the dK/dV kernel was latency-bound at 2 blocks per SM on the H200.
//   8: version 5 with 32-row tiles streamed through every kernel (the backward's already are at D = 128): more
//      blocks per SM without spills (kernels/attention_flash2.cu's attention_flash2_narrow_*, train_stapo's
//      --attention flash2-narrow).
//   9: version 5's kernels in the launch order they had before (the tile as blockIdx.x: every wave mixes long and
//      short causal blocks); 5 to 8 launch the longest blocks first.
// Validates each chosen version (forward and backward) against the CPU twin on two small packed batches (exit 1
// on a mismatch), then times each on the Llama-3-8B- and Llama-3.2-1B-shaped batches (the latter also packed) and
// on the FlashAttention-3 paper's setting, and prints one markdown table of ms and TFLOP/s (causal: half the dense
// FLOPs of the visible pairs) with the paper's published forward figure beside it.
#include <mma.h>

#include <functional>
#include <memory>
#include <string>

#include "dev/cuda/common.h"
#include "kernels/attention.cu"
#include "kernels/attention_flash2.cu"
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
static_assert(TcForwardSmem<64>::bytes <= MAX_BLOCK_SMEM && TcForwardSmem<128>::bytes <= MAX_BLOCK_SMEM,
              "TcForwardSmem: over the shared memory a block may have");

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


// ---- version 4's backward: version 2's two kernels with their four products on tensor cores ----
// Each block's (rows × D) accumulators stay in registers in version 2's layout; every product of a tile goes
// through fp32 shared memory (scores, dP: rows × 32, row stride 36; the tile's product: rows × D, D+4), and the
// probabilities and dscores that feed a product are bf16 (row stride 40).
constexpr int TC_LDT = 32 + 4, TC_LDPT = 32 + 8;

template <int D>
struct TcDkvSmem {  // keys 64 (the block's), queries 32 (streamed)
  static constexpr int LDH = D + 8, LDO = D + 4;
  static constexpr size_t k = 0, v = k + sizeof(bf16) * 64 * LDH, q = v + sizeof(bf16) * 64 * LDH,
                          dout = q + sizeof(bf16) * 32 * LDH, st = dout + sizeof(bf16) * 32 * LDH,
                          dpt = st + sizeof(float) * 64 * TC_LDT, pt = dpt + sizeof(float) * 64 * TC_LDT,
                          dst = pt + sizeof(bf16) * 64 * TC_LDPT, o = dst + sizeof(bf16) * 64 * TC_LDPT,
                          lse = o + sizeof(float) * 64 * LDO, delta = lse + sizeof(float) * 32,
                          seg = delta + sizeof(float) * 32, bytes = seg + sizeof(int) * 32;
};
static_assert(TcDkvSmem<64>::bytes <= MAX_BLOCK_SMEM && TcDkvSmem<128>::bytes <= MAX_BLOCK_SMEM,
              "TcDkvSmem: over the shared memory a block may have");

// acc[i][c] += the (rows × D) product the warps left in o_s (row stride ldo), in version 2's thread layout.
template <int D>
__device__ inline void add_product(float acc[ATTN_ROWS_PER_THREAD][D / 16], const float* o_s, int ldo, int group,
                                   int lane) {
#pragma unroll
  for (int i = 0; i < ATTN_ROWS_PER_THREAD; ++i)
#pragma unroll
    for (int c = 0; c < D / 16; ++c) acc[i][c] += o_s[(group * ATTN_ROWS_PER_THREAD + i) * ldo + lane + 16 * c];
}

template <int D>
__global__ void __launch_bounds__(ATTN_THREADS, 1)
    attention_dkv_tc_kernel(bf16* dk, bf16* dv, const bf16* dout, const float* lse, const float* delta,
                            const bf16* q, const bf16* k, const bf16* v, const int32_t* segments, int T, int H,
                            int Hkv, int window, float scale) {
  using L = TcDkvSmem<D>;
  constexpr int BK = 64, BQ = 32, DC = D / 16, R = ATTN_ROWS_PER_THREAD, SC = BQ / 16;
  extern __shared__ __align__(128) unsigned char smem_tc[];
  bf16* k_s = reinterpret_cast<bf16*>(smem_tc + L::k);
  bf16* v_s = reinterpret_cast<bf16*>(smem_tc + L::v);
  bf16* q_s = reinterpret_cast<bf16*>(smem_tc + L::q);
  bf16* do_s = reinterpret_cast<bf16*>(smem_tc + L::dout);
  float* st_s = reinterpret_cast<float*>(smem_tc + L::st);    // scoresᵀ: keys × queries
  float* dpt_s = reinterpret_cast<float*>(smem_tc + L::dpt);  // dPᵀ = V·dOᵀ
  bf16* pt_s = reinterpret_cast<bf16*>(smem_tc + L::pt);
  bf16* dst_s = reinterpret_cast<bf16*>(smem_tc + L::dst);
  float* o_s = reinterpret_cast<float*>(smem_tc + L::o);
  float* lse_s = reinterpret_cast<float*>(smem_tc + L::lse);
  float* delta_s = reinterpret_cast<float*>(smem_tc + L::delta);
  int* seg_q_s = reinterpret_cast<int*>(smem_tc + L::seg);

  const int k0 = blockIdx.x * BK, hk = blockIdx.y, group_size = H / Hkv;
  const int group = threadIdx.x / 16, lane = threadIdx.x % 16;
  const size_t row_base = (size_t)blockIdx.z * T;
  const int32_t* seg = segments + row_base;
  const int k_valid = min(BK, T - k0);
  load_tile_bf16<D>(k_s, k + (row_base + k0) * Hkv * D + (size_t)hk * D, BK, k_valid, (size_t)Hkv * D);
  load_tile_bf16<D>(v_s, v + (row_base + k0) * Hkv * D + (size_t)hk * D, BK, k_valid, (size_t)Hkv * D);

  int seg_k[R];
  float acc_dk[R][DC], acc_dv[R][DC];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int jk = k0 + group * R + i;
    seg_k[i] = jk < T ? seg[jk] : -1;
#pragma unroll
    for (int c = 0; c < DC; ++c) acc_dk[i][c] = acc_dv[i][c] = 0.0f;
  }

  const int q_end = window > 0 ? min(T, k0 + k_valid - 1 + window) : T;
  for (int h = hk * group_size; h < (hk + 1) * group_size; ++h)
    for (int q0 = k0; q0 < q_end; q0 += BQ) {
      const int q_valid = min(BQ, T - q0);
      __syncthreads();  // the previous query tile and its products are no longer read
      if (threadIdx.x < BQ) {
        const bool in = (int)threadIdx.x < q_valid;
        const size_t head = (row_base + q0 + threadIdx.x) * H + h;
        lse_s[threadIdx.x] = in ? lse[head] : 0.0f;
        delta_s[threadIdx.x] = in ? delta[head] : 0.0f;
        seg_q_s[threadIdx.x] = in ? seg[q0 + threadIdx.x] : -1;
      }
      __syncthreads();
      if (!block_any_visible<BQ, false>(k0, q0, seg_k, seg_q_s, window, group, lane)) continue;
      load_tile_bf16<D>(q_s, q + (row_base + q0) * H * D + (size_t)h * D, BQ, q_valid, (size_t)H * D);
      load_tile_bf16<D>(do_s, dout + (row_base + q0) * H * D + (size_t)h * D, BQ, q_valid, (size_t)H * D);
      __syncthreads();
      wmma_product<BK, BQ, D, true>(st_s, TC_LDT, k_s, L::LDH, q_s, L::LDH);
      wmma_product<BK, BQ, D, true>(dpt_s, TC_LDT, v_s, L::LDH, do_s, L::LDH);
      __syncthreads();
#pragma unroll
      for (int i = 0; i < R; ++i)
#pragma unroll
        for (int j = 0; j < SC; ++j) {
          const int row = group * R + i, qj = lane + 16 * j;
          const bool vis = attention_visible(q0 + qj, k0 + row, seg_q_s[qj], seg_k[i], window);
          const float p = vis ? expf(st_s[row * TC_LDT + qj] * scale - lse_s[qj]) : 0.0f;
          pt_s[row * TC_LDPT + qj] = __float2bfloat16_rn(p);
          dst_s[row * TC_LDPT + qj] = __float2bfloat16_rn(p * (dpt_s[row * TC_LDT + qj] - delta_s[qj]));
        }
      __syncthreads();
      wmma_product<BK, D, BQ, false>(o_s, L::LDO, pt_s, TC_LDPT, do_s, L::LDH);  // Pᵀ·dO
      __syncthreads();
      add_product<D>(acc_dv, o_s, L::LDO, group, lane);
      __syncthreads();
      wmma_product<BK, D, BQ, false>(o_s, L::LDO, dst_s, TC_LDPT, q_s, L::LDH);  // dSᵀ·Q (·scale at the end)
      __syncthreads();
      add_product<D>(acc_dk, o_s, L::LDO, group, lane);
    }

#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int jk = k0 + group * R + i;
    if (jk >= T) continue;
    const size_t at = ((row_base + jk) * Hkv + hk) * D + lane;
#pragma unroll
    for (int c = 0; c < DC; ++c) {
      dk[at + 16 * c] = __float2bfloat16_rn(acc_dk[i][c] * scale);
      dv[at + 16 * c] = __float2bfloat16_rn(acc_dv[i][c]);
    }
  }
}

template <int D>
struct TcDqSmem {  // queries 64 (the block's), keys 32 (streamed)
  static constexpr int LDH = D + 8, LDO = D + 4;
  static constexpr size_t q = 0, dout = q + sizeof(bf16) * 64 * LDH, k = dout + sizeof(bf16) * 64 * LDH,
                          v = k + sizeof(bf16) * 32 * LDH, s = v + sizeof(bf16) * 32 * LDH,
                          dp = s + sizeof(float) * 64 * TC_LDT, ds = dp + sizeof(float) * 64 * TC_LDT,
                          o = ds + sizeof(bf16) * 64 * TC_LDPT, seg = o + sizeof(float) * 64 * LDO,
                          bytes = seg + sizeof(int) * 32;
};
static_assert(TcDqSmem<64>::bytes <= MAX_BLOCK_SMEM && TcDqSmem<128>::bytes <= MAX_BLOCK_SMEM,
              "TcDqSmem: over the shared memory a block may have");

template <int D>
__global__ void __launch_bounds__(ATTN_THREADS, 1)
    attention_dq_tc_kernel(bf16* dq, const bf16* dout, const float* lse, const float* delta, const bf16* q,
                           const bf16* k, const bf16* v, const int32_t* segments, int T, int H, int Hkv, int window,
                           float scale) {
  using L = TcDqSmem<D>;
  constexpr int BQ = 64, BK = 32, DC = D / 16, R = ATTN_ROWS_PER_THREAD, SC = BK / 16;
  extern __shared__ __align__(128) unsigned char smem_tc[];
  bf16* q_s = reinterpret_cast<bf16*>(smem_tc + L::q);
  bf16* do_s = reinterpret_cast<bf16*>(smem_tc + L::dout);
  bf16* k_s = reinterpret_cast<bf16*>(smem_tc + L::k);
  bf16* v_s = reinterpret_cast<bf16*>(smem_tc + L::v);
  float* s_s = reinterpret_cast<float*>(smem_tc + L::s);
  float* dp_s = reinterpret_cast<float*>(smem_tc + L::dp);
  bf16* ds_s = reinterpret_cast<bf16*>(smem_tc + L::ds);
  float* o_s = reinterpret_cast<float*>(smem_tc + L::o);
  int* seg_k_s = reinterpret_cast<int*>(smem_tc + L::seg);

  const int q0 = blockIdx.x * BQ, h = blockIdx.y, hk = h / (H / Hkv);
  const int group = threadIdx.x / 16, lane = threadIdx.x % 16;
  const size_t row_base = (size_t)blockIdx.z * T;
  const int32_t* seg = segments + row_base;
  const int q_valid = min(BQ, T - q0);
  load_tile_bf16<D>(q_s, q + (row_base + q0) * H * D + (size_t)h * D, BQ, q_valid, (size_t)H * D);
  load_tile_bf16<D>(do_s, dout + (row_base + q0) * H * D + (size_t)h * D, BQ, q_valid, (size_t)H * D);

  int seg_q[R];
  float lse_q[R], delta_q[R], acc[R][DC];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int iq = q0 + group * R + i;
    const bool in = iq < T;
    seg_q[i] = in ? seg[iq] : -1;
    lse_q[i] = in ? lse[(row_base + iq) * H + h] : 0.0f;
    delta_q[i] = in ? delta[(row_base + iq) * H + h] : 0.0f;
#pragma unroll
    for (int c = 0; c < DC; ++c) acc[i][c] = 0.0f;
  }

  const int kv_end = q0 + q_valid;
  for (int k0 = first_visible_key(q0, window); k0 < kv_end; k0 += BK) {
    const int k_valid = min(BK, T - k0);
    __syncthreads();  // the previous key tile and its products are no longer read
    if (threadIdx.x < BK) seg_k_s[threadIdx.x] = (int)threadIdx.x < k_valid ? seg[k0 + threadIdx.x] : -1;
    __syncthreads();
    if (!block_any_visible<BK, true>(q0, k0, seg_q, seg_k_s, window, group, lane)) continue;
    load_tile_bf16<D>(k_s, k + (row_base + k0) * Hkv * D + (size_t)hk * D, BK, k_valid, (size_t)Hkv * D);
    load_tile_bf16<D>(v_s, v + (row_base + k0) * Hkv * D + (size_t)hk * D, BK, k_valid, (size_t)Hkv * D);
    __syncthreads();
    wmma_product<BQ, BK, D, true>(s_s, TC_LDT, q_s, L::LDH, k_s, L::LDH);    // S = Q·Kᵀ
    wmma_product<BQ, BK, D, true>(dp_s, TC_LDT, do_s, L::LDH, v_s, L::LDH);  // dP = dO·Vᵀ
    __syncthreads();
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
      for (int j = 0; j < SC; ++j) {
        const int row = group * R + i, kj = lane + 16 * j;
        const bool vis = attention_visible(q0 + row, k0 + kj, seg_q[i], seg_k_s[kj], window);
        const float ds = vis ? expf(s_s[row * TC_LDT + kj] * scale - lse_q[i]) * (dp_s[row * TC_LDT + kj] - delta_q[i])
                             : 0.0f;
        ds_s[row * TC_LDPT + kj] = __float2bfloat16_rn(ds);
      }
    __syncthreads();
    wmma_product<BQ, D, BK, false>(o_s, L::LDO, ds_s, TC_LDPT, k_s, L::LDH);  // dS·K (·scale at the end)
    __syncthreads();
    add_product<D>(acc, o_s, L::LDO, group, lane);
  }

#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int iq = q0 + group * R + i;
    if (iq >= T) continue;
    const size_t at = ((row_base + iq) * H + h) * D + lane;
#pragma unroll
    for (int c = 0; c < DC; ++c) dq[at + 16 * c] = __float2bfloat16_rn(acc[i][c] * scale);
  }
}

// The mainline's delta kernel, then the two tensor-core kernels.
template <int D>
void attention_backward_tc(bf16* dq, bf16* dk, bf16* dv, float* delta, const bf16* dout, const bf16* out,
                           const float* lse, const bf16* q, const bf16* k, const bf16* v,
                           const stapo::AttentionShape& s, const int32_t* segments) {
  const size_t heads = attention_backward_scratch_floats(s);
  attention_delta_kernel<<<(unsigned)((heads * 32 + 255) / 256), 256>>>(delta, dout, out, heads, D);
  cudaCheck(cudaGetLastError());
  const float scale = 1.0f / sqrtf((float)D);
  constexpr size_t smem_dkv = TcDkvSmem<D>::bytes, smem_dq = TcDqSmem<D>::bytes;
  allow_smem(attention_dkv_tc_kernel<D>, smem_dkv);
  allow_smem(attention_dq_tc_kernel<D>, smem_dq);
  attention_dkv_tc_kernel<D><<<dim3(ceil_div(s.T, 64), s.Hkv, s.rows), ATTN_THREADS, smem_dkv>>>(
      dk, dv, dout, lse, delta, q, k, v, segments, s.T, s.H, s.Hkv, s.window, scale);
  cudaCheck(cudaGetLastError());
  attention_dq_tc_kernel<D><<<dim3(ceil_div(s.T, 64), s.H, s.rows), ATTN_THREADS, smem_dq>>>(
      dq, dout, lse, delta, q, k, v, segments, s.T, s.H, s.Hkv, s.window, scale);
  cudaCheck(cudaGetLastError());
}

}  // namespace tensor_core

// ---- version 7: version 5's block code under launch bounds that ask for more blocks per SM ----
// Nsight Compute on the H200 (1B shape, D = 64): version 5's dK/dV kernel runs 2 blocks (8 warps) per SM at 211
// registers, issues in 22% of cycles and has no eligible warp in 73%; its dQ kernel and forward run 3 blocks. Here
// the same kernels ask ptxas for more resident blocks (__launch_bounds__'s second argument): at D = 64 dK/dV 3 (168
// registers, 60 bytes spilled), dQ and the forward 4 (128 registers, 16 and 88 bytes spilled); at D = 128 dK/dV and
// dQ 3 (588 and 0 bytes spilled) and the forward 2, the most its 87.5 KB of shared memory allow (nvcc 13.0.88,
// sm_90a). Whether occupancy pays for the spills is what its timing says.
namespace occupancy {

namespace flash2 = stapo::flash2;
using stapo::allow_smem;
using stapo::ceil_div;
template <int D>
constexpr int kForwardBlocks = D == 64 ? 4 : 2;
template <int D>
constexpr int kDqBlocks = D == 64 ? 4 : 3;
constexpr int kDkvBlocks = 3;

template <int D>
__global__ void __launch_bounds__(flash2::THREADS, kForwardBlocks<D>) forward_kernel(flash2::Params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const flash2::BlockPlace b = stapo::place_longest_first<false>();
  flash2::forward_block<D>(p, smem, b.tile, b.head, b.row);
}

template <int D>
__global__ void __launch_bounds__(flash2::THREADS, kDkvBlocks) dkv_kernel(flash2::Params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const flash2::BlockPlace b = stapo::place_longest_first<true>();
  flash2::dkv_block<D, false>(p, smem, b.tile, b.head, b.row);
}

template <int D>
__global__ void __launch_bounds__(flash2::THREADS, kDqBlocks<D>) dq_kernel(flash2::Params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const flash2::BlockPlace b = stapo::place_longest_first<false>();
  flash2::dq_block<D>(p, smem, b.tile, b.head, b.row);
}

// Version 5's forward with another kernel (L: its shared-memory layout).
template <typename L>
void forward_with(void (*kernel)(flash2::Params), bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                  const stapo::AttentionShape& s, const int32_t* segments) {
  stapo::attention_check(s, "playground forward", {{"out", out}, {"q", q}, {"k", k}, {"v", v}});
  flash2::Params p = stapo::flash2_params(s, q, k, v, segments);
  p.out = out;
  p.lse_out = lse;
  const size_t smem = stapo::flash2_smem_bytes<L>(s, "playground forward");
  allow_smem(kernel, smem);
  kernel<<<dim3(ceil_div(s.T, L::BQ), s.H, s.rows), flash2::THREADS, smem>>>(p);
  cudaCheck(cudaGetLastError());
}

template <int D>
void forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const stapo::AttentionShape& s,
             const int32_t* segments) {
  forward_with<flash2::ForwardTiles<D>>(forward_kernel<D>, out, lse, q, k, v, s, segments);
}

// Version 5's backward with other dK/dV and dQ kernels (Lkv, Lq: their shared-memory layouts).
template <typename Lkv, typename Lq>
void backward_with(void (*dkv)(flash2::Params), void (*dq_grid)(flash2::Params), bf16* dq, bf16* dk, bf16* dv,
                   float* scratch, const bf16* dout, const bf16* out, const float* lse, const bf16* q, const bf16* k,
                   const bf16* v, const stapo::AttentionShape& s, const int32_t* segments) {
  const flash2::Params p = stapo::flash2_backward_params("playground backward", scratch, dq, dk, dv, dout, out, lse,
                                                         q, k, v, s, segments, 0);
  const size_t smem_dkv = stapo::flash2_smem_bytes<Lkv>(s, "playground backward"),
               smem_dq = stapo::flash2_smem_bytes<Lq>(s, "playground backward");
  allow_smem(dkv, smem_dkv);
  allow_smem(dq_grid, smem_dq);
  dkv<<<dim3(ceil_div(s.T, Lkv::BK), s.Hkv, s.rows), flash2::THREADS, smem_dkv>>>(p);
  cudaCheck(cudaGetLastError());
  dq_grid<<<dim3(ceil_div(s.T, Lq::BQ), s.H, s.rows), flash2::THREADS, smem_dq>>>(p);
  cudaCheck(cudaGetLastError());
}

template <int D>
void backward(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* out, const float* lse,
              const bf16* q, const bf16* k, const bf16* v, const stapo::AttentionShape& s, const int32_t* segments) {
  backward_with<flash2::DkvTiles<D>, flash2::DqTiles<D>>(dkv_kernel<D>, dq_kernel<D>, dq, dk, dv, scratch, dout, out,
                                                         lse, q, k, v, s, segments);
}

}  // namespace occupancy

// ---- version 9: version 5's kernels in grid order, the launch order before longest-first ----
// The tile as blockIdx.x (the forward's and dq's reversed, so that within each (head, row) the longest starts
// first), as the trainer launched them up to the second H200 lease: each wave mixes every length. Measures what the
// longest-first numbering (flash2::longest_first) buys; dev/cuda/launch_order.py predicts it.
namespace grid_order {

template <int D>
__global__ void __launch_bounds__(stapo::flash2::THREADS) forward_kernel(stapo::flash2::Params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  stapo::flash2::forward_block<D>(p, smem, gridDim.x - 1 - blockIdx.x, blockIdx.y, blockIdx.z);
}

template <int D>
__global__ void __launch_bounds__(stapo::flash2::THREADS) dkv_kernel(stapo::flash2::Params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  stapo::flash2::dkv_block<D, false>(p, smem, blockIdx.x, blockIdx.y, blockIdx.z);
}

template <int D>
__global__ void __launch_bounds__(stapo::flash2::THREADS) dq_kernel(stapo::flash2::Params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  stapo::flash2::dq_block<D>(p, smem, gridDim.x - 1 - blockIdx.x, blockIdx.y, blockIdx.z);
}

template <int D>
void forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const stapo::AttentionShape& s,
             const int32_t* segments) {
  occupancy::forward_with<stapo::flash2::ForwardTiles<D>>(forward_kernel<D>, out, lse, q, k, v, s, segments);
}

template <int D>
void backward(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* out, const float* lse,
              const bf16* q, const bf16* k, const bf16* v, const stapo::AttentionShape& s, const int32_t* segments) {
  occupancy::backward_with<stapo::flash2::DkvTiles<D>, stapo::flash2::DqTiles<D>>(
      dkv_kernel<D>, dq_kernel<D>, dq, dk, dv, scratch, dout, out, lse, q, k, v, s, segments);
}

}  // namespace grid_order

// One version's forward and backward on one shape's device buffers. Version 1 has no backward of its own (it
// runs version 2's); version 3 takes one sequence per row.
struct Buffers {
  bf16 *q, *k, *v, *dout, *out, *dq, *dk, *dv;
  float *lse, *scratch;
  int32_t* segments;
};

void forward_version(int version, const Buffers& b, const stapo::AttentionShape& s) {
  if (version == 1) {
    dim3 grid((unsigned)(((size_t)s.T * s.H * 32 + 255) / 256), s.rows);
    attention_naive_kernel<<<grid, 256>>>(b.out, b.lse, b.q, b.k, b.v, b.segments, s.T, s.H, s.Hkv, s.D, s.window,
                                          1.0f / sqrtf((float)s.D));
    cudaCheck(cudaGetLastError());
  } else if (version == 4 && s.D == 64) {
    tensor_core::attention_forward_tc<64>(b.out, b.lse, b.q, b.k, b.v, s, b.segments);
  } else if (version == 4) {
    tensor_core::attention_forward_tc<128>(b.out, b.lse, b.q, b.k, b.v, s, b.segments);
  } else if (version == 5 || version == 6) {
    stapo::attention_flash2_forward(b.out, b.lse, b.q, b.k, b.v, s, b.segments, 0);
  } else if (version == 9 && s.D == 64) {
    grid_order::forward<64>(b.out, b.lse, b.q, b.k, b.v, s, b.segments);
  } else if (version == 9) {
    grid_order::forward<128>(b.out, b.lse, b.q, b.k, b.v, s, b.segments);
  } else if (version == 8) {
    stapo::attention_flash2_narrow_forward(b.out, b.lse, b.q, b.k, b.v, s, b.segments, 0);
  } else if (version == 7 && s.D == 64) {
    occupancy::forward<64>(b.out, b.lse, b.q, b.k, b.v, s, b.segments);
  } else if (version == 7) {
    occupancy::forward<128>(b.out, b.lse, b.q, b.k, b.v, s, b.segments);
  } else {
    stapo::attention_forward(b.out, b.lse, b.q, b.k, b.v, s, b.segments, 0);
  }
}

void backward_version(int version, const Buffers& b, const stapo::AttentionShape& s) {
  if (version == 4 && s.D == 64)
    tensor_core::attention_backward_tc<64>(b.dq, b.dk, b.dv, b.scratch, b.dout, b.out, b.lse, b.q, b.k, b.v, s,
                                           b.segments);
  else if (version == 4)
    tensor_core::attention_backward_tc<128>(b.dq, b.dk, b.dv, b.scratch, b.dout, b.out, b.lse, b.q, b.k, b.v, s,
                                            b.segments);
  else if (version == 5)
    stapo::attention_flash2_backward(b.dq, b.dk, b.dv, b.scratch, b.dout, b.out, b.lse, b.q, b.k, b.v, s, b.segments,
                                     0);
  else if (version == 7 && s.D == 64)
    occupancy::backward<64>(b.dq, b.dk, b.dv, b.scratch, b.dout, b.out, b.lse, b.q, b.k, b.v, s, b.segments);
  else if (version == 7)
    occupancy::backward<128>(b.dq, b.dk, b.dv, b.scratch, b.dout, b.out, b.lse, b.q, b.k, b.v, s, b.segments);
  else if (version == 9 && s.D == 64)
    grid_order::backward<64>(b.dq, b.dk, b.dv, b.scratch, b.dout, b.out, b.lse, b.q, b.k, b.v, s, b.segments);
  else if (version == 9)
    grid_order::backward<128>(b.dq, b.dk, b.dv, b.scratch, b.dout, b.out, b.lse, b.q, b.k, b.v, s, b.segments);
  else if (version == 8)
    stapo::attention_flash2_narrow_backward(b.dq, b.dk, b.dv, b.scratch, b.dout, b.out, b.lse, b.q, b.k, b.v, s,
                                            b.segments, 0);
  else if (version == 6)
    stapo::attention_flash2_backward_atomic(b.dq, b.dk, b.dv, b.scratch, b.dout, b.out, b.lse, b.q, b.k, b.v, s,
                                            b.segments, 0);
  else
    stapo::attention_backward(b.dq, b.dk, b.dv, b.scratch, b.dout, b.out, b.lse, b.q, b.k, b.v, s, b.segments, 0);
}

// A shape of the timing table, and the FlashAttention-3 paper's forward rate at it where the paper has one.
struct BenchShape {
  stapo::AttentionShape shape;
  const char* what;
  double fa3_forward_tflops;  // 0: no published figure at this shape
  int packed = 0;             // > 0: each row packed with sequences of this many tokens (not cuDNN's: one per row)
};

int main(int argc, char** argv) {
  std::vector<int> versions;
  for (int i = 1; i < argc; ++i) versions.push_back(std::atoi(argv[i]));
  if (versions.empty()) versions = {2, 5, 6, 7, 8, 9};
  for (int v : versions)
    if (v < 1 || v > 9) {
      std::printf("usage: %s [version ...]   versions 1-9 (default: 2 5 6 7 8 9; 3 needs make attention CUDNN=1)\n",
                  argv[0]);
      return 2;
    }
#ifdef STAPO_HAVE_CUDNN
  std::unique_ptr<stapo::CudnnAttention> cudnn = std::make_unique<stapo::CudnnAttention>();
#else
  for (int v : versions)
    if (v == 3) {
      std::printf("version 3 needs cuDNN: make attention CUDNN=1\n");
      return 2;
    }
#endif
  print_device();
  // Validation at both head dims (a packed row with a window; and padding), rows, T, H, Hkv, D, window. Version 3
  // gets one sequence then padding per row.
  const stapo::AttentionShape validation[] = {{2, 300, 8, 2, 128, 100}, {2, 300, 4, 1, 64, 0}};
  // Timing: the Llama-3-8B- and the benchmark's Llama-3.2-1B-shaped batches (GQA; the latter also as rows packed
  // with short sequences, what --pack makes of preference data), then the FlashAttention-3 paper's setting (MHA,
  // 16k tokens, H·D = 2048, causal) with its published forward rates on an H100 SXM5.
  const BenchShape bench[] = {
      {{4, 2048, 32, 8, 128, 0}, "Llama-3-8B, 8k tokens", 0},
      {{8, 1024, 32, 8, 64, 0}, "gpu_step (Llama-3.2-1B)", 0},
      {{8, 2048, 32, 8, 64, 0}, "Llama-3.2-1B, rows packed with 256-token sequences", 0, 256},
      {{16, 1024, 32, 32, 64, 0}, "FA3 setting", 265},
      {{8, 2048, 32, 32, 64, 0}, "FA3 setting", 371},
      {{4, 4096, 32, 32, 64, 0}, "FA3 setting", 420},
      {{16, 1024, 16, 16, 128, 0}, "FA3 setting", 423},
      {{8, 2048, 16, 16, 128, 0}, "FA3 setting", 521},
      {{4, 4096, 16, 16, 128, 0}, "FA3 setting", 579},
  };
  std::vector<std::string> table;
  for (int pass = 0; pass < 2; ++pass) {
    const size_t shapes = pass == 0 ? 2 : sizeof(bench) / sizeof(bench[0]);
    for (size_t si = 0; si < shapes; ++si) {
      const stapo::AttentionShape& s = pass == 0 ? validation[si] : bench[si].shape;
      const size_t N = (size_t)s.rows * s.T, nq = N * s.H * s.D, nkv = N * s.Hkv * s.D;
      auto q = random_normal(nq, 1.0f, 1), k = random_normal(nkv, 1.0f, 2), v = random_normal(nkv, 1.0f, 3),
           dout = random_normal(nq, 1.0f, 4);
      // The scratch as version 6 needs it (its dq accumulator, then δ): the largest.
      Buffers b{to_device_bf16(q), to_device_bf16(k), to_device_bf16(v), to_device_bf16(dout), device_alloc<bf16>(nq),
                device_alloc<bf16>(nq), device_alloc<bf16>(nkv), device_alloc<bf16>(nkv), device_alloc<float>(N * s.H),
                device_alloc<float>(stapo::attention_flash2_backward_atomic_scratch_floats(s)), nullptr};
      const int packed = pass == 1 ? bench[si].packed : 0;
      for (int version : versions) {
        if (packed && version == 3) continue;  // cuDNN's path takes one sequence per row
        std::vector<int32_t> segments(N);
        for (size_t i = 0; i < N; ++i) {  // validation: two packed sequences then padding (version 3: one)
          const int p = (int)(i % s.T);
          segments[i] = pass == 1 ? (packed ? p / packed : 0) : p < 120 ? 0 : p < 280 ? (version == 3 ? 0 : 1) : -1;
        }
        b.segments = to_device(segments);
        std::function<void()> forward = [&] { forward_version(version, b, s); };
        std::function<void()> backward = [&] { backward_version(version, b, s); };
#ifdef STAPO_HAVE_CUDNN
        if (version == 3) {
          cudnn->set_rows(segments, s.rows, s.T, 0);
          forward = [&] { cudnn->forward(b.out, b.lse, b.q, b.k, b.v, s, 0); };
          backward = [&] { cudnn->backward(b.dq, b.dk, b.dv, b.dout, b.out, b.lse, b.q, b.k, b.v, s, 0); };
        }
#endif
        if (pass == 0) {
          std::printf("version %d: validate rows=%d T=%d H=%d Hkv=%d D=%d window=%d (%s + padding)\n", version, s.rows,
                      s.T, s.H, s.Hkv, s.D, s.window, version == 3 ? "one sequence" : "packed");
          std::vector<float> out(nq), lse(N * s.H), dq(nq), dk(nkv), dv(nkv);
          stapo::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s, segments.data());
          stapo::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), q.data(),
                                    k.data(), v.data(), s, segments.data());
          for (bf16* x : {b.out, b.dq, b.dk, b.dv}) cudaCheck(cudaMemset(x, 0xff, (x == b.out || x == b.dq ? nq : nkv) * 2));
          forward();
          backward();
          cudaCheck(cudaDeviceSynchronize());
          validate("out", from_device_bf16(b.out, nq), out, 1e-2);
          validate("dq", from_device_bf16(b.dq, nq), dq, 2e-2);
          validate("dk", from_device_bf16(b.dk, nkv), dk, 2e-2);
          validate("dv", from_device_bf16(b.dv, nkv), dv, 2e-2);
        } else {
          const float fwd = time_ms(forward, 10), bwd = time_ms(backward, 10);
          // Causal: half of 4·N·L·H·D (QKᵀ and PV; L = T, or a packed sequence's length: the pairs that are
          // visible); the backward as 2.5× the forward (FlashAttention's count; versions 2, 4 and 5 recompute QKᵀ
          // and dO·Vᵀ in both of their kernels, which is not counted).
          const double flops = 4.0 * N * (packed ? packed : s.T) * s.H * s.D / 2;
          char line[256];
          std::snprintf(line, sizeof(line), "| %d | %d | %d | %d/%d | %d | %.3f | %.1f | %.3f | %.1f | %s |", version,
                        s.rows, s.T, s.H, s.Hkv, s.D, fwd, flops / fwd / 1e9, bwd, 2.5 * flops / bwd / 1e9,
                        bench[si].fa3_forward_tflops > 0 ? std::to_string((int)bench[si].fa3_forward_tflops).c_str()
                                                         : bench[si].what);
          std::printf("%s\n", line);
          table.push_back(line);
        }
        cudaCheck(cudaFree(b.segments));
      }
      for (void* p : {(void*)b.q, (void*)b.k, (void*)b.v, (void*)b.dout, (void*)b.out, (void*)b.dq, (void*)b.dk,
                      (void*)b.dv, (void*)b.lse, (void*)b.scratch})
        cudaCheck(cudaFree(p));
    }
  }
  std::printf("\n| version | rows | T | H/Hkv | D | forward ms | forward TFLOP/s | backward ms | backward TFLOP/s | "
              "FA3 paper forward TFLOP/s (H100 SXM5, causal) or shape |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (const std::string& line : table) std::printf("%s\n", line.c_str());
  return 0;
}
