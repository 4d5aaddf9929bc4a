// Flash-attention style causal GQA attention, forward and backward (math and layouts in attention.h).
//
// Thread layout shared by the three main kernels: 256 threads = 16 row groups × 16 lanes. For a tile of scores
// (rows × cols), thread (group, lane) owns rows group·4 .. group·4+3 and columns lane, lane+16, lane+32, ...;
// for a (rows × D) accumulator it owns the same rows and channels lane + 16·c. The 16 lanes sharing rows are a
// half warp, so a row's max and sum are 4 shuffles. Shared-memory rows are padded to D+1 floats: the 16 lanes
// read 16 different rows at the same channel, and with an odd stride those fall in 16 different banks.
#include <cmath>

#include "kernels/attention.h"
#include "kernels/cuda_common.h"
#include "kernels/device_utils.cuh"

namespace stapo {

constexpr int ATTN_THREADS = 256;
constexpr int ATTN_ROWS_PER_THREAD = 4;
constexpr int FWD_BQ = 64, FWD_BK = 64;      // forward: query tile, key tile
constexpr int DKV_BK = 64, DKV_BQ = 32;      // dk/dv: key tile (the block's), query tile (streamed)
constexpr int DQ_BQ = 64, DQ_BK = 32;        // dq: query tile (the block's), key tile (streamed)

// ---- device helpers ----

__device__ inline bool attention_visible(int i, int j, int seg_i, int seg_j, int window) {
  return seg_i >= 0 && seg_i == seg_j && j <= i && (window <= 0 || i - j < window);
}

// Max / sum over the 16 lanes of a half warp (lanes that own the same rows).
__device__ inline float half_warp_max(float v) {
#pragma unroll
  for (int offset = 8; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}
__device__ inline float half_warp_sum(float v) {
#pragma unroll
  for (int offset = 8; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// rows × D bf16 rows (stride `stride` elements apart in global memory) → fp32 shared memory with row stride
// D+1. Rows ≥ valid are zero (past the end of the sequence row).
template <int D>
__device__ inline void load_tile(float* dst, const bf16* src, int rows, int valid, size_t stride) {
  constexpr int VECS = D / 8;
  for (int idx = threadIdx.x; idx < rows * VECS; idx += blockDim.x) {
    const int r = idx / VECS, c = (idx % VECS) * 8;
    float x[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (r < valid) load_bf16x8(x, src + r * stride + c);
#pragma unroll
    for (int e = 0; e < 8; ++e) dst[r * (D + 1) + c + e] = x[e];
  }
}

// First key a query tile starting at q0 may see (sliding window), or 0.
__device__ inline int first_visible_key(int q0, int window) { return window > 0 ? max(0, q0 - window + 1) : 0; }

// Whether any (row, column) pair of the block's tile is visible, agreed by all threads (it is a barrier).
// Tiles that nobody sees (another packed sequence, outside the window) are skipped before they are loaded.
// Rows are this thread's 4 (segments in registers), columns lane + 16·j (segments in shared memory).
template <int COLS, bool ROWS_ARE_QUERIES>
__device__ __forceinline__ bool block_any_visible(int row0, int col0, const int* seg_row, const int* seg_col_s,
                                                  int window, int group, int lane) {
  bool any = false;
#pragma unroll
  for (int i = 0; i < ATTN_ROWS_PER_THREAD; ++i)
#pragma unroll
    for (int j = 0; j < COLS / 16; ++j) {
      const int r = row0 + group * ATTN_ROWS_PER_THREAD + i, c = col0 + lane + 16 * j;
      const int seg_c = seg_col_s[lane + 16 * j];
      any |= ROWS_ARE_QUERIES ? attention_visible(r, c, seg_row[i], seg_c, window)
                              : attention_visible(c, r, seg_c, seg_row[i], window);
    }
  return __syncthreads_or(any) != 0;
}

// The two products every kernel is made of, on fp32 tiles in shared memory (row stride D+1 for (·, D) tiles):
//   tile_dot:        out[i][j]  = Σ_d a[4·group + i][d] · b[lane + 16·j][d]        (a scores tile, e.g. Q·Kᵀ)
//   tile_accumulate: acc[i][c] += Σ_t p[4·group + i][t] · b[t][lane + 16·c]       (e.g. O += P·V), p's row
//                    stride `ldp`, t over `cols` rows of b
template <int D, int COLS>
__device__ inline void tile_dot(float out[ATTN_ROWS_PER_THREAD][COLS / 16], const float* a, const float* b,
                                int group, int lane) {
  constexpr int R = ATTN_ROWS_PER_THREAD, SC = COLS / 16, LD = D + 1;
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int j = 0; j < SC; ++j) out[i][j] = 0.0f;
  for (int d = 0; d < D; ++d) {
    float a_col[R], b_col[SC];
#pragma unroll
    for (int i = 0; i < R; ++i) a_col[i] = a[(group * R + i) * LD + d];
#pragma unroll
    for (int j = 0; j < SC; ++j) b_col[j] = b[(lane + 16 * j) * LD + d];
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
      for (int j = 0; j < SC; ++j) out[i][j] += a_col[i] * b_col[j];
  }
}

template <int D, int COLS>
__device__ inline void tile_accumulate(float acc[ATTN_ROWS_PER_THREAD][D / 16], const float* p, int ldp,
                                       const float* b, int group, int lane) {
  constexpr int R = ATTN_ROWS_PER_THREAD, DC = D / 16, LD = D + 1;
  for (int t = 0; t < COLS; ++t) {
    float b_row[DC];
#pragma unroll
    for (int c = 0; c < DC; ++c) b_row[c] = b[t * LD + lane + 16 * c];
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const float w = p[(group * R + i) * ldp + t];
#pragma unroll
      for (int c = 0; c < DC; ++c) acc[i][c] += w * b_row[c];
    }
  }
}

// ---- forward ----

template <int D>
constexpr size_t attention_forward_smem() {
  return sizeof(float) * ((FWD_BQ + FWD_BK) * (D + 1) + FWD_BQ * (FWD_BK + 1)) + sizeof(int) * FWD_BK;
}

// Block = (query tile, query head, row).
template <int D>
__global__ void __launch_bounds__(ATTN_THREADS, 1)
    attention_forward_kernel(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                             const int32_t* segments, int T, int H, int Hkv, int window, float scale) {
  constexpr int LD = D + 1, DC = D / 16, R = ATTN_ROWS_PER_THREAD, SC = FWD_BK / 16;
  extern __shared__ float smem[];
  float* q_s = smem;                  // (BQ, LD)
  float* kv_s = q_s + FWD_BQ * LD;    // (BK, LD): this tile's K, then its V
  float* p_s = kv_s + FWD_BK * LD;    // (BQ, BK+1)
  int* seg_k_s = reinterpret_cast<int*>(p_s + FWD_BQ * (FWD_BK + 1));  // (BK)

  const int q0 = blockIdx.x * FWD_BQ, h = blockIdx.y, hk = h / (H / Hkv);
  const int group = threadIdx.x / 16, lane = threadIdx.x % 16;
  const size_t row_base = (size_t)blockIdx.z * T;
  const int32_t* seg = segments + row_base;
  const int q_valid = min(FWD_BQ, T - q0);
  load_tile<D>(q_s, q + (row_base + q0) * H * D + (size_t)h * D, FWD_BQ, q_valid, (size_t)H * D);

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
  for (int k0 = first_visible_key(q0, window); k0 < kv_end; k0 += FWD_BK) {
    const int k_valid = min(FWD_BK, T - k0);
    __syncthreads();  // the previous tile's V, P and key segments are no longer read
    if (threadIdx.x < FWD_BK) seg_k_s[threadIdx.x] = (int)threadIdx.x < k_valid ? seg[k0 + threadIdx.x] : -1;
    __syncthreads();
    if (!block_any_visible<FWD_BK, true>(q0, k0, seg_q, seg_k_s, window, group, lane)) continue;
    load_tile<D>(kv_s, k + (row_base + k0) * Hkv * D + (size_t)hk * D, FWD_BK, k_valid, (size_t)Hkv * D);
    __syncthreads();

    float s[R][SC];
    tile_dot<D, FWD_BK>(s, q_s, kv_s, group, lane);

    // Online softmax: rescale what was accumulated with the old max, add this tile's probabilities.
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int iq = q0 + group * R + i;
      float tile_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < SC; ++j) {
        const int kj = lane + 16 * j;
        s[i][j] = attention_visible(iq, k0 + kj, seg_q[i], seg_k_s[kj], window) ? s[i][j] * scale : -INFINITY;
        tile_max = fmaxf(tile_max, s[i][j]);
      }
      const float m_new = fmaxf(m[i], half_warp_max(tile_max));
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // nothing visible yet: exp(−inf − 0) = 0, no NaN
      const float correction = expf(m[i] - m_use);
      float row_sum = 0.0f;
#pragma unroll
      for (int j = 0; j < SC; ++j) {
        s[i][j] = expf(s[i][j] - m_use);
        row_sum += s[i][j];
        p_s[(group * R + i) * (FWD_BK + 1) + lane + 16 * j] = s[i][j];
      }
      l[i] = l[i] * correction + half_warp_sum(row_sum);
      m[i] = m_new;
#pragma unroll
      for (int c = 0; c < DC; ++c) acc[i][c] *= correction;
    }
    __syncthreads();  // P complete, K no longer read
    load_tile<D>(kv_s, v + (row_base + k0) * Hkv * D + (size_t)hk * D, FWD_BK, k_valid, (size_t)Hkv * D);
    __syncthreads();
    tile_accumulate<D, FWD_BK>(acc, p_s, FWD_BK + 1, kv_s, group, lane);
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

// ---- backward ----

// delta[n, h] = Σ_d dout·out, one warp per (n, h).
__global__ void attention_delta_kernel(float* delta, const bf16* dout, const bf16* out, size_t heads, int D) {
  const size_t head = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (head >= heads) return;  // whole warps exit together
  float sum = 0.0f;
  for (int d = lane; d < D; d += 32)
    sum += __bfloat162float(dout[head * D + d]) * __bfloat162float(out[head * D + d]);
  sum = warp_sum(sum);
  if (lane == 0) delta[head] = sum;
}

template <int D>
constexpr size_t attention_dkv_smem() {
  return sizeof(float) * (2 * DKV_BK * (D + 1) + 2 * DKV_BQ * (D + 1) + 2 * DKV_BK * (DKV_BQ + 1) + 2 * DKV_BQ) +
         sizeof(int) * DKV_BQ;
}

// Block = (key tile, kv head, row): streams the query tiles of every query head sharing this kv head, so it
// alone writes its slice of dk and dv. Thread rows are keys here, columns queries.
template <int D>
__global__ void __launch_bounds__(ATTN_THREADS, 1)
    attention_dkv_kernel(bf16* dk, bf16* dv, const bf16* dout, const float* lse, const float* delta, const bf16* q,
                         const bf16* k, const bf16* v, const int32_t* segments, int T, int H, int Hkv, int window,
                         float scale) {
  constexpr int LD = D + 1, DC = D / 16, R = ATTN_ROWS_PER_THREAD, SC = DKV_BQ / 16, LP = DKV_BQ + 1;
  extern __shared__ float smem[];
  float* k_s = smem;                    // (BK, LD)
  float* v_s = k_s + DKV_BK * LD;       // (BK, LD)
  float* q_s = v_s + DKV_BK * LD;       // (BQ, LD)
  float* do_s = q_s + DKV_BQ * LD;      // (BQ, LD)
  float* pt_s = do_s + DKV_BQ * LD;     // (BK, BQ+1): p transposed
  float* dst_s = pt_s + DKV_BK * LP;    // (BK, BQ+1): dscore transposed
  float* lse_s = dst_s + DKV_BK * LP;   // (BQ)
  float* delta_s = lse_s + DKV_BQ;      // (BQ)
  int* seg_q_s = reinterpret_cast<int*>(delta_s + DKV_BQ);  // (BQ)

  const int k0 = blockIdx.x * DKV_BK, hk = blockIdx.y, group_size = H / Hkv;
  const int group = threadIdx.x / 16, lane = threadIdx.x % 16;
  const size_t row_base = (size_t)blockIdx.z * T;
  const int32_t* seg = segments + row_base;
  const int k_valid = min(DKV_BK, T - k0);
  load_tile<D>(k_s, k + (row_base + k0) * Hkv * D + (size_t)hk * D, DKV_BK, k_valid, (size_t)Hkv * D);
  load_tile<D>(v_s, v + (row_base + k0) * Hkv * D + (size_t)hk * D, DKV_BK, k_valid, (size_t)Hkv * D);

  int seg_k[R];
  float acc_dk[R][DC], acc_dv[R][DC];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int jk = k0 + group * R + i;
    seg_k[i] = jk < T ? seg[jk] : -1;
#pragma unroll
    for (int c = 0; c < DC; ++c) acc_dk[i][c] = acc_dv[i][c] = 0.0f;
  }

  // Causal: queries from k0 on; window: none at or after last key + window.
  const int q_end = window > 0 ? min(T, k0 + k_valid - 1 + window) : T;
  for (int h = hk * group_size; h < (hk + 1) * group_size; ++h)
    for (int q0 = k0; q0 < q_end; q0 += DKV_BQ) {
      const int q_valid = min(DKV_BQ, T - q0);
      __syncthreads();  // the previous query tile is no longer read
      if (threadIdx.x < DKV_BQ) {
        const bool in = (int)threadIdx.x < q_valid;
        const size_t head = (row_base + q0 + threadIdx.x) * H + h;
        lse_s[threadIdx.x] = in ? lse[head] : 0.0f;
        delta_s[threadIdx.x] = in ? delta[head] : 0.0f;
        seg_q_s[threadIdx.x] = in ? seg[q0 + threadIdx.x] : -1;
      }
      __syncthreads();
      if (!block_any_visible<DKV_BQ, false>(k0, q0, seg_k, seg_q_s, window, group, lane)) continue;
      load_tile<D>(q_s, q + (row_base + q0) * H * D + (size_t)h * D, DKV_BQ, q_valid, (size_t)H * D);
      load_tile<D>(do_s, dout + (row_base + q0) * H * D + (size_t)h * D, DKV_BQ, q_valid, (size_t)H * D);
      __syncthreads();

      float s[R][SC], dp[R][SC];
      tile_dot<D, DKV_BQ>(s, k_s, q_s, group, lane);     // scoresᵀ: keys × queries
      tile_dot<D, DKV_BQ>(dp, v_s, do_s, group, lane);   // dPᵀ = V·dOᵀ
#pragma unroll
      for (int i = 0; i < R; ++i)
#pragma unroll
        for (int j = 0; j < SC; ++j) {
          const int qj = lane + 16 * j;
          const bool vis = attention_visible(q0 + qj, k0 + group * R + i, seg_q_s[qj], seg_k[i], window);
          const float p = vis ? expf(s[i][j] * scale - lse_s[qj]) : 0.0f;
          pt_s[(group * R + i) * LP + qj] = p;
          dst_s[(group * R + i) * LP + qj] = p * (dp[i][j] - delta_s[qj]);
        }
      __syncthreads();
      tile_accumulate<D, DKV_BQ>(acc_dv, pt_s, LP, do_s, group, lane);   // dV += Pᵀ·dO
      tile_accumulate<D, DKV_BQ>(acc_dk, dst_s, LP, q_s, group, lane);  // dK += dSᵀ·Q (·scale at the end)
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
constexpr size_t attention_dq_smem() {
  return sizeof(float) * (2 * DQ_BQ * (D + 1) + 2 * DQ_BK * (D + 1) + DQ_BQ * (DQ_BK + 1)) + sizeof(int) * DQ_BK;
}

// Block = (query tile, query head, row); streams key tiles like the forward.
template <int D>
__global__ void __launch_bounds__(ATTN_THREADS, 1)
    attention_dq_kernel(bf16* dq, const bf16* dout, const float* lse, const float* delta, const bf16* q,
                        const bf16* k, const bf16* v, const int32_t* segments, int T, int H, int Hkv, int window,
                        float scale) {
  constexpr int LD = D + 1, DC = D / 16, R = ATTN_ROWS_PER_THREAD, SC = DQ_BK / 16, LS = DQ_BK + 1;
  extern __shared__ float smem[];
  float* q_s = smem;                   // (BQ, LD)
  float* do_s = q_s + DQ_BQ * LD;      // (BQ, LD)
  float* k_s = do_s + DQ_BQ * LD;      // (BK, LD)
  float* v_s = k_s + DQ_BK * LD;       // (BK, LD)
  float* ds_s = v_s + DQ_BK * LD;      // (BQ, BK+1)
  int* seg_k_s = reinterpret_cast<int*>(ds_s + DQ_BQ * LS);  // (BK)

  const int q0 = blockIdx.x * DQ_BQ, h = blockIdx.y, hk = h / (H / Hkv);
  const int group = threadIdx.x / 16, lane = threadIdx.x % 16;
  const size_t row_base = (size_t)blockIdx.z * T;
  const int32_t* seg = segments + row_base;
  const int q_valid = min(DQ_BQ, T - q0);
  load_tile<D>(q_s, q + (row_base + q0) * H * D + (size_t)h * D, DQ_BQ, q_valid, (size_t)H * D);
  load_tile<D>(do_s, dout + (row_base + q0) * H * D + (size_t)h * D, DQ_BQ, q_valid, (size_t)H * D);

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
  for (int k0 = first_visible_key(q0, window); k0 < kv_end; k0 += DQ_BK) {
    const int k_valid = min(DQ_BK, T - k0);
    __syncthreads();  // the previous key tile, its segments and dscore are no longer read
    if (threadIdx.x < DQ_BK) seg_k_s[threadIdx.x] = (int)threadIdx.x < k_valid ? seg[k0 + threadIdx.x] : -1;
    __syncthreads();
    if (!block_any_visible<DQ_BK, true>(q0, k0, seg_q, seg_k_s, window, group, lane)) continue;
    load_tile<D>(k_s, k + (row_base + k0) * Hkv * D + (size_t)hk * D, DQ_BK, k_valid, (size_t)Hkv * D);
    load_tile<D>(v_s, v + (row_base + k0) * Hkv * D + (size_t)hk * D, DQ_BK, k_valid, (size_t)Hkv * D);
    __syncthreads();

    float s[R][SC], dp[R][SC];
    tile_dot<D, DQ_BK>(s, q_s, k_s, group, lane);
    tile_dot<D, DQ_BK>(dp, do_s, v_s, group, lane);
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
      for (int j = 0; j < SC; ++j) {
        const int kj = lane + 16 * j;
        const bool vis = attention_visible(q0 + group * R + i, k0 + kj, seg_q[i], seg_k_s[kj], window);
        ds_s[(group * R + i) * LS + kj] = vis ? expf(s[i][j] * scale - lse_q[i]) * (dp[i][j] - delta_q[i]) : 0.0f;
      }
    __syncthreads();
    tile_accumulate<D, DQ_BK>(acc, ds_s, LS, k_s, group, lane);
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

static_assert(attention_forward_smem<128>() <= MAX_BLOCK_SMEM, "forward tiles exceed shared memory");
static_assert(attention_dkv_smem<128>() <= MAX_BLOCK_SMEM, "dk/dv tiles exceed shared memory");
static_assert(attention_dq_smem<128>() <= MAX_BLOCK_SMEM, "dq tiles exceed shared memory");

// ---- launchers ----

void attention_check(const AttentionShape& s, const char* op,
                     std::initializer_list<std::pair<const char*, const void*>> tensors) {
  STAPO_CHECK(s.rows > 0 && s.T > 0, op, ": empty batch (rows = ", s.rows, ", T = ", s.T, ")");
  STAPO_CHECK(s.D == 64 || s.D == 128, op, ": head dim D = ", s.D, " is not supported (64 or 128)");
  STAPO_CHECK(s.H > 0 && s.Hkv > 0 && s.H % s.Hkv == 0, op, ": H = ", s.H, " must be a positive multiple of Hkv = ",
              s.Hkv);
  STAPO_CHECK(s.window >= 0, op, ": window = ", s.window, " must be ≥ 0 (0 = none)");
  STAPO_CHECK(s.rows <= 65535 && s.H <= 65535, op, ": rows = ", s.rows, " or H = ", s.H, " exceeds the grid limit");
  for (const auto& [name, p] : tensors) check_aligned16(p, op, name);
}

template <int D>
static void attention_forward_launch(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                                     const AttentionShape& s, const int32_t* segments, cudaStream_t stream) {
  constexpr size_t smem = attention_forward_smem<D>();
  allow_smem(attention_forward_kernel<D>, smem);
  dim3 grid(ceil_div(s.T, FWD_BQ), s.H, s.rows);
  attention_forward_kernel<D><<<grid, ATTN_THREADS, smem, stream>>>(out, lse, q, k, v, segments, s.T, s.H, s.Hkv,
                                                                     s.window, 1.0f / sqrtf((float)D));
  cudaCheck(cudaGetLastError());
}

void attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                       const AttentionShape& shape, const int32_t* segments, cudaStream_t stream) {
  attention_check(shape, "attention_forward", {{"out", out}, {"q", q}, {"k", k}, {"v", v}});
  if (shape.D == 64)
    attention_forward_launch<64>(out, lse, q, k, v, shape, segments, stream);
  else
    attention_forward_launch<128>(out, lse, q, k, v, shape, segments, stream);
}

size_t attention_backward_scratch_floats(const AttentionShape& shape) {
  return (size_t)shape.rows * shape.T * shape.H;
}

void attention_delta(float* delta, const bf16* dout, const bf16* out, const AttentionShape& shape,
                     cudaStream_t stream) {
  const size_t heads = attention_backward_scratch_floats(shape);
  attention_delta_kernel<<<(unsigned)((heads * 32 + 255) / 256), 256, 0, stream>>>(delta, dout, out, heads, shape.D);
  cudaCheck(cudaGetLastError());
}

template <int D>
static void attention_backward_launch(bf16* dq, bf16* dk, bf16* dv, const float* delta, const bf16* dout,
                                      const float* lse, const bf16* q, const bf16* k, const bf16* v,
                                      const AttentionShape& s, const int32_t* segments, cudaStream_t stream) {
  const float scale = 1.0f / sqrtf((float)D);
  constexpr size_t smem_dkv = attention_dkv_smem<D>(), smem_dq = attention_dq_smem<D>();
  allow_smem(attention_dkv_kernel<D>, smem_dkv);
  allow_smem(attention_dq_kernel<D>, smem_dq);
  dim3 grid_dkv(ceil_div(s.T, DKV_BK), s.Hkv, s.rows);
  attention_dkv_kernel<D><<<grid_dkv, ATTN_THREADS, smem_dkv, stream>>>(dk, dv, dout, lse, delta, q, k, v, segments,
                                                                         s.T, s.H, s.Hkv, s.window, scale);
  cudaCheck(cudaGetLastError());
  dim3 grid_dq(ceil_div(s.T, DQ_BQ), s.H, s.rows);
  attention_dq_kernel<D><<<grid_dq, ATTN_THREADS, smem_dq, stream>>>(dq, dout, lse, delta, q, k, v, segments, s.T,
                                                                      s.H, s.Hkv, s.window, scale);
  cudaCheck(cudaGetLastError());
}

void attention_backward(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* out,
                        const float* lse, const bf16* q, const bf16* k, const bf16* v, const AttentionShape& shape,
                        const int32_t* segments, cudaStream_t stream) {
  attention_check(shape, "attention_backward", {{"dq", dq}, {"dk", dk}, {"dv", dv}, {"q", q}, {"k", k}, {"v", v}});
  attention_delta(scratch, dout, out, shape, stream);
  if (shape.D == 64)
    attention_backward_launch<64>(dq, dk, dv, scratch, dout, lse, q, k, v, shape, segments, stream);
  else
    attention_backward_launch<128>(dq, dk, dv, scratch, dout, lse, q, k, v, shape, segments, stream);
}

}  // namespace stapo
