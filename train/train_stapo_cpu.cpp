// train_stapo_cpu: preference optimisation on the fp32 CPU reference model.
// The flags are the trainer's interface; the training loop lands with the CPU trainer (docs/architecture.md).
#include "common/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"train_stapo_cpu: align a Llama/Mistral checkpoint on preference pairs (StaPO and baselines), fp32 CPU"};
  app.name("train_stapo_cpu");
  std::string model_dir, data_path, out_dir, loss = "stapo";
  app.add_option("--model", model_dir, "Hugging Face checkpoint directory (config.json + safetensors)");
  app.add_option("--data", data_path, "training shard written by ./prepare_data");
  app.add_option("--out", out_dir, "output directory for checkpoints and the JSONL log");
  app.add_option("--loss", loss, "preference loss")
      ->check(CLI::IsMember({"stapo", "stapo-sigmoid", "stapo-hinge", "dpo", "simpo", "hinge", "ipo", "cpo", "orpo", "sft"}));
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] { stapo::fail("training is not implemented yet: this build only defines the flags"); });
}
