// Helpers shared by the model tests: the fixture batches written by dev/reference/make_model_fixtures.py,
// a tiny model config and random batches.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "common/error.h"
#include "model/model.h"
#include "tests/test_util.h"

namespace stapo::test {

// A tensor of a fixture file as float (integer arrays are stored exactly as F32).
inline std::vector<float> fixture_tensor(const SafetensorsReader& io, const std::string& name) {
  const TensorView& t = io.tensor(name);
  std::vector<float> out(t.numel);
  tensor_convert(out.data(), t);
  return out;
}

// The fixture's batch; fails unless the file has the fixture version this reader knows.
inline TokenBatch fixture_batch(const SafetensorsReader& io) {
  std::vector<float> version = fixture_tensor(io, "version");
  STAPO_CHECK(version.size() == 1 && version[0] == 1.0f, "model fixture version ", version[0],
              " is not 1: regenerate with dev/reference/make_model_fixtures.py");
  const TensorView& shape = io.tensor("tokens");
  TokenBatch b;
  b.rows = (int)shape.shape[0];
  b.T = (int)shape.shape[1];
  auto ints = [&](const char* name) {
    std::vector<float> f = fixture_tensor(io, name);
    return std::vector<int32_t>(f.begin(), f.end());
  };
  b.tokens = ints("tokens");
  b.targets = ints("targets");
  b.positions = ints("positions");
  b.segments = ints("segments");
  return b;
}

// Rows of `lengths` sequences each (a row's lengths may sum to less than T: right padding), random tokens.
inline TokenBatch random_batch(const std::vector<std::vector<int>>& rows, int T, int V, uint64_t salt) {
  TokenBatch b;
  b.rows = (int)rows.size();
  b.T = T;
  size_t n = (size_t)b.rows * T;
  b.tokens.assign(n, 0);
  b.targets.assign(n, -1);
  b.positions.assign(n, 0);
  b.segments.assign(n, -1);
  std::vector<float> u = random_uniform(n, 0.0f, (float)V, salt);
  for (int r = 0; r < b.rows; ++r) {
    int start = 0;
    for (size_t s = 0; s < rows[r].size(); ++s) {
      for (int p = 0; p < rows[r][s]; ++p) {
        size_t i = (size_t)r * T + start + p;
        b.tokens[i] = std::min(V - 1, (int)u[i]);
        b.positions[i] = p;
        b.segments[i] = (int)s;
      }
      for (int p = 0; p + 1 < rows[r][s]; ++p) b.targets[(size_t)r * T + start + p] = b.tokens[(size_t)r * T + start + p + 1];
      start += rows[r][s];
    }
  }
  return b;
}

// A config small enough for finite differences on every parameter; head_dim differs from hidden/heads.
inline ModelConfig tiny_config(const std::string& model_type) {
  ModelConfig c;
  c.model_type = model_type;
  c.vocab_size = 11;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 32;
  if (model_type == "llama") {
    c.rope_theta = 10000.0;
    c.rope_scaling = {true, 8.0, 1.0, 4.0, 16};
  } else {
    c.rope_theta = 1000.0;
    c.tie_word_embeddings = true;
    c.sliding_window = 3;
  }
  return c;
}

}  // namespace stapo::test
