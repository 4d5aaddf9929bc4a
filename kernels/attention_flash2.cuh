// Causal GQA attention on tensor cores, FlashAttention-2's design (math, layouts and masking in
// kernels/attention.h; the launchers are kernels/attention_flash2.cu). The block code is here, free of CUDA-only
// syntax beyond kernels/warp_mma.cuh, so the same source also runs on the CPU under that header's emulation
// (tests/kernels/test_attention_flash2_emulated.cpp).
//
// Every product is a warp's mma.sync m16n8k16 (bf16 operands, fp32 accumulation); a warp owns 16 rows of its
// block's tile and all of the tile's columns, so row maxima and sums need only the 4 lanes of a quad (2
// shuffles). Operands come from shared memory through ldmatrix (rows padded by 16 bytes: the 8 row addresses
// of one 8×8 load fall in 8 different bank groups), tiles arrive by cp.async, double-buffered: the next tile is
// in flight while this one is computed. The scores S stay in registers and are reused as the next product's A
// operand (FlashAttention-2's register reuse: the accumulator layout of two n-tiles is the A layout of one
// k-step), rounded to bf16 there, as FlashAttention does.
//   forward   block = (64 queries, query head, row): S = Q·Kᵀ, online softmax (exp2, the row max and the
//             correction per quad; the row sum per thread, reduced once at the end), O += P·V.
//   dk, dv    block = (64 keys, kv head, row): streams the query tiles of every query head sharing the kv head
//             (one pipeline across heads): Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, Pᵀ = exp(Sᵀ − lse), dSᵀ = Pᵀ∘(dPᵀ − δ),
//             dV += Pᵀ·dO, dK += dSᵀ·Q.
//   dq        block = (64 queries, query head, row): S = Q·Kᵀ, dP = dO·Vᵀ, dS = P∘(dP − δ), dQ += dS·K.
// No atomics: each output element has one writer, so results are deterministic. That is 7 tile products where
// FlashAttention-2 does 5, so there is also its atomic backward (dkv_block<D, true>): the dk, dv block writes its
// dSᵀ (bf16) to shared memory and adds dS·K of every query tile it visits to an fp32 (N, H, D) accumulator with
// atomic adds (zeroed before; dq_convert_block turns it into bf16 dq, scaled); dq_block does not run. The adds of
// different key tiles and heads land in any order: dq's last bits vary from run to run.
// Tiles: a key (or query) tile is visited only if some pair in it may be visible. That is decided from the
// range of segment ids on each side, the causal bound and the window, for all of a block's tiles at its start
// (build_tile_flags: one flag byte per tile in shared memory, the block's warps in parallel); a tile whose every
// pair is visible (one sequence on both sides, wholly below the diagonal and inside the window) skips the
// per-element mask. Grids start their longest blocks first (longest_first). With QUERY_TILE / KEY_TILE of 32 (the
// launchers' narrow variant) the blocks stream 32-row tiles.
#pragma once
#include <cuda_bf16.h>

#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/warp_mma.cuh"

