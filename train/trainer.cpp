// The training loop (train/trainer.h).
#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <unistd.h>

#include "common/error.h"
#include "common/file_io.h"
#include "common/progress.h"
#include "tokenizer/tokenizer_files.h"  // defines: copy_tokenizer_files
#include "train/run_dir.h"  // defines: state_field, trainer_state_read
#include "train/step0.h"

namespace stapo {

using nlohmann::ordered_json;

std::vector<double*> MetricSums::sums() {
  return {&chosen_tokens, &rejected_tokens, &pref_loss,   &nll,         &prompt_nll,     &prompt_tokens,
          &reward_chosen, &reward_rejected, &correct,     &logp_chosen, &logp_rejected,  &z,
          &delta,         &above_right,     &below_left,  &entropy_chosen, &entropy_rejected};
}

void MetricSums::add(const MetricSums& o) {
  pairs += o.pairs;
  tokens += o.tokens;
  const std::vector<double*> mine = sums(), theirs = const_cast<MetricSums&>(o).sums();
  for (size_t i = 0; i < mine.size(); i++) *mine[i] += *theirs[i];
  z_max = std::max(z_max, o.z_max);
}

void MetricSums::all_reduce(Collective& ranks) {
  if (ranks.world_size() == 1) return;
  const std::vector<double*> fields = sums();
  std::vector<double> values{double(pairs), double(tokens)};
  for (double* f : fields) values.push_back(*f);
  ranks.all_reduce_host(values.data(), values.size(), ReduceOp::sum);
  pairs = int64_t(values[0]);
  tokens = int64_t(values[1]);
  for (size_t i = 0; i < fields.size(); i++) *fields[i] = values[i + 2];
  ranks.all_reduce_host(&z_max, 1, ReduceOp::max);
}

void MetricSums::add(const PairResult& r, const LossConfig& config) {
  const PairLogps<double>& in = r.logps;
  pairs++;
  chosen_tokens += in.len_chosen;
  rejected_tokens += in.len_rejected;
  pref_loss += r.loss.preference;
  nll += -in.logp_chosen;
  if (config.nll_span == NllSpan::prompt_and_response) {
    prompt_nll += -in.prompt_chosen;
    prompt_tokens += in.prompt_tokens_chosen;
  }
  reward_chosen += r.loss.reward_chosen;
  reward_rejected += r.loss.reward_rejected;
  correct += r.loss.reward_chosen > r.loss.reward_rejected;
  logp_chosen += in.logp_chosen;
  logp_rejected += in.logp_rejected;
  z += r.loss.z;
  z_max = std::max(z_max, r.loss.z);
  delta += r.loss.delta;
  above_right += r.loss.delta > config.margin_right;
  below_left += r.loss.delta < config.margin_left;
  entropy_chosen += r.entropy_chosen;
  entropy_rejected += r.entropy_rejected;
}

double MetricSums::loss(const LossConfig& config) const {
  return pref_loss / double(pairs) + config.alpha * (nll + prompt_nll) / (chosen_tokens + prompt_tokens);
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
  j[prefix + "delta/mean"] = s.delta / p;
  j[prefix + "z/frac_above_right"] = s.above_right / p;
  j[prefix + "z/frac_below_left"] = s.below_left / p;
  j[prefix + "entropy/chosen"] = s.entropy_chosen / s.chosen_tokens;
  j[prefix + "entropy/rejected"] = s.entropy_rejected / s.rejected_tokens;
  j[prefix + "nll/chosen"] = s.nll / s.chosen_tokens;
  return j;
}

ordered_json quantiles_json(const std::vector<PairResult>& pairs, const std::string& prefix) {
  ordered_json j;
  if (pairs.empty()) return j;
  for (const char* name : {"delta", "z"}) {
    std::vector<double> v;
    for (const PairResult& r : pairs) v.push_back(name[0] == 'z' ? r.loss.z : r.loss.delta);
    std::sort(v.begin(), v.end());
    for (int q : {5, 25, 50, 75, 95}) {  // linear interpolation between order statistics, as numpy's default
      const double at = q / 100.0 * double(v.size() - 1);
      const size_t lo = size_t(at), hi = std::min(lo + 1, v.size() - 1);
      j[cat(prefix, name, q < 10 ? "/p0" : "/p", q)] = v[lo] + (at - double(lo)) * (v[hi] - v[lo]);
    }
  }
  return j;
}

StepScale step_scale(const std::vector<PairBatch>& micro_batches, const LossConfig& config) {
  StepScale scale{0, 0};
  const bool prompt = config.nll_span == NllSpan::prompt_and_response;
  for (const PairBatch& b : micro_batches) {
    scale.pairs += b.num_pairs;
    for (int i = 0; i < b.num_pairs; i++) scale.nll_tokens += b.response_length[2 * i];
    if (prompt)  // the chosen sequences' (even) predicted prompt tokens
      for (int32_t s : b.prompt_sequence) scale.nll_tokens += s >= 0 && s % 2 == 0;
  }
  return scale;
}

int64_t count_tokens(const std::vector<PairBatch>& micro_batches) {
  int64_t n = 0;
  for (const PairBatch& b : micro_batches)
    for (int32_t s : b.tokens.segments) n += s >= 0;
  return n;
}

void run_micro_batches(Engine& engine, const std::vector<PairBatch>& micro_batches, const LossConfig& config,
                       bool backward, Collective* ranks) {
  StepScale scale = step_scale(micro_batches, config);
  if (ranks && ranks->world_size() > 1) {  // the global P and N, before any backward
    double both[2] = {scale.pairs, scale.nll_tokens};
    ranks->all_reduce_host(both, 2, ReduceOp::sum);
    scale = {both[0], both[1]};
  }
  size_t last = micro_batches.size();  // the last micro-batch with pairs (StepScale::last)
  for (size_t i = 0; i < micro_batches.size(); ++i)
    if (micro_batches[i].num_pairs > 0) last = i;
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    scale.last = i == last;
    if (micro_batches[i].num_pairs > 0) engine.run_pairs(micro_batches[i], config, scale, backward);
  }
}

