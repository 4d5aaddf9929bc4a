// The tensor-core attention's own block code (kernels/attention_flash2.cuh) run on the CPU under the warp
// emulation (tests/kernels/warp_emulator.h) and checked against the CPU twin (model/ops/attention.h) on every
// case of tests/kernels/attention_cases.h, with test_attention.cpp's tolerances. It proves the indexing, fragment
// layouts, masking, tile skipping and the cp.async pipeline's ordering without a GPU; timing, occupancy and the
// hardware's own mma rounding are left to the GPU tests. Also fails on shared-memory bank conflicts in ldmatrix.
// Both backwards: the deterministic one (dk, dv and dq blocks) and the atomic one (dk, dv blocks adding dq into an
// fp32 accumulator, then its conversion), whose atomics may only touch that accumulator. Also the launchers' block
// numbering (longest causal blocks first).
#include <cuda_bf16.h>

#include <array>
#include <climits>
#include <cstdio>
#include <vector>

#include "kernels/attention_flash2.cuh"
#include "model/ops/attention.h"
#include "tests/kernels/attention_cases.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/warp_emulator.h"

namespace stapo::test {
namespace {

std::vector<float> from_bf16(const std::vector<bf16>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = __bfloat162float(x[i]);
  return out;
}

double relative_error_bf16(const std::vector<bf16>& got, const std::vector<float>& ref) {
  const std::vector<float> x = from_bf16(got);
  return relative_error(x.data(), ref.data(), ref.size());
}

template <typename T>
void allow(const std::vector<T>& x) {
  emulator_allow_reads(x.data(), x.size() * sizeof(T));
}

void add(EmulatorStats& total, const EmulatorStats& s) {
  total.ldmatrix_phases += s.ldmatrix_phases;
  total.ldmatrix_conflicted_phases += s.ldmatrix_conflicted_phases;
  total.mma += s.mma;
  total.atomics += s.atomics;
}

// The three grids of kernels/attention_flash2.cu, one block at a time.
template <int D, int KEY_TILE = flash2::ForwardTiles<D>::BK>
EmulatorStats run_flash2(flash2::Params& p, const AttentionShape& s, const EmulatorOptions& options) {
  using flash2::ceil_div;
  using F = flash2::ForwardTiles<D, KEY_TILE>;
  return emulate_grid(
      ceil_div(s.T, F::BQ), s.H, s.rows, flash2::THREADS, F::smem_bytes(s.T),
      [&](int x, int y, int z, unsigned char* smem) { flash2::forward_block<D, KEY_TILE>(p, smem, x, y, z); },
      options);
}

// The deterministic backward's two grids (its dk, dv blocks streaming query tiles of QUERY_TILE, its dq blocks key
// tiles of KEY_TILE), or the atomic one's dk, dv grid (p.dq_accum zeroed first, as the launcher's memset) and the
// conversion's.
template <int D, int QUERY_TILE = flash2::DkvTiles<D>::BQ, int KEY_TILE = flash2::DqTiles<D>::BK>
EmulatorStats run_flash2_backward(flash2::Params& p, const AttentionShape& s, const EmulatorOptions& options,
                                  bool atomic) {
  using flash2::ceil_div;
  using Q = flash2::DqTiles<D, KEY_TILE>;
  if (atomic) {
    using Kv = flash2::DkvTiles<D, true>;
    const size_t count = (size_t)s.rows * s.T * s.H * D;
    std::fill(p.dq_accum, p.dq_accum + count, 0.0f);
    EmulatorStats total = emulate_grid(
        ceil_div(s.T, Kv::BK), s.Hkv, s.rows, flash2::THREADS, Kv::smem_bytes(s.T),
        [&](int x, int y, int z, unsigned char* smem) { flash2::dkv_block<D, true>(p, smem, x, y, z); }, options);
    add(total, emulate_grid(
                   ceil_div((int)(count / 8), flash2::THREADS), 1, 1, flash2::THREADS, 0,
                   [&](int x, int, int, unsigned char*) { flash2::dq_convert_block(p, count, x); }, options));
    return total;
  }
  using Kv = flash2::DkvTiles<D, false, QUERY_TILE>;
  EmulatorStats total = emulate_grid(
      ceil_div(s.T, Kv::BK), s.Hkv, s.rows, flash2::THREADS, Kv::smem_bytes(s.T),
      [&](int x, int y, int z, unsigned char* smem) { flash2::dkv_block<D, false, QUERY_TILE>(p, smem, x, y, z); },
      options);
  add(total, emulate_grid(
                 ceil_div(s.T, Q::BQ), s.H, s.rows, flash2::THREADS, Q::smem_bytes(s.T),
                 [&](int x, int y, int z, unsigned char* smem) { flash2::dq_block<D, KEY_TILE>(p, smem, x, y, z); },
                 options));
  return total;
}

// Every case of attention_cases(): the forward, then the deterministic or the atomic backward, against the twin.
// narrow_tiles: 32-key tiles in the forward, and the deterministic backward with 32-query tiles in the dk, dv blocks
// and 32-key tiles in the dq blocks at D = 64 too (the playground's version 8; the backward's are 32 at D = 128).
void check_cases(bool atomic, bool narrow_tiles = false) {
  uint64_t salt = atomic ? 200 : narrow_tiles ? 300 : 100;
  int index = 0;
  for (const AttentionCase& c : attention_cases()) {
    const AttentionShape& s = c.shape;
    // Alternate cases (both head dims meet both): copies landing at their wait, so a read before the wait or the
    // barrier after it sees poison, or at once, so a stage refilled while another warp reads it gives wrong data.
    EmulatorOptions options;
    options.copies_land_at_issue = index++ % 2 == 1;
    const size_t N = (size_t)s.rows * s.T, nq = N * s.H * s.D, nkv = N * s.Hkv * s.D;
    const auto q = round_bf16(random_normal(nq, 1.0f, ++salt)), k = round_bf16(random_normal(nkv, 1.0f, ++salt)),
               v = round_bf16(random_normal(nkv, 1.0f, ++salt)), dout = round_bf16(random_normal(nq, 1.0f, ++salt));
    const std::vector<int32_t> segments = packed_segments(c);
    std::vector<float> ref_out(nq), ref_lse(N * s.H), ref_dq(nq), ref_dk(nkv), ref_dv(nkv);
    attention_forward(ref_out.data(), ref_lse.data(), q.data(), k.data(), v.data(), s, segments.data());
    attention_backward(ref_dq.data(), ref_dk.data(), ref_dv.data(), dout.data(), ref_out.data(), ref_lse.data(),
                       q.data(), k.data(), v.data(), s, segments.data());

    // Inputs as the device holds them; outputs poisoned (all ones: NaN), so an unwritten element fails.
    const std::vector<bf16> q_h = to_bf16(q), k_h = to_bf16(k), v_h = to_bf16(v), dout_h = to_bf16(dout);
    std::vector<bf16> out_h(nq, __ushort_as_bfloat16(0xffff)), dq_h(nq, __ushort_as_bfloat16(0xffff)),
        dk_h(nkv, __ushort_as_bfloat16(0xffff)), dv_h(nkv, __ushort_as_bfloat16(0xffff));
    std::vector<float> lse(N * s.H, NAN), delta(N * s.H), dq_accum(atomic ? nq : 0, NAN);
    emulator_clear_ranges();
    for (const auto* x : {&q_h, &k_h, &v_h, &dout_h}) allow(*x);
    allow(segments);
    allow(lse);
    allow(delta);
    emulator_allow_atomics(dq_accum.data(), dq_accum.size());  // nothing at all for the deterministic backward

    flash2::Params p{};
    p.q = q_h.data();
    p.k = k_h.data();
    p.v = v_h.data();
    p.segments = segments.data();
    p.out = out_h.data();
    p.lse_out = lse.data();
    p.lse = lse.data();
    p.dout = dout_h.data();
    p.delta = delta.data();
    p.dq = dq_h.data();
    p.dk = dk_h.data();
    p.dv = dv_h.data();
    p.dq_accum = dq_accum.data();
    p.T = s.T;
    p.H = s.H;
    p.Hkv = s.Hkv;
    p.window = s.window;
    p.scale = 1.0f / std::sqrt((float)s.D);

    EmulatorStats stats = s.D == 64 ? narrow_tiles ? run_flash2<64, 32>(p, s, options) : run_flash2<64>(p, s, options)
                          : narrow_tiles ? run_flash2<128, 32>(p, s, options)
                                         : run_flash2<128>(p, s, options);
    const std::vector<float> out = from_bf16(out_h);
    EXPECT_TRUE(bf16_close(out, ref_out, 1e-2)) << "out " << describe(s);
    EXPECT_TRUE(all_close(finite_lse(lse), finite_lse(ref_lse), 1e-4, 1e-4)) << "lse " << describe(s);

    // δ as attention_delta computes it, from the forward's own bf16 output (what the trainer hands backward).
    for (size_t head = 0; head < N * s.H; ++head) {
      float sum = 0;
      for (int d = 0; d < s.D; ++d) sum += dout[head * s.D + d] * out[head * s.D + d];
      delta[head] = sum;
    }
    const EmulatorStats backward = s.D == 128          ? run_flash2_backward<128>(p, s, options, atomic)
                                   : narrow_tiles ? run_flash2_backward<64, 32, 32>(p, s, options, atomic)
                                                        : run_flash2_backward<64>(p, s, options, atomic);
    add(stats, backward);
    EXPECT_EQ(backward.atomics > 0, atomic) << describe(s);
    const double cancel_scale = 1e-3 * rms(ref_dv);  // as test_attention.cpp: single-key queries cancel to ~0
    EXPECT_TRUE(bf16_close(from_bf16(dq_h), ref_dq, 2e-2, cancel_scale)) << "dq " << describe(s);
    EXPECT_TRUE(bf16_close(from_bf16(dk_h), ref_dk, 2e-2, cancel_scale)) << "dk " << describe(s);
    EXPECT_TRUE(bf16_close(from_bf16(dv_h), ref_dv, 2e-2)) << "dv " << describe(s);
    const char* backward_kind = atomic ? "atomic" : narrow_tiles ? "32-row tiles" : "deterministic";
    // Padded rows of 16 bytes put the 8 rows of every ldmatrix phase in 8 different bank groups.
    EXPECT_EQ(stats.ldmatrix_conflicted_phases, 0) << describe(s);
    std::printf("%s (%s, %s backward): out %.2e, dq %.2e, dk %.2e, dv %.2e; %lld mma, %lld ldmatrix phases (%lld "
                "with bank conflicts), %lld atomic adds\n",
                describe(s).c_str(), options.copies_land_at_issue ? "copies land at issue" : "copies land at wait",
                backward_kind, relative_error(out.data(), ref_out.data(), nq),
                relative_error_bf16(dq_h, ref_dq), relative_error_bf16(dk_h, ref_dk), relative_error_bf16(dv_h, ref_dv),
                stats.mma, stats.ldmatrix_phases, stats.ldmatrix_conflicted_phases, stats.atomics);
  }
}

TEST(Flash2Emulated, ForwardAndBackwardMatchCpu) { check_cases(false); }

TEST(Flash2Emulated, AtomicBackwardMatchesCpu) { check_cases(true); }

TEST(Flash2Emulated, NarrowTilesMatchCpu) { check_cases(false, true); }

// The launchers' block numbering: every (tile, head, row) of the grid exactly once, tiles in order of causal length
// (the longest first), and within a tile the heads of one row next to each other (GQA groups share their keys).
TEST(Flash2LaunchOrder, LongestFirstVisitsEveryBlockOnceLongestTileFirst) {
  for (const bool tile0_longest : {true, false})
    for (const auto& [tiles, heads, rows] : {std::array<int, 3>{16, 32, 8}, {1, 3, 5}, {7, 1, 1}, {5, 4, 3}}) {
      std::vector<int> seen((size_t)tiles * heads * rows, 0);
      int previous_length = INT_MAX;
      for (unsigned index = 0; index < seen.size(); ++index) {
        const flash2::BlockPlace b = flash2::longest_first(index, tiles, heads, rows, tile0_longest);
        ASSERT_TRUE(b.tile >= 0 && b.tile < tiles && b.head >= 0 && b.head < heads && b.row >= 0 && b.row < rows)
            << index;
        ++seen[((size_t)b.row * heads + b.head) * tiles + b.tile];
        const int length = tile0_longest ? tiles - b.tile : b.tile + 1;  // causal tiles visited
        EXPECT_LE(length, previous_length) << "block " << index << " of " << tiles << "x" << heads << "x" << rows;
        previous_length = length;
        if (index > 0 && index % heads != 0) {
          EXPECT_EQ(flash2::longest_first(index - 1, tiles, heads, rows, tile0_longest).head, b.head - 1);
        }
      }
      for (int count : seen) EXPECT_EQ(count, 1);
    }
}

// The emulator's own check: an atomic add outside the declared memory is an error naming the instruction.
TEST(Flash2Emulated, AtomicOutsideDeclaredMemoryFails) {
  std::vector<float> declared(64, 0.0f), other(64, 0.0f);
  emulator_clear_ranges();
  emulator_allow_atomics(declared.data(), declared.size());
  const auto add_to = [](float* base) {
    return [base](int, int, int, unsigned char*) { warp::red_add(base + warp::thread_index(), 1.0f); };
  };
  emulate_grid(1, 1, 1, 32, 0, add_to(declared.data()));
  EXPECT_EQ(declared[31], 1.0f);
  const std::string message = error_message([&] { emulate_grid(1, 1, 1, 32, 0, add_to(other.data())); });
  EXPECT_NE(message.find("red.add.f32"), std::string::npos) << message;
  EXPECT_EQ(other[0], 0.0f);
}

}  // namespace
}  // namespace stapo::test