namespace stapo::flash2 {

using bf16 = __nv_bfloat16;

constexpr int WARPS = 4, THREADS = 32 * WARPS, WARP_ROWS = 16;
constexpr float LOG2E = 1.4426950408889634f;

// Everything the three kernels read and write (forward: q, k, v, segments → out, lse; backward also dout, out's
// lse and δ → dq, dk, dv). Shapes as kernels/attention.h.
struct Params {
  const bf16 *q, *k, *v;     // (N, H, D), (N, Hkv, D), (N, Hkv, D)
  const int32_t* segments;   // (N)
  bf16* out;                 // (N, H, D)
  float* lse_out;            // (N, H): the forward's
  const float* lse;          // (N, H): the backward's (what the forward wrote)
  const bf16* dout;          // (N, H, D)
  const float* delta;        // (N, H): Σ_d dout·out
  bf16 *dq, *dk, *dv;        // (N, H, D), (N, Hkv, D), (N, Hkv, D)
  float* dq_accum;           // (N, H, D): the atomic backward's Σ dS·K (unscaled), zero before dkv_block<D, true>
  int T, H, Hkv, window;
  float scale;               // 1/√D
};

// ---- small helpers (host-compilable: the emulation builds them with a host compiler) ----

__host__ __device__ constexpr int imin(int a, int b) { return a < b ? a : b; }
__host__ __device__ constexpr int imax(int a, int b) { return a > b ? a : b; }
__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// ---- tile geometry: every shared-memory region starts on a 128-byte boundary ----

__host__ __device__ constexpr size_t align128(size_t bytes) { return (bytes + 127) / 128 * 128; }
__host__ __device__ constexpr size_t tile_bytes(int rows, int D) { return align128(sizeof(bf16) * rows * (D + 8)); }
// After a layout's fixed regions (`bytes`), one byte per tile a block may visit (build_tile_flags): their number
// depends on T, so a launch asks for the layout's smem_bytes(T).
__host__ __device__ constexpr size_t tile_flags_bytes(int T, int tile) { return align128((size_t)ceil_div(T, tile)); }

// KEY_TILE: BK, 64 unless given (the narrow variant, --attention flash2-narrow: 32).
template <int D, int KEY_TILE = 64>
struct ForwardTiles {
  static constexpr int BQ = WARP_ROWS * WARPS, BK = KEY_TILE, LD = D + 8;
  static constexpr size_t q = 0, k = q + tile_bytes(BQ, D), v = k + 2 * tile_bytes(BK, D),
                          seg = v + 2 * tile_bytes(BK, D), bytes = seg + 2 * align128(sizeof(int32_t) * BK);
  __host__ __device__ static constexpr size_t smem_bytes(int T) { return bytes + tile_flags_bytes(T, BK); }
};

// BK keys are the block's; query tiles of BQ stream through two stages. With DQ_ATOMIC, also dSᵀ (BK, BQ + 8) bf16.
// QUERY_TILE: BQ, 64 at D = 64 and 32 at D = 128 unless given (the narrow variant: 32 at D = 64 too).
template <int D, bool DQ_ATOMIC = false, int QUERY_TILE = (D == 64 ? 64 : 32)>
struct DkvTiles {
  static constexpr int BK = WARP_ROWS * WARPS, BQ = QUERY_TILE, LD = D + 8, LDS = BQ + 8;
  static constexpr size_t k = 0, v = k + tile_bytes(BK, D), q = v + tile_bytes(BK, D), dout = q + 2 * tile_bytes(BQ, D),
                          lse = dout + 2 * tile_bytes(BQ, D), delta = lse + 2 * align128(sizeof(float) * BQ),
                          seg = delta + 2 * align128(sizeof(float) * BQ), ds = seg + 2 * align128(sizeof(int32_t) * BQ),
                          bytes = ds + (DQ_ATOMIC ? tile_bytes(BK, BQ) : 0);
  __host__ __device__ static constexpr size_t smem_bytes(int T) { return bytes + tile_flags_bytes(T, BQ); }
};

// BQ queries are the block's; key tiles of BK stream through two stages. KEY_TILE: BK, 64 at D = 64 and 32 at
// D = 128 unless given (the narrow variant: 32 at D = 64 too).
template <int D, int KEY_TILE = (D == 64 ? 64 : 32)>
struct DqTiles {
  static constexpr int BQ = WARP_ROWS * WARPS, BK = KEY_TILE, LD = D + 8;
  static constexpr size_t q = 0, dout = q + tile_bytes(BQ, D), k = dout + tile_bytes(BQ, D),
                          v = k + 2 * tile_bytes(BK, D), seg = v + 2 * tile_bytes(BK, D),
                          bytes = seg + 2 * align128(sizeof(int32_t) * BK);
  __host__ __device__ static constexpr size_t smem_bytes(int T) { return bytes + tile_flags_bytes(T, BK); }
};

// ---- launch order ----

// Where a block works: its tile (of queries in the forward and dq grids, of keys in the dk, dv grid), head, row.
struct BlockPlace {
  int tile, head, row;
};

// Causal blocks differ in length by their tile alone: a dk, dv block of key tile kt visits the query tiles from kt
// on, a forward or dq block of query tile qt the key tiles up to qt (16 to 1 at T = 1024). A grid's blocks start in
// index order, x fastest, so with the tile as x every wave mixed all lengths and the last wave's long blocks ran on
// alone (Nsight Compute's "partial wave" on the dk, dv grid). Numbered tile-major, longest tile first, every long
// block starts before any shorter one (the longest-processing-time-first rule) and the last wave is short blocks;
// dev/cuda/launch_order.py models both orders. `index`: the block's place in launch order over a grid of
// tiles × heads × rows; tile 0 is the longest when tile0_longest (dk, dv), else the last tile (forward, dq).
__host__ __device__ constexpr BlockPlace longest_first(unsigned index, int tiles, int heads, int rows,
                                                       bool tile0_longest) {
  const unsigned per_tile = (unsigned)heads * (unsigned)rows, rank = index / per_tile, rest = index % per_tile;
  return {tile0_longest ? (int)rank : tiles - 1 - (int)rank, (int)(rest % (unsigned)heads),
          (int)(rest / (unsigned)heads)};
}

__device__ __forceinline__ int lane_id() { return warp::thread_index() % 32; }
__device__ __forceinline__ int warp_id() { return warp::thread_index() / 32; }

__device__ __forceinline__ bool visible(int i, int j, int seg_i, int seg_j, int window) {
  return seg_i >= 0 && seg_i == seg_j && j <= i && (window <= 0 || i - j < window);
}

// First key a query at or after q0 may see (the window's start), else 0.
__device__ __forceinline__ int first_visible_key(int q0, int window) {
  return window > 0 ? imax(0, q0 - window + 1) : 0;
}

// ---- asynchronous tile loads (every thread of the block takes part; commit and wait are the caller's) ----

// rows × D bf16 from global (consecutive rows `stride` elements apart) into shared memory with row stride D+8;
// rows ≥ valid are zero-filled without being read.
template <int D>
__device__ __forceinline__ void load_rows_async(bf16* dst, const bf16* src, size_t stride, int rows, int valid) {
  constexpr int CHUNKS = D / 8;  // 16-byte pieces per row
  for (int i = warp::thread_index(); i < rows * CHUNKS; i += THREADS) {
    const int r = i / CHUNKS, c = (i % CHUNKS) * 8;
    const bool in = r < valid;
    warp::cp_async_16(dst + r * (D + 8) + c, src + (size_t)(in ? r : 0) * stride + c, in);
  }
}

// count 4-byte values src[i·stride] into dst[i]; i ≥ valid zero-filled without being read. The loop steps from 0 by
// the block, not from the thread's index (as load_segments' by the warp): count is the caller's tile constant, so
// the trip count is one too and the loop becomes straight code, without a branch and convergence barrier per visit.
// (The same form for load_rows_async lets the compiler keep every chunk's offset across the tile loop: 60 bytes
// spilled in the atomic dk, dv kernel at D = 128.)
template <typename T>
__device__ __forceinline__ void load_values_async(T* dst, const T* src, size_t stride, int count, int valid) {
#pragma unroll
  for (int first = 0; first < count; first += THREADS) {
    const int i = first + warp::thread_index();
    const bool in = i < valid;
    if (i < count) warp::cp_async_4(dst + i, src + (size_t)(in ? i : 0) * stride, in);
  }
}

// ---- which tiles to visit ----

// The segment ids at positions start .. start+COUNT−1 of one row (positions ≥ T count as padding): the least and
// greatest id ≥ 0 (lo > hi: none) and whether all COUNT positions are one sequence. A whole warp computes it
// with shuffles, and every warp gets the same answer. The loads (load_segments: COUNT/32 ids per lane) and the
// reduction are apart, so that build_tile_flags can have several tiles' loads in flight at once.
struct SegmentRange {
  int lo, hi;
  bool uniform;
};

template <int COUNT>
struct SegmentIds {
  static_assert(COUNT % 32 == 0, "segment ids are read 32 per warp");
  int id[COUNT / 32];  // lane l: positions start + l, start + 32 + l, …
};

template <int COUNT>
__device__ __forceinline__ SegmentIds<COUNT> load_segments(const int32_t* seg, int start, int T) {
  SegmentIds<COUNT> ids;
#pragma unroll
  for (int k = 0; k < COUNT / 32; ++k) {
    const int i = start + 32 * k + lane_id();
    ids.id[k] = i < T ? seg[i] : -1;
  }
  return ids;
}

template <int COUNT>
__device__ __forceinline__ SegmentRange segment_range(const SegmentIds<COUNT>& ids) {
  int lo = INT_MAX, hi = -1;
  bool all_sequence = true;  // no padding position
#pragma unroll
  for (int k = 0; k < COUNT / 32; ++k) {
    const int s = ids.id[k];
    lo = s >= 0 ? imin(lo, s) : lo;
    hi = imax(hi, s);
    all_sequence = all_sequence && s >= 0;
  }
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) {
    lo = imin(lo, warp::shfl_xor(lo, mask));
    hi = imax(hi, warp::shfl_xor(hi, mask));
  }
  return {lo, hi, warp::warp_all(all_sequence) && lo == hi};
}

