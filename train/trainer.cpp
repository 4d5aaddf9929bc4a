// The training loop (train/trainer.h).
#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <unistd.h>

#include "common/error.h"
#include "common/file_io.h"
#include "common/progress.h"
#include "tokenizer/tokenizer_files.h"  // defines: copy_tokenizer_files
#include "train/grad_clip.h"

namespace stapo {

using nlohmann::ordered_json;

void MetricSums::add(const MetricSums& o) {
  pairs += o.pairs;
  tokens += o.tokens;
  chosen_tokens += o.chosen_tokens;
  rejected_tokens += o.rejected_tokens;
  pref_loss += o.pref_loss;
  nll += o.nll;
  reward_chosen += o.reward_chosen;
  reward_rejected += o.reward_rejected;
  correct += o.correct;
  logp_chosen += o.logp_chosen;
  logp_rejected += o.logp_rejected;
  z += o.z;
  z_max = std::max(z_max, o.z_max);
  above_right += o.above_right;
  below_left += o.below_left;
  entropy_chosen += o.entropy_chosen;
  entropy_rejected += o.entropy_rejected;
}

double MetricSums::loss(const LossConfig& config) const {
  return pref_loss / double(pairs) + config.alpha * nll / chosen_tokens;
}

ordered_json metrics_json(const MetricSums& s, const LossConfig& config, const std::string& prefix) {
  const double p = double(s.pairs);
  ordered_json j;
  j[prefix + "loss"] = s.loss(config);
  j[prefix + "rewards/chosen"] = s.reward_chosen / p;
  j[prefix + "rewards/rejected"] = s.reward_rejected / p;
  j[prefix + "rewards/margins"] = (s.reward_chosen - s.reward_rejected) / p;
  j[prefix + "rewards/accuracies"] = s.correct / p;
  j[prefix + "logps/chosen"] = s.logp_chosen / p;
  j[prefix + "logps/rejected"] = s.logp_rejected / p;
  j[prefix + "z/mean"] = s.z / p;
  j[prefix + "z/max"] = s.z_max;
  j[prefix + "z/frac_above_right"] = s.above_right / p;
  j[prefix + "z/frac_below_left"] = s.below_left / p;
  j[prefix + "entropy/chosen"] = s.entropy_chosen / s.chosen_tokens;
  j[prefix + "entropy/rejected"] = s.entropy_rejected / s.rejected_tokens;
  j[prefix + "nll/chosen"] = s.nll / s.chosen_tokens;
  return j;
}

namespace {

PairLogps<double> pair_inputs(const PairBatch& b, const std::vector<double>& logp, int i) {
  const bool has_ref = !b.reference_logps.empty();
  return {logp[2 * i],
          logp[2 * i + 1],
          double(b.response_length[2 * i]),
          double(b.response_length[2 * i + 1]),
          has_ref ? double(b.reference_logps[2 * i]) : 0.0,
          has_ref ? double(b.reference_logps[2 * i + 1]) : 0.0};
}

int64_t count_tokens(const TokenBatch& t) {
  int64_t n = 0;
  for (int32_t s : t.segments) n += s >= 0;
  return n;
}

// JSON text; invalid UTF-8 (a sample reply of a barely trained model cut inside a character) becomes U+FFFD.
std::string json_text(const ordered_json& j) { return j.dump(-1, ' ', false, ordered_json::error_handler_t::replace); }

std::string pair_id_list(const std::vector<PairBatch>& batches) {
  std::string out;
  for (const PairBatch& b : batches)
    for (int64_t id : b.pair_ids) out += (out.empty() ? "" : ", ") + std::to_string(id);
  return out;
}

}  // namespace

MetricSums step_forward_backward(Engine& engine, const std::vector<PairBatch>& micro_batches,
                                 const LossConfig& config, bool backward) {
  // The step's totals first: they normalise every micro-batch's gradient (exact accumulation).
  double pairs = 0, chosen_tokens = 0;
  for (const PairBatch& b : micro_batches) {
    pairs += b.num_pairs;
    for (int i = 0; i < b.num_pairs; i++) chosen_tokens += b.response_length[2 * i];
  }
  const double nll_weight = chosen_tokens > 0 ? pairs / chosen_tokens : 0.0;
  MetricSums sums;
  std::vector<double> logp, entropy, dlogp;
  for (const PairBatch& b : micro_batches) {
    if (b.num_pairs == 0) continue;
    STAPO_CHECK(b.response_length.size() == size_t(2 * b.num_pairs), "PairBatch: ", b.response_length.size(),
                " response lengths for ", b.num_pairs, " pairs");
    engine.forward(b, logp, entropy);
    dlogp.assign(2 * b.num_pairs, 0.0);
    for (int i = 0; i < b.num_pairs; i++) {
      const PairLogps<double> in = pair_inputs(b, logp, i);
      STAPO_CHECK(in.len_chosen > 0 && in.len_rejected > 0, "pair ", b.pair_ids[i],
                  " has an empty response: rebuild the shard with prepare_data");
      const PairLoss<double> pref = loss_pair(config, in, 0.0);
      const PairLoss<double> full = loss_pair(config, in, nll_weight);
      dlogp[2 * i] = full.dloss_dlogp_chosen / pairs;
      dlogp[2 * i + 1] = full.dloss_dlogp_rejected / pairs;
      sums.pairs++;
      sums.chosen_tokens += in.len_chosen;
      sums.rejected_tokens += in.len_rejected;
      sums.pref_loss += pref.loss;
      sums.nll += -in.logp_chosen;
      sums.reward_chosen += full.reward_chosen;
      sums.reward_rejected += full.reward_rejected;
      sums.correct += full.z > 0;
      sums.logp_chosen += in.logp_chosen;
      sums.logp_rejected += in.logp_rejected;
      sums.z += full.z;
      sums.z_max = std::max(sums.z_max, full.z);
      sums.above_right += full.z > config.gamma_right;
      sums.below_left += full.z < config.gamma_left;
      sums.entropy_chosen += entropy[2 * i];
      sums.entropy_rejected += entropy[2 * i + 1];
    }
    sums.tokens += count_tokens(b.tokens);
    if (backward) engine.backward(dlogp);
  }
  return sums;
}

Trainer::Trainer(Engine& engine, PairLoader& loader, PairLoader* eval_loader, int64_t eval_steps,
                 const TrainerConfig& config)
    : engine_(engine),
      loader_(loader),
      eval_loader_(eval_loader),
      eval_steps_(eval_steps),
      config_(config),
      steps_per_epoch_(loader.steps_per_epoch()),
      pairs_per_epoch_(std::max<int64_t>(1, int64_t(loader.epoch_order(0).size()))) {
  STAPO_CHECK(config.grad_accum >= 1, "--grad-accum must be >= 1 (got ", config.grad_accum, ")");
  STAPO_CHECK(config.max_steps > 0 || config.epochs > 0, "give --epochs > 0 or --max-steps > 0");
  STAPO_CHECK(!config.out_dir.empty(), "--out is required");
  make_directories(config.out_dir);
}

int64_t Trainer::total_steps() const {
  if (config_.max_steps > 0) return config_.max_steps;
  return config_.epochs * ((steps_per_epoch_ + config_.grad_accum - 1) / config_.grad_accum);
}

void Trainer::log(const ordered_json& line) {
  File f(config_.out_dir + "/log.jsonl", "ab");
  const std::string text = json_text(line) + "\n";
  f.write(text.data(), text.size());
  f.close();
}

ordered_json Trainer::evaluate() {
  MetricSums sums;
  eval_loader_->seek(DataPosition{});
  std::vector<PairBatch> one(1);
  for (int64_t s = 0; s < eval_steps_; s++) {
    eval_loader_->next(one[0]);
    sums.add(step_forward_backward(engine_, one, config_.loss, false));
  }
  ordered_json j;
  j["step"] = state_.step;
  j.update(metrics_json(sums, config_.loss, "eval/"));
  j["eval/pairs"] = sums.pairs;
  return j;
}

ordered_json Trainer::eval_samples() {
  const std::vector<EvalSample> samples = sampler_->sample(*engine_.weights_to_cpu());
  ordered_json j;
  j["step"] = state_.step;
  j["samples"] = ordered_json::array();
  // On a terminal the progress bar is being redrawn in place: clear its line first.
  const char* clear = isatty(fileno(stderr)) ? "\r\033[K" : "";
  for (const EvalSample& s : samples) {
    j["samples"].push_back({{"prompt", s.prompt}, {"reply", s.reply}, {"stopped", s.stopped}});
    std::string reply = json_text(s.reply);  // quoted, newlines escaped: one line per sample
    if (reply.size() > 100) reply = reply.substr(0, 96) + "...\"";
    fprintf(stderr, "%ssample at step %lld: %s -> %s\n", clear, (long long)state_.step,
            json_text(s.prompt).c_str(), reply.c_str());
  }
  return j;
}

std::string Trainer::save_checkpoint(const std::string& name) {
  namespace fs = std::filesystem;
  const std::string final_dir = config_.out_dir + "/" + name;
  const std::string tmp = config_.out_dir + "/." + name + ".tmp";
  fs::remove_all(tmp);
  make_directories(tmp);
  engine_.save_model(tmp);
  if (!config_.tokenizer_dir.empty()) copy_tokenizer_files(config_.tokenizer_dir, tmp);
  engine_.save_optimizer(tmp + "/optimizer.bin");
  ordered_json state;
  state["format"] = "stapo-trainer-state";
  state["version"] = 1;
  state["step"] = state_.step;
  state["updates"] = state_.updates;
  state["skipped_nonfinite"] = state_.skipped_nonfinite;
  state["data_epoch"] = state_.position.epoch;
  state["data_index"] = state_.position.index;
  state["seed"] = config_.seed;  // the dataloader's order is a function of (seed, epoch): its whole RNG state
  state["loss"] = loss_name(config_.loss.loss);
  state["reward"] = reward_name(config_.loss.reward);
  state["beta"] = config_.loss.beta;
  write_file_atomic(tmp + "/trainer_state.json", state.dump(2) + "\n");
  replace_directory(tmp, final_dir);
  state_.last_checkpoint = final_dir;
  return final_dir;
}

// Every log line carries "step"; a line that does not parse (a crash mid-write) goes too, and is counted.
void Trainer::drop_log_after(int64_t step) {
  const std::string path = config_.out_dir + "/log.jsonl";
  if (!std::filesystem::exists(path)) return;
  std::istringstream in(read_text_file(path));
  std::string kept, line;
  size_t later = 0, unreadable = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
      ++unreadable;
    } else if (j["step"].get<int64_t>() > step) {
      ++later;
    } else {
      kept += line + "\n";
    }
  }
  if (later + unreadable == 0) return;
  write_file_atomic(path, kept);
  fprintf(stderr, "resume: removed %zu lines of %s from steps after %lld (they run again)", later, path.c_str(),
          (long long)step);
  if (unreadable > 0) fprintf(stderr, " and %zu unreadable lines", unreadable);
  fprintf(stderr, "\n");
}

