// Every preference loss of docs/stapo-loss.md, per pair: the one definition of each loss and its gradient,
// shared by the CPU engine (train/cpu_engine.h, T = double) and the CUDA engine's fused reduction
// (kernels/preference_loss.cu, T = float, called from device code); it sits in model/ops/, below both users.
// No std:: containers, exceptions or allocation inside STAPO_HD functions. At the end of the file, host only:
// names, defaults, validation, and the CPU twins of the kernels' last steps of the fused reduction.
//
// Per pair the inputs are the sequence log-probs S_w, S_l (sums over response tokens), the token counts
// |y_w|, |y_l| and the reference sums Sref_w, Sref_l (ignored by rewards without reference). The outputs are
// the pair's loss ℓ, the contrastive logit's Δ and z = β·Δ, dℓ/dz, and the chain rule to ∂ℓ/∂S_w, ∂ℓ/∂S_l (the
// only numbers the backward pass needs), plus the reward metrics.
//
// StaPO's margins m_l < m_r are in units of Δ (the paper's m_l, m_r, SimPO's convention); in z units they are
// γL = β·m_l and γR = β·m_r. With `RightMargin::saturate` the loss is evaluated at min(Δ, m_r): as the paper's
// form at or below m_r, flat above it (a pair above the right margin is neither pushed up nor pushed back).
//
// The NLL term (cpo, orpo, sft, stapo with α > 0) is a batch token mean, as TRL's CPOTrainer computes it:
//   L_batch = (1/B) Σ_i pref(z_i) + α · Σ_i (−S_w,i) / Σ_i |y_w,i|
//           = (1/B) Σ_i [ pref(z_i) + α · (−S_w,i) · nll_weight ],   nll_weight = B / Σ_i |y_w,i|.
// So each pair takes `nll_weight`: B/Σ|y_w| for TRL's batch token mean (what the trainer passes, with B and
// Σ|y_w| counted over the whole optimizer step so that gradient accumulation is exact), or 1/|y_w| for the
// per-pair mean the spec calls NLL_w. ℓ returned here is the bracket; the trainer divides by B.
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

enum class LossKind : int { stapo_sigmoid, stapo_hinge, dpo, simpo, hinge, ipo, cpo, orpo, sft };
enum class RewardKind : int { avg, sum, sum_ref, avg_ref };
// StaPO above its right margin: `absolute` pushes Δ back down (the paper's form), `saturate` stops there.
enum class RightMargin : int { absolute, saturate };

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
  double label_smoothing = 0.0;  // dpo, simpo, cpo (TRL's sigmoid forms): ε
  double orpo_lambda = 0.1;      // orpo: weight λ of −log σ(log_odds)
  double alpha = 0.0;            // NLL weight: cpo 1, orpo 1, sft 1, stapo* optional (0)
};

template <typename T>
struct PairLogps {
  T logp_chosen, logp_rejected;  // S(y_w), S(y_l)
  T len_chosen, len_rejected;    // |y_w|, |y_l| (> 0)
  T ref_chosen, ref_rejected;    // Sref(y_w), Sref(y_l); unused without a reference
};