template <int COUNT>
__device__ __forceinline__ SegmentRange segment_range(const int32_t* seg, int start, int T) {
  return segment_range(load_segments<COUNT>(seg, start, T));
}

// A tile of queries [q0, q0+BQ) × keys [k0, k0+BK): `any` when some pair may be visible (their segment ranges
// overlap, some key is at or before some query, some pair is inside the window), `full` when every pair is.
struct TileKind {
  bool any, full;
};

__device__ __forceinline__ TileKind tile_kind(int q0, int BQ, const SegmentRange& qs, int k0, int BK,
                                             const SegmentRange& ks, int window) {
  const int q_last = q0 + BQ - 1, k_last = k0 + BK - 1;
  const bool shared = qs.lo <= qs.hi && ks.lo <= ks.hi && qs.lo <= ks.hi && ks.lo <= qs.hi;
  TileKind kind;
  kind.any = shared && k0 <= q_last && (window <= 0 || q0 - k_last < window);
  kind.full = kind.any && qs.uniform && ks.uniform && qs.lo == ks.lo && k_last <= q0 &&
              (window <= 0 || q_last - k0 < window);
  return kind;
}

// Which tiles a block visits, decided before its loop: flags[k] for tiles first + k, k < count (tiles of TILE
// positions of `seg`), TILE_ANY when some pair may be visible and TILE_FULL when every pair is, from kind(tile,
// its segment range). The block's warps take UNROLL tiles each at a time, their segment loads in flight together:
// a search tile by tile, each load waited for before the next, put one memory latency per skipped tile into the
// loop (in packed rows most tiles are another sequence's). Every thread calls it; the caller syncs the block
// before reading the flags.
constexpr uint8_t TILE_ANY = 1, TILE_FULL = 2;

template <int TILE, typename Kind>
__device__ __forceinline__ void build_tile_flags(uint8_t* flags, const int32_t* seg, int T, int first, int count,
                                                 const Kind& kind) {
  constexpr int UNROLL = 4;
  for (int base = warp_id() * UNROLL; base < count; base += WARPS * UNROLL) {
    SegmentIds<TILE> ids[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u)  // past count: T = 0 reads nothing
      ids[u] = load_segments<TILE>(seg, (first + base + u) * TILE, base + u < count ? T : 0);
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      if (base + u >= count) break;  // the same for the whole warp
      const TileKind k = kind(first + base + u, segment_range(ids[u]));
      if (lane_id() == 0) flags[base + u] = uint8_t((k.any ? TILE_ANY : 0) | (k.full ? TILE_FULL : 0));
    }
  }
}

// The first k ≥ from with TILE_ANY, else count.
__device__ __forceinline__ int next_flagged(const uint8_t* flags, int from, int count) {
  while (from < count && !(flags[from] & TILE_ANY)) ++from;
  return from;
}

// ---- warp products (16 rows per warp; n-tiles of 8 columns; k-steps of 16) ----

// A fragment: rows row0..row0+15, columns col0..col0+15 of a row-major tile (row stride LD).
template <int LD>
__device__ __forceinline__ void load_a(uint32_t a[4], const bf16* tile, int row0, int col0) {
  const int lane = lane_id();
  warp::ldmatrix_x4(a, tile + (row0 + lane % 16) * LD + col0 + (lane / 16) * 8);
}

// The same for A = tileᵀ: rows row0..row0+15 of A are columns of the tile, A's columns col0..col0+15 its rows
// (dS from the dSᵀ the dk, dv block holds), transposed by ldmatrix.
template <int LD>
__device__ __forceinline__ void load_a_transposed(uint32_t a[4], const bf16* tile, int row0, int col0) {
  const int lane = lane_id();
  warp::ldmatrix_x4_trans(a, tile + (col0 + lane % 8 + (lane / 16) * 8) * LD + row0 + (lane / 8) % 2 * 8);
}

// B fragments of n-tiles n0..n0+7 and n0+8..n0+15 at k-step k0..k0+15, where B = tileᵀ: the tile holds n rows of
// k contiguous values (K in S = Q·Kᵀ).
template <int LD>
__device__ __forceinline__ void load_b_transposed(uint32_t b[2][2], const bf16* tile, int n0, int k0) {
  const int lane = lane_id();
  uint32_t r[4];
  warp::ldmatrix_x4(r, tile + (n0 + lane % 8 + (lane / 16) * 8) * LD + k0 + (lane / 8) % 2 * 8);
  b[0][0] = r[0];
  b[0][1] = r[1];
  b[1][0] = r[2];
  b[1][1] = r[3];
}

