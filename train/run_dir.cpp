// The run directory and the run's settings (train/run_dir.h).
#include "train/run_dir.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "model/ops/preference_loss.h"  // defines: loss_name, reward_name, right_margin_name

namespace stapo {

namespace fs = std::filesystem;

namespace {

// What a trainer writes into --out (trainer.h): the log, checkpoints, final/, and their temporary names.
bool written_by_a_run(const std::string& name) {
  auto ends_with = [&](const std::string& tail) {
    return name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
  };
  return name == "log.jsonl" || name == "final" || name.rfind("checkpoint-", 0) == 0 || ends_with(".old") ||
         (name[0] == '.' && ends_with(".tmp"));
}

}  // namespace

std::unique_ptr<DirLock> run_dir_open(const std::string& out_dir, const std::vector<std::string>& inputs,
                                      bool resuming, bool overwrite) {
  output_dir_check("--out", out_dir, inputs);
  make_directories(out_dir);
  auto lock = std::make_unique<DirLock>(out_dir, "--out");
  std::vector<std::string> earlier;
  for (const auto& entry : fs::directory_iterator(out_dir))
    if (written_by_a_run(entry.path().filename().string())) earlier.push_back(entry.path().filename().string());
  if (earlier.empty() || resuming) return lock;
  std::sort(earlier.begin(), earlier.end());
  std::string names;
  for (const std::string& name : earlier) names += (names.empty() ? "" : ", ") + name;
  STAPO_CHECK(overwrite, "--out ", out_dir, " holds an earlier run (", names, "): continue it with --resume ", out_dir,
              "/checkpoint-N, pass --overwrite to delete it and start again, or choose another --out");
  for (const std::string& name : earlier) {
    std::error_code ec;
    fs::remove_all(fs::path(out_dir) / name, ec);
    STAPO_CHECK(!ec, "--overwrite: cannot remove ", out_dir, "/", name, ": ", ec.message());
  }
  fprintf(stderr, "--overwrite: removed the earlier run's %s from %s\n", names.c_str(), out_dir.c_str());
  return lock;
}

nlohmann::ordered_json run_settings(const TrainerConfig& t, const PairLoaderConfig& l, int64_t total_steps) {
  const LossConfig& c = t.loss;
  // The step's pairs, not --batch-size and --grad-accum apart: W ranks with --grad-accum k make the step of one
  // rank with --grad-accum k·W, so a run may resume on another number of ranks (docs/distributed.md).
  return {{"pairs per step (--batch-size × --grad-accum × ranks)",
           int64_t(l.pairs_per_batch) * t.grad_accum * l.world_size},
          {"--max-length", l.row_length},
          {"--pack", l.pack},
          {"--loss", loss_name(c.loss)},
          {"--reward", reward_name(c.reward)},
          {"--beta", c.beta},
          {"--gamma", c.gamma},
          {"--margin-left", c.margin_left},
          {"--margin-right", c.margin_right},
          {"--right-margin", right_margin_name(c.right_margin)},
          {"--lambda-right", c.lambda_right},
          {"--label-smoothing", c.label_smoothing},
          {"--nll-span", nll_span_name(c.nll_span)},
          {"--alpha", c.alpha},
          {"--lr", t.lr},
          {"--lr-schedule", lr_schedule_name(t.schedule)},
          {"--warmup-ratio", t.warmup_ratio},
          {"total steps (--epochs, --max-steps)", total_steps},
          {"--weight-decay", t.adamw.weight_decay},
          {"--adam-beta1", t.adamw.beta1},
          {"--adam-beta2", t.adamw.beta2},
          {"--adam-eps", t.adamw.eps},
          {"--max-grad-norm", t.max_grad_norm}};
}

nlohmann::json trainer_state_read(const std::string& dir) {
  const std::string path = dir + "/trainer_state.json";
  try {
    return nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not a trainer state (", e.what(), ")");
  }
}

void run_settings_check(const std::string& dir, const nlohmann::ordered_json& now, bool allow_changed) {
  const std::string path = dir + "/trainer_state.json";
  const nlohmann::json state = trainer_state_read(dir);
  if (!state.is_object() || !state.contains("settings")) {
    fprintf(stderr, "warning: %s has no \"settings\" (an older stapo wrote it): cannot check that --batch-size, the "
            "loss and the schedule are the run's\n", path.c_str());
    return;
  }
  const nlohmann::json saved = state_field<nlohmann::json>(state, "settings", path);
  std::string changes;
  for (const auto& [flag, value] : now.items()) {
    const std::string was = saved.contains(flag) ? saved.at(flag).dump() : "(not recorded)";
    if (was != value.dump()) changes += cat("\n  ", flag, ": ", was, " in the checkpoint, ", value.dump(), " now");
  }
  if (changes.empty()) return;
  STAPO_CHECK(allow_changed, "--resume ", dir, ": this run's settings differ from the checkpoint's (", path, "):",
              changes, "\nthe resumed run would not be the run it continues. Pass the same flags, or "
              "--allow-changed-config to continue with the new ones on purpose");
  fprintf(stderr, "--allow-changed-config: resuming %s with other settings:%s\n", dir.c_str(), changes.c_str());
}

}  // namespace stapo
