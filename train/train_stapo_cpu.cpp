// train_stapo_cpu: preference optimisation (StaPO and the one-sided baselines) on the fp32 CPU reference
// model. The loop is train/trainer.h's, shared with the CUDA train_stapo; this file wires flags, data,
// the optional reference pass and the CPU engine.
#include <omp.h>

#include <memory>

#include "common/cli.h"          // defines: STAPO_PARSE_CLI, run_main
#include "data/pair_loader.h"    // defines: PairLoader
#include "train/cpu_engine.h"    // defines: CpuEngine
#include "train/loss_flags.h"    // defines: LossFlags, loss_flags_add
#include "train/scoring.h"       // defines: reference_ensure, reference_tag
#include "train/trainer.h"       // defines: Trainer, TrainerConfig

int main(int argc, char** argv) {
  CLI::App app{"train_stapo_cpu: align a Llama/Mistral checkpoint on preference pairs (StaPO and baselines), fp32 CPU"};
  app.name("train_stapo_cpu");
  std::string model_dir, data_path, eval_path, out_dir, resume_dir, ref = "none", schedule = "linear";
  stapo::LossFlags loss_flags;
  stapo::TrainerConfig tc;
  stapo::PairLoaderConfig lc;
  int threads = 0;
  app.add_option("--model", model_dir, "initial HF checkpoint directory (config.json + safetensors)")->required();
  app.add_option("--data", data_path, "training shard written by ./prepare_data")->required();
  app.add_option("--eval-data", eval_path, "evaluation shard (optional)");
  app.add_option("--out", out_dir, "output directory: log.jsonl, checkpoint-N/, final/")->required();
  stapo::loss_flags_add(app, loss_flags);
  app.add_option("--ref", ref, "reference log-probs: none, or precompute (a pass with the initial weights, stored "
                               "in the shard and reused while the model is the same)")
      ->check(CLI::IsMember({"none", "precompute"}));
  app.add_option("--lr", tc.lr, "peak learning rate");
  app.add_option("--lr-schedule", schedule, "constant, linear or cosine (after warm-up)")
      ->check(CLI::IsMember({"constant", "linear", "cosine"}));
  app.add_option("--warmup-ratio", tc.warmup_ratio, "fraction of the steps spent warming up from 0");
  app.add_option("--weight-decay", tc.adamw.weight_decay, "AdamW decoupled weight decay (not on RMSNorm weights)");
  app.add_option("--adam-beta1", tc.adamw.beta1, "AdamW β1");
  app.add_option("--adam-beta2", tc.adamw.beta2, "AdamW β2");
  app.add_option("--adam-eps", tc.adamw.eps, "AdamW ε");
  app.add_option("--max-grad-norm", tc.max_grad_norm, "global gradient-norm clipping (0: off)");
  app.add_option("--grad-accum", tc.grad_accum, "micro-batches per optimizer step");
  app.add_option("--epochs", tc.epochs, "passes over the training shard");
  app.add_option("--max-steps", tc.max_steps, "optimizer steps (overrides --epochs when > 0)");
  app.add_option("--eval-every", tc.eval_every, "evaluate every N steps (and at the end)");
  app.add_option("--save-every", tc.save_every, "checkpoint every N steps (and at the end, as final/)");
  app.add_option("--batch-size", lc.pairs_per_batch, "pairs per micro-batch");
  app.add_option("--max-length", lc.row_length, "row length T (every sequence must fit)");
  app.add_flag("--pack", lc.pack, "pack sequences into rows instead of one padded row per sequence");
  app.add_option("--seed", tc.seed, "data order seed");
  app.add_option("--threads", threads, "OpenMP threads (0: OpenMP's default); fix it for bitwise-exact resumes");
  app.add_option("--resume", resume_dir, "continue exactly from a checkpoint directory of this run");
  app.add_flag("--skip-nonfinite", tc.skip_nonfinite, "skip (and count) steps whose loss or gradient is not finite");
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    if (threads > 0) omp_set_num_threads(threads);
    tc.loss = stapo::loss_flags_config(app, loss_flags);
    tc.schedule = stapo::lr_schedule_from_name(schedule);
    tc.out_dir = out_dir;
    tc.tokenizer_dir = resume_dir.empty() ? model_dir : resume_dir;
    lc.seed = tc.seed;
    // The reference pass runs with the initial weights, before any resume loads trained ones.
    if (ref == "precompute") {
      const std::string tag = stapo::reference_tag(model_dir);
      for (const std::string& path : {data_path, eval_path}) {
        if (path.empty()) continue;
        if (!resume_dir.empty()) {
          stapo::Shard shard(path);
          STAPO_CHECK(shard.has_reference() && shard.reference_tag() == tag, path,
                      ": no reference log-probs of ", model_dir, " to resume with: run the reference pass first "
                      "(the same command without --resume, or ./score)");
          continue;
        }
        stapo::CpuEngine<float> initial(stapo::model_load_hf<float>(model_dir));
        if (stapo::reference_ensure(initial, path, lc, tag)) fprintf(stderr, "%s: reference log-probs stored\n", path.c_str());
      }
    }
    stapo::Shard train_shard(data_path);
    stapo::loss_config_validate(tc.loss, train_shard.has_reference());
    std::unique_ptr<stapo::Shard> eval_shard;
    std::unique_ptr<stapo::PairLoader> eval_loader;
    int64_t eval_steps = 0;
    stapo::PairLoaderConfig eval_lc = lc;
    eval_lc.shuffle = false;
    if (!eval_path.empty()) {
      eval_shard = std::make_unique<stapo::Shard>(eval_path);
      stapo::loss_config_validate(tc.loss, eval_shard->has_reference());
      eval_loader = std::make_unique<stapo::PairLoader>(*eval_shard, eval_lc);
      eval_steps = eval_loader->steps_per_epoch();
    }
    stapo::CpuEngine<float> engine(stapo::model_load_hf<float>(resume_dir.empty() ? model_dir : resume_dir));
    stapo::PairLoader loader(train_shard, lc);
    stapo::Trainer trainer(engine, loader, eval_loader.get(), eval_steps, tc);
    if (!resume_dir.empty()) trainer.resume(resume_dir);
    fprintf(stderr, "%s; loss %s, reward %s, beta %g; %lld steps from step %lld; %d threads\n",
            engine.description().c_str(), stapo::loss_name(tc.loss.loss), stapo::reward_name(tc.loss.reward),
            tc.loss.beta, (long long)trainer.total_steps(), (long long)trainer.state().step, omp_get_max_threads());
    trainer.train();
    fprintf(stderr, "done: %s/final (log: %s/log.jsonl, %lld non-finite steps skipped)\n", out_dir.c_str(),
            out_dir.c_str(), (long long)trainer.state().skipped_nonfinite);
  });
}