// The same where B is the tile itself: k rows of n contiguous values (V in O = P·V), transposed by ldmatrix.
template <int LD>
__device__ __forceinline__ void load_b(uint32_t b[2][2], const bf16* tile, int k0, int n0) {
  const int lane = lane_id();
  uint32_t r[4];
  warp::ldmatrix_x4_trans(r, tile + (k0 + lane % 16) * LD + n0 + (lane / 16) * 8);
  b[0][0] = r[0];
  b[0][1] = r[1];
  b[1][0] = r[2];
  b[1][1] = r[3];
}

// One k-step (16) of acc (16 × 8·NT) += A·B over all NT n-tiles, A one fragment in registers. B is the tile's
// transpose (B_TRANSPOSED: the tile holds n rows of k contiguous values, K in S = Q·Kᵀ) or the tile itself (k rows
// of n values, V in O = P·V).
template <int NT, int LD, bool B_TRANSPOSED>
__device__ __forceinline__ void mma_k_step(float acc[NT][4], const uint32_t a[4], const bf16* tile, int k0) {
#pragma unroll
  for (int n = 0; n < NT; n += 2) {
    uint32_t b[2][2];
    if constexpr (B_TRANSPOSED)
      load_b_transposed<LD>(b, tile, 8 * n, k0);
    else
      load_b<LD>(b, tile, k0, 8 * n);
    warp::mma_bf16_16816(acc[n], a, b[0]);
    warp::mma_bf16_16816(acc[n + 1], a, b[1]);
  }
}

// acc (16 × 8·NT) += A (16 × K) · tileᵀ, A given as K/16 fragments in registers, the tile's first 8·NT rows.
template <int K, int NT, int LD>
__device__ __forceinline__ void mma_a_bt(float acc[NT][4], const uint32_t a[K / 16][4], const bf16* tile) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) mma_k_step<NT, LD, true>(acc, a[kk], tile, 16 * kk);
}

// The same with A read from shared memory: rows a_row0.. of a_tile (both tiles row stride LD).
template <int K, int NT, int LD>
__device__ __forceinline__ void mma_smem_bt(float acc[NT][4], const bf16* a_tile, int a_row0, const bf16* tile) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    uint32_t a[4];
    load_a<LD>(a, a_tile, a_row0, 16 * kk);
    mma_k_step<NT, LD, true>(acc, a, tile, 16 * kk);
  }
}

// acc (16 × 8·NT) += A (16 × K) · tile, A in registers, the tile's first K rows (k rows of n values).
template <int K, int NT, int LD>
__device__ __forceinline__ void mma_a_b(float acc[NT][4], const uint32_t a[K / 16][4], const bf16* tile) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) mma_k_step<NT, LD, false>(acc, a[kk], tile, 16 * kk);
}

// Scores in the accumulator layout (NT n-tiles of 16 × 8) as the A operand of the next product (NT/2 k-steps),
// rounded to bf16: k-step kk is n-tiles 2kk and 2kk+1.
template <int NT>
__device__ __forceinline__ void scores_to_a(uint32_t a[NT / 2][4], const float s[NT][4]) {
#pragma unroll
  for (int kk = 0; kk < NT / 2; ++kk) {
    a[kk][0] = warp::pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
    a[kk][1] = warp::pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
    a[kk][2] = warp::pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[kk][3] = warp::pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
  }
}

template <int NT>
__device__ __forceinline__ void zero(float acc[NT][4]) {
#pragma unroll
  for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
}

// A warp's 16 rows × D of an accumulator, times `scale`, as bf16 to rows first_row.. of a (·, D) slice whose rows
// are `stride` elements apart; rows ≥ T are not written. Element (n, e) is row g + 8·(e/2), column 8n + 2t + e%2.
template <int D>
__device__ __forceinline__ void store_rows(bf16* dst, size_t stride, int first_row, int T, const float acc[D / 8][4],
                                           const float scale[2]) {
  const int lane = lane_id(), g = lane / 4, t = lane % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = first_row + g + 8 * half;
    if (r >= T) continue;
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<uint32_t*>(dst + (size_t)r * stride + 8 * n + 2 * t) =
          warp::pack_bf16x2(acc[n][2 * half] * scale[half], acc[n][2 * half + 1] * scale[half]);
  }
}

// ---- forward ----

struct VisibleTile {
  int index;  // end when there is none
  bool full;
};

// The key tiles a block of L::BQ queries streams (forward and dq): which of them to visit (flags after the layout's
// regions: build, by the whole block, then a block sync, before first()), and their K, V and segment ids copied
// into stage 0 or 1 of the layout's k, v and seg regions. Constructed by the whole block.
template <int D, typename L>
struct KeyTileStream {
  static constexpr size_t K_STAGE = tile_bytes(L::BK, D), SEG_STAGE = align128(sizeof(int32_t) * L::BK);
  const int32_t* seg;         // (T) this row's segment ids
  const bf16 *k_row, *v_row;  // key 0 of this row and kv head
  size_t kv_stride;
  int T, window, q0;
  int start, end;             // the key tiles that may be visible: from the window's first key to the last tile
                              // holding a key ≤ the block's last query (causal)
  uint8_t* flags;             // flags[kt − start], after the layout's regions

  __device__ KeyTileStream(const Params& p, unsigned char* smem, int q_tile, int h, int row)
      : seg(p.segments + (size_t)row * p.T),
        k_row(p.k + (size_t)row * p.T * p.Hkv * D + (size_t)(h / (p.H / p.Hkv)) * D),
        v_row(p.v + (size_t)row * p.T * p.Hkv * D + (size_t)(h / (p.H / p.Hkv)) * D),
        kv_stride((size_t)p.Hkv * D),
        T(p.T),
        window(p.window),
        q0(q_tile * L::BQ),
        start(first_visible_key(q0, p.window) / L::BK),
        end(ceil_div(imin(q0 + L::BQ, p.T), L::BK)),
        flags(smem + L::bytes) {}

