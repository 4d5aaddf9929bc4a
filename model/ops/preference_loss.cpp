// Host side of model/ops/preference_loss.h: loss and reward names, the spec's per-loss defaults, validation, the
// CPU twins of the fused reduction's last steps.
#include "model/ops/preference_loss.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace stapo {

namespace {
struct LossEntry {
  const char* name;
  LossKind kind;
};
const LossEntry kLosses[] = {
    {"stapo-sigmoid", LossKind::stapo_sigmoid}, {"stapo-hinge", LossKind::stapo_hinge}, {"dpo", LossKind::dpo},
    {"cdpo", LossKind::cdpo},         {"robust", LossKind::robust},       {"exo_pair", LossKind::exo_pair},
    {"hinge", LossKind::hinge},       {"ipo", LossKind::ipo},             {"nca_pair", LossKind::nca_pair},
    {"bco_pair", LossKind::bco_pair}, {"sppo_hard", LossKind::sppo_hard}, {"apo_zero", LossKind::apo_zero},
    {"apo_down", LossKind::apo_down}, {"simpo", LossKind::simpo},       {"cpo", LossKind::cpo},
    {"orpo", LossKind::orpo},         {"sft", LossKind::sft}};

// The losses of TRL's chosen and rejected log-ratios separately: they need a reference.
bool loss_of_log_ratios(LossKind loss) {
  return loss == LossKind::nca_pair || loss == LossKind::bco_pair || loss == LossKind::sppo_hard ||
         loss == LossKind::apo_zero || loss == LossKind::apo_down;
}

bool loss_has_label_smoothing(LossKind loss) {
  return loss == LossKind::cdpo || loss == LossKind::robust || loss == LossKind::exo_pair ||
         loss == LossKind::simpo || loss == LossKind::cpo;
}
const char* const kRewardNames[] = {"avg", "sum", "sum-ref", "avg-ref"};
}  // namespace

std::vector<std::string> loss_names() {
  std::vector<std::string> names{"stapo"};
  for (const LossEntry& e : kLosses) names.push_back(e.name);
  return names;
}

LossKind loss_from_name(const std::string& name) {
  if (name == "stapo") return LossKind::stapo_sigmoid;
  for (const LossEntry& e : kLosses)
    if (name == e.name) return e.kind;
  std::string all;
  for (const std::string& n : loss_names()) all += (all.empty() ? "" : ", ") + n;
  fail("unknown loss '", name, "': use one of ", all);
}

const char* loss_name(LossKind loss) {
  for (const LossEntry& e : kLosses)
    if (loss == e.kind) return e.name;
  fail("invalid LossKind ", static_cast<int>(loss));
}

RewardKind reward_from_name(const std::string& name) {
  for (int i = 0; i < 4; i++)
    if (name == kRewardNames[i]) return static_cast<RewardKind>(i);
  fail("unknown reward '", name, "': use avg, sum, sum-ref or avg-ref");
}

const char* reward_name(RewardKind reward) { return kRewardNames[static_cast<int>(reward)]; }

const char* right_margin_name(RightMargin mode) { return mode == RightMargin::saturate ? "saturate" : "absolute"; }

RightMargin right_margin_from_name(const std::string& name) {
  if (name == "absolute") return RightMargin::absolute;
  if (name == "saturate") return RightMargin::saturate;
  fail("unknown --right-margin '", name, "': use absolute (the paper's) or saturate");
}

const char* nll_span_name(NllSpan span) {
  return span == NllSpan::prompt_and_response ? "prompt+response" : "response";
}

NllSpan nll_span_from_name(const std::string& name) {
  if (name == "response") return NllSpan::response;
  if (name == "prompt+response") return NllSpan::prompt_and_response;
  fail("unknown --nll-span '", name, "': use response or prompt+response (TRL's ORPO)");
}

std::string loss_config_summary(const LossConfig& c) {
  std::string s = cat("loss ", loss_name(c.loss), ", reward ", reward_name(c.reward), ", beta ", c.beta);
  if (c.loss == LossKind::stapo_sigmoid || c.loss == LossKind::stapo_hinge)
    s += cat(", m_l ", c.margin_left, ", m_r ", c.margin_right, " (", right_margin_name(c.right_margin), "), lambda_r ",
             c.lambda_right);
  if (c.loss == LossKind::simpo) s += cat(", gamma ", c.gamma);
  if (loss_has_label_smoothing(c.loss)) s += cat(", label_smoothing ", c.label_smoothing);
  if (c.alpha > 0) s += cat(", alpha ", c.alpha, " (NLL over the ", nll_span_name(c.nll_span), ")");
  return s;
}

