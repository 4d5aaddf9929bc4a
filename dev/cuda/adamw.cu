// Playground: the optimizer step: global gradient norm + clip factor (kernels/grad_norm.cu) and AdamW in both
// storage modes (kernels/adamw.cu).
// Build: make adamw   Run: ./adamw
// Versions: 1 = the mainline kernels. Validated against the CPU twins in train/ (grad_clip.h, adamw.cpp).
#include "dev/cuda/common.h"
#include "kernels/adamw.cu"
#include "kernels/grad_norm.cu"
#include "train/adamw.h"
#include "train/grad_clip.h"

using namespace playground;

int main() {
  print_device();
  for (int pass = 0; pass < 2; ++pass) {
    const bool bench = pass == 1;
    const size_t n = bench ? (size_t)1 << 28 : 1000003;  // 268M parameters: one large block of weights
    auto params = random_normal(n, 1.0f, 1), grads = random_normal(n, 0.01f, 2);
    bf16* d_params = to_device_bf16(params);
    float *d_grads = to_device(grads), *d_master = to_device(params), *d_m = device_alloc<float>(n),
          *d_v = device_alloc<float>(n);  // gradients fp32, as accumulated over micro-batches
    float *d_partials = device_alloc<float>(stapo::GRAD_NORM_BLOCKS), *d_norm = device_alloc<float>(1),
          *d_scale = device_alloc<float>(1);
    int* d_apply = device_alloc<int>(1);
    cudaCheck(cudaMemset(d_m, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(d_v, 0, n * sizeof(float)));
    stapo::AdamWHyper hyper;
    hyper.lr = 1e-3f;
    hyper.weight_decay = 0.1f;
    const float max_norm = 1.0f;
    auto norm = [&] {
      stapo::grad_norm_accumulate(d_partials, d_grads, n, false, 0);
      stapo::grad_norm_finish(d_norm, d_scale, d_apply, d_partials, max_norm, nullptr, 0);
    };
    auto step_master = [&] {
      stapo::adamw_update(d_params, d_master, d_grads, d_m, d_v, n, hyper, 1, d_scale, d_apply, 0, 0);
    };
    auto step_bf16 = [&] {
      stapo::adamw_update(d_params, nullptr, d_grads, d_m, d_v, n, hyper, 1, d_scale, d_apply, 7, 0);
    };
    if (!bench) {
      std::printf("validate n=%zu\n", n);
      norm();
      step_master();
      cudaCheck(cudaDeviceSynchronize());
      const double want_norm = std::sqrt(stapo::grad_sum_squares(grads.data(), n));
      const double clip = stapo::grad_clip_factor(want_norm, max_norm);
      validate("norm", from_device(d_norm, 1), {(float)want_norm}, 1e-5);
      validate("clip", from_device(d_scale, 1), {(float)clip}, 1e-5);
      std::vector<double> p(params.begin(), params.end()), g(grads.begin(), grads.end()), m(n, 0.0), v(n, 0.0);
      stapo::AdamWConfig config;
      stapo::adamw_update(p.data(), g.data(), m.data(), v.data(), n, hyper.lr, hyper.weight_decay, config, 1, clip);
      validate("master", from_device(d_master, n), std::vector<float>(p.begin(), p.end()), 1e-6);
    } else {
      const float t_norm = time_ms(norm), t_master = time_ms(step_master), t_bf16 = time_ms(step_bf16);
      // Bytes per parameter (fp32 gradients): norm 4; master mode 4+4+4+4 read, 2+4+4+4 written; bf16 mode
      // 2+4+4+4 read, 2+4+4 written.
      std::printf("n=%zu  grad norm %.3f ms (%.0f GB/s)  adamw master %.3f ms (%.0f GB/s)  adamw bf16+SR %.3f ms "
                  "(%.0f GB/s)\n", n, t_norm, 4.0 * n / t_norm / 1e6, t_master, 30.0 * n / t_master / 1e6, t_bf16,
                  24.0 * n / t_bf16 / 1e6);
    }
    for (void* p : {(void*)d_params, (void*)d_grads, (void*)d_master, (void*)d_m, (void*)d_v, (void*)d_partials,
                    (void*)d_norm, (void*)d_scale, (void*)d_apply})
      cudaCheck(cudaFree(p));
  }
  return 0;
}
