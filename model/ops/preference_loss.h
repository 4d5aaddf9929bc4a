// Every preference loss of docs/stapo-loss.md, per pair: the one definition of each loss and its gradient,
// shared by the CPU engine (train/cpu_engine.h, T = double) and the CUDA engine's fused reduction
// (kernels/preference_loss.cu, T = float, called from device code); it sits in model/ops/, below both users.
// No std:: containers, exceptions or allocation inside STAPO_HD functions. At the end of the file, host only:
// names, defaults, validation, the running mean of bco_pair, and the CPU twins of the kernels' last steps of
// the fused reduction.
//
// Per pair the inputs are the sequence log-probs S_w, S_l (sums over response tokens), the token counts
// |y_w|, |y_l|, the reference sums Sref_w, Sref_l (ignored by rewards without reference), and the chosen
// prompt's log-prob P_w (read only by an NLL term over prompt + response). The reward form makes u_w, u_l of
// them (S, S − Sref, A or A − Aref); Δ = u_w − u_l and z = β·Δ. The outputs are the pair's loss ℓ, Δ, z,
// dℓ/dz, the chain rule to ∂ℓ/∂S_w, ∂ℓ/∂S_l, ∂ℓ/∂P_w (the only numbers the backward pass needs), and the
// rewards TRL logs.
//
// Most losses are functions of z alone; nca_pair, bco_pair, sppo_hard, apo_zero and apo_down read β·u_w and
// β·u_l separately (TRL's chosen and rejected log-ratios), and orpo reads the average log-probs.
//
// StaPO's margins m_l < m_r are in units of Δ (the paper's m_l, m_r, SimPO's convention); in z units they are
// γL = β·m_l and γR = β·m_r. With `RightMargin::saturate` the loss is evaluated at min(Δ, m_r): as the paper's
// form at or below m_r, flat above it (a pair above the right margin is neither pushed up nor pushed back).
//
// The NLL term (cpo, orpo, sft, rpo = dpo with α > 0, stapo with α > 0) is a batch token mean, as TRL computes it:
//   L_batch = (1/B) Σ_i pref(z_i) + α · Σ_i (−N_i) / Σ_i n_i
//           = (1/B) Σ_i [ pref(z_i) + α · (−N_i) · nll_weight ],   nll_weight = B / Σ_i n_i,
// with N_i = S_w,i and n_i = |y_w,i| (the response; TRL's CPO, DPO's sft/rpo), or, with NllSpan::
// prompt_and_response (TRL's ORPO), N_i = P_w,i + S_w,i and n_i = |x_i| − 1 + |y_w,i| (every predicted token of
// the chosen sequence). So each pair takes `nll_weight`: B/Σn for TRL's batch token mean (what the trainer
// passes, with B and Σn counted over the whole optimizer step so that gradient accumulation is exact), or 1/n_i
// for the per-pair mean the spec calls NLL_w. ℓ returned here is the bracket; the trainer divides by B.
//
// Stability: log σ(x) = −softplus(−x) with softplus(x) = max(x, 0) + log1p(e^{−|x|}), σ(x) from e^{−|x|};
// nothing overflows for |z| in the thousands, in float or double.
#pragma once

#if defined(__CUDACC__)
#define STAPO_HD __host__ __device__
#else
#define STAPO_HD
#endif

#include <math.h>

