// kernels/adamw_compact.cu against its CPU twin (train/adamw.h's adamw_compact_update): every combination of
// weights (fp32 master, split master, bf16 only), moments (fp32, 8-bit) and gradients (fp32, bf16) bit for bit
// over several steps; split equals fp32 master on the device too; apply = 0 changes nothing; and a tensor of more
// than 2^31 elements, whose last blocks must come out as the twin computes them.
#include <cstring>

#include "kernels/adamw_compact.h"
#include "tests/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/train/adamw_test_util.h"
#include "train/adamw.h"

namespace stapo::test {
namespace {

// One tensor's state on the host, from random weights, and random moments in both layouts (a state some steps in).
struct HostState : AdamWHostState {
  HostState(size_t n, MasterKind kind, uint64_t salt) : AdamWHostState(random_normal(n, 0.02f, salt), kind) {
    m = random_normal(n, 1e-3f, salt + 1);
    v = random_uniform(n, 0.0f, 1e-5f, salt + 2);
    m_code.clear();
    v_code.clear();
    for (float x : random_uniform(n, 0.0f, 255.99f, salt + 3)) m_code.push_back(uint8_t(x));
    for (float x : random_uniform(n, 0.0f, 255.99f, salt + 4)) v_code.push_back(uint8_t(x));
    m_absmax = random_uniform(quant_blocks(n), 1e-4f, 1e-3f, salt + 5);
    v_absmax = random_uniform(quant_blocks(n), 1e-7f, 1e-5f, salt + 6);
  }
};

// The same state on the device.
struct DeviceState {
  DeviceArray<uint16_t> weights;
  std::unique_ptr<DeviceArray<float>> master;
  std::unique_ptr<DeviceArray<int16_t>> low;
  DeviceArray<float> m, v, m_absmax, v_absmax;
  DeviceArray<uint8_t> m_code, v_code;

  explicit DeviceState(const HostState& h)
      : weights(h.weights), m(h.m), v(h.v), m_absmax(h.m_absmax), v_absmax(h.v_absmax), m_code(h.m_code),
        v_code(h.v_code) {
    if (!h.master.empty()) master = std::make_unique<DeviceArray<float>>(h.master);
    if (!h.low.empty()) low = std::make_unique<DeviceArray<int16_t>>(h.low);
  }
  AdamWState state() const {
    AdamWState s;
    s.n = weights.size();
    s.weights = weights.get();
    s.master = master ? master->get() : nullptr;
    s.low = low ? low->get() : nullptr;
    s.m = m.get();
    s.v = v.get();
    s.m_code = m_code.get();
    s.v_code = v_code.get();
    s.m_absmax = m_absmax.get();
    s.v_absmax = v_absmax.get();
    return s;
  }
};

template <typename T>
::testing::AssertionResult same_bits(const std::vector<T>& got, const std::vector<T>& want, const char* what) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << what << ": sizes differ";
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0)
      return ::testing::AssertionFailure() << what << " differs first at element " << i << " of " << got.size();
  return ::testing::AssertionSuccess();
}

// Compares what the kinds use.
void expect_same(const DeviceState& d, const HostState& h, MasterKind master, MomentKind moments,
                 const std::string& where) {
  if (h.weights.empty()) return;  // an empty tensor holds nothing (and its device state no master to download)
  EXPECT_TRUE(same_bits(d.weights.download(), h.weights, "weights")) << where;
  if (master == MasterKind::fp32) {
    EXPECT_TRUE(same_bits(d.master->download(), h.master, "master")) << where;
  }
  if (master == MasterKind::split) {
    EXPECT_TRUE(same_bits(d.low->download(), h.low, "low")) << where;
  }
  if (moments == MomentKind::fp32) {
    EXPECT_TRUE(same_bits(d.m.download(), h.m, "m")) << where;
    EXPECT_TRUE(same_bits(d.v.download(), h.v, "v")) << where;
  } else {
    EXPECT_TRUE(same_bits(d.m_code.download(), h.m_code, "m codes")) << where;
    EXPECT_TRUE(same_bits(d.v_code.download(), h.v_code, "v codes")) << where;
    EXPECT_TRUE(same_bits(d.m_absmax.download(), h.m_absmax, "m absmax")) << where;
    EXPECT_TRUE(same_bits(d.v_absmax.download(), h.v_absmax, "v absmax")) << where;
  }
}

