// model_convert: reads a Llama/Mistral HF checkpoint (config.json + safetensors, any of F32/BF16/F16, single or
// sharded), validates it against its config, and writes it again in F32 or BF16, single or sharded, with the
// model's own writer, copying the tokenizer files the input has (tokenizer/tokenizer_files.h). Used to re-shard
// or change dtype, and by dev/reference/make_model_fixtures.py --roundtrip to show transformers loads what we
// write.
// Without --dtype an HF checkpoint keeps every value exactly (BF16 stays BF16, F32 and F16 become F32): a
// downcast happens only when asked for, but for F64, rounded to F32 with a note. The output directory must not be
// the input (its files would be replaced while the input is still being read).
// With a GGUF file as --in (llama.cpp's format, recognised by its magic), it writes the HF directory
// transformers would build from that file: weights dequantised to fp32 (the default dtype there), config.json,
// and tokenizer.json + tokenizer_config.json with the chat template (model/gguf_convert.h).
#include <cstring>

#include "common/cli.h"           // defines: STAPO_PARSE_CLI, run_main
#include "common/error.h"         // defines: STAPO_CHECK
#include "common/file_io.h"       // defines: File, is_directory, output_dir_check
#include "model/gguf_convert.h"   // defines: gguf_convert
#include "model/model.h"          // defines: model_load_hf, model_save_hf
#include "tokenizer/tokenizer_files.h"  // defines: copy_tokenizer_files

// True when `path` is a file that starts with GGUF's magic.
static bool is_gguf(const std::string& path) {
  if (stapo::is_directory(path) || !stapo::file_exists(path)) return false;
  char magic[4] = {};
  stapo::File f(path, "rb");
  return std::fread(magic, 1, 4, f.get()) == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

// The narrowest output dtype that holds every tensor of an HF checkpoint exactly: BF16 when all are, else F32.
// F64 (the double CPU engine's checkpoints) is the exception: the model is loaded as fp32, so it is said, not hidden.
static stapo::DType lossless_dtype(const std::string& dir) {
  bool all_bf16 = true, any_f64 = false;
  const stapo::SafetensorsReader reader(dir);  // named: tensors() is a reference into it
  for (const auto& [name, tensor] : reader.tensors()) {
    all_bf16 &= tensor.dtype == stapo::DType::BF16;
    any_f64 |= tensor.dtype == stapo::DType::F64;
  }
  if (any_f64) fprintf(stderr, "model_convert: the checkpoint's F64 values are rounded to F32 (models load as fp32)\n");
  return all_bf16 ? stapo::DType::BF16 : stapo::DType::F32;
}

int main(int argc, char** argv) {
  CLI::App app{"Re-write a Llama/Mistral HF checkpoint in F32 or BF16, single-file or sharded; or convert a GGUF "
               "file (F32/F16/BF16/Q8_0/Q4_0/Q4_1) into an HF checkpoint directory with its tokenizer"};
  std::string in, out, dtype;
  size_t shard_bytes = 0;
  bool no_tokenizer = false;
  app.add_option("--in", in, "input HF checkpoint directory, or a .gguf file")->required();
  app.add_option("--out", out, "output directory, not the input (created; model files in it are replaced)")
      ->required();
  app.add_option("--dtype", dtype, "f32 or bf16 (default: for an HF checkpoint the input's without loss, bf16 only "
                                   "when it is all bf16; f32 for a GGUF file, whose dequantised weights bf16 would "
                                   "round)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--shard-bytes", shard_bytes, "shard the output into files of at most this many bytes (0: one file)");
  app.add_flag("--no-tokenizer", no_tokenizer,
               "GGUF input only: write weights and config but no tokenizer files (for a tokenizer that cannot be "
               "rebuilt; copy the original repository's tokenizer files instead)");
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    stapo::output_dir_check("--out", out, {in});
    if (is_gguf(in)) {
      stapo::GgufConvertOptions options;
      options.dtype = dtype == "bf16" ? stapo::DType::BF16 : stapo::DType::F32;
      options.shard_bytes = shard_bytes;
      options.tokenizer = !no_tokenizer;
      const size_t n = stapo::gguf_convert(in, out, options);
      fprintf(stderr, "wrote %s (%zu parameters, %s%s)\n", out.c_str(), n, dtype.empty() ? "f32" : dtype.c_str(),
              no_tokenizer ? ", no tokenizer" : ", tokenizer.json + tokenizer_config.json");
      return;
    }
    STAPO_CHECK(!no_tokenizer, "--no-tokenizer applies to a GGUF --in only; ", in, " is not a GGUF file");
    const stapo::DType stored = lossless_dtype(in);
    const stapo::DType target = dtype.empty() ? stored : dtype == "f32" ? stapo::DType::F32 : stapo::DType::BF16;
    if (stored == stapo::DType::F32 && target == stapo::DType::BF16)
      fprintf(stderr, "model_convert: --dtype bf16 rounds the checkpoint's F32/F16 values to bf16 (as asked)\n");
    auto model = stapo::model_load_hf<float>(in);
    stapo::model_save_hf(*model, out, target, shard_bytes);
    size_t tokenizer_files = stapo::copy_tokenizer_files(in, out).size();
    fprintf(stderr, "wrote %s (%zu parameters, %s; %zu tokenizer files copied)\n", out.c_str(), model->num_params(),
            stapo::dtype_name(target), tokenizer_files);
  });
}
