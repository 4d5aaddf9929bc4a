// The shared trainer command line (train/train_main.h).
#include "train/train_main.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include "common/cli.h"    // defines: cli_range, cli_positive
#include "common/error.h"
#include "data/shard.h"       // defines: Shard
#include "train/eval_samples.h"  // defines: EvalSampler, read_sample_prompts
#include "train/run_dir.h"    // defines: run_dir_open, run_settings, run_settings_check
#include "train/scoring.h"    // defines: reference_ensure, reference_tag, check_shard_tokenizer, check_shard_reference

namespace stapo {

void train_flags_add(CLI::App& app, TrainFlags& f) {
  TrainerConfig& tc = f.trainer;
  PairLoaderConfig& lc = f.loader;
  app.add_option("--model", f.model_dir, "initial HF checkpoint directory (config.json + safetensors)")
      ->required();
  app.add_option("--data", f.data_path, "training shard written by ./prepare_data")->required();
  app.add_option("--eval-data", f.eval_path, "evaluation shard (optional)");
  app.add_option("--out", f.out_dir, "output directory: log.jsonl, checkpoint-N/, final/")->required();
  loss_flags_add(app, f.loss);
  app.add_option("--ref", f.ref, "reference log-probs: none, or precompute (a pass with the initial weights, stored "
                                 "in the shard and reused while the model is the same)")
      ->check(CLI::IsMember({"none", "precompute"}));
  // Numeric flags are range-checked by the parser (a bad value exits 2 naming the flag); see docs/training.md.
  const double huge = std::numeric_limits<double>::max(), below_one = std::nextafter(1.0, 0.0);
  const int64_t many = int64_t{1} << 40;
  app.add_option("--lr", tc.lr, "peak learning rate")->check(cli_positive(huge));
  app.add_option("--lr-schedule", f.schedule, "constant, linear or cosine (after warm-up)")
      ->check(CLI::IsMember({"constant", "linear", "cosine"}));
  app.add_option("--warmup-ratio", tc.warmup_ratio, "fraction of the steps spent warming up from 0")
      ->check(cli_range(0, 1));
  app.add_option("--weight-decay", tc.adamw.weight_decay, "AdamW decoupled weight decay (not on RMSNorm weights)")
      ->check(cli_range(0, huge));
  app.add_option("--adam-beta1", tc.adamw.beta1, "AdamW β1, in [0, 1)")->check(cli_range(0, below_one));
  app.add_option("--adam-beta2", tc.adamw.beta2, "AdamW β2, in [0, 1)")->check(cli_range(0, below_one));
  app.add_option("--adam-eps", tc.adamw.eps, "AdamW ε")->check(cli_positive(huge));
  app.add_option("--max-grad-norm", tc.max_grad_norm, "global gradient-norm clipping (0: off)")
      ->check(cli_range(0, huge));
  app.add_option("--grad-accum", tc.grad_accum, "micro-batches per optimizer step")->check(CLI::Range(1, 1 << 20));
  app.add_option("--epochs", tc.epochs, "passes over the training shard")->check(CLI::Range(int64_t{0}, many));
  app.add_option("--max-steps", tc.max_steps, "optimizer steps (overrides --epochs when > 0)")
      ->check(CLI::Range(int64_t{0}, many));
  app.add_option("--eval-every", tc.eval_every, "evaluate before the first step, every N steps and at the end")
      ->check(CLI::Range(int64_t{0}, many));
  app.add_option("--save-every", tc.save_every, "checkpoint every N steps (and at the end, as final/)")
      ->check(CLI::Range(int64_t{0}, many));
  app.add_option("--batch-size", lc.pairs_per_batch, "pairs per micro-batch")->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-length", lc.row_length, "row length T (every sequence must fit)")
      ->check(CLI::Range(2, 1 << 24));
  app.add_flag("--pack", lc.pack, "pack sequences into rows instead of one padded row per sequence");
  app.add_option("--seed", tc.seed, "data order seed");
  app.add_option("--resume", f.resume_dir, "continue exactly from a checkpoint directory of this run");
  app.add_flag("--overwrite", f.overwrite, "start afresh in an --out that holds an earlier run, deleting its log and "
                                           "checkpoints (without it such an --out is refused)");
  app.add_flag("--allow-changed-config", f.allow_changed_config,
               "with --resume: continue although batch size, loss, beta, margins or schedule differ from the "
               "checkpoint's (without it that is refused)");
  app.add_option("--zero", f.zero, "under data parallel (mpirun/srun, docs/distributed.md): 1 shards the AdamW state "
                                   "and the update over the ranks (ZeRO-1), 0 updates everything on every rank")
      ->check(CLI::Range(0, 1));
  app.add_flag("--skip-nonfinite", tc.skip_nonfinite, "skip (and count) steps whose loss or gradient is not finite");
  app.add_option("--step0-pairs", tc.step0_pairs,
                 "before the first update, Δ and z of this many training pairs under the initial weights (quantiles, "
                 "share above the right margin; every pair, without a forward pass, after --ref precompute); 0: off")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-skipped-fraction", tc.max_skipped_fraction,
                 "with --skip-nonfinite: a run that skipped more than this fraction of its steps ends with an error")
      ->check(cli_range(0, 1));
  app.add_option("--sample-prompts", f.sample_prompts,
                 "at every evaluation, greedy replies to these user messages with the current weights, printed "
                 "and logged: FILE.jsonl of {\"prompt\": ...} lines, or any other file of one prompt per line");
  app.add_option("--sample-tokens", f.sample_tokens, "most tokens per eval sample reply")->check(CLI::Range(1, 1 << 20));
  app.add_option("--template", f.sample_template,
                 "chat template of the eval samples: llama3, llama2, mistral, chatml, plain, auto (default: the "
                 "training shard's, as prepare_data wrote it)");
}