MetricSums step_forward_backward(Engine& engine, const std::vector<PairBatch>& micro_batches,
                                 const LossConfig& config, bool backward) {
  run_micro_batches(engine, micro_batches, config, backward);
  MetricSums sums;
  for (const PairResult& r : engine.take_results().pairs) sums.add(r, config);
  sums.tokens = count_tokens(micro_batches);
  return sums;
}

namespace {

// JSON text; invalid UTF-8 (a sample reply of a barely trained model cut inside a character) becomes U+FFFD.
std::string json_text(const ordered_json& j) { return j.dump(-1, ' ', false, ordered_json::error_handler_t::replace); }

// Every rank's pairs in rank order, with z and Δ only (what quantiles_json reads).
std::vector<PairResult> all_gather_pairs(Collective& ranks, const std::vector<PairResult>& mine) {
  std::vector<double> values;
  for (const PairResult& r : mine) values.insert(values.end(), {r.loss.z, r.loss.delta});
  const std::vector<double> all = ranks.all_gather_host(values);
  std::vector<PairResult> out(all.size() / 2);
  for (size_t i = 0; i < out.size(); i++) {
    out[i].loss.z = all[2 * i];
    out[i].loss.delta = all[2 * i + 1];
  }
  return out;
}

std::string pair_id_list(const std::vector<PairBatch>& batches) {
  std::string out;
  for (const PairBatch& b : batches)
    for (int64_t id : b.pair_ids) out += (out.empty() ? "" : ", ") + std::to_string(id);
  return out;
}

}  // namespace

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
  if (!writer()) return;
  File f(config_.out_dir + "/log.jsonl", "ab");
  const std::string text = json_text(line) + "\n";
  f.write(text.data(), text.size());
  f.close();
}

