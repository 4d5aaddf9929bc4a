// The model's hyperparameters, read from a Hugging Face config.json (model_type "llama" or "mistral").
// Anything the reference model does not implement (attention/MLP biases, another RoPE type, another
// model_type) is rejected with an error naming the field and the file, never ignored.
#pragma once
#include <string>
#include <vector>

#include "model/ops/rope.h"  // defines: RopeScaling

namespace stapo {

struct ModelConfig {
  std::string model_type = "llama";  // "llama" or "mistral"
  int vocab_size = 0;                // V
  int hidden_size = 0;               // C
  int intermediate_size = 0;         // F
  int num_hidden_layers = 0;         // L
  int num_attention_heads = 0;       // H
  int num_key_value_heads = 0;       // Hkv
  int head_dim = 0;                  // D (hidden_size / H when config.json has none)
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  int sliding_window = 0;  // 0 = none (Mistral's null)
  std::vector<int> bos_token_ids;
  std::vector<int> eos_token_ids;  // HF allows one id or a list
  std::string torch_dtype;         // as found (informational; the CPU model is fp32)
};

// Parses the text of a config.json; `path` only names the file in errors.
ModelConfig config_parse(const std::string& json_text, const std::string& path);
ModelConfig config_load(const std::string& path);  // reads and parses path (a config.json)
// A config.json transformers' from_pretrained accepts, for a checkpoint we write.
std::string config_to_json(const ModelConfig& config, const std::string& torch_dtype);
void config_validate(const ModelConfig& config, const std::string& path);  // shapes consistent, sizes positive

}  // namespace stapo