LossConfig loss_defaults(LossKind loss) {
  LossConfig c;  // the stapo defaults
  c.loss = loss;
  switch (loss) {
    case LossKind::stapo_sigmoid:
    case LossKind::stapo_hinge:
      break;
    case LossKind::dpo:
    case LossKind::hinge:
    case LossKind::nca_pair:
    case LossKind::bco_pair:
    case LossKind::sppo_hard:
    case LossKind::apo_zero:
    case LossKind::apo_down:
      c.reward = RewardKind::sum_ref;
      c.beta = 0.1;
      break;
    case LossKind::cdpo:
    case LossKind::robust:
      c.reward = RewardKind::sum_ref;
      c.beta = 0.1;
      c.label_smoothing = 0.1;
      break;
    case LossKind::exo_pair:  // TRL 0.28's value for ε = 0 (log ε must be finite)
      c.reward = RewardKind::sum_ref;
      c.beta = 0.1;
      c.label_smoothing = 1e-3;
      break;
    case LossKind::simpo:
      c.reward = RewardKind::avg;
      c.beta = 2.0;
      c.gamma = 1.0;
      break;
    case LossKind::ipo:
      c.reward = RewardKind::avg_ref;
      c.beta = 0.1;
      break;
    case LossKind::cpo:
      c.reward = RewardKind::sum;
      c.beta = 0.1;
      c.alpha = 1.0;
      break;
    case LossKind::orpo:  // β is ORPO's λ (TRL's ORPOConfig.beta); the NLL covers the prompt too, as TRL's
      c.reward = RewardKind::avg;
      c.beta = 0.1;
      c.alpha = 1.0;
      c.nll_span = NllSpan::prompt_and_response;
      break;
    case LossKind::sft:
      c.reward = RewardKind::avg;
      c.beta = 1.0;
      c.alpha = 1.0;
      break;
  }
  return c;
}

template <typename T>
void sequence_sums(double* seq_logp, double* seq_entropy, double* seq_tokens, const T* logp, const T* entropy,
                   const int32_t* response_sequence, size_t N, int num_sequences) {
  std::fill(seq_logp, seq_logp + num_sequences, 0.0);
  std::fill(seq_entropy, seq_entropy + num_sequences, 0.0);
  std::fill(seq_tokens, seq_tokens + num_sequences, 0.0);
  for (size_t t = 0; t < N; t++) {
    const int s = response_sequence[t];
    if (s < 0) continue;
    STAPO_CHECK(s < num_sequences, "sequence_sums: response_sequence ", s, " at position ", t, " but there are ",
                num_sequences, " sequences");
    seq_logp[s] += double(logp[t]);
    seq_entropy[s] += double(entropy[t]);
    seq_tokens[s] += 1.0;
  }
}

void pair_loss(PairLoss<double>* losses, double* dseq, const double* seq_logp, const double* seq_tokens,
               const float* reference_logps, const LossConfig& config, double nll_weight, double grad_scale,
               int num_pairs, const double* seq_prompt_logp, double* dprompt) {
  STAPO_CHECK(reference_logps != nullptr || !reward_uses_reference(config.reward), "pair_loss: the reward ",
              reward_name(config.reward), " needs reference log-probs; run the reference pass over the data first");
  pair_loss_check_prompt(config, seq_prompt_logp, dprompt);
  for (int i = 0; i < num_pairs; i++) {
    PairLogps<double> in{seq_logp[2 * i],
                         seq_logp[2 * i + 1],
                         seq_tokens[2 * i],
                         seq_tokens[2 * i + 1],
                         reference_logps ? double(reference_logps[2 * i]) : 0.0,
                         reference_logps ? double(reference_logps[2 * i + 1]) : 0.0};
    if (seq_prompt_logp) in.prompt_chosen = seq_prompt_logp[2 * i];
    losses[i] = loss_pair(config, in, nll_weight);
    dseq[2 * i] = grad_scale * losses[i].dloss_dlogp_chosen;
    dseq[2 * i + 1] = grad_scale * losses[i].dloss_dlogp_rejected;
    if (dprompt) {
      dprompt[2 * i] = grad_scale * losses[i].dloss_dlogp_prompt;
      dprompt[2 * i + 1] = 0.0;
    }
  }
}

