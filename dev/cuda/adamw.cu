// Playground: the optimizer step: global gradient norm + clip factor (kernels/grad_norm.cu) and AdamW over the
// compact state (kernels/adamw_compact.cu) for every master kind (fp32, split, none) and moment kind (fp32, 8-bit).
// Build: make adamw   Run: ./adamw
// Versions: 1 = the mainline kernels, a launch per tensor; 2 = adamw_compact_update_many, one launch over a table
// of tensors (the 1B model's count: 16 layers of 9 tensors, norms of 2048 among them; sizes scaled down to fit).
// Validated against the CPU twins in train/ (grad_clip.h, adamw.cpp's adamw_compact_update): the master values bit
// for bit; version 2 tensor by tensor, each with its own weight decay and seed.
#include "dev/cuda/common.h"
#include "kernels/adamw_compact.cu"
#include "kernels/grad_norm.cu"
#include "kernels/staging.cu"
#include "tests/train/adamw_test_util.h"
#include "train/adamw.h"
#include "train/grad_clip.h"

using namespace playground;
using stapo::MasterKind;
using stapo::MomentKind;

namespace {

// One tensor's compact state on the device: a copy of the host state's `master` and `moments` parts.
struct State {
  stapo::AdamWState s;
  State(const stapo::test::AdamWHostState& h, MomentKind moments) {
    s.n = h.weights.size();
    s.weights = to_device(h.weights);
    if (!h.master.empty()) s.master = to_device(h.master);
    if (!h.low.empty()) s.low = to_device(h.low);
    if (moments == MomentKind::fp32) {
      s.m = to_device(h.m);
      s.v = to_device(h.v);
    } else {
      s.m_code = to_device(h.m_code);
      s.v_code = to_device(h.v_code);
      s.m_absmax = to_device(h.m_absmax);
      s.v_absmax = to_device(h.v_absmax);
    }
  }
  ~State() {
    for (void* p : {(void*)s.weights, (void*)s.master, (void*)s.low, (void*)s.m, (void*)s.v, (void*)s.m_code,
                    (void*)s.v_code, (void*)s.m_absmax, (void*)s.v_absmax})
      if (p) cudaCheck(cudaFree(p));
  }
  // The master's values (fp32, split joined, or the bf16 weights).
  std::vector<float> master_values(MasterKind master) const {
    std::vector<uint16_t> high(s.n);
    cudaCheck(cudaMemcpy(high.data(), s.weights, s.n * 2, cudaMemcpyDeviceToHost));
    if (master == MasterKind::fp32) return from_device(s.master, s.n);
    std::vector<int16_t> low(s.n);
    if (master == MasterKind::split) cudaCheck(cudaMemcpy(low.data(), s.low, s.n * 2, cudaMemcpyDeviceToHost));
    std::vector<float> out(s.n);
    for (size_t i = 0; i < s.n; ++i)
      out[i] = master == MasterKind::split ? stapo::split_join(high[i], low[i]) : stapo::bf16_bits_to_float(high[i]);
    return out;
  }
};

const char* name(MasterKind k) { return k == MasterKind::fp32 ? "fp32" : k == MasterKind::split ? "split" : "none"; }

// Version 2's tensors: consecutive slices of the n elements, a layer's 9 tensors at a time (norm, q, k, v, o, norm,
// gate, up, down, in the 1B model's proportions / `scale`), for 16 layers or until n runs out.
std::vector<std::pair<size_t, size_t>> layer_slices(size_t n, size_t scale) {
  const size_t pattern[] = {2048, 4194304, 1048576, 1048576, 4194304, 2048, 16777216, 16777216, 16777216};
  std::vector<std::pair<size_t, size_t>> out;
  size_t at = 0;
  for (int l = 0; l < 16 && at < n; ++l)
    for (size_t size : pattern) {
      const size_t count = std::min(std::max<size_t>(size / scale, 1), n - at);
      if (count == 0) break;
      out.push_back({at, count});
      at += count;
    }
  return out;
}

// The table for adamw_compact_update_many over the slices of `whole`; norms (the 2048s) without weight decay.
std::vector<stapo::AdamWTensor> slice_table(const stapo::AdamWState& whole, const float* grads,
                                            const std::vector<std::pair<size_t, size_t>>& slices) {
  std::vector<stapo::AdamWTensor> table;
  for (size_t i = 0; i < slices.size(); ++i) {
    const auto [at, count] = slices[i];
    stapo::AdamWTensor t;
    t.state = whole;
    t.state.n = count;
    t.state.weights = whole.weights + at;
    for (float** p : {&t.state.master, &t.state.m, &t.state.v})
      if (*p) *p += at;
    if (t.state.low) t.state.low += at;
    t.grads = grads + at;
    t.step = stapo::adamw_step_make<float>(1e-3, i % 9 == 0 || i % 9 == 5 ? 0.0 : 0.1, 0.9, 0.999, 1e-8, 1);
    t.seed = 100 + (uint32_t)i;
    table.push_back(t);
  }
  return table;
}

}  // namespace

