// The trainer end to end on a tiny Llama: the whole pipeline's gradient against finite differences (double),
// gradient accumulation equals one large batch for every loss, N steps + resume N = 2N steps bitwise, and
// non-finite steps stop with a named error (or are skipped and counted).
#include <cmath>
#include <filesystem>
#include <cstring>
#include <nlohmann/json.hpp>

#include "tests/train/train_test_util.h"
#include "common/file_io.h"
#include "model/generate.h"
#include "model/generate_chat.h"
#include "tokenizer/tokenizer.h"
#include "train/cpu_engine.h"
#include "train/grad_clip.h"
#include "train/eval_samples.h"
#include "train/optimizer_state.h"
#include "train/run_dir.h"
#include "train/scoring.h"
#include "train/trainer.h"

namespace stapo {
namespace {

using test::TempDir;

template <typename T>
std::unique_ptr<CpuModel<T>> tiny_model(uint64_t seed, float stddev = 0.3f) {
  auto model = std::make_unique<CpuModel<T>>(test::train_tiny_config());
  model_init_random(*model, seed, stddev);
  return model;
}

LossConfig config_for(LossKind kind) {
  LossConfig c = loss_defaults(kind);
  if (kind == LossKind::stapo_sigmoid) c.alpha = 0.3;  // the NLL term too
  if (kind == LossKind::bco_pair) c.bco_delta = 0.05;  // a running mean away from 0
  return c;
}

double step_loss(CpuEngine<double>& engine, const std::vector<PairBatch>& batches, const LossConfig& config) {
  return step_forward_backward(engine, batches, config, false).loss(config);
}

TEST(Trainer, WholePipelineGradientMatchesFiniteDifferences) {
  TempDir dir;
  const int vocab = 16;
  Shard shard(test::write_shard(dir.path, "d.bin", test::make_pairs(6, vocab, 11, false), vocab, true, 5));
  const PairLoaderConfig lc = test::test_loader_config(3);
  // Two micro-batches: the gradient of the accumulated step, not only of one forward.
  const std::vector<PairBatch> batches = {test::batch_of(shard, {0, 1, 2}, lc), test::batch_of(shard, {3, 4, 5}, lc)};
  // orpo: its NLL over prompt + response, so the prompt positions' gradient too
  for (LossKind kind : {LossKind::stapo_sigmoid, LossKind::dpo, LossKind::simpo, LossKind::orpo, LossKind::bco_pair}) {
    const LossConfig config = config_for(kind);
    CpuEngine<double> engine(tiny_model<double>(21));
    engine.zero_grad();
    step_forward_backward(engine, batches, config, true);
    CpuModel<double>& model = engine.model();
    std::vector<double> analytic(model.grad_data(), model.grad_data() + model.num_params());
    std::mt19937_64 rng(7);
    double worst = 0;
    for (int probe = 0; probe < 60; probe++) {
      const size_t i = rng() % model.num_params();
      const double saved = model.param_data()[i], h = 1e-5;
      model.param_data()[i] = saved + h;
      const double plus = step_loss(engine, batches, config);
      model.param_data()[i] = saved - h;
      const double minus = step_loss(engine, batches, config);
      model.param_data()[i] = saved;
      const double numeric = (plus - minus) / (2 * h);
      const double err = std::fabs(numeric - analytic[i]) / (std::fabs(numeric) + 1e-6);
      worst = std::max(worst, err);
      EXPECT_LE(std::fabs(numeric - analytic[i]), 1e-6 + 1e-5 * std::fabs(numeric))
          << loss_name(kind) << " parameter " << i << ": numeric " << numeric << " analytic " << analytic[i];
    }
    double norm = 0;
    for (double g : analytic) norm += g * g;
    EXPECT_GT(norm, 1e-8) << loss_name(kind) << ": a zero gradient proves nothing";
    printf("%s: worst relative finite-difference error %.2e over 60 parameters\n", loss_name(kind), worst);
  }
}

// S(y) from the engine (dataloader masks + per-sequence sums) equals the sum of log-softmax of the full logits
// at the response tokens of each raw pair: the prompt, padding and the token after the response never count.
TEST(Trainer, SequenceLogProbsCountResponseTokensOnly) {
  TempDir dir;
  const int vocab = 16;
  Shard shard(test::write_shard(dir.path, "d.bin", test::make_pairs(5, vocab, 15, false), vocab, false, 0));
  for (bool pack : {false, true}) {
    PairLoaderConfig lc = test::test_loader_config(5);
    lc.pack = pack;
    lc.row_length = pack ? 40 : 16;
    const PairBatch batch = test::batch_of(shard, {4, 0, 2, 1, 3}, lc);
    CpuEngine<double> engine(tiny_model<double>(71));
    run_micro_batches(engine, {batch}, loss_defaults(LossKind::simpo), false);
    std::vector<double> logp;
    for (const PairResult& r : engine.take_results().pairs)
      logp.insert(logp.end(), {r.logps.logp_chosen, r.logps.logp_rejected});
    for (int i = 0; i < batch.num_pairs; i++) {
      const PairView pair = shard.pair(batch.pair_ids[i]);
      for (int side = 0; side < 2; side++) {
        const int32_t* response = side == 0 ? pair.chosen : pair.rejected;
        const int len = side == 0 ? pair.chosen_length : pair.rejected_length;
        TokenBatch seq;  // the raw sequence alone, one row
        seq.rows = 1;
        seq.T = pair.prompt_length + len;
        seq.tokens.assign(pair.prompt, pair.prompt + pair.prompt_length);
        seq.tokens.insert(seq.tokens.end(), response, response + len);
        seq.targets.assign(seq.T, -1);
        seq.segments.assign(seq.T, 0);
        for (int t = 0; t < seq.T; t++) seq.positions.push_back(t);
        const std::vector<double> logits = engine.model().logits(seq);
        double expected = 0;
        for (int t = 0; t < len; t++) {  // token t of the response is predicted at position prompt + t − 1
          const double* row = logits.data() + size_t(pair.prompt_length + t - 1) * vocab;
          double mx = row[0], sum = 0;
          for (int v = 1; v < vocab; v++) mx = std::max(mx, row[v]);
          for (int v = 0; v < vocab; v++) sum += std::exp(row[v] - mx);
          expected += row[response[t]] - mx - std::log(sum);
        }
        EXPECT_NEAR(logp[2 * i + side], expected, 1e-9 * std::fabs(expected))
            << (pack ? "packed" : "padded") << " pair " << batch.pair_ids[i] << " side " << side;
        EXPECT_EQ(batch.response_length[2 * i + side], len);
      }
    }
  }
}

TEST(Trainer, AccumulationEqualsOneLargeBatchForEveryLoss) {
  TempDir dir;
  const int vocab = 16;
  Shard shard(test::write_shard(dir.path, "d.bin", test::make_pairs(8, vocab, 12, false), vocab, true, 6));
  const PairLoaderConfig lc = test::test_loader_config(4);
  const std::vector<PairBatch> one = {test::batch_of(shard, {0, 1, 2, 3, 4, 5, 6, 7}, lc)};
  const std::vector<PairBatch> four = {test::batch_of(shard, {0, 1}, lc), test::batch_of(shard, {2, 3}, lc),
                                       test::batch_of(shard, {4, 5}, lc), test::batch_of(shard, {6, 7}, lc)};
  for (LossKind kind :
       {LossKind::stapo_sigmoid, LossKind::stapo_hinge, LossKind::dpo, LossKind::simpo, LossKind::hinge, LossKind::ipo,
        LossKind::cpo, LossKind::orpo, LossKind::sft, LossKind::cdpo, LossKind::robust, LossKind::exo_pair,
        LossKind::nca_pair, LossKind::bco_pair, LossKind::sppo_hard, LossKind::apo_zero, LossKind::apo_down}) {
    LossConfig config = config_for(kind);
    if (kind == LossKind::cpo) config.reward = RewardKind::avg;  // per-token normalisation of Δ as well as NLL
    CpuEngine<double> a(tiny_model<double>(31)), b(tiny_model<double>(31));
    a.zero_grad();
    b.zero_grad();
    const MetricSums sa = step_forward_backward(a, one, config, true);
    const MetricSums sb = step_forward_backward(b, four, config, true);
    EXPECT_NEAR(sa.loss(config), sb.loss(config), 1e-12 * std::fabs(sa.loss(config))) << loss_name(kind);
    const size_t n = a.model().num_params();
    const double err = test::relative_error(b.model().grad_data(), a.model().grad_data(), n);
    EXPECT_LE(err, 1e-6) << loss_name(kind);
    EXPECT_GT(grad_sum_squares(a.model().grad_data(), n), 0.0) << loss_name(kind);
    // and the same AdamW update
    AdamWConfig adamw;
    adamw.weight_decay = 0.1;
    a.optimizer_step({1e-3, 0.0, adamw, 1});
    b.optimizer_step({1e-3, 0.0, adamw, 1});
    EXPECT_TRUE(a.take_results().updated && b.take_results().updated) << loss_name(kind);
    EXPECT_LE(test::relative_error(b.model().param_data(), a.model().param_data(), n), 1e-6) << loss_name(kind);
    // the trainer's own type: float, where only summation order differs
    CpuEngine<float> fa(tiny_model<float>(31)), fb(tiny_model<float>(31));
    fa.zero_grad();
    fb.zero_grad();
    step_forward_backward(fa, one, config, true);
    step_forward_backward(fb, four, config, true);
    const double float_err = test::relative_error(fb.model().grad_data(), fa.model().grad_data(), n);
    EXPECT_LE(float_err, 1e-6) << loss_name(kind) << " (float)";
    printf("%-13s accumulation: relative gradient difference %.1e (double), %.1e (float)\n", loss_name(kind), err,
           float_err);
  }
}

// The reference pass stores S of the initial model for every pair; at step 1 a dpo policy therefore equals its
// reference (z = 0, loss = ln 2). The stored values are reused for the same tag and recomputed for another.
TEST(Trainer, ReferencePassStoresInitialLogProbs) {
  TempDir dir;
  const int vocab = 16;
  const std::string path = test::write_shard(dir.path, "d.bin", test::make_pairs(7, vocab, 16, false), vocab, false, 0);
  const PairLoaderConfig lc = test::test_loader_config(3);
  CpuEngine<float> engine(tiny_model<float>(81));
  EXPECT_TRUE(reference_ensure(engine, path, lc, "model A"));
  EXPECT_FALSE(reference_ensure(engine, path, lc, "model A"));  // reused
  Shard shard(path);
  ASSERT_TRUE(shard.has_reference());
  EXPECT_EQ(shard.reference_tag(), "model A");
  const std::vector<PairResult> scores = score_shard(engine, shard, lc, loss_defaults(LossKind::simpo), "check");
  for (const PairResult& s : scores) {
    EXPECT_EQ(shard.reference_logps()[2 * s.pair_id], float(s.logps.logp_chosen)) << "pair " << s.pair_id;
    EXPECT_EQ(shard.reference_logps()[2 * s.pair_id + 1], float(s.logps.logp_rejected)) << "pair " << s.pair_id;
  }
  PairLoader loader(shard, lc);
  PairBatch batch;
  loader.next(batch);
  const MetricSums sums = step_forward_backward(engine, {batch}, loss_defaults(LossKind::dpo), false);
  EXPECT_NEAR(sums.loss(loss_defaults(LossKind::dpo)), std::log(2.0), 1e-6);
  EXPECT_TRUE(reference_ensure(engine, path, lc, "model B"));  // another model: recomputed
}

TrainerConfig run_config(const std::string& out, LossKind kind, int64_t steps) {
  TrainerConfig tc;
  tc.loss = loss_defaults(kind);
  tc.lr = 5e-3;
  tc.schedule = LrSchedule::cosine;
  tc.warmup_ratio = 0.1;
  tc.adamw.weight_decay = 0.01;
  tc.grad_accum = 2;
  tc.max_steps = steps;
  tc.out_dir = out;
  tc.seed = 9;
  return tc;
}

std::vector<float> weights_of(const std::string& dir) {
  auto model = model_load_hf<float>(dir);
  return std::vector<float>(model->param_data(), model->param_data() + model->num_params());
}

// bco_pair too: its running mean δ is part of the trainer state.
TEST(Trainer, ResumeIsBitwiseExact) {
  TempDir dir;
  const int vocab = 16;
  const std::string data = test::write_shard(dir.path, "d.bin", test::make_pairs(20, vocab, 13, false), vocab, true, 7);
  const std::string init = dir.path + "/init";
  model_save_hf(*tiny_model<float>(41), init, DType::F32);
  const int64_t N = 4;
  for (LossKind kind : {LossKind::dpo, LossKind::bco_pair}) {
    const std::string run = dir.path + "/" + loss_name(kind);
    {  // 2N straight, with a checkpoint at N
      Shard shard(data);
      PairLoader loader(shard, test::test_loader_config(3, 9));
      CpuEngine<float> engine(model_load_hf<float>(init));
      TrainerConfig tc = run_config(run + "/straight", kind, 2 * N);
      tc.save_every = N;
      Trainer trainer(engine, loader, nullptr, 0, tc);
      trainer.train();
    }
    {  // resume from checkpoint-N in a fresh trainer, engine and loader
      const std::string ckpt = run + "/straight/checkpoint-" + std::to_string(N);
      Shard shard(data);
      PairLoader loader(shard, test::test_loader_config(3, 9));
      CpuEngine<float> engine(model_load_hf<float>(ckpt));
      Trainer trainer(engine, loader, nullptr, 0, run_config(run + "/resumed", kind, 2 * N));
      trainer.resume(ckpt);
      EXPECT_EQ(trainer.state().step, N);
      EXPECT_EQ(trainer.state().bco_delta.count, kind == LossKind::bco_pair ? N : 0);
      trainer.train();
    }
    const std::vector<float> straight = weights_of(run + "/straight/final");
    const std::vector<float> resumed = weights_of(run + "/resumed/final");
    const std::vector<float> initial = weights_of(init);
    ASSERT_EQ(straight.size(), resumed.size());
    EXPECT_EQ(std::memcmp(straight.data(), resumed.data(), straight.size() * sizeof(float)), 0) << loss_name(kind);
    EXPECT_GT(test::relative_error(straight.data(), initial.data(), initial.size()), 1e-4);  // it trained
    EXPECT_TRUE(std::filesystem::exists(run + "/straight/final/optimizer.bin"));
    const nlohmann::json state = nlohmann::json::parse(read_text_file(run + "/straight/final/trainer_state.json"));
    const nlohmann::json resumed_state =
        nlohmann::json::parse(read_text_file(run + "/resumed/final/trainer_state.json"));
    if (kind == LossKind::bco_pair) {  // δ: the same bits both ways, a mean of 2N steps' rewards, not 0
      EXPECT_EQ(state["bco_delta_steps"], 2 * N);
      EXPECT_EQ(state["bco_delta"].get<double>(), resumed_state["bco_delta"].get<double>());
      EXPECT_NE(state["bco_delta"].get<double>(), 0.0);
    } else {
      EXPECT_FALSE(state.contains("bco_delta"));
    }
  }
}

// Resuming into the run's own folder re-runs the steps after the checkpoint: their earlier log lines (and a
// torn last line) are removed, so each step is logged once.
TEST(Trainer, ResumeInPlaceLogsEachStepOnce) {
  TempDir dir;
  const int vocab = 16;
  const std::string data = test::write_shard(dir.path, "d.bin", test::make_pairs(20, vocab, 13, false), vocab, true, 7);
  const std::string init = dir.path + "/init", out = dir.path + "/run";
  model_save_hf(*tiny_model<float>(41), init, DType::F32);
  const int64_t N = 3;
  {  // a run that got to step 2N − 1 (its checkpoint at N), then died mid-line
    Shard shard(data);
    PairLoader loader(shard, test::test_loader_config(3, 9));
    CpuEngine<float> engine(model_load_hf<float>(init));
    TrainerConfig tc = run_config(out, LossKind::simpo, 2 * N - 1);
    tc.save_every = N;
    Trainer trainer(engine, loader, nullptr, 0, tc);
    trainer.train();
    File(out + "/log.jsonl", "ab").write("{\"step\": 6, \"lo", 15);
  }
  {
    const std::string ckpt = out + "/checkpoint-" + std::to_string(N);
    Shard shard(data);
    PairLoader loader(shard, test::test_loader_config(3, 9));
    CpuEngine<float> engine(model_load_hf<float>(ckpt));
    Trainer trainer(engine, loader, nullptr, 0, run_config(out, LossKind::simpo, 2 * N));
    trainer.resume(ckpt);
    trainer.train();
  }
  std::vector<int64_t> steps;
  for (const auto& line : test::read_jsonl(out + "/log.jsonl"))
    if (line.contains("loss")) steps.push_back(line["step"].get<int64_t>());
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
}

TEST(Trainer, NonFiniteStopsNamingStepPairsAndCheckpoint) {
  TempDir dir;
  const int vocab = 16;
  const std::string data = test::write_shard(dir.path, "d.bin", test::make_pairs(8, vocab, 14, false), vocab, true, 8);
  Shard shard(data);
  auto model = tiny_model<float>(51);
  for (size_t i = 0; i < model->num_params(); i++) model->param_data()[i] = std::nanf("");  // a diverged model
  CpuEngine<float> engine(std::move(model));
  {
    PairLoader loader(shard, test::test_loader_config(2, 9));
    Trainer trainer(engine, loader, nullptr, 0, run_config(dir.path + "/stop", LossKind::dpo, 3));
    try {
      trainer.train();
      FAIL() << "a NaN model trained without error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("at step 1"), std::string::npos) << msg;
      EXPECT_NE(msg.find("pairs "), std::string::npos) << msg;
      EXPECT_NE(msg.find("Last good checkpoint: none yet"), std::string::npos) << msg;
      EXPECT_NE(msg.find("--skip-nonfinite"), std::string::npos) << msg;
    }
  }
  PairLoader loader(shard, test::test_loader_config(2, 9));
  TrainerConfig tc = run_config(dir.path + "/skip", LossKind::dpo, 3);
  tc.skip_nonfinite = true;
  {  // skipping every step is more than --max-skipped-fraction: an error once final/ is saved, never "done"
    Trainer trainer(engine, loader, nullptr, 0, tc);
    const std::string msg = test::error_message([&] { trainer.train(); });
    EXPECT_NE(msg.find("skipped 3 of 3 steps as non-finite, more than --max-skipped-fraction 0.1"),
              std::string::npos) << msg;
    EXPECT_TRUE(file_exists(tc.out_dir + "/final/optimizer.bin"));
  }
  loader.seek(DataPosition{});
  tc.max_skipped_fraction = 1;
  Trainer trainer(engine, loader, nullptr, 0, tc);
  trainer.train();
  EXPECT_EQ(trainer.state().skipped_nonfinite, 3);
  EXPECT_EQ(trainer.state().updates, 0);
}

// As the log writes text: invalid UTF-8 (a tiny random model's byte tokens) becomes U+FFFD.
std::string as_logged(const std::string& text) {
  return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Eval samples: at every evaluation the trainer logs greedy replies made with the weights of that step, i.e.
// what model/generate.h gives for the checkpoint saved at that step.
TEST(Trainer, EvalSamplesAreGreedyRepliesOfTheCheckpointOfTheirStep) {
  TempDir dir;
  const std::string tokenizer_dir = test::fixture_path("tokenizer/bl_gpt2");
  auto tokenizer = Tokenizer::load(tokenizer_dir);
  const int vocab = tokenizer->vocab_size();
  auto model = std::make_unique<CpuModel<float>>(test::train_tiny_config(vocab));
  model_init_random(*model, 61, 0.3f);
  const std::vector<std::string> prompts = {"sort 3 1 2", "Hello, how are you?"};
  const int max_new_tokens = 10;
  EvalSampler sampler(prompts, tokenizer_dir, "chatml", max_new_tokens);
  const std::vector<EvalSample> initial = sampler.sample(*model);
  Shard shard(test::write_shard(dir.path, "d.bin", test::make_pairs(12, vocab, 16, true), vocab, false, 0));
  PairLoader loader(shard, test::test_loader_config(3, 9));
  CpuEngine<float> engine(std::move(model));
  TrainerConfig tc = run_config(dir.path + "/run", LossKind::simpo, 4);
  tc.lr = 3e-2;
  tc.eval_every = 2;
  tc.save_every = 2;
  tc.tokenizer_dir = tokenizer_dir;
  Trainer trainer(engine, loader, nullptr, 0, tc);
  trainer.set_eval_sampler(&sampler);
  trainer.train();

  const ChatTemplate chatml = ChatTemplate::by_name("chatml", *tokenizer);
  SamplingOptions greedy;
  greedy.max_new_tokens = max_new_tokens;
  std::vector<nlohmann::json> sample_lines;
  for (const nlohmann::json& line : test::read_jsonl(tc.out_dir + "/log.jsonl"))
    if (line.contains("samples")) sample_lines.push_back(line);
  ASSERT_EQ(sample_lines.size(), 3u) << "one sample line per evaluation point (steps 0, 2 and 4)";
  for (size_t i = 0; i < prompts.size(); i++)  // step 0: the initial weights
    EXPECT_EQ(as_logged(sample_lines[0]["samples"][i]["reply"].get<std::string>()), as_logged(initial[i].reply));
  sample_lines.erase(sample_lines.begin());
  bool replies_moved = false;
  for (const nlohmann::json& line : sample_lines) {
    const int64_t step = line["step"];
    const std::string checkpoint = tc.out_dir + (step == 4 ? "/final" : "/checkpoint-" + std::to_string(step));
    auto saved = model_load_hf<float>(checkpoint);
    const std::vector<int32_t> stop_ids = reply_stop_ids(*tokenizer, chatml, saved->config());
    ASSERT_EQ(line["samples"].size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); i++) {
      const nlohmann::json& sample = line["samples"][i];
      const Generation g = generate(*saved, chat_prompt_ids(*tokenizer, chatml, {{"user", prompts[i]}}), stop_ids,
                                    greedy);
      EXPECT_EQ(sample["prompt"], prompts[i]);
      EXPECT_EQ(as_logged(sample["reply"].get<std::string>()), as_logged(tokenizer->decode(g.ids)))
          << "step " << step << " prompt " << i;
      EXPECT_EQ(sample["stopped"], g.stopped);
      replies_moved |= as_logged(tokenizer->decode(g.ids)) != as_logged(initial[i].reply);
    }
  }
  // Otherwise the samples could come from the initial weights and still match.
  EXPECT_TRUE(replies_moved) << "training changed no greedy reply: the test cannot tell the weights apart";
}

TEST(Trainer, SamplePromptFilesJsonlOrPlainLines) {
  TempDir dir;
  write_file_atomic(dir.path + "/p.jsonl", "{\"prompt\": \"sort 3 1\", \"id\": 1}\n\n{\"prompt\": \"a\\nb\"}\n");
  EXPECT_EQ(read_sample_prompts(dir.path + "/p.jsonl"), (std::vector<std::string>{"sort 3 1", "a\nb"}));
  write_file_atomic(dir.path + "/p.txt", "first prompt\r\n  \n{not json}\n");
  EXPECT_EQ(read_sample_prompts(dir.path + "/p.txt"), (std::vector<std::string>{"first prompt", "{not json}"}));
  write_file_atomic(dir.path + "/bad.jsonl", "{\"prompt\": \"ok\"}\nplain text\n");
  std::string msg = test::error_message([&] { read_sample_prompts(dir.path + "/bad.jsonl"); });
  EXPECT_NE(msg.find("bad.jsonl:2: not valid JSON"), std::string::npos) << msg;
  write_file_atomic(dir.path + "/nofield.jsonl", "{\"text\": \"x\"}\n");
  msg = test::error_message([&] { read_sample_prompts(dir.path + "/nofield.jsonl"); });
  EXPECT_NE(msg.find("nofield.jsonl:1: needs a string field \"prompt\""), std::string::npos) << msg;
  write_file_atomic(dir.path + "/empty.txt", "\n");
  msg = test::error_message([&] { read_sample_prompts(dir.path + "/empty.txt"); });
  EXPECT_NE(msg.find("empty.txt: no prompts"), std::string::npos) << msg;
}

// The fp64 engine's copy for generation is its weights rounded to fp32, in the same layout.
TEST(Trainer, WeightsToCpuAreTheEngineWeightsInFp32) {
  CpuEngine<double> engine(tiny_model<double>(81));
  const std::unique_ptr<CpuModel<float>> copy = engine.weights_to_cpu();
  ASSERT_EQ(copy->num_params(), engine.model().num_params());
  for (size_t i = 0; i < copy->num_params(); i++)
    ASSERT_EQ(copy->param_data()[i], float(engine.model().param_data()[i])) << "parameter " << i;
}

// An engine's step_report joins each step's log line (the CUDA engine's MFU and memory take this path).
class ReportingEngine : public CpuEngine<float> {
 public:
  using CpuEngine<float>::CpuEngine;
  StepReport step_report() override {
    StepReport r;
    r.metrics["engine/steps_reported"] = ++reports;
    r.progress = "reported";
    return r;
  }
  int reports = 0;
};

TEST(Trainer, EngineStepReportJoinsTheLogLine) {
  TempDir dir;
  const int vocab = 16;
  Shard shard(test::write_shard(dir.path, "d.bin", test::make_pairs(8, vocab, 17, false), vocab, false, 0));
  PairLoader loader(shard, test::test_loader_config(2, 9));
  ReportingEngine engine(tiny_model<float>(91));
  const TrainerConfig tc = run_config(dir.path + "/run", LossKind::simpo, 3);
  Trainer trainer(engine, loader, nullptr, 0, tc);
  trainer.train();
  int64_t step = 0;
  for (const nlohmann::json& line : test::read_jsonl(tc.out_dir + "/log.jsonl")) {
    if (line["step"] == 0) continue;  // the step-0 diagnostics
    ASSERT_TRUE(line.contains("engine/steps_reported")) << line.dump();
    EXPECT_EQ(line["engine/steps_reported"], ++step);
    EXPECT_TRUE(line.contains("loss")) << line.dump();
  }
  EXPECT_EQ(step, 3);
}

}  // namespace
}  // namespace stapo