template <typename T>
void token_dlogp(T* dlogp, const double* dseq, const int32_t* response_sequence, size_t N) {
  for (size_t t = 0; t < N; t++) dlogp[t] = response_sequence[t] >= 0 ? T(dseq[response_sequence[t]]) : T(0);
}

template <typename T>
void token_dlogp_prompt(T* dlogp, const double* dprompt, const int32_t* prompt_sequence, size_t N) {
  for (size_t t = 0; t < N; t++)
    if (prompt_sequence[t] >= 0) dlogp[t] += T(dprompt[prompt_sequence[t]]);
}

template void sequence_sums<float>(double*, double*, double*, const float*, const float*, const int32_t*, size_t, int);
template void sequence_sums<double>(double*, double*, double*, const double*, const double*, const int32_t*, size_t,
                                    int);
template void token_dlogp<float>(float*, const double*, const int32_t*, size_t);
template void token_dlogp<double>(double*, const double*, const int32_t*, size_t);
template void token_dlogp_prompt<float>(float*, const double*, const int32_t*, size_t);
template void token_dlogp_prompt<double>(double*, const double*, const int32_t*, size_t);

void loss_config_validate(const LossConfig& c, bool have_reference) {
  STAPO_CHECK(std::isfinite(c.beta) && c.beta > 0, "--beta must be > 0 (got ", c.beta, "): it scales z = beta·Δ");
  const bool stapo = c.loss == LossKind::stapo_sigmoid || c.loss == LossKind::stapo_hinge;
  if (stapo) {
    STAPO_CHECK(std::isfinite(c.margin_left) && std::isfinite(c.margin_right) && c.margin_right > c.margin_left,
                "--margin-right (", c.margin_right, ") must be greater than --margin-left (", c.margin_left,
                "): StaPO keeps Δ in the band [m_l, m_r] (the paper's gap m_r - m_l is 0.2)");
    STAPO_CHECK(std::isfinite(c.lambda_right) && c.lambda_right >= 0, "--lambda-right must be >= 0 (got ",
                c.lambda_right, ")");
  }
  STAPO_CHECK(c.label_smoothing >= 0 && c.label_smoothing < 0.5, "--label-smoothing must be in [0, 0.5) (got ",
              c.label_smoothing, ")");
  STAPO_CHECK(c.loss != LossKind::dpo || c.label_smoothing == 0,
              "--loss dpo has no label smoothing (TRL >= 0.29's sigmoid ignores it): use --loss cdpo for TRL <= 0.28's "
              "label-smoothed DPO, or --loss robust");
  STAPO_CHECK(c.loss == LossKind::dpo || loss_has_label_smoothing(c.loss) || c.label_smoothing == 0,
              "--label-smoothing applies to cdpo, robust, exo_pair, simpo and cpo; --loss ", loss_name(c.loss),
              " would ignore it: leave it out");
  STAPO_CHECK(c.loss != LossKind::exo_pair || c.label_smoothing > 0,
              "--loss exo_pair needs --label-smoothing > 0 (its target distribution is (1 - ε, ε); default 1e-3)");
  STAPO_CHECK(std::isfinite(c.bco_delta), "bco_pair's running mean δ is not finite (", c.bco_delta, ")");
  STAPO_CHECK(!loss_of_log_ratios(c.loss) || reward_uses_reference(c.reward), "--loss ", loss_name(c.loss),
              " compares each response with the reference model: use --reward sum-ref (TRL's) or avg-ref");
  STAPO_CHECK(c.loss != LossKind::bco_pair || c.reward == RewardKind::sum_ref,
              "--loss bco_pair needs --reward sum-ref: its running mean δ is of TRL's summed log-ratio rewards");
  STAPO_CHECK(c.alpha >= 0, "--alpha (NLL weight) must be >= 0 (got ", c.alpha, ")");
  STAPO_CHECK(c.loss != LossKind::sft || c.alpha > 0, "--loss sft trains only the NLL term: --alpha must be > 0");
  STAPO_CHECK(!reward_uses_reference(c.reward) || have_reference, "--reward ", reward_name(c.reward), " (loss ",
              loss_name(c.loss),
              ") needs reference log-probs and the data has none: run with --ref precompute, or choose "
              "--reward avg or sum");
}

}  // namespace stapo
