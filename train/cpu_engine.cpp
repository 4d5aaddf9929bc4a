// The CPU engine (train/cpu_engine.h). Its optimizer state file is train/optimizer_state.h's, shared with the
// CUDA engine (the moments in the order of the model's parameter buffer).
#include "train/cpu_engine.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "train/grad_clip.h"
#include "train/optimizer_state.h"

namespace stapo {

template <typename T>
CpuEngine<T>::CpuEngine(std::unique_ptr<CpuModel<T>> model) : model_(std::move(model)) {}

template <typename T>
void CpuEngine<T>::ensure_moments() {
  if (!m_.empty()) return;
  m_.assign(model_->num_params(), T(0));
  v_.assign(model_->num_params(), T(0));
}

template <typename T>
void CpuEngine<T>::run_pairs(const PairBatch& batch, const LossConfig& loss, const StepScale& scale, bool backward) {
  pair_batch_validate(batch, model_->config().vocab_size);
  const size_t n = size_t(batch.tokens.rows) * batch.tokens.T;
  const int pairs = batch.num_pairs, sequences = 2 * pairs;
  logp_.resize(n);
  entropy_.resize(n);
  model_->forward(batch.tokens, logp_.data(), entropy_.data());
  std::vector<double> seq_logp(sequences), seq_entropy(sequences), seq_tokens(sequences), dseq(sequences);
  std::vector<PairLoss<double>> losses(pairs);
  sequence_sums(seq_logp.data(), seq_entropy.data(), seq_tokens.data(), logp_.data(), entropy_.data(),
                batch.response_sequence.data(), n, sequences);
  // The chosen prompt's log-prob, for an NLL term over prompt + response (TRL's ORPO).
  const bool prompt = loss_uses_prompt(loss);
  STAPO_CHECK(!prompt || !batch.prompt_sequence.empty(),
              "CpuEngine: the NLL term over prompt + response needs PairBatch::prompt_sequence (the dataloader's)");
  std::vector<double> seq_prompt_logp, seq_prompt_entropy, seq_prompt_tokens, dprompt;
  if (prompt) {
    for (auto* v : {&seq_prompt_logp, &seq_prompt_entropy, &seq_prompt_tokens, &dprompt}) v->resize(sequences);
    sequence_sums(seq_prompt_logp.data(), seq_prompt_entropy.data(), seq_prompt_tokens.data(), logp_.data(),
                  entropy_.data(), batch.prompt_sequence.data(), n, sequences);
  }
  const float* ref = batch.reference_logps.empty() ? nullptr : batch.reference_logps.data();
  pair_loss(losses.data(), dseq.data(), seq_logp.data(), seq_tokens.data(), ref, loss, scale.nll_weight(),
            1.0 / scale.pairs, pairs, prompt ? seq_prompt_logp.data() : nullptr, prompt ? dprompt.data() : nullptr);
  append_pair_results(results_.pairs, pairs, batch.pair_ids.data(), ref, seq_logp.data(), seq_entropy.data(),
                      seq_tokens.data(), losses.data(), prompt ? seq_prompt_logp.data() : nullptr,
                      prompt ? seq_prompt_tokens.data() : nullptr);
  for (const PairLoss<double>& l : losses) step_has_nonfinite_loss_ |= !std::isfinite(l.loss);
  if (!backward) return;
  dlogp_.resize(n);
  token_dlogp(dlogp_.data(), dseq.data(), batch.response_sequence.data(), n);
  if (prompt) token_dlogp_prompt(dlogp_.data(), dprompt.data(), batch.prompt_sequence.data(), n);
  model_->backward(dlogp_.data());
}

template <typename T>
void CpuEngine<T>::zero_grad() {
  model_->zero_grad();
  step_has_nonfinite_loss_ = false;
}

template <typename T>
void CpuEngine<T>::optimizer_step(const OptimizerUpdate& u) {
  const double norm = std::sqrt(grad_sum_squares(model_->grad_data(), model_->num_params()));
  results_.grad_norm = norm;
  results_.updated = std::isfinite(norm) && !step_has_nonfinite_loss_;
  if (!results_.updated) return;
  ensure_moments();
  const double grad_scale = grad_clip_factor(norm, u.max_grad_norm);
  T* base = model_->param_data();
  for (Parameter<T>& p : model_->parameters()) {
    const size_t offset = size_t(p.data - base);
    adamw_update(p.data, p.grad, m_.data() + offset, v_.data() + offset, p.numel, u.lr,
                 p.is_norm ? 0.0 : u.adamw.weight_decay, u.adamw, u.t, grad_scale);
  }
}

template <typename T>
StepResults CpuEngine<T>::take_results() {
  StepResults out = std::move(results_);
  results_ = StepResults{};
  return out;
}

template <typename T>
void CpuEngine<T>::save_model(const std::string& dir) {
  model_save_hf(*model_, dir, DType::F32);  // F32 whatever T: what transformers loads, and exact for float
}

template <typename T>
void CpuEngine<T>::save_optimizer(const std::string& path) {
  ensure_moments();
  optimizer_state_write(path, m_.data(), v_.data(), m_.size());
}

template <typename T>
void CpuEngine<T>::load_optimizer(const std::string& path) {
  ensure_moments();
  optimizer_state_read(path, m_.data(), v_.data(), m_.size());
}

template <typename T>
std::string CpuEngine<T>::description() const {
  return cat("cpu ", sizeof(T) == 4 ? "fp32" : "fp64", ", ", model_->num_params(), " parameters");
}

template <typename T>
std::unique_ptr<CpuModel<float>> CpuEngine<T>::weights_to_cpu() {
  auto copy = std::make_unique<CpuModel<float>>(model_->config());
  const T* from = model_->param_data();
  std::transform(from, from + model_->num_params(), copy->param_data(), [](T x) { return float(x); });
  return copy;
}

template class CpuEngine<float>;
template class CpuEngine<double>;

}  // namespace stapo