  __device__ void build() const {
    const SegmentRange q_range = segment_range<L::BQ>(seg, q0, T);
    build_tile_flags<L::BK>(flags, seg, T, start, end - start, [&](int kt, const SegmentRange& k_range) {
      return tile_kind(q0, L::BQ, q_range, kt * L::BK, L::BK, k_range, window);
    });
  }
  // The first visible tile at or after kt (end when none).
  __device__ VisibleTile next_visible(int kt) const {
    const int k = next_flagged(flags, kt - start, end - start);
    return k < end - start ? VisibleTile{start + k, (flags[k] & TILE_FULL) != 0} : VisibleTile{end, false};
  }
  __device__ VisibleTile first() const { return next_visible(start); }

  __device__ void issue(unsigned char* smem, int kt, int stage) const {
    const int k0 = kt * L::BK, valid = imin(L::BK, T - k0);
    load_rows_async<D>(reinterpret_cast<bf16*>(smem + L::k + stage * K_STAGE), k_row + k0 * kv_stride, kv_stride,
                       L::BK, valid);
    load_rows_async<D>(reinterpret_cast<bf16*>(smem + L::v + stage * K_STAGE), v_row + k0 * kv_stride, kv_stride,
                       L::BK, valid);
    load_values_async(reinterpret_cast<int32_t*>(smem + L::seg + stage * SEG_STAGE), seg + k0, 1, L::BK, valid);
  }
};

template <int D, int KEY_TILE = ForwardTiles<D>::BK>
__device__ void forward_block(const Params& p, unsigned char* smem, int q_tile, int h, int row) {
  using L = ForwardTiles<D, KEY_TILE>;
  constexpr int BQ = L::BQ, BK = L::BK, LD = L::LD, NT = BK / 8, DT = D / 8;
  using Keys = KeyTileStream<D, L>;
  const bf16* q_s = reinterpret_cast<const bf16*>(smem + L::q);  // (BQ, LD); K, V: 2 stages of (BK, LD) each,
                                                                  // the key segments 2 stages of (BK)

  const int lane = lane_id(), w = warp_id(), g = lane / 4, t = lane % 4;
  const int T = p.T, H = p.H, window = p.window;
  const size_t row_base = (size_t)row * T, q_stride = (size_t)H * D;
  const int32_t* seg = p.segments + row_base;
  const int q0 = q_tile * BQ, q_valid = imin(BQ, T - q0);
  const Keys keys(p, smem, q_tile, h, row);

  load_rows_async<D>(reinterpret_cast<bf16*>(smem + L::q), p.q + (row_base + q0) * q_stride + (size_t)h * D, q_stride,
                     BQ, q_valid);
  keys.build();
  warp::block_sync();
  VisibleTile tile = keys.first();
  if (tile.index < keys.end) keys.issue(smem, tile.index, 0);
  warp::cp_async_commit();
  warp::cp_async_wait<0>();
  warp::block_sync();

  uint32_t qa[D / 16][4];  // this warp's 16 query rows as A fragments, for every tile
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) load_a<LD>(qa[kk], q_s, w * WARP_ROWS, 16 * kk);
  int seg_q[2];  // rows g and g+8 of the warp
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int i = q0 + w * WARP_ROWS + g + 8 * half;
    seg_q[half] = i < T ? seg[i] : -1;
  }
  const float scale_log2 = p.scale * LOG2E;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, o[DT][4];
  zero<DT>(o);

  for (int stage = 0; tile.index < keys.end; stage ^= 1) {
    const VisibleTile next = keys.next_visible(tile.index + 1);
    if (next.index < keys.end) keys.issue(smem, next.index, stage ^ 1);
    warp::cp_async_commit();  // possibly empty: the wait below always leaves exactly the newest group in flight
    warp::cp_async_wait<1>();
    warp::block_sync();  // this tile's K, V and segments have landed for every thread

    const int k0 = tile.index * BK;
    const bf16* ks = reinterpret_cast<const bf16*>(smem + L::k + stage * Keys::K_STAGE);
    const bf16* vs = reinterpret_cast<const bf16*>(smem + L::v + stage * Keys::K_STAGE);
    const int32_t* segs = reinterpret_cast<const int32_t*>(smem + L::seg + stage * Keys::SEG_STAGE);
    float s[NT][4];
    zero<NT>(s);
    mma_a_bt<D, NT, LD>(s, qa, ks);  // S = Q·Kᵀ (unscaled)
    if (!tile.full) {
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = 8 * n + 2 * t + e % 2, i = q0 + w * WARP_ROWS + g + 8 * (e / 2);
          if (!visible(i, k0 + c, seg_q[e / 2], segs[c], window)) s[n][e] = -INFINITY;
        }
    }
    // Online softmax, row by row (this thread's elements e = 2·half, 2·half+1 of each n-tile).
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float tile_max = -INFINITY;
#pragma unroll
      for (int n = 0; n < NT; ++n) tile_max = fmaxf(tile_max, fmaxf(s[n][2 * half], s[n][2 * half + 1]));
      tile_max = fmaxf(tile_max, warp::shfl_xor(tile_max, 1));
      tile_max = fmaxf(tile_max, warp::shfl_xor(tile_max, 2));
      const float m_new = fmaxf(m[half], tile_max);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // nothing visible yet: exp2(−inf) = 0, no NaN
      const float correction = warp::exp2_approx((m[half] - m_use) * scale_log2), offset = m_use * scale_log2;
      m[half] = m_new;
      l[half] *= correction;
#pragma unroll
      for (int n = 0; n < DT; ++n) {
        o[n][2 * half] *= correction;
        o[n][2 * half + 1] *= correction;
      }
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int e = 2 * half; e < 2 * half + 2; ++e) {
          s[n][e] = warp::exp2_approx(s[n][e] * scale_log2 - offset);
          l[half] += s[n][e];
        }
    }
    uint32_t pa[BK / 16][4];
    scores_to_a<NT>(pa, s);
    mma_a_b<BK, DT, LD>(o, pa, vs);  // O += P·V
    warp::block_sync();  // this stage is refilled two tiles on
    tile = next;
  }

  float inv_l[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    l[half] += warp::shfl_xor(l[half], 1);
    l[half] += warp::shfl_xor(l[half], 2);
    inv_l[half] = l[half] > 0.0f ? 1.0f / l[half] : 0.0f;  // padding (nothing visible): out = 0
  }
  const int first_row = q0 + w * WARP_ROWS;
  store_rows<D>(p.out + row_base * q_stride + (size_t)h * D, q_stride, first_row, T, o, inv_l);
  if (t == 0)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int i = first_row + g + 8 * half;
      if (i < T) p.lse_out[(row_base + i) * H + h] = l[half] > 0.0f ? m[half] * p.scale + logf(l[half]) : -INFINITY;
    }
}