namespace stapo {

enum class LossKind : int {
  stapo_sigmoid, stapo_hinge, dpo, simpo, hinge, ipo, cpo, orpo, sft,
  cdpo, robust, exo_pair, nca_pair, bco_pair, sppo_hard, apo_zero, apo_down
};
enum class RewardKind : int { avg, sum, sum_ref, avg_ref };
// StaPO above its right margin: `absolute` pushes Δ back down (the paper's form), `saturate` stops there.
enum class RightMargin : int { absolute, saturate };
// Which tokens of the chosen sequence the NLL term covers: its response (TRL's CPO, DPO's sft/rpo), or every
// predicted token, prompt included (TRL's ORPO: "computed over the full prompt and response").
enum class NllSpan : int { response, prompt_and_response };

// Hyperparameters of one loss; every field is used by the losses named in its comment only.
struct LossConfig {
  LossKind loss = LossKind::stapo_sigmoid;
  RewardKind reward = RewardKind::avg;
  double beta = 2.0;             // all: z = β·Δ
  double gamma = 1.0;            // simpo: target margin, ℓ = −log σ(z − γ)
  double margin_left = 0.5;      // stapo*: left margin m_l, in units of Δ (γL = β·m_l)
  double margin_right = 0.7;     // stapo*: right margin m_r > m_l, in units of Δ (γR = β·m_r)
  double lambda_right = 1.0;     // stapo*: weight λR of the right-margin term
  RightMargin right_margin = RightMargin::absolute;  // stapo*: what happens above m_r
  double label_smoothing = 0.0;  // cdpo, simpo, cpo, robust, exo_pair: ε
  double alpha = 0.0;            // NLL weight: cpo 1, orpo 1, sft 1, dpo = RPO's α, stapo* optional (0)
  NllSpan nll_span = NllSpan::response;  // the tokens of the NLL term (orpo: prompt_and_response)
  double bco_delta = 0.0;        // bco_pair: δ, the running mean of the rewards (the trainer's, per step)
};

template <typename T>
struct PairLogps {
  T logp_chosen, logp_rejected;  // S(y_w), S(y_l)
  T len_chosen, len_rejected;    // |y_w|, |y_l| (> 0)
  T ref_chosen, ref_rejected;    // Sref(y_w), Sref(y_l); unused without a reference
  T prompt_chosen = T(0);        // P_w: log-prob of the chosen sequence's predicted prompt tokens (prompt NLL)
  T prompt_tokens_chosen = T(0); // |x| − 1, their count (the trainer's normaliser; not read here)
};

template <typename T>
struct PairLoss {
  T loss;              // pref + α·(−N)·nll_weight (N: S_w, or P_w + S_w)
  T preference;        // pref alone (TRL's per-pair `losses`)
  T delta;             // Δ of the reward (orpo: Δ of the avg reward; its own term is on the log-odds)
  T z;                 // β·Δ
  T dloss_dz;          // d pref / dz for the losses of z alone; orpo: d/d log_odds; 0 for sft and the losses
                       // of u_w and u_l separately (nca_pair, bco_pair, sppo_hard, apo_*)
  T dloss_dlogp_chosen;    // ∂ℓ/∂S_w, NLL term included
  T dloss_dlogp_rejected;  // ∂ℓ/∂S_l
  T dloss_dlogp_prompt;    // ∂ℓ/∂P_w (the prompt NLL only; 0 otherwise)
  T reward_chosen;     // what TRL logs as rewards/chosen: β·(S_w − Sref_w) with a reference (DPOTrainer, whatever
                       // the reward averages), else β·u_w (CPOTrainer: β·S_w or β·A_w; ORPO: β·A_w, β = λ)
  T reward_rejected;
  T nll_chosen;        // −S_w/|y_w| (the metric nll/chosen; per pair mean)
};

// ---- scalar helpers, overloaded so float stays float on the device ----
STAPO_HD inline float loss_exp(float x) { return expf(x); }
STAPO_HD inline double loss_exp(double x) { return exp(x); }
STAPO_HD inline float loss_log1p(float x) { return log1pf(x); }
STAPO_HD inline double loss_log1p(double x) { return log1p(x); }
STAPO_HD inline float loss_log(float x) { return logf(x); }
STAPO_HD inline double loss_log(double x) { return log(x); }
STAPO_HD inline float loss_expm1(float x) { return expm1f(x); }
STAPO_HD inline double loss_expm1(double x) { return expm1(x); }

template <typename T>
STAPO_HD inline T softplus(T x) {  // log(1 + e^x)
  T ax = x < T(0) ? -x : x;
  return (x > T(0) ? x : T(0)) + loss_log1p(loss_exp(-ax));
}

template <typename T>
STAPO_HD inline T log_sigmoid(T x) {
  return -softplus(-x);
}

template <typename T>
STAPO_HD inline T sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + loss_exp(-x));
  T e = loss_exp(x);
  return e / (T(1) + e);
}

