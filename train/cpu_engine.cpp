// The CPU engine (train/cpu_engine.h). Its optimizer state file is train/optimizer_state.h's, shared with the
// CUDA engine (the moments in the order of the model's parameter buffer).
#include "train/cpu_engine.h"

#include <algorithm>

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
void CpuEngine<T>::forward(const PairBatch& batch, std::vector<double>& logp_sum, std::vector<double>& entropy_sum) {
  const TokenBatch& tokens = batch.tokens;
  const size_t n = size_t(tokens.rows) * tokens.T;
  STAPO_CHECK(batch.response_sequence.size() == n, "PairBatch: response_sequence has ", batch.response_sequence.size(),
              " entries, expected rows·T = ", n);
  logp_.resize(n);
  entropy_.resize(n);
  model_->forward(tokens, logp_.data(), entropy_.data());
  const int sequences = 2 * batch.num_pairs;
  logp_sum.assign(sequences, 0.0);
  entropy_sum.assign(sequences, 0.0);
  for (size_t i = 0; i < n; i++) {  // fixed order: sums are reproducible
    const int s = batch.response_sequence[i];
    if (s < 0) continue;
    STAPO_CHECK(s < sequences, "PairBatch: response_sequence ", s, " at position ", i, " but the batch has ",
                sequences, " sequences");
    logp_sum[s] += double(logp_[i]);
    entropy_sum[s] += double(entropy_[i]);
  }
  response_sequence_ = batch.response_sequence;
}

template <typename T>
void CpuEngine<T>::backward(const std::vector<double>& dlogp_sum) {
  const size_t n = response_sequence_.size();
  dlogp_.assign(n, T(0));
  for (size_t i = 0; i < n; i++) {
    const int s = response_sequence_[i];
    if (s >= 0) dlogp_[i] = T(dlogp_sum[s]);
  }
  model_->backward(dlogp_.data());
}

template <typename T>
double CpuEngine<T>::grad_sum_squares() {
  return stapo::grad_sum_squares(model_->grad_data(), model_->num_params());
}

template <typename T>
void CpuEngine<T>::optimizer_step(double lr, double grad_scale, const AdamWConfig& config, int64_t t) {
  ensure_moments();
  T* base = model_->param_data();
  for (Parameter<T>& p : model_->parameters()) {
    const size_t offset = size_t(p.data - base);
    adamw_update(p.data, p.grad, m_.data() + offset, v_.data() + offset, p.numel, lr,
                 p.is_norm ? 0.0 : config.weight_decay, config, t, grad_scale);
  }
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