namespace {

void train_run_ranks(const CLI::App& app, TrainFlags& f, const EngineFactory& make_engine,
                     const std::function<void(Engine&)>& trained, Collective& ranks) {
  const bool writer = ranks.rank() == 0;
  for (const std::string& path : {f.data_path, f.eval_path})
    if (!path.empty()) check_shard_tokenizer(Shard(path), f.model_dir);
  TrainerConfig& tc = f.trainer;
  PairLoaderConfig& lc = f.loader;
  tc.loss = loss_flags_config(app, f.loss);
  tc.schedule = lr_schedule_from_name(f.schedule);
  tc.out_dir = f.out_dir;
  tc.tokenizer_dir = f.resume_dir.empty() ? f.model_dir : f.resume_dir;
  lc.seed = tc.seed;
  lc.rank = ranks.rank();
  lc.world_size = ranks.world_size();
  std::unique_ptr<EvalSampler> sampler;  // before the reference pass: a bad prompt file or template fails fast
  if (!f.sample_prompts.empty()) {
    const std::string name = f.sample_template.empty() ? Shard(f.data_path).info().template_name : f.sample_template;
    sampler = std::make_unique<EvalSampler>(read_sample_prompts(f.sample_prompts), tc.tokenizer_dir, name,
                                            f.sample_tokens);
  }
  // Before the first write (the reference pass writes into the shards), held until the run ends: a second run
  // into this folder is refused while this one lives.
  std::vector<std::string> inputs{f.model_dir, f.data_path};
  for (const std::string& path : {f.eval_path, f.resume_dir})
    if (!path.empty()) inputs.push_back(path);
  const std::unique_ptr<DirLock> lock =
      writer ? run_dir_open(f.out_dir, inputs, !f.resume_dir.empty(), f.overwrite) : nullptr;
  // The reference pass runs with the initial weights, before any resume loads trained ones; on rank 0 alone,
  // which writes it into the shards while the others wait.
  if (f.ref == "precompute" && writer) {
    const std::string tag = reference_tag(f.model_dir);
    for (const std::string& path : {f.data_path, f.eval_path}) {
      if (path.empty()) continue;
      if (!f.resume_dir.empty()) {
        Shard shard(path);
        STAPO_CHECK(shard.has_reference() && shard.reference_tag() == tag, path, ": no reference log-probs of ",
                    f.model_dir, " to resume with: run the reference pass first (the same command without --resume, "
                    "or ./score)");
        continue;
      }
      std::unique_ptr<Engine> initial = make_engine(f.model_dir);
      PairLoaderConfig one_rank = lc;
      one_rank.rank = 0;
      one_rank.world_size = 1;
      if (reference_ensure(*initial, path, one_rank, tag))
        fprintf(stderr, "%s: reference log-probs stored\n", path.c_str());
    }
  }
  ranks.barrier();
  Shard train_shard(f.data_path);
  loss_config_validate(tc.loss, train_shard.has_reference());
  // The reference pass just ran (or was reused) with the initial weights: the step-0 diagnostics read it.
  tc.step0_from_reference = f.ref == "precompute" && f.resume_dir.empty();
  const bool uses_reference = reward_uses_reference(tc.loss.reward);
  if (uses_reference) check_shard_reference(train_shard, f.model_dir);
  std::unique_ptr<Shard> eval_shard;
  std::unique_ptr<PairLoader> eval_loader;
  int64_t eval_steps = 0;
  PairLoaderConfig eval_lc = lc;
  eval_lc.shuffle = false;
  if (!f.eval_path.empty()) {
    eval_shard = std::make_unique<Shard>(f.eval_path);
    loss_config_validate(tc.loss, eval_shard->has_reference());
    if (uses_reference) check_shard_reference(*eval_shard, f.model_dir);
    eval_loader = std::make_unique<PairLoader>(*eval_shard, eval_lc);
    eval_steps = eval_loader->steps_per_epoch();
  }
  std::unique_ptr<Engine> engine = make_engine(f.resume_dir.empty() ? f.model_dir : f.resume_dir);
  PairLoader loader(train_shard, lc);
  Trainer trainer(*engine, loader, eval_loader.get(), eval_steps, tc);
  trainer.set_collective(ranks);
  if (sampler) trainer.set_eval_sampler(sampler.get());
  trainer.set_settings(run_settings(tc, lc, trainer.total_steps()));
  if (!f.resume_dir.empty()) {
    run_settings_check(f.resume_dir, trainer.settings(), f.allow_changed_config);
    trainer.resume(f.resume_dir);
  }
  if (writer)
    fprintf(stderr, "%s; %s; %lld steps from step %lld\n", engine->description().c_str(),
            loss_config_summary(tc.loss).c_str(), (long long)trainer.total_steps(), (long long)trainer.state().step);
  trainer.train();
  if (trained) trained(*engine);
  if (writer)
    fprintf(stderr, "done: %s/final (log: %s/log.jsonl, %lld non-finite steps skipped)\n", f.out_dir.c_str(),
            f.out_dir.c_str(), (long long)trainer.state().skipped_nonfinite);
}

}  // namespace

void train_run(const CLI::App& app, TrainFlags& f, const EngineFactory& make_engine,
               const std::function<void(Engine&)>& trained, Collective* data_parallel) {
  const std::unique_ptr<Collective> single = data_parallel ? nullptr : collective_single();
  Collective& ranks = data_parallel ? *data_parallel : *single;
  if (ranks.world_size() == 1) return train_run_ranks(app, f, make_engine, trained, ranks);
  try {
    train_run_ranks(app, f, make_engine, trained, ranks);
  } catch (const std::exception& e) {
    ranks.abort(e.what());  // the other ranks would wait for this one at their next collective forever
  }
}

}  // namespace stapo
