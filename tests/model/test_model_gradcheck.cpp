// Finite-difference check of CpuModel<double>::backward for every element of every parameter tensor:
// L(θ) = Σ_t w_t·logp_t on a tiny model and a batch with a packed row and a right-padded row.
// Central differences, step 1e-5: truncation ~1e-10 relative, far below the 1e-6 tolerance.
#include <cstdio>

#include "tests/model/model_test_util.h"

namespace stapo::test {
namespace {

double weighted_logp(CpuModel<double>& model, const TokenBatch& batch, const std::vector<double>& w) {
  std::vector<double> logp(w.size()), entropy(w.size());
  model.forward(batch, logp.data(), entropy.data());
  double sum = 0;
  for (size_t i = 0; i < w.size(); ++i) sum += w[i] * logp[i];
  return sum;
}

void gradcheck(const ModelConfig& config) {
  CpuModel<double> model(config);
  std::vector<float> init = random_normal(model.num_params(), 0.5f, 1);
  for (Parameter<double>& p : model.parameters()) {
    size_t offset = p.data - model.param_data();
    for (size_t i = 0; i < p.numel; ++i) p.data[i] = (p.is_norm ? 1.0 : 0.0) + init[offset + i];
  }
  // Row 0 packs sequences of 4 and 3; row 1 has 5 tokens then padding. Both outlast Mistral's window of 3.
  TokenBatch batch = random_batch({{4, 3}, {5}}, 7, config.vocab_size, 2);
  std::vector<float> wf = random_normal(batch.tokens.size(), 1.0f, 3);
  std::vector<double> w(wf.begin(), wf.end());

  weighted_logp(model, batch, w);
  model.zero_grad();
  model.backward(w.data());

  const double h = 1e-5;
  double worst = 0;
  for (Parameter<double>& p : model.parameters()) {
    std::vector<double> fd(p.numel);
    for (size_t i = 0; i < p.numel; ++i) {
      double saved = p.data[i];
      p.data[i] = saved + h;
      double plus = weighted_logp(model, batch, w);
      p.data[i] = saved - h;
      double minus = weighted_logp(model, batch, w);
      p.data[i] = saved;
      fd[i] = (plus - minus) / (2 * h);
    }
    double err = relative_error(p.grad, fd.data(), p.numel);
    EXPECT_LE(err, 1e-6) << config.model_type << " " << p.name;
    worst = std::max(worst, err);
  }
  printf("[ %s gradcheck ] %zu tensors, %zu parameters, worst relative error %.2e\n", config.model_type.c_str(),
         model.parameters().size(), model.num_params(), worst);
}

TEST(ModelGradcheck, LlamaEveryParameter) { gradcheck(tiny_config("llama")); }
TEST(ModelGradcheck, MistralWithWindowEveryParameter) { gradcheck(tiny_config("mistral")); }

}  // namespace
}  // namespace stapo::test