// ---- backward: dk and dv (and, atomic, dq) ----

// The atomic backward's step for one query tile of query head h in the dk, dv block: each warp writes its 16 key
// rows of dSᵀ (da: the A fragments, bf16) to shared memory; after a barrier each warp takes 16 of the tile's queries
// and D/SPLIT columns of dQ = dS·K over all BK keys and adds them to p.dq_accum (rows ≥ T skipped). The barrier
// that ends the caller's step keeps the next step's dSᵀ from overwriting this one while it is read.
template <int D>
__device__ __forceinline__ void dq_tile_atomic(const Params& p, unsigned char* smem,
                                               const uint32_t da[DkvTiles<D, true>::BQ / 16][4], int q0, int h,
                                               size_t row_base) {
  using L = DkvTiles<D, true>;
  constexpr int BK = L::BK, BQ = L::BQ, LD = L::LD, LDS = L::LDS;
  constexpr int ROW_GROUPS = BQ / WARP_ROWS, SPLIT = WARPS / ROW_GROUPS, DC = D / SPLIT, NT = 4;
  static_assert(ROW_GROUPS * SPLIT == WARPS && DC % (8 * NT) == 0, "dq_tile_atomic: the warps do not tile dQ");
  bf16* ds = reinterpret_cast<bf16*>(smem + L::ds);  // dSᵀ (BK, LDS)
  const bf16* k_s = reinterpret_cast<const bf16*>(smem + L::k);
  const int lane = lane_id(), w = warp_id(), g = lane / 4, t = lane % 4;
#pragma unroll
  for (int kk = 0; kk < BQ / 16; ++kk)
#pragma unroll
    for (int r = 0; r < 4; ++r)  // register r: key row g (+8 for odd r), query columns 16kk + 2t.. (+8 for r ≥ 2)
      *reinterpret_cast<uint32_t*>(ds + (w * WARP_ROWS + g + 8 * (r % 2)) * LDS + 16 * kk + 8 * (r / 2) + 2 * t) =
          da[kk][r];
  warp::block_sync();

  // The warp's DC columns in passes of 32: the dk, dv accumulators are live throughout, and 8 n-tiles of dQ on top
  // of them spilled at D = 128.
  const int r0 = (w % ROW_GROUPS) * WARP_ROWS;
#pragma unroll
  for (int c0 = (w / ROW_GROUPS) * DC, c_end = c0 + DC; c0 < c_end; c0 += 8 * NT) {
    float acc[NT][4];
    zero<NT>(acc);
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      uint32_t a[4];
      load_a_transposed<LDS>(a, ds, r0, 16 * kk);
      mma_k_step<NT, LD, false>(acc, a, k_s + c0, 16 * kk);  // dQ (16 × 32) += dS·K (·scale in dq_convert_block)
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int i = q0 + r0 + g + 8 * half;
      if (i >= p.T) continue;
      float* dst = p.dq_accum + ((row_base + i) * p.H + h) * D + c0 + 2 * t;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        warp::red_add(dst + 8 * n, acc[n][2 * half]);
        warp::red_add(dst + 8 * n + 1, acc[n][2 * half + 1]);
      }
    }
  }
}

