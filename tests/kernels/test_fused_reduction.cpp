// The whole fused final reduction on the GPU (lm_head_forward → sequence_sums → pair_loss → token_dlogp →
// lm_head_backward) against an unfused CPU computation in double: full logits, log-softmax, gather, sums per
// sequence, model/ops/preference_loss.h's loss_pair, and the gradient written out as dlogits·w and dlogitsᵀ·h.
// With an NLL over prompt + response (TRL's ORPO) also the prompt sums P and the prompt positions' gradient
// (sequence_sums over prompt_sequence, token_dlogp_prompt).
#include <cmath>
#include <random>

#include "kernels/lm_head.h"
#include "kernels/preference_loss.h"
#include "tests/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace stapo::test {
namespace {

// B pairs in 2B right-padded rows of T: row s = sequence s (2i chosen, 2i+1 rejected), prompt then response.
struct ToyBatch {
  int B, T, C, V;
  std::vector<int32_t> targets, response_sequence, prompt_sequence;  // prompt_sequence as the dataloader's
  std::vector<float> reference;
};

ToyBatch toy_batch(int B, int T, int C, int V) {
  ToyBatch b{B, T, C, V, {}, {}, {}, {}};
  std::mt19937_64 rng(seed_from_test_name(7));
  std::uniform_int_distribution<int32_t> token(0, V - 1), prompt(1, T / 3), response(1, T / 2);
  const int N = 2 * B * T;
  b.targets.assign(N, -1);
  b.response_sequence.assign(N, -1);
  b.prompt_sequence.assign(N, -1);
  for (int s = 0; s < 2 * B; ++s) {
    const int p = prompt(rng) + 1, r = response(rng);  // ≥ 1 predicted prompt token
    for (int t = 0; t < p + r - 1; ++t) b.targets[(size_t)s * T + t] = token(rng);
    for (int t = 0; t < p - 1; ++t) b.prompt_sequence[(size_t)s * T + t] = s;
    for (int t = p - 1; t < p + r - 1; ++t) b.response_sequence[(size_t)s * T + t] = s;
  }
  b.reference = random_uniform(2 * B, -60.0f, -20.0f, 8);
  return b;
}

struct CpuReduction {
  std::vector<double> seq_logp, seq_entropy, seq_tokens, dseq, dlogp;
  std::vector<double> seq_prompt_logp, seq_prompt_tokens, dprompt;  // with an NLL over prompt + response
  std::vector<PairLoss<double>> losses;
  std::vector<float> dh, dw;
};

CpuReduction cpu_reduction(const ToyBatch& b, const std::vector<float>& h, const std::vector<float>& w,
                           const LossConfig& config, double nll_weight, double grad_scale) {
  const int N = 2 * b.B * b.T, S = 2 * b.B;
  CpuReduction r;
  r.seq_logp.assign(S, 0);
  r.seq_entropy.assign(S, 0);
  r.seq_tokens.assign(S, 0);
  r.seq_prompt_logp.assign(S, 0);
  r.seq_prompt_tokens.assign(S, 0);
  std::vector<double> logits((size_t)N * b.V), lse(N);
  for (int t = 0; t < N; ++t) {
    double m = -INFINITY;
    for (int v = 0; v < b.V; ++v) {
      double x = 0;
      for (int c = 0; c < b.C; ++c) x += (double)h[(size_t)t * b.C + c] * w[(size_t)v * b.C + c];
      logits[(size_t)t * b.V + v] = x;
      m = std::max(m, x);
    }
    double sum = 0, weighted = 0;  // Σ e^(x−m), Σ e^(x−m)·x
    for (int v = 0; v < b.V; ++v) {
      const double x = logits[(size_t)t * b.V + v];
      sum += std::exp(x - m);
      weighted += std::exp(x - m) * x;
    }
    lse[t] = m + std::log(sum);
    const int s = b.response_sequence[t];
    if (s >= 0) {
      r.seq_logp[s] += logits[(size_t)t * b.V + b.targets[t]] - lse[t];
      r.seq_entropy[s] += lse[t] - weighted / sum;  // H_t = LSE_t − Σ p·x
      r.seq_tokens[s] += 1;
    }
    const int p = b.prompt_sequence[t];
    if (p >= 0) {
      r.seq_prompt_logp[p] += logits[(size_t)t * b.V + b.targets[t]] - lse[t];
      r.seq_prompt_tokens[p] += 1;
    }
  }
  r.dseq.assign(S, 0);
  r.dprompt.assign(S, 0);  // only the chosen prompts (2i) take a gradient
  for (int i = 0; i < b.B; ++i) {
    PairLogps<double> in{r.seq_logp[2 * i], r.seq_logp[2 * i + 1], r.seq_tokens[2 * i], r.seq_tokens[2 * i + 1],
                         b.reference[2 * i], b.reference[2 * i + 1]};
    if (loss_uses_prompt(config)) in.prompt_chosen = r.seq_prompt_logp[2 * i];
    r.losses.push_back(loss_pair(config, in, nll_weight));
    r.dseq[2 * i] = grad_scale * r.losses.back().dloss_dlogp_chosen;
    r.dseq[2 * i + 1] = grad_scale * r.losses.back().dloss_dlogp_rejected;
    r.dprompt[2 * i] = grad_scale * r.losses.back().dloss_dlogp_prompt;
  }
  r.dlogp.assign(N, 0);
  r.dh.assign((size_t)N * b.C, 0);
  std::vector<double> dw((size_t)b.V * b.C, 0);
  for (int t = 0; t < N; ++t) {
    const int s = b.response_sequence[t], p = b.prompt_sequence[t];
    if (s < 0 && p < 0) continue;
    const double g = s >= 0 ? r.dseq[s] : r.dprompt[p];
    if (g == 0) continue;
    r.dlogp[t] = g;
    for (int v = 0; v < b.V; ++v) {
      const double dlogit = g * ((v == b.targets[t]) - std::exp(logits[(size_t)t * b.V + v] - lse[t]));
      for (int c = 0; c < b.C; ++c) {
        r.dh[(size_t)t * b.C + c] += (float)(dlogit * w[(size_t)v * b.C + c]);
        dw[(size_t)v * b.C + c] += dlogit * h[(size_t)t * b.C + c];
      }
    }
  }
  r.dw.assign(dw.begin(), dw.end());
  return r;
}

std::vector<float> as_float(const std::vector<double>& x) { return std::vector<float>(x.begin(), x.end()); }

TEST(KernelFusedReduction, MatchesUnfusedCpuLogSoftmaxGatherAndLoss) {
  STAPO_REQUIRE_GPU();
  const int B = 3, T = 41, C = 64, V = 520;
  const ToyBatch b = toy_batch(B, T, C, V);
  const int N = 2 * B * T, S = 2 * B;
  auto h = round_bf16(random_normal((size_t)N * C, 1.0f, 1));
  auto w = round_bf16(random_normal((size_t)V * C, 0.3f, 2));
  auto ctx = matmul_context_create();
  auto ws = lm_head_workspace_create(C, 50, 128);  // 246 rows in chunks of 50, 520 = 4·128 + 8 columns
  auto d_h = device_bf16(h), d_w = device_bf16(w);
  DeviceArray<int32_t> d_targets(b.targets), d_response(b.response_sequence), d_prompt(b.prompt_sequence);
  DeviceArray<float> d_reference(b.reference);

  // StaPO with an NLL term, DPO on reference-relative sums, ORPO's odds ratio with its NLL over the response and
  // over prompt + response (TRL's), CPO: the spec's defaults.
  struct Case {
    const char* name;
    LossKind loss;
    RewardKind reward;
    double beta, alpha;
    NllSpan span;
  };
  const Case kinds[] = {{"stapo", LossKind::stapo_sigmoid, RewardKind::avg, 2.0, 0.5, NllSpan::response},
                        {"dpo", LossKind::dpo, RewardKind::sum_ref, 0.1, 0.0, NllSpan::response},
                        {"orpo", LossKind::orpo, RewardKind::avg, 0.1, 1.0, NllSpan::response},
                        {"orpo prompt+response", LossKind::orpo, RewardKind::avg, 0.1, 1.0,
                         NllSpan::prompt_and_response},
                        {"cpo", LossKind::cpo, RewardKind::sum, 0.1, 1.0, NllSpan::response},
                        {"exo_pair", LossKind::exo_pair, RewardKind::sum_ref, 0.1, 0.0, NllSpan::response},
                        {"bco_pair", LossKind::bco_pair, RewardKind::sum_ref, 0.1, 0.0, NllSpan::response},
                        {"apo_zero", LossKind::apo_zero, RewardKind::sum_ref, 0.1, 0.0, NllSpan::response}};
  for (const Case& k : kinds) {
    LossConfig config = loss_defaults(k.loss);  // ε of exo_pair
    config.nll_span = k.span;
    config.bco_delta = 0.2;
    config.reward = k.reward;
    config.beta = k.beta;
    config.alpha = k.alpha;
    const std::string what = k.name;
    const double nll_weight = 1.0 / 7, grad_scale = 1.0 / B;
    const CpuReduction ref = cpu_reduction(b, h, w, config, nll_weight, grad_scale);

    DeviceArray<float> d_logp(N), d_entropy(N), d_lse(N), d_seq_logp(S), d_seq_entropy(S), d_seq_tokens(S),
        d_dseq(S), d_dlogp(N), d_seq_prompt_logp(S), d_seq_prompt_tokens(S), d_dprompt(S);
    DeviceArray<PairLoss<float>> d_losses(B);
    DeviceArray<bf16> d_dh((size_t)N * C);
    DeviceArray<float> d_dw(std::vector<float>((size_t)V * C, 0.0f));
    DeviceArray<int> d_nonfinite(std::vector<int>{0});
    lm_head_forward(ctx, ws, d_logp.get(), d_entropy.get(), d_lse.get(), d_h->get(), d_w->get(), d_targets.get(), N,
                    C, V, 0);
    sequence_sums(d_seq_logp.get(), d_seq_entropy.get(), d_seq_tokens.get(), d_logp.get(), d_entropy.get(),
                  d_response.get(), N, S, 0);
    const bool prompt = loss_uses_prompt(config);
    if (prompt)  // no entropy: the prompt's is never read
      sequence_sums(d_seq_prompt_logp.get(), nullptr, d_seq_prompt_tokens.get(), d_logp.get(), nullptr,
                    d_prompt.get(), N, S, 0);
    pair_loss(d_losses.get(), d_dseq.get(), d_seq_logp.get(), d_seq_tokens.get(),
              reward_uses_reference(config.reward) ? d_reference.get() : nullptr, config, (float)nll_weight,
              (float)grad_scale, B, d_nonfinite.get(), 0, prompt ? d_seq_prompt_logp.get() : nullptr,
              prompt ? d_dprompt.get() : nullptr);
    token_dlogp(d_dlogp.get(), d_dseq.get(), d_response.get(), N, 0);
    if (prompt) token_dlogp_prompt(d_dlogp.get(), d_dprompt.get(), d_prompt.get(), N, 0);
    lm_head_backward(ctx, ws, d_dh.get(), d_dw.get(), d_dlogp.get(), d_lse.get(), d_h->get(), d_w->get(),
                     d_targets.get(), N, C, V, 0);

    EXPECT_TRUE(all_close(d_seq_tokens.download(), as_float(ref.seq_tokens), 0, 0)) << what;
    EXPECT_TRUE(all_close(d_seq_logp.download(), as_float(ref.seq_logp), 1e-2, 1e-4)) << what;
    EXPECT_TRUE(all_close(d_seq_entropy.download(), as_float(ref.seq_entropy), 1e-2, 1e-4)) << what;
    if (prompt) {
      EXPECT_TRUE(all_close(d_seq_prompt_tokens.download(), as_float(ref.seq_prompt_tokens), 0, 0)) << what;
      EXPECT_TRUE(all_close(d_seq_prompt_logp.download(), as_float(ref.seq_prompt_logp), 1e-2, 1e-4)) << what;
      EXPECT_TRUE(all_close(d_dprompt.download(), as_float(ref.dprompt), 1e-5, 1e-3)) << what;
    }
    auto losses = d_losses.download();
    for (int i = 0; i < B; ++i) {
      EXPECT_NEAR(losses[i].loss, ref.losses[i].loss, 1e-3 * (1 + std::fabs(ref.losses[i].loss))) << what << " pair " << i;
      EXPECT_NEAR(losses[i].z, ref.losses[i].z, 1e-3 * (1 + std::fabs(ref.losses[i].z))) << what << " pair " << i;
    }
    EXPECT_TRUE(all_close(d_dseq.download(), as_float(ref.dseq), 1e-5, 1e-3)) << what;
    EXPECT_TRUE(all_close(d_dlogp.download(), as_float(ref.dlogp), 1e-5, 1e-3)) << what;
    EXPECT_TRUE(bf16_close(download_bf16(d_dh), ref.dh, 1e-2)) << "dh " << what;
    EXPECT_TRUE(bf16_close(d_dw.download(), ref.dw, 1e-2)) << "dw " << what;
    EXPECT_EQ(d_nonfinite.download()[0], 0) << "every loss is finite: " << what;
  }
  lm_head_workspace_free(ws);
  matmul_context_free(ctx);
}

// pair_loss raises the step's non-finite flag (what stops AdamW, kernels/grad_norm.h) for a loss that is not
// finite, and never lowers it: a later batch of finite losses leaves it set.
TEST(KernelFusedReduction, PairLossFlagsNonFiniteLoss) {
  STAPO_REQUIRE_GPU();
  const LossConfig config = loss_defaults(LossKind::stapo_sigmoid);
  // Pair 0 finite; pair 1's chosen log-prob is −inf (a target of probability 0 in fp32).
  DeviceArray<float> d_seq_logp(std::vector<float>{-12.0f, -15.0f, -INFINITY, -9.0f});
  DeviceArray<float> d_seq_tokens(std::vector<float>{6.0f, 5.0f, 4.0f, 3.0f});
  DeviceArray<float> d_dseq(4);
  DeviceArray<PairLoss<float>> d_losses(2);
  DeviceArray<int> d_nonfinite(std::vector<int>{0});
  pair_loss(d_losses.get(), d_dseq.get(), d_seq_logp.get(), d_seq_tokens.get(), nullptr, config, 1.0f, 0.5f, 1,
            d_nonfinite.get(), 0);
  EXPECT_EQ(d_nonfinite.download()[0], 0) << "pair 0 alone is finite";
  pair_loss(d_losses.get(), d_dseq.get(), d_seq_logp.get(), d_seq_tokens.get(), nullptr, config, 1.0f, 0.5f, 2,
            d_nonfinite.get(), 0);
  EXPECT_FALSE(std::isfinite(d_losses.download()[1].loss));
  EXPECT_EQ(d_nonfinite.download()[0], 1) << "pair 1's loss is not finite";
  pair_loss(d_losses.get(), d_dseq.get(), d_seq_logp.get(), d_seq_tokens.get(), nullptr, config, 1.0f, 0.5f, 1,
            d_nonfinite.get(), 0);
  EXPECT_EQ(d_nonfinite.download()[0], 1) << "a finite batch must not clear the flag";
}

}  // namespace
}  // namespace stapo::test