// log(1 − e^a) for a < 0, accurate near 0 and for very negative a (Mächler's two branches).
template <typename T>
STAPO_HD inline T log1mexp(T a) {
  return a > T(-0.6931471805599453) ? loss_log(-loss_expm1(a)) : loss_log1p(-loss_exp(a));
}

// −(1−ε)·log σ(x) − ε·log σ(−x) and its derivative in x.
template <typename T>
STAPO_HD inline T smoothed_sigmoid_loss(T x, T eps, T* dx) {
  *dx = -(T(1) - eps) * sigmoid(-x) + eps * sigmoid(x);
  return -(T(1) - eps) * log_sigmoid(x) - eps * log_sigmoid(-x);
}

STAPO_HD inline bool reward_uses_average(RewardKind reward) {
  return reward == RewardKind::avg || reward == RewardKind::avg_ref;
}

STAPO_HD inline bool reward_uses_reference(RewardKind reward) {
  return reward == RewardKind::sum_ref || reward == RewardKind::avg_ref;
}

// σ(x)·σ(−x) = σ'(x), without overflow.
template <typename T>
STAPO_HD inline T sigmoid_slope(T x) {
  return sigmoid(x) * sigmoid(-x);
}

// The preference term of one pair and its derivatives g_w = ∂pref/∂u_w, g_l = ∂pref/∂u_l. Losses of z alone
// also give dz = dpref/dz (then g_w = β·dz = −g_l); orpo is not here (it reads the average log-probs).
template <typename T>
struct PreferenceTerm {
  T pref = T(0), g_w = T(0), g_l = T(0), dz = T(0);
};