const char* kind_name(MasterKind k) {
  return k == MasterKind::fp32 ? "fp32 master" : k == MasterKind::split ? "split master" : "bf16 only";
}

TEST(KernelAdamWCompact, MatchesCpuTwinBitForBit) {
  STAPO_REQUIRE_GPU();
  DeviceArray<float> clip(std::vector<float>{0.7f});
  DeviceArray<int> apply(std::vector<int>{1});
  for (size_t n : {size_t(1), size_t(2047), size_t(2049), size_t(3 * kQuantBlock + 5)})
    for (MasterKind master : {MasterKind::fp32, MasterKind::split, MasterKind::none})
      for (MomentKind moments : {MomentKind::fp32, MomentKind::q8})
        for (bool bf16_grads : {false, true}) {
          const std::string where = cat("n ", n, ", ", kind_name(master), ", ",
                                        moments == MomentKind::q8 ? "8-bit" : "fp32", " moments, ",
                                        bf16_grads ? "bf16" : "fp32", " gradients");
          HostState h(n, master, n);
          DeviceState d(h);
          for (int64_t t = 1; t <= 3; ++t) {
            // Gradients of several scales; the twin reads the bf16 ones as the floats they are.
            std::vector<float> g = random_normal(n, 1e-2f, 100 * t + n);
            if (bf16_grads) g = round_bf16(g);
            const AdamWStep<float> step = adamw_step_make<float>(1e-3, 0.1, 0.9, 0.999, 1e-8, t);
            const uint32_t seed = 1234u + uint32_t(t);
            if (bf16_grads) {
              auto dg = device_bf16(g);
              adamw_compact_update(d.state(), master, moments, dg->get(), step, clip.get(), apply.get(), seed, 0);
            } else {
              DeviceArray<float> dg(g);
              adamw_compact_update(d.state(), master, moments, dg.get(), step, clip.get(), apply.get(), seed, 0);
            }
            adamw_compact_update(h.state(), master, moments, g.data(), step, 0.7f, seed);
          }
          expect_same(d, h, master, moments, where);
        }
}

// A part of a tensor (a ZeRO-1 shard: index_base, the part's first index in its tensor) as the twin updates it:
// stochastic rounding keyed by index_base + i; 8-bit moments from a block boundary.
TEST(KernelAdamWCompact, PartOfATensorMatchesCpuTwin) {
  STAPO_REQUIRE_GPU();
  const size_t n = 2 * kQuantBlock + 300;
  for (MasterKind master : {MasterKind::none, MasterKind::fp32})
    for (MomentKind moments : {MomentKind::fp32, MomentKind::q8}) {
      HostState h(n, master, 21);
      DeviceState d(h);
      const size_t base = moments == MomentKind::q8 ? 3 * size_t(kQuantBlock) : 384;
      AdamWState hs = h.state(), ds = d.state();
      hs.index_base = ds.index_base = base;
      const std::vector<float> g = random_normal(n, 1e-2f, 22);
      DeviceArray<float> dg(g);
      const AdamWStep<float> step = adamw_step_make<float>(1e-3, 0.1, 0.9, 0.999, 1e-8, 2);
      adamw_compact_update(ds, master, moments, dg.get(), step, nullptr, nullptr, 99u, 0);
      adamw_compact_update(hs, master, moments, g.data(), step, 1.0f, 99u);
      expect_same(d, h, master, moments, cat(kind_name(master), ", part from element ", base));
    }
}

