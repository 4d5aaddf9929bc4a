// GGUF → an HF checkpoint directory: config.json and safetensors from the weights (model/gguf.h), and, from
// the tokenizer metadata, tokenizer.json + tokenizer_config.json with the chat template (tokenizer/gguf_vocab.h).
// model_convert's --in *.gguf path; what transformers builds from the same file (weights dequantised to fp32).
#pragma once
#include <cstddef>
#include <string>

#include "model/gguf.h"          // defines: GgufFile
#include "model/safetensors.h"   // defines: DType
#include "tokenizer/gguf_vocab.h"  // defines: GgufVocab

namespace stapo {

// The tokenizer.* metadata of the file; absent keys stay empty / -1 (the writer says what is missing).
GgufVocab gguf_vocab(const GgufFile& file);

struct GgufConvertOptions {
  DType dtype = DType::F32;  // F32 keeps the dequantised values exactly; BF16 rounds them
  size_t shard_bytes = 0;    // > 0: shard the safetensors as model_save_hf does
  bool tokenizer = true;     // false: weights and config only (for tokenizers we cannot rebuild)
};

// Writes out_dir (created). Returns the number of parameters written.
size_t gguf_convert(const std::string& gguf_path, const std::string& out_dir, const GgufConvertOptions& options);

}  // namespace stapo
