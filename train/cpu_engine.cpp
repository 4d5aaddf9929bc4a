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
CpuEngine<T>::CpuEngine(std::unique_ptr<CpuModel<T>> model, Collective* data_parallel, bool zero1, MomentKind moments)
    : model_(std::move(model)),
      ranks_(data_parallel && data_parallel->world_size() > 1 ? data_parallel : nullptr),
      moments_(moments) {
  const size_t n = model_->num_params();
  sharded_ = ranks_ && zero1;
  norm_part_ = ranks_ ? shard_range(n, ranks_->rank(), ranks_->world_size()) : ShardRange{0, n};
  updates_ = sharded_ ? norm_part_ : ShardRange{0, n};
  STAPO_CHECK(moments == MomentKind::fp32 || sizeof(T) == sizeof(float),
              "CpuEngine: 8-bit moments are for the fp32 engine (the kernel's twin runs in float)");
  STAPO_CHECK(moments == MomentKind::fp32 || !sharded_,
              "--moments 8bit with ZeRO-1 over ", ranks_ ? ranks_->world_size() : 1, " ranks: the shard ranges would "
              "cut through the 8-bit blocks; pass --zero 0 (every rank updates everything) or --moments fp32");
}

template <typename T>
void CpuEngine<T>::ensure_moments() {
  if (moments_ == MomentKind::fp32) {
    if (!m_.empty() || updates_.count == 0) return;
    m_.assign(updates_.count, T(0));
    v_.assign(updates_.count, T(0));
    return;
  }
  if (!q8_layout_.kind.empty()) return;
  q8_layout_ = q8_moment_layout(model_param_specs(model_->config()), 1);  // the model's buffer is packed too
  q8_ = q8_moment_state(q8_layout_);
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
  const size_t n = model_->num_params();
  T* grad = model_->grad_data();
  if (ranks_ && sharded_) ranks_->reduce_scatter(grad, n, element_type_of<T>(), nullptr);
  if (ranks_ && !sharded_) ranks_->all_reduce(grad, n, element_type_of<T>(), nullptr);
  // Σ g² of this rank's part and whether any loss of the step was not finite, summed over ranks: every rank
  // takes the same decision.
  double sums[2] = {grad_sum_squares(grad + norm_part_.begin, norm_part_.count), step_has_nonfinite_loss_ ? 1.0 : 0.0};
  if (ranks_) ranks_->all_reduce_host(sums, 2, ReduceOp::sum);
  const double norm = std::sqrt(sums[0]);
  results_.grad_norm = norm;
  results_.updated = std::isfinite(norm) && sums[1] == 0;
  if (!results_.updated) return;
  ensure_moments();
  const double grad_scale = grad_clip_factor(norm, u.max_grad_norm);
  T* base = model_->param_data();
  std::vector<Parameter<T>>& params = model_->parameters();
  for (size_t k = 0; k < params.size(); ++k) {  // each parameter's part inside updates_
    const Parameter<T>& p = params[k];
    const size_t offset = size_t(p.data - base);
    const double decay = p.is_norm ? 0.0 : u.adamw.weight_decay;
    if (moments_ == MomentKind::q8) {
      if constexpr (sizeof(T) == sizeof(float)) {  // the constructor allows 8-bit moments for float only
        AdamWState s;  // the whole tensor: 8-bit moments are never sharded
        s.n = p.numel;
        s.master = p.data;
        const size_t at = q8_layout_.offset[k];
        const MomentKind kind = q8_layout_.kind[k];
        if (kind == MomentKind::fp32) {
          s.m = q8_.m.data() + at;
          s.v = q8_.v.data() + at;
        } else {
          s.m_code = q8_.m_code.data() + at;
          s.v_code = q8_.v_code.data() + at;
          s.m_absmax = q8_.m_absmax.data() + q8_layout_.block[k];
          s.v_absmax = q8_.v_absmax.data() + q8_layout_.block[k];
        }
        const AdamWStep<float> step =
            adamw_step_make<float>(u.lr, decay, u.adamw.beta1, u.adamw.beta2, u.adamw.eps, u.t);
        adamw_compact_update(s, MasterKind::fp32, kind, p.grad, step, float(grad_scale), 0);
      }
      continue;
    }
    const size_t lo = std::max(offset, updates_.begin), hi = std::min(offset + p.numel, updates_.end());
    if (hi <= lo) continue;
    adamw_update(base + lo, grad + lo, m_.data() + (lo - updates_.begin), v_.data() + (lo - updates_.begin), hi - lo,
                 u.lr, decay, u.adamw, u.t, grad_scale);
  }
  if (sharded_) ranks_->all_gather(base, n, element_type_of<T>(), nullptr);
}

template <typename T>
StepResults CpuEngine<T>::take_results() {
  StepResults out = std::move(results_);
  results_ = StepResults{};
  return out;
}

template <typename T>
void CpuEngine<T>::save_model(const std::string& dir) {
  // Every rank holds the same weights: rank 0 writes them, in T's precision so that a resume is exact.
  if (!ranks_ || ranks_->rank() == 0) model_save_hf(*model_, dir, sizeof(T) == 8 ? DType::F64 : DType::F32);
}

template <typename T>
void CpuEngine<T>::save_optimizer(const std::string& path) {
  ensure_moments();
  const size_t n = model_->num_params();
  const bool writer = !ranks_ || ranks_->rank() == 0;
  if (moments_ == MomentKind::q8) {  // never sharded: every rank holds the whole state
    if (writer) optimizer_state_write_q8(path, model_param_specs(model_->config()), q8_);
    return;
  }
  if (!sharded_) {
    if (writer) optimizer_state_write(path, m_.data(), v_.data(), n);
    return;
  }
  // The whole moments, gathered from every rank's range: the file does not depend on the world size.
  std::vector<T> m(n), v(n);
  std::copy(m_.begin(), m_.end(), m.begin() + ptrdiff_t(updates_.begin));
  std::copy(v_.begin(), v_.end(), v.begin() + ptrdiff_t(updates_.begin));
  ranks_->all_gather(m.data(), n, element_type_of<T>(), nullptr);
  ranks_->all_gather(v.data(), n, element_type_of<T>(), nullptr);
  if (writer) optimizer_state_write(path, m.data(), v.data(), n);
}

template <typename T>
void CpuEngine<T>::load_optimizer(const std::string& path) {
  ensure_moments();
  if (moments_ == MomentKind::q8)
    optimizer_state_read_q8(path, model_param_specs(model_->config()), q8_);
  else
    optimizer_state_read(path, m_.data(), v_.data(), model_->num_params(), updates_.begin, updates_.count);
}

template <typename T>
std::string CpuEngine<T>::description() const {
  std::string out = cat("cpu ", sizeof(T) == 4 ? "fp32" : "fp64",
                        moments_ == MomentKind::q8 ? ", 8-bit AdamW moments (fp32 for the embedding)" : "", ", ",
                        model_->num_params(), " parameters");
  if (ranks_)
    out += cat(", data parallel over ", ranks_->world_size(), " ranks (", ranks_->backend(), ")",
               sharded_ ? cat(", ZeRO-1: rank ", ranks_->rank(), " updates parameters [", updates_.begin, ", ",
                              updates_.end(), ")")
                        : std::string(", every rank updates every parameter"));
  return out;
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
