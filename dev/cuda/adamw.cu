// Playground: the optimizer step: global gradient norm + clip factor (kernels/grad_norm.cu) and AdamW over the
// compact state (kernels/adamw_compact.cu) for every master kind (fp32, split, none) and moment kind (fp32, 8-bit).
// Build: make adamw   Run: ./adamw
// Versions: 1 = the mainline kernels. Validated against the CPU twins in train/ (grad_clip.h, adamw.cpp's
// adamw_compact_update): the master values bit for bit.
#include "dev/cuda/common.h"
#include "kernels/adamw_compact.cu"
#include "kernels/grad_norm.cu"
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
    }
    for (void* p : {(void*)d_grads, (void*)d_partials, (void*)d_norm, (void*)d_scale, (void*)d_apply})
      cudaCheck(cudaFree(p));
  }
  return 0;
}