template <typename T>
STAPO_HD inline PreferenceTerm<T> preference_term(const LossConfig& config, T u_w, T u_l) {
  const T beta = T(config.beta), eps = T(config.label_smoothing);
  const T delta = u_w - u_l, z = beta * delta;
  const T r_w = beta * u_w, r_l = beta * u_l;  // TRL's β·(chosen / rejected log-ratio) for the *-ref rewards
  PreferenceTerm<T> t;
  bool of_z = true;  // pref depends on z alone: g from dz below
  switch (config.loss) {
    case LossKind::stapo_sigmoid:
    case LossKind::stapo_hinge: {
      const T ml = T(config.margin_left), mr = T(config.margin_right), lr = T(config.lambda_right);
      const bool flat = config.right_margin == RightMargin::saturate && delta > mr;
      const T d = flat ? mr : delta;
      const T left = beta * (d - ml), right = beta * (mr - d);  // z − γL and γR − z at Δ = d
      if (config.loss == LossKind::stapo_sigmoid) {
        t.pref = -log_sigmoid(left) - lr * log_sigmoid(right);
        t.dz = -sigmoid(-left) + lr * sigmoid(-right);
      } else {
        if (left < T(0)) {
          t.pref -= left;
          t.dz -= T(1);
        }
        if (right < T(0)) {
          t.pref -= lr * right;
          t.dz += lr;
        }
      }
      if (flat) t.dz = T(0);
      break;
    }
    case LossKind::dpo:  // ε = 0 (validated): TRL ≥ 0.29's sigmoid
    case LossKind::cdpo:
    case LossKind::cpo:
      t.pref = smoothed_sigmoid_loss(z, eps, &t.dz);
      break;
    case LossKind::simpo:
      t.pref = smoothed_sigmoid_loss(z - T(config.gamma), eps, &t.dz);
      break;
    case LossKind::robust: {  // unbiased under label noise ε: [−(1−ε)·log σ(z) + ε·log σ(−z)] / (1 − 2ε)
      const T norm = T(1) - T(2) * eps;
      t.pref = (-(T(1) - eps) * log_sigmoid(z) + eps * log_sigmoid(-z)) / norm;
      t.dz = (-(T(1) - eps) * sigmoid(-z) - eps * sigmoid(z)) / norm;
      break;
    }
    case LossKind::exo_pair: {  // KL(q ‖ p): q = (σ(z), σ(−z)), p = (1 − ε, ε)
      const T log_p_w = loss_log1p(-eps), log_p_l = loss_log(eps);
      t.pref = sigmoid(z) * (log_sigmoid(z) - log_p_w) + sigmoid(-z) * (log_sigmoid(-z) - log_p_l);
      // d/dz = σ(z)σ(−z)·(log σ(z) − log σ(−z) − log p_w + log p_l), and log σ(z) − log σ(−z) = z
      t.dz = sigmoid_slope(z) * (z - log_p_w + log_p_l);
      break;
    }
    case LossKind::hinge:
      if (z < T(1)) {
        t.pref = T(1) - z;
        t.dz = T(-1);
      }
      break;
    case LossKind::ipo: {  // TRL: (Δ − 1/(2β))², on Δ itself, not z
      const T d = delta - T(1) / (T(2) * beta);
      t.pref = d * d;
      t.dz = T(2) * d / beta;
      break;
    }
    case LossKind::nca_pair:  // −log σ(r_w) − ½·log σ(−r_w) − ½·log σ(−r_l)
      of_z = false;
      t.pref = -log_sigmoid(r_w) - T(0.5) * log_sigmoid(-r_w) - T(0.5) * log_sigmoid(-r_l);
      t.g_w = beta * (-sigmoid(-r_w) + T(0.5) * sigmoid(r_w));
      t.g_l = beta * T(0.5) * sigmoid(r_l);
      break;
    case LossKind::bco_pair: {  // −log σ(r_w − δ) − log σ(δ − r_l), δ the running mean reward
      of_z = false;
      const T d = T(config.bco_delta);
      t.pref = -log_sigmoid(r_w - d) - log_sigmoid(d - r_l);
      t.g_w = -beta * sigmoid(d - r_w);
      t.g_l = beta * sigmoid(r_l - d);
      break;
    }
    case LossKind::sppo_hard: {  // (u_w − 1/(2β))² + (u_l + 1/(2β))², on the log-ratios themselves
      of_z = false;
      const T half = T(0.5) / beta, e_w = u_w - half, e_l = u_l + half;
      t.pref = e_w * e_w + e_l * e_l;
      t.g_w = T(2) * e_w;
      t.g_l = T(2) * e_l;
      break;
    }
    case LossKind::apo_zero:  // raise the chosen, lower the rejected, each against the reference
      of_z = false;
      t.pref = T(1) - sigmoid(r_w) + sigmoid(r_l);
      t.g_w = -beta * sigmoid_slope(r_w);
      t.g_l = beta * sigmoid_slope(r_l);
      break;
    case LossKind::apo_down:  // lower the chosen, the rejected more: σ(r_w) + 1 − σ(z)
      of_z = false;
      t.pref = sigmoid(r_w) + T(1) - sigmoid(z);
      t.g_w = beta * (sigmoid_slope(r_w) - sigmoid_slope(z));
      t.g_l = beta * sigmoid_slope(z);
      break;
    case LossKind::orpo:
    case LossKind::sft:
      break;
  }
  if (of_z) {
    const T d_delta = config.loss == LossKind::ipo ? T(2) * (delta - T(1) / (T(2) * beta)) : beta * t.dz;
    t.g_w = d_delta;
    t.g_l = -d_delta;
  }
  return t;
}