void Trainer::resume(const std::string& dir) {
  const std::string path = dir + "/trainer_state.json";
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not a trainer state (", e.what(), ")");
  }
  STAPO_CHECK(state.value("format", "") == "stapo-trainer-state" && state.value("version", 0) == 1, path,
              ": not a version-1 stapo trainer state");
  STAPO_CHECK(state["seed"].get<uint64_t>() == config_.seed, path, ": the run used --seed ", state["seed"],
              ", this one ", config_.seed, ": the data order would differ; pass the same --seed");
  STAPO_CHECK(state["loss"].get<std::string>() == loss_name(config_.loss.loss), path, ": the run used --loss ",
              state["loss"], ", this one ", loss_name(config_.loss.loss));
  engine_.load_optimizer(dir + "/optimizer.bin");
  state_.step = state["step"];
  state_.updates = state["updates"];
  state_.skipped_nonfinite = state["skipped_nonfinite"];
  state_.position = DataPosition{state["data_epoch"], state["data_index"]};
  state_.last_checkpoint = dir;
  loader_.seek(state_.position);
  drop_log_after(state_.step);
}

void Trainer::train() {
  const int64_t total = total_steps();
  const int64_t warmup = lr_warmup_steps(config_.warmup_ratio, total);
  Progress progress("train", total);
  std::vector<PairBatch> micro(config_.grad_accum);
  while (state_.step < total) {
    const auto start = std::chrono::steady_clock::now();
    for (PairBatch& b : micro) loader_.next(b);
    engine_.zero_grad();
    const MetricSums sums = step_forward_backward(engine_, micro, config_.loss, true);
    const double loss = sums.loss(config_.loss);
    const double grad_norm = std::sqrt(engine_.grad_sum_squares());
    const double lr = lr_at(config_.schedule, config_.lr, state_.step, warmup, total);
    const bool finite = std::isfinite(loss) && std::isfinite(grad_norm);
    state_.step++;
    state_.position = loader_.position();
    if (!finite && !config_.skip_nonfinite)
      fail("non-finite ", std::isfinite(loss) ? "gradient norm" : "loss", " (loss ", loss, ", grad_norm ", grad_norm,
           ") at step ", state_.step, ", pairs ", pair_id_list(micro), ". Last good checkpoint: ",
           state_.last_checkpoint.empty() ? "none yet (no --save-every step reached)" : state_.last_checkpoint,
           ". Resume from it with a lower --lr, or pass --skip-nonfinite to drop such steps");
    if (finite) {
      state_.updates++;
      engine_.optimizer_step(lr, grad_clip_factor(grad_norm, config_.max_grad_norm), config_.adamw, state_.updates);
    } else {
      state_.skipped_nonfinite++;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ordered_json line;
    line["step"] = state_.step;
    line["epoch"] = double(state_.position.epoch) + double(state_.position.index) / double(pairs_per_epoch_);
    line.update(metrics_json(sums, config_.loss, ""));
    line["grad_norm"] = grad_norm;
    line["lr"] = lr;
    line["tokens_per_s"] = double(sums.tokens) / seconds;
    line["pairs"] = sums.pairs;
    line["skipped_nonfinite"] = state_.skipped_nonfinite;
    const Engine::StepReport report = engine_.step_report();
    if (!report.metrics.empty()) line.update(report.metrics);
    log(line);
    progress.update(state_.step, sums.tokens,
                    cat("loss ", loss, " acc ", sums.correct / double(sums.pairs), " z ", sums.z / double(sums.pairs),
                        report.progress.empty() ? "" : " ", report.progress));
    const bool last = state_.step == total;
    const bool eval_due = (config_.eval_every > 0 && state_.step % config_.eval_every == 0) || last;
    if (eval_due && eval_loader_) log(evaluate());
    if (eval_due && sampler_) log(eval_samples());
    if (last) {
      save_checkpoint("final");
    } else if (config_.save_every > 0 && state_.step % config_.save_every == 0) {
      save_checkpoint(cat("checkpoint-", state_.step));
    }
  }
  progress.finish();
}

}  // namespace stapo