template <typename T>
struct PairLoss {
  T loss;              // pref(z) + α·(−S_w)·nll_weight
  T preference;        // pref(z) alone (TRL's per-pair `losses`)
  T delta;             // Δ of the reward (orpo: Δ of the avg reward; its own term is on the log-odds)
  T z;                 // β·Δ
  T dloss_dz;          // d pref / dz (orpo: d/d log_odds; sft: 0)
  T dloss_dlogp_chosen;    // ∂ℓ/∂S_w, NLL term included
  T dloss_dlogp_rejected;  // ∂ℓ/∂S_l
  T reward_chosen;     // β·(S_w − Sref_w), β·(A_w − Aref_w), β·A_w or β·S_w by reward
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

// One pair. nll_weight multiplies −S_w in the NLL term (see the header comment).
template <typename T>
STAPO_HD inline PairLoss<T> loss_pair(const LossConfig& config, const PairLogps<T>& in, T nll_weight) {
  const T beta = T(config.beta);
  const bool average = reward_uses_average(config.reward);
  const bool reference = reward_uses_reference(config.reward);
  // Δ = u_w − u_l, with u = S, S − Sref, A or A − Aref; du/dS = 1/|y| (average) or 1.
  const T scale_w = average ? T(1) / in.len_chosen : T(1);
  const T scale_l = average ? T(1) / in.len_rejected : T(1);
  const T u_w = (in.logp_chosen - (reference ? in.ref_chosen : T(0))) * scale_w;
  const T u_l = (in.logp_rejected - (reference ? in.ref_rejected : T(0))) * scale_l;
  const T delta = u_w - u_l;

  PairLoss<T> out;
  out.delta = delta;
  out.z = beta * delta;
  out.reward_chosen = beta * u_w;
  out.reward_rejected = beta * u_l;
  out.nll_chosen = -in.logp_chosen / in.len_chosen;

  T pref = T(0), dpref_ddelta = T(0);  // the preference term and its derivative in Δ
  T dz = T(0);
  const T eps = T(config.label_smoothing);
  switch (config.loss) {
    case LossKind::stapo_sigmoid:
    case LossKind::stapo_hinge: {
      const T ml = T(config.margin_left), mr = T(config.margin_right), lr = T(config.lambda_right);
      const bool flat = config.right_margin == RightMargin::saturate && delta > mr;
      const T d = flat ? mr : delta;
      const T left = beta * (d - ml), right = beta * (mr - d);  // z − γL and γR − z at Δ = d
      if (config.loss == LossKind::stapo_sigmoid) {
        pref = -log_sigmoid(left) - lr * log_sigmoid(right);
        dz = -sigmoid(-left) + lr * sigmoid(-right);
      } else {
        if (left < T(0)) {
          pref -= left;
          dz -= T(1);
        }
        if (right < T(0)) {
          pref -= lr * right;
          dz += lr;
        }
      }
      if (flat) dz = T(0);
      break;
    }
    case LossKind::dpo:
    case LossKind::cpo:
      pref = smoothed_sigmoid_loss(out.z, eps, &dz);
      break;
    case LossKind::simpo:
      pref = smoothed_sigmoid_loss(out.z - T(config.gamma), eps, &dz);
      break;
    case LossKind::hinge:
      if (out.z < T(1)) {
        pref = T(1) - out.z;
        dz = T(-1);
      }
      break;
    case LossKind::ipo: {  // TRL: (Δ − 1/(2β))², on Δ itself, not z
      const T d = delta - T(1) / (T(2) * beta);
      pref = d * d;
      dpref_ddelta = T(2) * d;
      dz = dpref_ddelta / beta;
      break;
    }
    case LossKind::orpo: {  // on the average log-probs whatever the reward: TRL's odds ratio
      // A response of probability 1 (A = 0, reachable after rounding) has infinite odds: A is capped just
      // below 0 so that log_odds and its derivative stay finite.
      const T a_cap = T(-1e-6);
      T a_w = in.logp_chosen / in.len_chosen, a_l = in.logp_rejected / in.len_rejected;
      a_w = a_w < a_cap ? a_w : a_cap;
      a_l = a_l < a_cap ? a_l : a_cap;
      const T log_odds = (a_w - a_l) - (log1mexp(a_w) - log1mexp(a_l));
      const T lambda = T(config.orpo_lambda);
      pref = -lambda * log_sigmoid(log_odds);
      dz = -lambda * sigmoid(-log_odds);  // d pref / d log_odds
      // d log_odds / dA = 1/(1 − e^A) = −1/expm1(A)
      const T dlo_dw = -T(1) / loss_expm1(a_w), dlo_dl = T(1) / loss_expm1(a_l);
      out.dloss_dlogp_chosen = dz * dlo_dw / in.len_chosen;
      out.dloss_dlogp_rejected = dz * dlo_dl / in.len_rejected;
      break;
    }
    case LossKind::sft:
      break;
  }
  if (config.loss != LossKind::orpo) {
    if (config.loss != LossKind::ipo) dpref_ddelta = beta * dz;
    out.dloss_dlogp_chosen = dpref_ddelta * scale_w;
    out.dloss_dlogp_rejected = -dpref_ddelta * scale_l;
  }
  out.dloss_dz = dz;
  out.preference = pref;
  const T alpha = T(config.alpha);
  out.loss = pref + alpha * (-in.logp_chosen) * nll_weight;
  out.dloss_dlogp_chosen -= alpha * nll_weight;
  return out;
}

}  // namespace stapo

// ---- host only: names, defaults, validation, the CPU twins of the fused reduction's last steps ----
#include <cstddef>
#include <cstdint>
#include <string>

namespace stapo {

// "stapo" is "stapo-sigmoid"; names as on the command line.
LossKind loss_from_name(const std::string& name);
const char* loss_name(LossKind loss);
RewardKind reward_from_name(const std::string& name);
const char* reward_name(RewardKind reward);

// "loss stapo-sigmoid, reward avg, beta 2, m_l 0.5, m_r 0.7 (absolute), lambda_r 1": for logs.
std::string loss_config_summary(const LossConfig& config);

// The spec's defaults for a loss (reward, β, margins, α); flags then override single fields.
LossConfig loss_defaults(LossKind loss);

const char* right_margin_name(RightMargin mode);
RightMargin right_margin_from_name(const std::string& name);  // "absolute" or "saturate"

// CPU twins of kernels/preference_loss.h (the same layouts and contract; sums in double, in position order, so
// they are reproducible):
//   sequence_sums: seq_logp[s] = Σ_{t: response_sequence[t] = s} logp[t], seq_entropy likewise, seq_tokens[s] = |y|
//   pair_loss:     losses[i] = loss_pair(config, pair i, nll_weight); dseq[s] = grad_scale·∂ℓ_i/∂S(s)
//   token_dlogp:   dlogp[t] = dseq[response_sequence[t]], 0 where response_sequence[t] < 0
template <typename T>
void sequence_sums(double* seq_logp, double* seq_entropy, double* seq_tokens, const T* logp, const T* entropy,
                   const int32_t* response_sequence, size_t N, int num_sequences);
void pair_loss(PairLoss<double>* losses, double* dseq, const double* seq_logp, const double* seq_tokens,
               const float* reference_logps, const LossConfig& config, double nll_weight, double grad_scale,
               int num_pairs);
template <typename T>
void token_dlogp(T* dlogp, const double* dseq, const int32_t* response_sequence, size_t N);

// Rejects m_r ≤ m_l, β ≤ 0, ε outside [0, 0.5), α < 0, λR < 0, and a *-ref reward without reference
// log-probs (`have_reference` false) with an error naming the flag and what to do.
void loss_config_validate(const LossConfig& config, bool have_reference);

}  // namespace stapo
