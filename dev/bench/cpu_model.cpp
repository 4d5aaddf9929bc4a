// bench_cpu_model: times one forward + backward of CpuModel<float> (the CPU reference) on a random Llama of
// the given shape; full rows, every position with a target, loss Σ w_t·logp_t. Prints one JSON line.
// Run through dev/bench/cpu_model.sh, which compares it with PyTorch at the same thread count.
#include <algorithm>
#include <chrono>
#include <random>

#include "common/cli.h"       // defines: STAPO_PARSE_CLI, run_main
#include "common/progress.h"  // defines: Progress
#include "model/model.h"  // defines: CpuModel, model_init_random

int main(int argc, char** argv) {
  CLI::App app{"Time one forward+backward of the fp32 CPU reference model (random Llama)"};
  int layers = 4, hidden = 256, heads = 8, kv_heads = 4, ffn = 768, vocab = 32000, seq = 256, batch = 4;
  int warmup = 1, iters = 5;
  app.add_option("--layers", layers);
  app.add_option("--hidden", hidden);
  app.add_option("--heads", heads);
  app.add_option("--kv-heads", kv_heads);
  app.add_option("--ffn", ffn);
  app.add_option("--vocab", vocab);
  app.add_option("--seq", seq);
  app.add_option("--batch", batch);
  app.add_option("--warmup", warmup);
  app.add_option("--iters", iters, "timed iterations (the median is reported)");
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    stapo::ModelConfig config;
    config.vocab_size = vocab;
    config.hidden_size = hidden;
    config.intermediate_size = ffn;
    config.num_hidden_layers = layers;
    config.num_attention_heads = heads;
    config.num_key_value_heads = kv_heads;
    config.head_dim = hidden / heads;
    config.max_position_embeddings = seq;
    stapo::CpuModel<float> model(config);
    stapo::model_init_random(model, 1);

    stapo::TokenBatch b;
    b.rows = batch;
    b.T = seq;
    std::mt19937 rng(2);
    for (int r = 0; r < batch; ++r)
      for (int p = 0; p < seq; ++p) {
        b.tokens.push_back((int32_t)(rng() % vocab));
        b.positions.push_back(p);
        b.segments.push_back(0);
      }
    for (int i = 0; i < batch * seq; ++i) b.targets.push_back(i % seq + 1 < seq ? b.tokens[i + 1] : -1);
    std::vector<float> logp(b.tokens.size()), entropy(b.tokens.size()), w(b.tokens.size());
    std::normal_distribution<float> normal;
    for (float& x : w) x = normal(rng);

    std::vector<double> ms;
    stapo::Progress progress("bench", warmup + iters);
    for (int it = 0; it < warmup + iters; ++it) {
      auto t0 = std::chrono::steady_clock::now();
      model.zero_grad();
      model.forward(b, logp.data(), entropy.data());
      model.backward(w.data());
      auto t1 = std::chrono::steady_clock::now();
      if (it >= warmup) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      progress.update(it + 1, (int64_t)batch * seq);
    }
    progress.finish();
    std::sort(ms.begin(), ms.end());
    printf("{\"impl\": \"stapo\", \"median_ms\": %.1f, \"min_ms\": %.1f, \"tokens_per_s\": %.0f}\n",
           ms[ms.size() / 2], ms[0], batch * seq / (ms[ms.size() / 2] / 1000));
  });
}
