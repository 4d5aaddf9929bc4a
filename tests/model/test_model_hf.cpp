// CpuModel against transformers (fixtures by dev/reference/make_model_fixtures.py): logits, per-token
// log-probs and entropies, and every parameter's gradient of Σ w_t·logp_t, on a batch with a full row, a
// right-padded row and a packed row. Llama: llama3 RoPE, GQA, untied. Mistral: sliding window 5 < T, tied.
#include <cstdio>

#include "tests/model/model_test_util.h"

namespace stapo::test {
namespace {

// ‖ours − ref‖/‖ref‖ over the positions of `batch` that are not padding, rows of `width` values each.
double relative_error_valid(const std::vector<float>& ours, const std::vector<float>& ref, const TokenBatch& batch,
                            size_t width) {
  std::vector<float> a, b;
  for (size_t i = 0; i < batch.segments.size(); ++i)
    if (batch.segments[i] >= 0) {
      a.insert(a.end(), ours.begin() + i * width, ours.begin() + (i + 1) * width);
      b.insert(b.end(), ref.begin() + i * width, ref.begin() + (i + 1) * width);
    }
  return relative_error(a.data(), b.data(), a.size());
}

void check_against_hf(const std::string& name) {
  SafetensorsReader io(fixture_path("model/" + name + "_io.safetensors"));
  auto model = model_load_hf<float>(fixture_path("model/" + name));
  TokenBatch batch = fixture_batch(io);
  const size_t N = (size_t)batch.rows * batch.T;
  const int V = model->config().vocab_size;

  std::vector<float> logits = model->logits(batch);
  ASSERT_EQ(logits.size(), N * V);
  double logits_err = relative_error_valid(logits, fixture_tensor(io, "logits"), batch, V);
  EXPECT_LE(logits_err, 1e-5) << name << " logits";

  std::vector<float> logp(N), entropy(N);
  model->forward(batch, logp.data(), entropy.data());
  std::vector<float> ref_logp = fixture_tensor(io, "logp"), ref_entropy = fixture_tensor(io, "entropy");
  double logp_err = relative_error(logp.data(), ref_logp.data(), N);
  double entropy_err = relative_error(entropy.data(), ref_entropy.data(), N);
  EXPECT_LE(logp_err, 1e-5) << name << " log-probs";
  EXPECT_LE(entropy_err, 1e-5) << name << " entropies";
  for (size_t i = 0; i < N; ++i)
    if (batch.targets[i] < 0) {
      EXPECT_EQ(logp[i], 0.0f) << "position " << i << " has no target";
    }

  std::vector<float> weights = fixture_tensor(io, "weights");
  model->zero_grad();
  model->backward(weights.data());
  double worst = 0;
  for (const Parameter<float>& p : model->parameters()) {
    std::vector<float> ref = fixture_tensor(io, "grad." + p.name);
    ASSERT_EQ(ref.size(), p.numel) << p.name;
    double err = relative_error(p.grad, ref.data(), p.numel);
    EXPECT_LE(err, 1e-4) << name << " gradient of " << p.name;
    worst = std::max(worst, err);
  }
  printf("[ %s vs HF ] rel err: logits %.2e, logp %.2e, entropy %.2e, worst parameter gradient %.2e\n",
         name.c_str(), logits_err, logp_err, entropy_err, worst);
}

TEST(ModelHF, LlamaMatchesTransformers) { check_against_hf("llama"); }
TEST(ModelHF, MistralMatchesTransformers) { check_against_hf("mistral"); }

// Backward accumulates: two backward passes give twice the gradient.
TEST(ModelHF, BackwardAccumulates) {
  SafetensorsReader io(fixture_path("model/llama_io.safetensors"));
  auto model = model_load_hf<float>(fixture_path("model/llama"));
  TokenBatch batch = fixture_batch(io);
  std::vector<float> logp(batch.tokens.size()), entropy(batch.tokens.size());
  std::vector<float> weights = fixture_tensor(io, "weights");
  model->forward(batch, logp.data(), entropy.data());
  model->zero_grad();
  model->backward(weights.data());
  std::vector<float> once(model->grad_data(), model->grad_data() + model->num_params());
  model->backward(weights.data());
  for (float& g : once) g *= 2;
  EXPECT_TRUE(all_close(model->grad_data(), once.data(), once.size(), 1e-7, 1e-6));
}

}  // namespace
}  // namespace stapo::test