template <int D, bool DQ_ATOMIC = false, int QUERY_TILE = DkvTiles<D>::BQ>
__device__ void dkv_block(const Params& p, unsigned char* smem, int k_tile, int hk, int row) {
  using L = DkvTiles<D, DQ_ATOMIC, QUERY_TILE>;
  static_assert(!DQ_ATOMIC || QUERY_TILE == DkvTiles<D>::BQ, "the atomic dQ step takes the default query tile");
  constexpr int BK = L::BK, BQ = L::BQ, LD = L::LD, NT = BQ / 8, DT = D / 8;
  const bf16* k_s = reinterpret_cast<const bf16*>(smem + L::k);  // (BK, LD)
  const bf16* v_s = reinterpret_cast<const bf16*>(smem + L::v);  // (BK, LD)
  constexpr size_t Q_STAGE = tile_bytes(BQ, D), VALUE_STAGE = align128(sizeof(float) * BQ);

  const int lane = lane_id(), w = warp_id(), g = lane / 4, t = lane % 4;
  const int T = p.T, H = p.H, window = p.window, group = H / p.Hkv;
  const size_t row_base = (size_t)row * T, q_stride = (size_t)H * D, kv_stride = (size_t)p.Hkv * D;
  const int32_t* seg = p.segments + row_base;
  const int k0 = k_tile * BK, k_valid = imin(BK, T - k0);

  // Queries from the key tile's own query tile (causal) up to the last one inside the window; the steps run over
  // those tiles for each query head of the group in turn, counted as (head, tile) rather than one index, which
  // would cost two integer divisions per step. Which tiles are visible is the same for every head: flags, built
  // once (build_tile_flags) after the layout's regions.
  const int qt_first = k0 / BQ;
  const int qt_end = ceil_div(window > 0 ? imin(T, k0 + k_valid - 1 + window) : T, BQ);
  const int tiles = qt_end - qt_first;
  uint8_t* flags = smem + L::bytes;  // flags[tile]
  struct QueryStep {
    int head, tile;  // head within the group (group: no step left), tile from qt_first
    bool full;
  };
  auto next_visible = [&](int head, int tile) {  // the first visible step at or after (head, tile)
    for (; head < group; ++head, tile = 0) {
      tile = next_flagged(flags, tile, tiles);
      if (tile < tiles) return QueryStep{head, tile, (flags[tile] & TILE_FULL) != 0};
    }
    return QueryStep{group, 0, false};
  };
  auto issue = [&](const QueryStep& step, int stage) {
    const int h = hk * group + step.head, q0 = (qt_first + step.tile) * BQ, valid = imin(BQ, T - q0);
    const size_t first = (row_base + q0) * q_stride + (size_t)h * D;
    load_rows_async<D>(reinterpret_cast<bf16*>(smem + L::q + stage * Q_STAGE), p.q + first, q_stride, BQ, valid);
    load_rows_async<D>(reinterpret_cast<bf16*>(smem + L::dout + stage * Q_STAGE), p.dout + first, q_stride, BQ,
                       valid);
    const size_t head = (row_base + q0) * H + h;
    load_values_async(reinterpret_cast<float*>(smem + L::lse + stage * VALUE_STAGE), p.lse + head, H, BQ, valid);
    load_values_async(reinterpret_cast<float*>(smem + L::delta + stage * VALUE_STAGE), p.delta + head, H, BQ, valid);
    load_values_async(reinterpret_cast<int32_t*>(smem + L::seg + stage * VALUE_STAGE), seg + q0, 1, BQ, valid);
  };

  load_rows_async<D>(reinterpret_cast<bf16*>(smem + L::k), p.k + (row_base + k0) * kv_stride + (size_t)hk * D,
                     kv_stride, BK, k_valid);
  load_rows_async<D>(reinterpret_cast<bf16*>(smem + L::v), p.v + (row_base + k0) * kv_stride + (size_t)hk * D,
                     kv_stride, BK, k_valid);
  const SegmentRange k_range = segment_range<BK>(seg, k0, T);
  build_tile_flags<BQ>(flags, seg, T, qt_first, tiles, [&](int qt, const SegmentRange& q_range) {
    return tile_kind(qt * BQ, BQ, q_range, k0, BK, k_range, window);
  });
  warp::block_sync();
  QueryStep step = next_visible(0, 0);
  if (step.head < group) issue(step, 0);
  warp::cp_async_commit();
  warp::cp_async_wait<0>();
  warp::block_sync();

  int seg_k[2];  // this thread's key rows g and g+8 of the warp
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int j = k0 + w * WARP_ROWS + g + 8 * half;
    seg_k[half] = j < T ? seg[j] : -1;
  }
  const float scale_log2 = p.scale * LOG2E;
  float dk[DT][4], dv[DT][4];
  zero<DT>(dk);
  zero<DT>(dv);

  for (int stage = 0; step.head < group; stage ^= 1) {
    const QueryStep next = next_visible(step.head, step.tile + 1);
    if (next.head < group) issue(next, stage ^ 1);
    warp::cp_async_commit();
    warp::cp_async_wait<1>();
    warp::block_sync();

    const int q0 = (qt_first + step.tile) * BQ;
    const bf16* qs = reinterpret_cast<const bf16*>(smem + L::q + stage * Q_STAGE);
    const bf16* dos = reinterpret_cast<const bf16*>(smem + L::dout + stage * Q_STAGE);
    const float* lse_s = reinterpret_cast<const float*>(smem + L::lse + stage * VALUE_STAGE);
    const float* delta_s = reinterpret_cast<const float*>(smem + L::delta + stage * VALUE_STAGE);
    const int32_t* seg_q = reinterpret_cast<const int32_t*>(smem + L::seg + stage * VALUE_STAGE);
    float st[NT][4], dpt[NT][4];  // keys × queries
    zero<NT>(st);
    zero<NT>(dpt);
    mma_smem_bt<D, NT, LD>(st, k_s, w * WARP_ROWS, qs);    // Sᵀ = K·Qᵀ
    mma_smem_bt<D, NT, LD>(dpt, v_s, w * WARP_ROWS, dos);  // dPᵀ = V·dOᵀ
    // Pᵀ = exp(Sᵀ − lse), dSᵀ = Pᵀ∘(dPᵀ − δ): a thread's query columns come in pairs, whose lse and δ are read
    // once. A full tile takes the loop without the mask; a masked one selects after the exponential, so no element
    // branches (a padding query's lse is −inf, so its exp2 is inf; a masked pair's may overflow too: the select
    // drops them, as a product with 0 would not).
    const auto probabilities = [&](auto masked) {
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const int c = 8 * n + 2 * t;
        const float2 lse = *reinterpret_cast<const float2*>(lse_s + c);
        const float2 delta = *reinterpret_cast<const float2*>(delta_s + c);
        const float lse_log2[2] = {lse.x * LOG2E, lse.y * LOG2E}, delta_c[2] = {delta.x, delta.y};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float prob = warp::exp2_approx(st[n][e] * scale_log2 - lse_log2[e % 2]);
          if constexpr (decltype(masked)::value) {
            // Queries past T are zero-filled (segment 0; q, dO and δ 0): the bound says so.
            const int i = q0 + c + e % 2, j = k0 + w * WARP_ROWS + g + 8 * (e / 2);
            prob = i < T && visible(i, j, seg_q[c + e % 2], seg_k[e / 2], window) ? prob : 0.0f;
          }
          st[n][e] = prob;
          dpt[n][e] = prob * (dpt[n][e] - delta_c[e % 2]);
        }
      }
    };
    if (step.full)
      probabilities(std::false_type{});
    else
      probabilities(std::true_type{});
    uint32_t pa[BQ / 16][4], da[BQ / 16][4];
    scores_to_a<NT>(pa, st);
    scores_to_a<NT>(da, dpt);
    mma_a_b<BQ, DT, LD>(dv, pa, dos);  // dV += Pᵀ·dO
    mma_a_b<BQ, DT, LD>(dk, da, qs);   // dK += dSᵀ·Q (·scale below)
    if constexpr (DQ_ATOMIC) dq_tile_atomic<D>(p, smem, da, q0, hk * group + step.head, row_base);
    warp::block_sync();
    step = next;
  }

  const float dk_scale[2] = {p.scale, p.scale}, one[2] = {1.0f, 1.0f};
  const size_t first = row_base * kv_stride + (size_t)hk * D;
  store_rows<D>(p.dk + first, kv_stride, k0 + w * WARP_ROWS, T, dk, dk_scale);
  store_rows<D>(p.dv + first, kv_stride, k0 + w * WARP_ROWS, T, dv, one);
}