ordered_json Trainer::evaluate() {
  eval_loader_->seek(DataPosition{});
  std::vector<PairBatch> one(1);
  int64_t tokens = 0;
  for (int64_t s = 0; s < eval_steps_; s++) {
    eval_loader_->next(one[0]);
    run_micro_batches(engine_, one, config_.loss, false);
    tokens += count_tokens(one);
  }
  std::vector<PairResult> pairs = engine_.take_results().pairs;
  MetricSums sums;
  for (const PairResult& r : pairs) sums.add(r, config_.loss);
  sums.tokens = tokens;
  if (ranks_) {
    sums.all_reduce(*ranks_);
    pairs = all_gather_pairs(*ranks_, pairs);
  }
  ordered_json j;
  j["step"] = state_.step;
  j.update(metrics_json(sums, config_.loss, "eval/"));
  j.update(quantiles_json(pairs, "eval/"));
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
  std::unique_ptr<RemoveOnExit> no_leftover;  // a failed save (a full disk) leaves no half-written folder
  if (writer()) {
    fs::remove_all(tmp);
    make_directories(tmp);
    no_leftover = std::make_unique<RemoveOnExit>(tmp);
  }
  // Collective under data parallel (every rank calls them, rank 0 writes): a ZeRO-1 engine gathers its shards.
  engine_.save_model(tmp);
  wait_for_writer();  // rank 0 writes the model files before the optimizer's gather
  engine_.save_optimizer(tmp + "/optimizer.bin");
  state_.last_checkpoint = final_dir;
  if (!writer()) {
    wait_for_writer();
    return final_dir;
  }
  if (!config_.tokenizer_dir.empty()) copy_tokenizer_files(config_.tokenizer_dir, tmp);
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
  state["margin_left"] = config_.loss.margin_left;
  state["margin_right"] = config_.loss.margin_right;
  state["right_margin"] = right_margin_name(config_.loss.right_margin);
  state["lambda_right"] = config_.loss.lambda_right;
  if (config_.loss.loss == LossKind::bco_pair) {
    state["bco_delta"] = state_.bco_delta.mean;
    state["bco_delta_steps"] = state_.bco_delta.count;
  }
  state["settings"] = settings_;
  write_file_atomic(tmp + "/trainer_state.json", state.dump(2) + "\n");
  replace_directory(tmp, final_dir);
  wait_for_writer();
  return final_dir;
}

void Trainer::wait_for_writer() {
  if (ranks_) ranks_->barrier();
}

void Trainer::log_eval_samples() {
  if (writer()) log(eval_samples());
  wait_for_writer();
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
  const nlohmann::json state = trainer_state_read(dir);
  STAPO_CHECK(state.is_object() && state.value("format", "") == "stapo-trainer-state" && state.value("version", 0) == 1,
              path, ": not a version-1 stapo trainer state");
  const auto seed = state_field<uint64_t>(state, "seed", path);
  STAPO_CHECK(seed == config_.seed, path, ": the run used --seed ", seed, ", this one ", config_.seed,
              ": the data order would differ; pass the same --seed");
  const auto loss = state_field<std::string>(state, "loss", path);
  STAPO_CHECK(loss == loss_name(config_.loss.loss), path, ": the run used --loss ", loss, ", this one ",
              loss_name(config_.loss.loss));
  engine_.load_optimizer(dir + "/optimizer.bin");
  state_.step = state_field<int64_t>(state, "step", path);
  state_.updates = state_field<int64_t>(state, "updates", path);
  state_.skipped_nonfinite = state_field<int64_t>(state, "skipped_nonfinite", path);
  state_.position = DataPosition{state_field<int64_t>(state, "data_epoch", path),
                                 state_field<int64_t>(state, "data_index", path)};
  STAPO_CHECK(state_.step >= 0 && state_.updates >= 0 && state_.updates <= state_.step && state_.skipped_nonfinite >= 0 &&
                  state_.position.epoch >= 0 && state_.position.index >= 0,
              path, ": step ", state_.step, ", updates ", state_.updates, ", skipped_nonfinite ",
              state_.skipped_nonfinite, ", data position (", state_.position.epoch, ", ", state_.position.index,
              ") are inconsistent (corrupt trainer state)");
  if (config_.loss.loss == LossKind::bco_pair)
    state_.bco_delta = RunningMean{state_field<double>(state, "bco_delta", path),
                                   state_field<int64_t>(state, "bco_delta_steps", path)};
  state_.last_checkpoint = dir;
  loader_.seek(state_.position);
  if (writer()) drop_log_after(state_.step);
}

// Rank 0 alone, on the pairs a single process would take: the others wait at the first step's collective.
void Trainer::step0_diagnostics() {
  if (config_.step0_pairs <= 0 || !writer()) return;
  const bool reference = config_.step0_from_reference;
  PairLoaderConfig one_rank = loader_.config();
  one_rank.rank = 0;
  one_rank.world_size = 1;
  const std::vector<PairResult> pairs =
      reference ? step0_pairs_from_reference(loader_.shard(), config_.loss)
                : step0_pairs_from_engine(engine_, loader_.shard(), one_rank, config_.loss, config_.step0_pairs);
  const ordered_json j = step0_json(pairs, config_.loss, reference ? "from the reference pass" : "forward pass");
  log(j);
  fprintf(stderr, "%s%s", step0_table(j, config_.loss).c_str(), step0_warning(j, config_.loss).c_str());
}