int main() {
  print_device();
  const MasterKind masters[] = {MasterKind::fp32, MasterKind::split, MasterKind::none};
  const MomentKind moment_kinds[] = {MomentKind::fp32, MomentKind::q8};
  for (int pass = 0; pass < 2; ++pass) {
    const bool bench = pass == 1;
    // 134M parameters: one large block of weights (the host twin state of every kind is built for it too).
    const size_t n = bench ? (size_t)1 << 27 : 1000003;
    const auto params = random_normal(n, 1.0f, 1), grads = random_normal(n, 0.01f, 2);
    float* d_grads = to_device(grads);  // fp32, as accumulated over micro-batches
    float *d_partials = device_alloc<float>(stapo::GRAD_NORM_BLOCKS), *d_norm = device_alloc<float>(1),
          *d_scale = device_alloc<float>(1);
    int* d_apply = device_alloc<int>(1);
    const float max_norm = 1.0f;
    auto norm = [&] {
      stapo::grad_norm_accumulate(d_partials, d_grads, n, false, 0);
      stapo::grad_norm_finish(d_norm, d_scale, d_apply, d_partials, max_norm, nullptr, 0);
    };
    const stapo::AdamWStep<float> step = stapo::adamw_step_make<float>(1e-3, 0.1, 0.9, 0.999, 1e-8, 1);
    if (!bench) {
      std::printf("validate n=%zu\n", n);
      norm();
      cudaCheck(cudaDeviceSynchronize());
      const double want_norm = std::sqrt(stapo::grad_sum_squares(grads.data(), n));
      const float clip = (float)stapo::grad_clip_factor(want_norm, max_norm);
      validate("norm", from_device(d_norm, 1), {(float)want_norm}, 1e-5);
      validate("clip", from_device(d_scale, 1), {clip}, 1e-5);
      const float device_clip = from_device(d_scale, 1)[0];
      for (MasterKind master : masters)
        for (MomentKind moments : moment_kinds) {
          stapo::test::AdamWHostState h(params, master);  // zero moments
          State d(h, moments);
          stapo::adamw_compact_update(d.s, master, moments, d_grads, step, d_scale, d_apply, 7, 0);
          // The twin on the host copy, with the device's clip factor.
          stapo::adamw_compact_update(h.state(), master, moments, grads.data(), step, device_clip, 7);
          std::vector<float> want(n);
          for (size_t i = 0; i < n; ++i)
            want[i] = master == MasterKind::none ? stapo::bf16_bits_to_float(h.weights[i]) : h.master_value(i);
          char label[32];
          std::snprintf(label, sizeof(label), "%s/%s", name(master), moments == MomentKind::q8 ? "8bit" : "fp32");
          validate(label, d.master_values(master), want, 0.0);
          if (moments == MomentKind::q8) continue;  // version 2: slices need 8-bit blocks at their starts
          stapo::test::AdamWHostState h2(params, master);
          State d2(h2, moments);
          const auto slices = layer_slices(n, 1024);
          std::vector<stapo::AdamWTensor> table = slice_table(d2.s, d_grads, slices);
          stapo::AdamWTensorTable device_table;
          stapo::adamw_compact_update_many(device_table, table, master, moments, d_scale, d_apply, 0);
          for (const stapo::AdamWTensor& t : table) {
            stapo::AdamWState part = h2.state();
            const size_t at = t.state.weights - d2.s.weights;
            part.n = t.state.n;
            part.weights += at;
            if (part.master) part.master += at;
            if (part.low) part.low += at;
            part.m += at;
            part.v += at;
            stapo::adamw_compact_update(part, master, moments, grads.data() + at, t.step, device_clip, t.seed);
          }
          for (size_t i = 0; i < n; ++i)
            want[i] = master == MasterKind::none ? stapo::bf16_bits_to_float(h2.weights[i]) : h2.master_value(i);
          std::snprintf(label, sizeof(label), "v2 %s/fp32, %zu tensors", name(master), table.size());
          validate(label, d2.master_values(master), want, 0.0);
        }
    } else {
      const float t_norm = time_ms(norm);
      std::printf("n=%zu  grad norm %.3f ms (%.0f GB/s)\n", n, t_norm, 4.0 * n / t_norm / 1e6);
      for (MasterKind master : masters)
        for (MomentKind moments : moment_kinds) {
          State d(stapo::test::AdamWHostState(params, master), moments);
          const float ms = time_ms([&] {
            stapo::adamw_compact_update(d.s, master, moments, d_grads, step, d_scale, d_apply, 7, 0);
          });
          // Bytes per parameter: gradient 4 read; weights fp32 master 4 + 4 + 2, split 2 + 2 read and written,
          // none 2 + 2; moments fp32 8 + 8, 8-bit 2 + 2 (absmax per 2048 elements not counted).
          const double bytes = 4.0 + (master == MasterKind::fp32 ? 10 : master == MasterKind::split ? 8 : 4) +
                               (moments == MomentKind::fp32 ? 16 : 4);
          std::printf("  adamw master %-5s moments %-4s %8.3f ms (%.0f GB/s)\n", name(master),
                      moments == MomentKind::q8 ? "8bit" : "fp32", ms, bytes * n / ms / 1e6);
        }
      // Launch count: the same elements as 1B-shaped tensors (scaled by 16), a launch each vs one launch.
      const auto slices = layer_slices(n, 16);
      size_t used = 0;
      for (const auto& slice : slices) used += slice.second;
      for (MasterKind master : {MasterKind::fp32, MasterKind::none}) {
        State d(stapo::test::AdamWHostState(params, master), MomentKind::fp32);
        std::vector<stapo::AdamWTensor> table = slice_table(d.s, d_grads, slices);
        stapo::AdamWTensorTable device_table;
        const float per_tensor = time_ms([&] {
          for (const stapo::AdamWTensor& t : table)
            stapo::adamw_compact_update(t.state, master, MomentKind::fp32, t.grads, t.step, d_scale, d_apply, t.seed,
                                        0);
        });
        const float one_launch = time_ms(
            [&] { stapo::adamw_compact_update_many(device_table, table, master, MomentKind::fp32, d_scale, d_apply, 0); });
        std::printf("  %zu tensors, %zu elements, master %-5s moments fp32: v1 a launch each %8.3f ms, v2 one launch "
                    "%8.3f ms\n", table.size(), used, name(master), per_tensor, one_launch);
      }
    }
    for (void* p : {(void*)d_grads, (void*)d_partials, (void*)d_norm, (void*)d_scale, (void*)d_apply})
      cudaCheck(cudaFree(p));
  }
  return 0;
}