// ---- backward: dq ----

template <int D, int KEY_TILE = DqTiles<D>::BK>
__device__ void dq_block(const Params& p, unsigned char* smem, int q_tile, int h, int row) {
  using L = DqTiles<D, KEY_TILE>;
  constexpr int BQ = L::BQ, BK = L::BK, LD = L::LD, NT = BK / 8, DT = D / 8;
  const bf16* q_s = reinterpret_cast<const bf16*>(smem + L::q);     // (BQ, LD)
  const bf16* do_s = reinterpret_cast<const bf16*>(smem + L::dout);  // (BQ, LD)
  using Keys = KeyTileStream<D, L>;

  const int lane = lane_id(), w = warp_id(), g = lane / 4, t = lane % 4;
  const int T = p.T, H = p.H, window = p.window;
  const size_t row_base = (size_t)row * T, q_stride = (size_t)H * D;
  const int32_t* seg = p.segments + row_base;
  const int q0 = q_tile * BQ, q_valid = imin(BQ, T - q0);
  const Keys keys(p, smem, q_tile, h, row);

  const size_t first = (row_base + q0) * q_stride + (size_t)h * D;
  load_rows_async<D>(reinterpret_cast<bf16*>(smem + L::q), p.q + first, q_stride, BQ, q_valid);
  load_rows_async<D>(reinterpret_cast<bf16*>(smem + L::dout), p.dout + first, q_stride, BQ, q_valid);
  keys.build();
  warp::block_sync();
  VisibleTile tile = keys.first();
  if (tile.index < keys.end) keys.issue(smem, tile.index, 0);
  warp::cp_async_commit();
  warp::cp_async_wait<0>();
  warp::block_sync();

  int seg_q[2];
  float lse_log2[2], delta_q[2];  // rows g and g+8 of the warp
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int i = q0 + w * WARP_ROWS + g + 8 * half;
    const bool in = i < T;
    seg_q[half] = in ? seg[i] : -1;
    lse_log2[half] = in ? p.lse[(row_base + i) * H + h] * LOG2E : 0.0f;
    delta_q[half] = in ? p.delta[(row_base + i) * H + h] : 0.0f;
  }
  const float scale_log2 = p.scale * LOG2E;
  float dq[DT][4];
  zero<DT>(dq);

  for (int stage = 0; tile.index < keys.end; stage ^= 1) {
    const VisibleTile next = keys.next_visible(tile.index + 1);
    if (next.index < keys.end) keys.issue(smem, next.index, stage ^ 1);
    warp::cp_async_commit();
    warp::cp_async_wait<1>();
    warp::block_sync();

    const int k0 = tile.index * BK;
    const bf16* ks = reinterpret_cast<const bf16*>(smem + L::k + stage * Keys::K_STAGE);
    const bf16* vs = reinterpret_cast<const bf16*>(smem + L::v + stage * Keys::K_STAGE);
    const int32_t* segs = reinterpret_cast<const int32_t*>(smem + L::seg + stage * Keys::SEG_STAGE);
    float s[NT][4], dp[NT][4];
    zero<NT>(s);
    zero<NT>(dp);
    mma_smem_bt<D, NT, LD>(s, q_s, w * WARP_ROWS, ks);    // S = Q·Kᵀ
    mma_smem_bt<D, NT, LD>(dp, do_s, w * WARP_ROWS, vs);  // dP = dO·Vᵀ
    // dS = P∘(dP − δ), P = exp(S − lse); as in the dk, dv block, a full tile without the mask, a masked one
    // selecting after the exponential (a padding row's lse is −inf, its exp2 inf: the select drops it).
    const auto gradients = [&](auto masked) {
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float prob = warp::exp2_approx(s[n][e] * scale_log2 - lse_log2[e / 2]);
          if constexpr (decltype(masked)::value) {
            const int c = 8 * n + 2 * t + e % 2, i = q0 + w * WARP_ROWS + g + 8 * (e / 2);
            prob = visible(i, k0 + c, seg_q[e / 2], segs[c], window) ? prob : 0.0f;
          }
          s[n][e] = prob * (dp[n][e] - delta_q[e / 2]);
        }
    };
    if (tile.full)
      gradients(std::false_type{});
    else
      gradients(std::true_type{});
    uint32_t da[BK / 16][4];
    scores_to_a<NT>(da, s);
    mma_a_b<BK, DT, LD>(dq, da, ks);  // dQ += dS·K (·scale below)
    warp::block_sync();
    tile = next;
  }

  const float dq_scale[2] = {p.scale, p.scale};
  store_rows<D>(p.dq + row_base * q_stride + (size_t)h * D, q_stride, q0 + w * WARP_ROWS, T, dq, dq_scale);
}

// ---- backward, atomic: dq from the accumulator ----

// dq = scale · dq_accum as bf16, 8 elements per thread: block `block`'s THREADS·8 of `count` (a multiple of 8; both
// tensors 16-byte aligned).
__device__ __forceinline__ void dq_convert_block(const Params& p, size_t count, int block) {
  const size_t first = 8 * ((size_t)block * THREADS + warp::thread_index());
  if (first >= count) return;
  const float4 lo = *reinterpret_cast<const float4*>(p.dq_accum + first);
  const float4 hi = *reinterpret_cast<const float4*>(p.dq_accum + first + 4);
  const float c = p.scale;
  const uint4 out = {warp::pack_bf16x2(lo.x * c, lo.y * c), warp::pack_bf16x2(lo.z * c, lo.w * c),
                     warp::pack_bf16x2(hi.x * c, hi.y * c), warp::pack_bf16x2(hi.z * c, hi.w * c)};
  *reinterpret_cast<uint4*>(p.dq + first) = out;
}

}  // namespace stapo::flash2
