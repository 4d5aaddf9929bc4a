// model_convert: reads a Llama/Mistral HF checkpoint (config.json + safetensors, any of F32/BF16/F16, single or
// sharded), validates it against its config, and writes it again in F32 or BF16, single or sharded, with the
// model's own writer, copying the tokenizer files the input has (tokenizer/tokenizer_files.h). Used to re-shard
// or change dtype, and by dev/reference/make_model_fixtures.py --roundtrip to show transformers loads what we
// write.
#include "common/cli.h"                  // defines: STAPO_PARSE_CLI, run_main
#include "model/model.h"                 // defines: model_load_hf, model_save_hf
#include "tokenizer/tokenizer_files.h"  // defines: copy_tokenizer_files

int main(int argc, char** argv) {
  CLI::App app{"Re-write a Llama/Mistral HF checkpoint in F32 or BF16, single-file or sharded"};
  std::string in, out, dtype = "bf16";
  size_t shard_bytes = 0;
  app.add_option("--in", in, "input HF checkpoint directory")->required();
  app.add_option("--out", out, "output directory (created; model files in it are replaced)")->required();
  app.add_option("--dtype", dtype, "f32 or bf16")->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--shard-bytes", shard_bytes, "shard the output into files of at most this many bytes (0: one file)");
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    auto model = stapo::model_load_hf<float>(in);
    stapo::model_save_hf(*model, out, dtype == "f32" ? stapo::DType::F32 : stapo::DType::BF16, shard_bytes);
    size_t tokenizer_files = stapo::copy_tokenizer_files(in, out).size();
    fprintf(stderr, "wrote %s (%zu parameters, %s; %zu tokenizer files copied)\n", out.c_str(), model->num_params(),
            dtype.c_str(), tokenizer_files);
  });
}
