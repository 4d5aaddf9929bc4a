// train_stapo: the GPU trainer (bf16 CUDA engine). Until the CUDA engine lands it checks the device and the
// toolchain only: it reports the GPU it would use and exits with an error saying training is not available.
#include "common/cli.h"
#include "kernels/cuda_common.h"

int main(int argc, char** argv) {
  CLI::App app{"train_stapo: align a Llama/Mistral checkpoint on preference pairs (StaPO and baselines), bf16 CUDA"};
  app.name("train_stapo");
  std::string model_dir, data_path, out_dir;
  app.add_option("--model", model_dir, "Hugging Face checkpoint directory (config.json + safetensors)");
  app.add_option("--data", data_path, "training shard written by ./prepare_data");
  app.add_option("--out", out_dir, "output directory for checkpoints and the JSONL log");
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    std::string why;
    STAPO_CHECK(stapo::cuda_device_available(&why), "no CUDA device: ", why, ". Use ./train_stapo_cpu on the CPU.");
    fprintf(stderr, "device: %s\n", stapo::cuda_device_description().c_str());
    stapo::fail("GPU training is not implemented yet in this build; use ./train_stapo_cpu");
  });
}