// One launch over a table of tensors (adamw_compact_update_many) against the CPU twin per tensor, bit for bit, for
// every master and moment kind: tensors of several sizes (one empty, left out), fp32 and bf16 gradients mixed,
// weight decay on some, a seed each, one a part of its tensor (index_base), over 3 steps; then apply = 0 changes
// nothing.
TEST(KernelAdamWCompact, ManyTensorsInOneLaunchMatchCpuTwin) {
  STAPO_REQUIRE_GPU();
  DeviceArray<float> clip(std::vector<float>{0.7f});
  DeviceArray<int> apply(std::vector<int>{1}), skip(std::vector<int>{0});
  const std::vector<size_t> sizes = {2049, 1, 0, 3 * kQuantBlock + 5, 2047, kQuantBlock};
  AdamWTensorTable table;
  for (MasterKind master : {MasterKind::fp32, MasterKind::split, MasterKind::none})
    for (MomentKind moments : {MomentKind::fp32, MomentKind::q8}) {
      const std::string where = cat(kind_name(master), ", ", moments == MomentKind::q8 ? "8-bit" : "fp32", " moments");
      std::vector<std::unique_ptr<HostState>> host;
      std::vector<std::unique_ptr<DeviceState>> device;
      for (size_t k = 0; k < sizes.size(); ++k) {
        host.push_back(std::make_unique<HostState>(sizes[k], master, 40 + k));
        device.push_back(std::make_unique<DeviceState>(*host.back()));
      }
      for (int64_t t = 1; t <= 3; ++t) {
        std::vector<AdamWTensor> tensors;
        std::vector<std::unique_ptr<DeviceArray<float>>> grads32;
        std::vector<std::unique_ptr<DeviceArray<bf16>>> grads16;
        for (size_t k = 0; k < sizes.size(); ++k) {
          const bool bf16_grads = k % 2 == 1;
          std::vector<float> g = random_normal(sizes[k], 1e-2f, 1000 * t + k);
          if (bf16_grads) g = round_bf16(g);
          AdamWTensor x;
          x.state = device[k]->state();
          if (k == 3) x.state.index_base = moments == MomentKind::q8 ? 2 * size_t(kQuantBlock) : 384;
          x.step = adamw_step_make<float>(1e-3, k % 3 == 0 ? 0.0 : 0.1, 0.9, 0.999, 1e-8, t);
          x.seed = 77u * uint32_t(t) + uint32_t(k);
          if (bf16_grads) {
            grads16.push_back(device_bf16(g));
            x.grads_bf16 = grads16.back()->get();
          } else {
            grads32.push_back(std::make_unique<DeviceArray<float>>(g));
            x.grads = grads32.back()->get();
          }
          AdamWState hs = host[k]->state();
          hs.index_base = x.state.index_base;
          if (sizes[k] > 0) adamw_compact_update(hs, master, moments, g.data(), x.step, 0.7f, x.seed);
          tensors.push_back(x);
        }
        adamw_compact_update_many(table, tensors, master, moments, clip.get(), apply.get(), 0);
        cudaCheck(cudaDeviceSynchronize());  // the gradients are freed at the end of the step
      }
      for (size_t k = 0; k < sizes.size(); ++k)
        expect_same(*device[k], *host[k], master, moments, cat(where, ", tensor ", k, " of ", sizes[k]));
      std::vector<AdamWTensor> again;
      DeviceArray<float> g(std::vector<float>(sizes[0], 1.0f));
      AdamWTensor x;
      x.state = device[0]->state();
      x.grads = g.get();
      x.step = adamw_step_make<float>(1e-3, 0.1, 0.9, 0.999, 1e-8, 4);
      again.push_back(x);
      adamw_compact_update_many(table, again, master, moments, nullptr, skip.get(), 0);
      expect_same(*device[0], *host[0], master, moments, cat(where, ", apply = 0"));
    }
}