namespace stapo {
namespace {

// A shard tokenized by another tokenizer than the model's is refused, naming the shard and what to do.
TEST(Trainer, ShardOfAnotherTokenizerIsRefused) {
  test::TempDir dir;
  const std::string model_dir = dir.path + "/model";
  std::filesystem::create_directories(model_dir);
  std::filesystem::copy_file(test::fixture_path("tokenizer/bl_gpt2/tokenizer.json"), model_dir + "/tokenizer.json");
  write_file_atomic(model_dir + "/config.json", config_to_json(test::train_tiny_config(64), "float32"));
  const std::string own_hash = Tokenizer::load(model_dir)->content_hash();
  const std::string other_hash = Tokenizer::load(test::fixture_path("tokenizer/bl_llama3"))->content_hash();
  ASSERT_NE(own_hash, other_hash);
  for (const std::string& hash : {own_hash, other_hash}) {
    ShardInfo info;
    info.tokenizer_hash = hash;
    info.template_name = "plain";
    info.vocab_size = 16;
    const std::string path = dir.path + "/shard.bin";
    shard_write(path, info, test::make_pairs(2, 16, 3, false));
    Shard shard(path);
    if (hash == own_hash) {
      EXPECT_NO_THROW(check_shard_tokenizer(shard, model_dir));
    } else {
      const std::string msg = test::error_message([&] { check_shard_tokenizer(shard, model_dir); });
      EXPECT_NE(msg.find("shard.bin was tokenized by a different tokenizer"), std::string::npos) << msg;
      EXPECT_NE(msg.find("re-run prepare_data"), std::string::npos) << msg;
    }
  }
  // Ids of a vocabulary larger than the model's would index past its embedding table.
  ShardInfo info;
  info.tokenizer_hash = own_hash;
  info.template_name = "plain";
  info.vocab_size = 100;
  shard_write(dir.path + "/wide.bin", info, test::make_pairs(2, 16, 3, false));
  const std::string msg = test::error_message([&] { check_shard_tokenizer(Shard(dir.path + "/wide.bin"), model_dir); });
  EXPECT_NE(msg.find("holds ids of a 100-token vocabulary, but " + model_dir + "/config.json has vocab_size 64"),
            std::string::npos) << msg;
}

// Reference log-probs are keyed by the model that wrote them: another model's are refused, naming both.
TEST(Trainer, ReferenceOfAnotherModelIsRefused) {
  test::TempDir dir;
  for (const char* name : {"a", "b"}) {
    CpuModel<float> model(test::train_tiny_config());
    model_init_random(model, name[0] == 'a' ? 1 : 2, 0.02f);
    model_save_hf(model, dir.path + "/" + name, DType::F32);
  }
  ShardInfo info;
  info.tokenizer_hash = "t";
  info.template_name = "plain";
  info.vocab_size = 16;
  const std::string path = dir.path + "/shard.bin";
  shard_write(path, info, test::make_pairs(2, 16, 3, false));
  EXPECT_NO_THROW(check_shard_reference(Shard(path), dir.path + "/a"));  // no reference: nothing to check
  shard_write_reference_logps(path, 0, {-1.f, -2.f, -3.f, -4.f});
  shard_mark_reference_complete(path, reference_tag(dir.path + "/a"));
  EXPECT_NO_THROW(check_shard_reference(Shard(path), dir.path + "/a"));
  const std::string msg = test::error_message([&] { check_shard_reference(Shard(path), dir.path + "/b"); });
  EXPECT_NE(msg.find("reference log-probs were computed by another model"), std::string::npos) << msg;
  EXPECT_NE(msg.find(reference_tag(dir.path + "/b")), std::string::npos) << msg;
}


// The AdamW moments carry a checksum (version 2): one changed byte, or a file cut short, is refused naming it;
// a version-1 file (no checksum) still reads.
TEST(Trainer, OptimizerStateChecksumCatchesAChangedByte) {
  test::TempDir dir;
  const std::string path = dir.path + "/optimizer.bin";
  const std::vector<float> m = test::random_normal(300, 1.f), v = test::random_uniform(300, 0.f, 1.f, 1);
  optimizer_state_write(path, m.data(), v.data(), m.size());
  std::vector<float> m2(300), v2(300);
  optimizer_state_read(path, m2.data(), v2.data(), m2.size());
  EXPECT_EQ(m2, m);
  EXPECT_EQ(v2, v);
  std::string bytes = read_text_file(path);
  bytes[24 + 4 * 123] ^= 0x10;
  write_file_atomic(path, bytes);
  std::string msg = test::error_message([&] { optimizer_state_read(path, m2.data(), v2.data(), m2.size()); });
  EXPECT_NE(msg.find(path + ": checksum"), std::string::npos) << msg;
  write_file_atomic(path, bytes.substr(0, bytes.size() - 12));
  msg = test::error_message([&] { optimizer_state_read(path, m2.data(), v2.data(), m2.size()); });
  EXPECT_NE(msg.find("truncated or corrupt"), std::string::npos) << msg;
  bytes[24 + 4 * 123] ^= 0x10;  // restored, then written as version 1: no checksum
  bytes[8] = 1;
  write_file_atomic(path, bytes.substr(0, bytes.size() - 8));
  optimizer_state_read(path, m2.data(), v2.data(), m2.size());
  EXPECT_EQ(m2, m);
}

// --out: an earlier run is refused unless resuming or --overwrite (which removes only what a run writes), and
// a second holder of the folder is refused while the first lives.
TEST(Trainer, RunDirectoryRefusesAnEarlierRunAndASecondRun) {
  test::TempDir dir;
  const std::string out = dir.path + "/run";
  { const auto lock = run_dir_open(out, {}, false, false); }
  write_file_atomic(out + "/log.jsonl", "{\"step\": 1}\n");
  std::filesystem::create_directories(out + "/checkpoint-1");
  write_file_atomic(out + "/notes.txt", "mine");
  std::string msg = test::error_message([&] { run_dir_open(out, {}, false, false); });
  EXPECT_NE(msg.find("holds an earlier run (checkpoint-1, log.jsonl)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--overwrite"), std::string::npos) << msg;
  { const auto lock = run_dir_open(out, {}, true, false); }  // resuming continues there
  {
    const auto lock = run_dir_open(out, {}, false, true);
    EXPECT_FALSE(file_exists(out + "/log.jsonl"));
    EXPECT_FALSE(file_exists(out + "/checkpoint-1"));
    EXPECT_TRUE(file_exists(out + "/notes.txt"));
    msg = test::error_message([&] { run_dir_open(out, {}, false, false); });
    EXPECT_NE(msg.find("is in use by another run"), std::string::npos) << msg;
  }
  msg = test::error_message([&] { run_dir_open(out, {out + "/"}, false, false); });
  EXPECT_NE(msg.find("same directory as the input"), std::string::npos) << msg;
}

// Resuming compares every setting a run's results depend on with the checkpoint's, listing each difference.
TEST(Trainer, ResumeRefusesChangedSettingsUnlessAllowed) {
  test::TempDir dir;
  TrainerConfig tc;
  PairLoaderConfig lc;
  const nlohmann::ordered_json saved = run_settings(tc, lc, 10);
  write_file_atomic(dir.path + "/trainer_state.json", nlohmann::json{{"settings", saved}}.dump());
  EXPECT_NO_THROW(run_settings_check(dir.path, saved, false));
  lc.pairs_per_batch = 2;
  tc.loss.beta = 0.5;
  const nlohmann::ordered_json now = run_settings(tc, lc, 12);
  const std::string msg = test::error_message([&] { run_settings_check(dir.path, now, false); });
  for (const char* change : {"pairs per step (--batch-size × --grad-accum × ranks): 8 in the checkpoint, 2 now",
                             "--beta: 2.0 in the checkpoint, 0.5 now",
                             "total steps (--epochs, --max-steps): 10 in the checkpoint, 12 now",
                             "--allow-changed-config"})
    EXPECT_NE(msg.find(change), std::string::npos) << msg;
  EXPECT_NO_THROW(run_settings_check(dir.path, now, true));
  write_file_atomic(dir.path + "/trainer_state.json", R"({"step": "one"})");
  EXPECT_EQ(test::error_message([&] { state_field<int64_t>(trainer_state_read(dir.path), "step", "ts.json"); }),
            "ts.json: key \"step\" is \"one\", of the wrong type (corrupt trainer state)");
}

}  // namespace
}  // namespace stapo