// ORPO's odds-ratio term −λ·log σ(log_odds) on the average log-probs, whatever the reward (λ is β, as TRL's
// ORPOConfig.beta): log_odds = (A_w − A_l) − (log(1 − e^{A_w}) − log(1 − e^{A_l})). Its derivatives in S_w,
// S_l go to *ds_w, *ds_l; *dlo = d pref / d log_odds.
template <typename T>
STAPO_HD inline T odds_ratio_term(const LossConfig& config, const PairLogps<T>& in, T* dlo, T* ds_w, T* ds_l) {
  // A response of probability 1 (A = 0, reachable after rounding) has infinite odds: A is capped just below 0
  // so that log_odds and its derivative stay finite.
  const T a_cap = T(-1e-6);
  T a_w = in.logp_chosen / in.len_chosen, a_l = in.logp_rejected / in.len_rejected;
  a_w = a_w < a_cap ? a_w : a_cap;
  a_l = a_l < a_cap ? a_l : a_cap;
  const T log_odds = (a_w - a_l) - (log1mexp(a_w) - log1mexp(a_l));
  const T lambda = T(config.beta);
  *dlo = -lambda * sigmoid(-log_odds);
  // d log_odds / dA = 1/(1 − e^A) = −1/expm1(A)
  *ds_w = *dlo * (-T(1) / loss_expm1(a_w)) / in.len_chosen;
  *ds_l = *dlo * (T(1) / loss_expm1(a_l)) / in.len_rejected;
  return -lambda * log_sigmoid(log_odds);
}

// One pair. nll_weight multiplies −N in the NLL term (see the header comment).
template <typename T>
STAPO_HD inline PairLoss<T> loss_pair(const LossConfig& config, const PairLogps<T>& in, T nll_weight) {
  const T beta = T(config.beta);
  const bool average = reward_uses_average(config.reward);
  const bool reference = reward_uses_reference(config.reward);
  // u = S, S − Sref, A or A − Aref; du/dS = 1/|y| (average) or 1.
  const T scale_w = average ? T(1) / in.len_chosen : T(1);
  const T scale_l = average ? T(1) / in.len_rejected : T(1);
  const T u_w = (in.logp_chosen - (reference ? in.ref_chosen : T(0))) * scale_w;
  const T u_l = (in.logp_rejected - (reference ? in.ref_rejected : T(0))) * scale_l;

  PairLoss<T> out;
  out.delta = u_w - u_l;
  out.z = beta * out.delta;
  if (reference) {  // TRL's DPOTrainer logs the summed log-ratios, whatever its loss averages
    out.reward_chosen = beta * (in.logp_chosen - in.ref_chosen);
    out.reward_rejected = beta * (in.logp_rejected - in.ref_rejected);
  } else if (config.loss == LossKind::orpo) {
    out.reward_chosen = beta * in.logp_chosen / in.len_chosen;
    out.reward_rejected = beta * in.logp_rejected / in.len_rejected;
  } else {
    out.reward_chosen = beta * u_w;
    out.reward_rejected = beta * u_l;
  }
  out.nll_chosen = -in.logp_chosen / in.len_chosen;

  if (config.loss == LossKind::orpo) {
    out.preference = odds_ratio_term(config, in, &out.dloss_dz, &out.dloss_dlogp_chosen, &out.dloss_dlogp_rejected);
  } else {
    const PreferenceTerm<T> t = preference_term(config, u_w, u_l);
    out.preference = t.pref;
    out.dloss_dz = t.dz;
    out.dloss_dlogp_chosen = t.g_w * scale_w;
    out.dloss_dlogp_rejected = t.g_l * scale_l;
  }
  const T alpha = T(config.alpha);
  const bool prompt = config.nll_span == NllSpan::prompt_and_response;
  const T nll = -(in.logp_chosen + (prompt ? in.prompt_chosen : T(0)));
  out.loss = out.preference + alpha * nll * nll_weight;
  out.dloss_dlogp_chosen -= alpha * nll_weight;
  out.dloss_dlogp_prompt = prompt ? -alpha * nll_weight : T(0);
  return out;
}

}  // namespace stapo

// ---- host only: names, defaults, validation, bco_pair's running mean, the CPU twins of the fused reduction ----
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"  // defines: STAPO_CHECK