TEST(KernelAdamWCompact, ManyTensorsNeedOneKindOfGradients) {
  AdamWTensorTable table;
  std::vector<AdamWTensor> tensors(1);
  uint16_t weights = 0;
  float master = 0, m = 0, v = 0;
  tensors[0].state.n = 1;
  tensors[0].state.weights = &weights;
  tensors[0].state.master = &master;
  tensors[0].state.m = &m;
  tensors[0].state.v = &v;
  tensors[0].step = adamw_step_make<float>(1e-3, 0.1, 0.9, 0.999, 1e-8, 1);
  EXPECT_THROW(adamw_compact_update_many(table, tensors, MasterKind::fp32, MomentKind::fp32, nullptr, nullptr, 0),
               Error);  // neither: refused on the host, before any device call
}

TEST(KernelAdamWCompact, SplitMasterEqualsFp32MasterOnTheDevice) {
  STAPO_REQUIRE_GPU();
  const size_t n = 5 * kQuantBlock + 3;
  for (MomentKind moments : {MomentKind::fp32, MomentKind::q8}) {
    HostState h32(n, MasterKind::fp32, 7), hs(n, MasterKind::split, 7);  // the same initial master
    DeviceState d32(h32), ds(hs);
    for (int64_t t = 1; t <= 5; ++t) {
      DeviceArray<float> g(random_normal(n, 1e-2f, 50 + t));
      const AdamWStep<float> step = adamw_step_make<float>(1e-3, 0.1, 0.9, 0.999, 1e-8, t);
      adamw_compact_update(d32.state(), MasterKind::fp32, moments, g.get(), step, nullptr, nullptr, 0, 0);
      adamw_compact_update(ds.state(), MasterKind::split, moments, g.get(), step, nullptr, nullptr, 0, 0);
    }
    const std::vector<float> master = d32.master->download();
    const std::vector<uint16_t> high = ds.weights.download();
    const std::vector<int16_t> low = ds.low->download();
    for (size_t i = 0; i < n; ++i)
      ASSERT_EQ(float_bits(split_join(high[i], low[i])), float_bits(master[i])) << "element " << i;
  }
}

TEST(KernelAdamWCompact, ApplyZeroChangesNothing) {
  STAPO_REQUIRE_GPU();
  const size_t n = 2 * kQuantBlock + 9;
  HostState h(n, MasterKind::split, 3);
  DeviceState d(h);
  DeviceArray<float> g(random_normal(n, 1e-2f, 4));
  DeviceArray<int> apply(std::vector<int>{0});
  const AdamWStep<float> step = adamw_step_make<float>(1e-3, 0.1, 0.9, 0.999, 1e-8, 2);
  adamw_compact_update(d.state(), MasterKind::split, MomentKind::q8, g.get(), step, nullptr, apply.get(), 0, 0);
  expect_same(d, h, MasterKind::split, MomentKind::q8, "apply = 0");
}

