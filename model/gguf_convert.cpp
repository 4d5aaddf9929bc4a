// GGUF → HF directory (model/gguf_convert.h).
#include "model/gguf_convert.h"

#include "common/file_io.h"  // defines: write_file_atomic, make_directories

namespace stapo {

GgufVocab gguf_vocab(const GgufFile& f) {
  GgufVocab v;
  auto id = [&](const char* key) { return f.integer(key, -1); };
  if (f.has("tokenizer.ggml.model")) v.model = f.string("tokenizer.ggml.model");
  if (f.has("tokenizer.ggml.pre")) v.pre = f.string("tokenizer.ggml.pre");
  if (f.has("tokenizer.ggml.tokens")) v.tokens = f.strings("tokenizer.ggml.tokens");
  if (f.has("tokenizer.ggml.token_type")) v.token_types = f.integers("tokenizer.ggml.token_type");
  if (f.has("tokenizer.ggml.merges")) v.merges = f.strings("tokenizer.ggml.merges");
  v.bos_id = id("tokenizer.ggml.bos_token_id");
  v.eos_id = id("tokenizer.ggml.eos_token_id");
  v.unk_id = id("tokenizer.ggml.unknown_token_id");
  v.pad_id = id("tokenizer.ggml.padding_token_id");
  if (f.has("tokenizer.ggml.add_bos_token")) v.add_bos = f.boolean("tokenizer.ggml.add_bos_token");
  if (f.has("tokenizer.ggml.add_eos_token")) v.add_eos = f.boolean("tokenizer.ggml.add_eos_token");
  if (f.has("tokenizer.chat_template")) v.chat_template = f.string("tokenizer.chat_template");
  return v;
}

size_t gguf_convert(const std::string& gguf_path, const std::string& out_dir, const GgufConvertOptions& options) {
  GgufFile file(gguf_path);
  // Config and tokenizer first: they are the cheap parts to fail on, and nothing is written when any part fails.
  gguf_config(file);
  TokenizerFilesText tokenizer;
  if (options.tokenizer) tokenizer = gguf_vocab_tokenizer_files(gguf_vocab(file), gguf_path);
  auto model = gguf_load_model(file);
  model_save_hf(*model, out_dir, options.dtype, options.shard_bytes);
  if (options.tokenizer) {
    write_file_atomic(out_dir + "/tokenizer.json", tokenizer.tokenizer_json);
    write_file_atomic(out_dir + "/tokenizer_config.json", tokenizer.tokenizer_config_json);
  }
  return model->num_params();
}

}  // namespace stapo