namespace stapo {

// "stapo" is "stapo-sigmoid"; names as on the command line.
LossKind loss_from_name(const std::string& name);
const char* loss_name(LossKind loss);
std::vector<std::string> loss_names();  // every name loss_from_name takes, "stapo" first
RewardKind reward_from_name(const std::string& name);
const char* reward_name(RewardKind reward);

// "loss stapo-sigmoid, reward avg, beta 2, m_l 0.5, m_r 0.7 (absolute), lambda_r 1": for logs.
std::string loss_config_summary(const LossConfig& config);

// The spec's defaults for a loss (reward, β, margins, ε, α, NLL span); flags then override single fields.
LossConfig loss_defaults(LossKind loss);

const char* right_margin_name(RightMargin mode);
RightMargin right_margin_from_name(const std::string& name);  // "absolute" or "saturate"
const char* nll_span_name(NllSpan span);
NllSpan nll_span_from_name(const std::string& name);  // "response" or "prompt+response"

// Whether the loss reads P_w: an NLL term (α > 0) over prompt + response. Both engines then sum the chosen
// prompts' log-probs (PairBatch::prompt_sequence) beside the responses'.
inline bool loss_uses_prompt(const LossConfig& config) {
  return config.alpha > 0 && config.nll_span == NllSpan::prompt_and_response;
}
// pair_loss's check, shared by the CPU twin and the CUDA launcher (inline: the kernels' library does not link
// this header's .cpp): the prompt sums and their gradient array are given whenever loss_uses_prompt(config).
inline void pair_loss_check_prompt(const LossConfig& config, const void* seq_prompt_logp, const void* dprompt) {
  STAPO_CHECK((seq_prompt_logp != nullptr && dprompt != nullptr) || !loss_uses_prompt(config),
              "pair_loss: the NLL term over prompt + response (--nll-span prompt+response, orpo's default) needs the "
              "chosen prompts' log-prob sums and their gradient array: the engine must sum the positions of "
              "PairBatch::prompt_sequence as well");
}

// bco_pair's δ: the mean of every reward seen so far, TRL 0.28's RunningMoments.mean, fed one value per
// optimizer step (the mean of rewards/chosen and rewards/rejected over the step's pairs).
struct RunningMean {
  double mean = 0;
  int64_t count = 0;
  void add(double x) {
    count++;
    mean += (x - mean) / double(count);
  }
};

// CPU twins of kernels/preference_loss.h (the same layouts and contract; sums in double, in position order, so
// they are reproducible):
//   sequence_sums: seq_logp[s] = Σ_{t: sequence[t] = s} logp[t], seq_entropy likewise, seq_tokens[s] = count;
//                  with PairBatch::response_sequence: S(y), |y|; with prompt_sequence: P, |x| − 1
//   pair_loss:     losses[i] = loss_pair(config, pair i, nll_weight); dseq[s] = grad_scale·∂ℓ_i/∂S(s);
//                  seq_prompt_logp (2B, P of each sequence) and dprompt (2B: grad_scale·∂ℓ_i/∂P_w at 2i, 0 at
//                  2i + 1) may be null unless loss_uses_prompt(config)
//   token_dlogp:   dlogp[t] = dseq[response_sequence[t]], 0 where response_sequence[t] < 0
//   token_dlogp_prompt: dlogp[t] += dprompt[prompt_sequence[t]] where prompt_sequence[t] ≥ 0
template <typename T>
void sequence_sums(double* seq_logp, double* seq_entropy, double* seq_tokens, const T* logp, const T* entropy,
                   const int32_t* sequence, size_t N, int num_sequences);
void pair_loss(PairLoss<double>* losses, double* dseq, const double* seq_logp, const double* seq_tokens,
               const float* reference_logps, const LossConfig& config, double nll_weight, double grad_scale,
               int num_pairs, const double* seq_prompt_logp = nullptr, double* dprompt = nullptr);
template <typename T>
void token_dlogp(T* dlogp, const double* dseq, const int32_t* response_sequence, size_t N);
template <typename T>
void token_dlogp_prompt(T* dlogp, const double* dprompt, const int32_t* prompt_sequence, size_t N);

// Rejects, naming the flag and what to do: m_r ≤ m_l, β ≤ 0, ε outside [0, 0.5) (and ε where the loss has
// none, ε > 0 on dpo, ε = 0 on exo_pair), α < 0, λR < 0, a loss of the two log-ratios without a *-ref reward,
// bco_pair without sum-ref, and a *-ref reward without reference log-probs (`have_reference` false).
void loss_config_validate(const LossConfig& config, bool have_reference);

}  // namespace stapo