void Trainer::train() {
  const int64_t total = total_steps();
  const int64_t warmup = lr_warmup_steps(config_.warmup_ratio, total);
  if (state_.step == 0) {
    step0_diagnostics();
    wait_for_writer();
    // With periodic evaluation the curves start at the initial model (epoch 0), so drift is measured from there.
    if (config_.eval_every > 0 && eval_loader_) log(evaluate());
    if (config_.eval_every > 0 && sampler_) log_eval_samples();
  }
  std::unique_ptr<Progress> progress = writer() ? std::make_unique<Progress>("train", total) : nullptr;
  std::vector<PairBatch> micro(config_.grad_accum);
  while (state_.step < total) {
    const auto start = std::chrono::steady_clock::now();
    for (PairBatch& b : micro) loader_.next(b);
    engine_.zero_grad();
    config_.loss.bco_delta = state_.bco_delta.mean;
    run_micro_batches(engine_, micro, config_.loss, true, ranks_);
    const double lr = lr_at(config_.schedule, config_.lr, state_.step, warmup, total);
    engine_.optimizer_step({lr, config_.max_grad_norm, config_.adamw, state_.updates + 1});
    const StepResults results = engine_.take_results();
    MetricSums sums;
    for (const PairResult& r : results.pairs) sums.add(r, config_.loss);
    sums.tokens = count_tokens(micro);
    if (ranks_) sums.all_reduce(*ranks_);
    const double loss = sums.loss(config_.loss);
    const double grad_norm = results.grad_norm;
    state_.step++;
    state_.position = loader_.position();
    if (!results.updated && !config_.skip_nonfinite)
      fail("non-finite ", std::isfinite(loss) ? "gradient norm" : "loss", " (loss ", loss, ", grad_norm ", grad_norm,
           ") at step ", state_.step, ", pairs ", pair_id_list(micro), ". Last good checkpoint: ",
           state_.last_checkpoint.empty() ? "none yet (no --save-every step reached)" : state_.last_checkpoint,
           ". Resume from it with a lower --lr, or pass --skip-nonfinite to drop such steps");
    if (results.updated) {
      state_.updates++;
      if (config_.loss.loss == LossKind::bco_pair)
        state_.bco_delta.add((sums.reward_chosen + sums.reward_rejected) / (2.0 * double(sums.pairs)));
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
    if (config_.loss.loss == LossKind::bco_pair) line["bco/delta"] = config_.loss.bco_delta;  // the step's δ
    const Engine::StepReport report = engine_.step_report();
    if (!report.metrics.empty()) line.update(report.metrics);
    log(line);
    if (progress)
      progress->update(state_.step, sums.tokens,
                       cat("loss ", loss, " acc ", sums.correct / double(sums.pairs), " z ", sums.z / double(sums.pairs),
                           report.progress.empty() ? "" : " ", report.progress));
    const bool last = state_.step == total;
    // Saved before the evaluation: an evaluation that fails (a sample prompt longer than the context) cannot
    // lose the weights of the steps before it.
    if (last) {
      save_checkpoint("final");
    } else if (config_.save_every > 0 && state_.step % config_.save_every == 0) {
      save_checkpoint(cat("checkpoint-", state_.step));
    }
    const bool eval_due = (config_.eval_every > 0 && state_.step % config_.eval_every == 0) || last;
    if (eval_due && eval_loader_) log(evaluate());
    if (eval_due && sampler_) log_eval_samples();
  }
  if (progress) progress->finish();
  STAPO_CHECK(double(state_.skipped_nonfinite) <= config_.max_skipped_fraction * double(state_.step), "skipped ",
              state_.skipped_nonfinite, " of ", state_.step, " steps as non-finite, more than --max-skipped-fraction ",
              config_.max_skipped_fraction, ": the run did not train as asked (", config_.out_dir,
              "/final holds its weights for inspection only). Resume from an earlier checkpoint with a lower --lr");
}

}  // namespace stapo