// 64-bit indexing: a tensor of 2^31 + 3 blocks + 5 elements (split master, 8-bit moments, bf16 gradients: 8 bytes
// per element, 17.2 GB). Everything is zero except the elements from 2^31 on, which hold random state; those must
// come out as the twin computes them (an index that wrapped at 2^31 or 2^32 would read or write other elements).
TEST(KernelAdamWCompact, TensorBeyond2To31Elements) {
  STAPO_REQUIRE_GPU();
  const size_t head = size_t(1) << 31, tail = 3 * kQuantBlock + 5, n = head + tail;
  size_t free_bytes = 0, total_bytes = 0;
  cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (free_bytes < n * 8 + (size_t(1) << 30)) GTEST_SKIP() << "needs " << n * 8 / 1e9 << " GB of device memory";
  HostState h(tail, MasterKind::split, 11);
  DeviceArray<uint16_t> weights(n), grads(n);
  DeviceArray<int16_t> low(n);
  DeviceArray<uint8_t> m_code(n), v_code(n);
  DeviceArray<float> m_absmax(quant_blocks(n)), v_absmax(quant_blocks(n));
  const std::vector<float> g = round_bf16(random_normal(tail, 1e-2f, 12));
  std::vector<uint16_t> g_bits;
  for (float x : g) g_bits.push_back(bf16_round_nearest(x));
  for (auto* a : {(void*)weights.get(), (void*)grads.get(), (void*)low.get()}) cudaCheck(cudaMemset(a, 0, n * 2));
  const uint8_t m_zero = quant_encode(quant_map(true).bound, 0.0f), v_zero = quant_encode(quant_map(false).bound, 0.0f);
  cudaCheck(cudaMemset(m_code.get(), m_zero, n));
  cudaCheck(cudaMemset(v_code.get(), v_zero, n));
  cudaCheck(cudaMemset(m_absmax.get(), 0, quant_blocks(n) * 4));
  cudaCheck(cudaMemset(v_absmax.get(), 0, quant_blocks(n) * 4));
  auto put = [](void* base, size_t offset, const void* host, size_t bytes) {
    cudaCheck(cudaMemcpy(static_cast<char*>(base) + offset, host, bytes, cudaMemcpyHostToDevice));
  };
  const size_t block0 = head / kQuantBlock;  // 2^31 is a multiple of the block size
  put(weights.get(), head * 2, h.weights.data(), tail * 2);
  put(low.get(), head * 2, h.low.data(), tail * 2);
  put(grads.get(), head * 2, g_bits.data(), tail * 2);
  put(m_code.get(), head, h.m_code.data(), tail);
  put(v_code.get(), head, h.v_code.data(), tail);
  put(m_absmax.get(), block0 * 4, h.m_absmax.data(), h.m_absmax.size() * 4);
  put(v_absmax.get(), block0 * 4, h.v_absmax.data(), h.v_absmax.size() * 4);
  AdamWState s;
  s.n = n;
  s.weights = weights.get();
  s.low = low.get();
  s.m_code = m_code.get();
  s.v_code = v_code.get();
  s.m_absmax = m_absmax.get();
  s.v_absmax = v_absmax.get();
  const AdamWStep<float> step = adamw_step_make<float>(1e-3, 0.1, 0.9, 0.999, 1e-8, 4);
  adamw_compact_update(s, MasterKind::split, MomentKind::q8, reinterpret_cast<const bf16*>(grads.get()), step,
                       nullptr, nullptr, 0, 0);
  adamw_compact_update(h.state(), MasterKind::split, MomentKind::q8, g.data(), step, 1.0f, 0);
  cudaCheck(cudaDeviceSynchronize());
  auto get = [](const void* base, size_t offset, void* host, size_t bytes) {
    cudaCheck(cudaMemcpy(host, static_cast<const char*>(base) + offset, bytes, cudaMemcpyDeviceToHost));
  };
  HostState got = h;
  get(weights.get(), head * 2, got.weights.data(), tail * 2);
  get(low.get(), head * 2, got.low.data(), tail * 2);
  get(m_code.get(), head, got.m_code.data(), tail);
  get(v_code.get(), head, got.v_code.data(), tail);
  get(m_absmax.get(), block0 * 4, got.m_absmax.data(), got.m_absmax.size() * 4);
  get(v_absmax.get(), block0 * 4, got.v_absmax.data(), got.v_absmax.size() * 4);
  EXPECT_TRUE(same_bits(got.weights, h.weights, "weights beyond 2^31"));
  EXPECT_TRUE(same_bits(got.low, h.low, "low beyond 2^31"));
  EXPECT_TRUE(same_bits(got.m_code, h.m_code, "m codes beyond 2^31"));
  EXPECT_TRUE(same_bits(got.v_code, h.v_code, "v codes beyond 2^31"));
  EXPECT_TRUE(same_bits(got.m_absmax, h.m_absmax, "m absmax beyond 2^31"));
  EXPECT_TRUE(same_bits(got.v_absmax, h.v_absmax, "v absmax beyond 2^31"));
  // And the head, all zero, stayed zero (weight decay of 0 is 0): the first block as a sample.
  std::vector<uint16_t> first(kQuantBlock);
  get(weights.get(), 0, first.data(), kQuantBlock * 2);
  EXPECT_EQ(first, std::vector<uint16_t>(kQuantBlock, 0));
}

}  // namespace
}  // namespace stapo::test
