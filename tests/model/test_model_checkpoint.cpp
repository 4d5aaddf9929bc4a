// Checkpoints: save → load gives identical tensors (fp32 single and sharded, bf16 idempotent); config.json
// parsing (both RoPE layouts, unsupported features named); one test per bad-checkpoint error path, each
// checking the message names the tensor or file.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>

#include "common/file_io.h"
#include "model/safetensors.h"
#include "tests/model/model_test_util.h"

namespace stapo::test {
namespace {

std::unique_ptr<CpuModel<float>> random_model(const std::string& model_type) {
  auto model = std::make_unique<CpuModel<float>>(tiny_config(model_type));
  std::vector<float> init = random_normal(model->num_params(), 0.3f, 7);
  for (size_t i = 0; i < model->num_params(); ++i) model->param_data()[i] = init[i];
  return model;
}

void expect_identical(CpuModel<float>& a, CpuModel<float>& b) {
  ASSERT_EQ(a.num_params(), b.num_params());
  for (size_t i = 0; i < a.parameters().size(); ++i) {
    const Parameter<float>& pa = a.parameters()[i];
    const Parameter<float>& pb = b.parameters()[i];
    EXPECT_EQ(pa.name, pb.name);
    EXPECT_EQ(0, memcmp(pa.data, pb.data, pa.numel * sizeof(float))) << pa.name;
  }
}

TEST(ModelCheckpoint, SaveLoadFp32IsIdentical) {
  for (const char* type : {"llama", "mistral"}) {
    auto model = random_model(type);
    TempDir dir;
    model_save_hf(*model, dir.path + "/single", DType::F32);
    EXPECT_TRUE(file_exists(dir.path + "/single/model.safetensors"));
    expect_identical(*model, *model_load_hf<float>(dir.path + "/single"));
    model_save_hf(*model, dir.path + "/sharded", DType::F32, 1000);
    EXPECT_TRUE(file_exists(dir.path + "/sharded/model.safetensors.index.json"));
    EXPECT_FALSE(file_exists(dir.path + "/sharded/model.safetensors"));
    expect_identical(*model, *model_load_hf<float>(dir.path + "/sharded"));
    EXPECT_EQ(config_load(dir.path + "/single/config.json").tie_word_embeddings, model->config().tie_word_embeddings);
  }
}

TEST(ModelCheckpoint, SaveLoadBf16RoundsOnceAndIsStable) {
  auto model = random_model("llama");
  TempDir dir;
  model_save_hf(*model, dir.path + "/a", DType::BF16);
  auto loaded = model_load_hf<float>(dir.path + "/a");
  for (size_t i = 0; i < model->num_params(); ++i) {
    float x = model->param_data()[i], y = loaded->param_data()[i];
    EXPECT_LE(std::fabs(x - y), std::fabs(x) * (1.0f / 256)) << i;  // bf16 keeps 8 significant bits
  }
  model_save_hf(*loaded, dir.path + "/b", DType::BF16);
  EXPECT_EQ(read_text_file(dir.path + "/a/model.safetensors"), read_text_file(dir.path + "/b/model.safetensors"));
}

// Checkpoints transformers wrote in F16 and BF16 read back as exactly torch's F32 upcast of each value
// (F16 subnormals included).
TEST(ModelCheckpoint, ReadsTransformersF16AndBf16Exactly) {
  SafetensorsReader expected(fixture_path("model/mistral_lowp_io.safetensors"));
  for (const std::string label : {"f16", "bf16"}) {
    auto model = model_load_hf<float>(fixture_path("model/mistral_" + label));
    EXPECT_EQ(model->config().sliding_window, 5);
    EXPECT_TRUE(model->config().tie_word_embeddings);
    for (const Parameter<float>& p : model->parameters()) {
      std::vector<float> want = fixture_tensor(expected, label + "." + p.name);
      ASSERT_EQ(want.size(), p.numel);
      EXPECT_EQ(0, memcmp(want.data(), p.data, p.numel * sizeof(float))) << label << " " << p.name;
    }
  }
}

// A tensor larger than the writer's conversion piece (2^20 elements) reads back intact, in F32 and BF16.
TEST(ModelCheckpoint, LargeTensorRoundTrips) {
  const size_t n = (1 << 20) + 12345;
  std::vector<float> x = random_normal(n, 1.0f);
  TempDir dir;
  for (DType dtype : {DType::F32, DType::BF16}) {
    safetensors_write<float>(dir.path, {{"big", {(int64_t)n}, x.data()}}, dtype);
    SafetensorsReader reader(dir.path);
    std::vector<float> y(n);
    tensor_convert(y.data(), reader.tensor("big"));
    if (dtype == DType::F32) {
      EXPECT_EQ(0, memcmp(x.data(), y.data(), n * sizeof(float)));
    } else {
      EXPECT_TRUE(all_close(y, x, 0, 1.0 / 256));
    }
  }
}

// ---- config.json ----

const char* kClassicLlama = R"({
  "model_type": "llama", "vocab_size": 128, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
  "num_attention_heads": 8, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
  "rope_scaling": {"type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192},
  "max_position_embeddings": 131072, "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": [2, 3],
  "attention_bias": false, "mlp_bias": false, "hidden_act": "silu"})";

TEST(ModelConfig, ClassicAndRopeParametersLayoutsAgree) {
  ModelConfig a = config_parse(kClassicLlama, "classic.json");
  EXPECT_EQ(a.head_dim, 8);  // hidden_size / heads when head_dim is absent
  EXPECT_TRUE(a.rope_scaling.llama3);
  EXPECT_EQ(a.rope_scaling.factor, 32.0);
  EXPECT_EQ(a.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(a.rope_theta, 500000.0);
  EXPECT_EQ(a.eos_token_ids, (std::vector<int>{2, 3}));
  EXPECT_EQ(a.sliding_window, 0);
  ModelConfig b = config_parse(config_to_json(a, "float32"), "written.json");
  EXPECT_EQ(b.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(b.eos_token_ids, a.eos_token_ids);
  ModelConfig c = config_load(fixture_path("model/llama/config.json"));  // transformers 5: rope_parameters
  EXPECT_TRUE(c.rope_scaling.llama3);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 32);
  EXPECT_EQ(c.rope_theta, 10000.0);
}

// kClassicLlama with the first `from` replaced by `to`.
std::string with(const std::string& from, const std::string& to) {
  std::string s = kClassicLlama;
  size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return s.replace(at, from.size(), to);
}

// The error config_parse gives for `text`, read as dir/config.json.
std::string err(const std::string& text) { return error_message([&] { config_parse(text, "dir/config.json"); }); }

TEST(ModelConfig, UnsupportedFeaturesAreNamed) {
  std::string e = err(with("\"attention_bias\": false", "\"attention_bias\": true"));
  EXPECT_NE(e.find("attention_bias"), std::string::npos) << e;
  EXPECT_NE(e.find("dir/config.json"), std::string::npos) << e;
  e = err(with("\"mlp_bias\": false", "\"mlp_bias\": true"));
  EXPECT_NE(e.find("mlp_bias"), std::string::npos) << e;
  e = err(with("\"type\": \"llama3\"", "\"type\": \"yarn\""));
  EXPECT_NE(e.find("rope_scaling.type"), std::string::npos) << e;
  EXPECT_NE(e.find("yarn"), std::string::npos) << e;
  e = err(with("\"model_type\": \"llama\"", "\"model_type\": \"gpt2\""));
  EXPECT_NE(e.find("model_type"), std::string::npos) << e;
  e = err(with("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\""));
  EXPECT_NE(e.find("hidden_act"), std::string::npos) << e;
  e = err(with("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"));
  EXPECT_NE(e.find("num_key_value_heads"), std::string::npos) << e;
  e = err(with("\"vocab_size\": 128,", ""));
  EXPECT_NE(e.find("vocab_size"), std::string::npos) << e;
}

// Sizes are integers in a sane range and real numbers are finite and positive, each refused naming its field
// before anything is allocated: 278.9 is not read as 278, nor 2^32 + 100 as 100.
TEST(ModelConfig, OutOfRangeFractionalAndWideValuesAreNamed) {
  const std::pair<const char*, const char*> cases[] = {
      {"\"vocab_size\": 128", "\"vocab_size\": 278.9"},
      {"\"vocab_size\": 128", "\"vocab_size\": 4294967424"},
      {"\"vocab_size\": 128", "\"vocab_size\": -128"},
      {"\"hidden_size\": 64", "\"hidden_size\": 1000000000"},
      {"\"num_hidden_layers\": 2", "\"num_hidden_layers\": 100000000"},
      {"\"num_attention_heads\": 8", "\"num_attention_heads\": 0"},  // found by dev/fuzz: a division by zero
      {"\"rope_theta\": 500000.0", "\"rope_theta\": 0"},
      {"\"rope_theta\": 500000.0", "\"rope_theta\": -1"},
      {"\"rms_norm_eps\": 1e-5", "\"rms_norm_eps\": 2"},
      {"\"max_position_embeddings\": 131072", "\"max_position_embeddings\": -1"},
      {"\"factor\": 32.0", "\"factor\": 0"},
      {"\"eos_token_id\": [2, 3]", "\"eos_token_id\": [2, -3]"},
  };
  for (const auto& [from, to] : cases) {
    const std::string field = std::string(from).substr(1, std::string(from).find('"', 1) - 1);
    std::string e = err(with(from, to));
    EXPECT_NE(e.find("dir/config.json: field \""), std::string::npos) << to << ": " << e;
    EXPECT_NE(e.find(field), std::string::npos) << to << ": " << e;
  }
}

// ---- bad checkpoints ----

// A checkpoint of the tiny llama whose tensors are edited by `edit` before writing.
void write_checkpoint(const std::string& dir, CpuModel<float>& model,
                      const std::function<void(std::vector<TensorToWrite<float>>&)>& edit) {
  std::vector<TensorToWrite<float>> tensors;
  for (const Parameter<float>& p : model.parameters()) tensors.push_back({p.name, p.shape, p.data});
  edit(tensors);
  safetensors_write(dir, tensors, DType::F32);
  write_file_atomic(dir + "/config.json", config_to_json(model.config(), "float32"));
}

void erase_tensor(std::vector<TensorToWrite<float>>& tensors, const std::string& name) {
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].name == name) {
      tensors.erase(tensors.begin() + i);
      return;
    }
  FAIL() << name << " not in the model";
}

TEST(ModelBadCheckpoint, MissingTensorIsNamed) {
  auto model = random_model("llama");
  TempDir dir;
  write_checkpoint(dir.path, *model, [](auto& t) { erase_tensor(t, "model.layers.1.mlp.up_proj.weight"); });
  std::string e = error_message([&] { model_load_hf<float>(dir.path); });
  EXPECT_NE(e.find("missing"), std::string::npos) << e;
  EXPECT_NE(e.find("model.layers.1.mlp.up_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find(dir.path), std::string::npos) << e;
}

TEST(ModelBadCheckpoint, WrongShapeIsNamed) {
  auto model = random_model("llama");
  TempDir dir;
  write_checkpoint(dir.path, *model, [](auto& t) {
    for (auto& x : t)
      if (x.name == "model.layers.0.self_attn.k_proj.weight") x.shape = {4, 16};  // was (8, 8): same bytes
  });
  std::string e = error_message([&] { model_load_hf<float>(dir.path); });
  EXPECT_NE(e.find("model.layers.0.self_attn.k_proj.weight is (4, 16), expected (8, 8)"), std::string::npos) << e;
}

TEST(ModelBadCheckpoint, AllProblemsInOneError) {
  auto model = random_model("llama");
  TempDir dir;
  std::vector<float> extra(5, 1.0f);
  write_checkpoint(dir.path, *model, [&](auto& t) {
    erase_tensor(t, "lm_head.weight");
    erase_tensor(t, "model.norm.weight");
    for (auto& x : t)
      if (x.name == "model.layers.1.mlp.down_proj.weight") x.shape = {12, 8};
    t.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", {5}, extra.data()});
  });
  std::string e = error_message([&] { model_load_hf<float>(dir.path); });
  for (const char* name : {"lm_head.weight", "model.norm.weight", "model.layers.1.mlp.down_proj.weight",
                           "model.layers.0.self_attn.rotary_emb.inv_freq", "2 missing", "1 mis-shaped",
                           "1 unexpected"})
    EXPECT_NE(e.find(name), std::string::npos) << name << " not in: " << e;
}

// Writes a one-tensor safetensors file with the given header text and `data_bytes` zero bytes of data.
void write_raw_safetensors(const std::string& path, const std::string& header, size_t data_bytes) {
  std::string bytes(8, '\0');
  uint64_t n = header.size();
  memcpy(bytes.data(), &n, 8);
  bytes += header;
  bytes.append(data_bytes, '\0');
  write_file_atomic(path, bytes);
}

TEST(ModelBadCheckpoint, UnknownDtypeIsNamed) {
  TempDir dir;
  std::string path = dir.path + "/model.safetensors";
  write_raw_safetensors(path, R"({"model.embed_tokens.weight":{"dtype":"I64","shape":[2,2],"data_offsets":[0,32]}})", 32);
  std::string e = error_message([&] { SafetensorsReader reader(dir.path); });
  EXPECT_NE(e.find("model.embed_tokens.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("I64"), std::string::npos) << e;
  EXPECT_NE(e.find(path), std::string::npos) << e;
}

TEST(ModelBadCheckpoint, TruncatedFileIsNamed) {
  auto model = random_model("mistral");
  TempDir dir;
  model_save_hf(*model, dir.path, DType::F32);
  std::string path = dir.path + "/model.safetensors";
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 10);
  std::string e = error_message([&] { model_load_hf<float>(dir.path); });
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("model.norm.weight"), std::string::npos) << e;  // the last tensor written
  std::filesystem::resize_file(path, 5);
  e = error_message([&] { model_load_hf<float>(dir.path); });
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  EXPECT_NE(e.find(path), std::string::npos) << e;
}

TEST(ModelBadCheckpoint, BadJsonIsNamed) {
  auto model = random_model("llama");
  TempDir dir;
  model_save_hf(*model, dir.path, DType::F32);
  write_file_atomic(dir.path + "/config.json", "{\"model_type\": \"llama\", ");
  std::string e = error_message([&] { model_load_hf<float>(dir.path); });
  EXPECT_NE(e.find(dir.path + "/config.json"), std::string::npos) << e;
  EXPECT_NE(e.find("not valid JSON"), std::string::npos) << e;

  std::string path = dir.path + "/bad.safetensors";
  write_raw_safetensors(path, "{\"x\": [1, 2", 0);
  e = error_message([&] { SafetensorsReader reader(path); });
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("not valid JSON"), std::string::npos) << e;
}

// A shape whose element count wraps 64 bits (2^32 · 2^32 · 4 bytes = 0) is refused, not read as 0 bytes.
TEST(ModelBadCheckpoint, ShapeOverflowIsNamed) {
  TempDir dir;
  write_raw_safetensors(dir.path + "/model.safetensors",
                        R"({"model.norm.weight":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})",
                        0);
  std::string e = error_message([&] { SafetensorsReader reader(dir.path); });
  EXPECT_NE(e.find("model.norm.weight has shape [4294967296,4294967296], too large"), std::string::npos) << e;
}

// weight_map entries are file names beside the index: a path that leaves the folder is refused unread.
TEST(ModelBadCheckpoint, ShardIndexMayNotLeaveTheFolder) {
  auto model = random_model("llama");
  TempDir dir;
  model_save_hf(*model, dir.path + "/m", DType::F32, 1000);
  model_save_hf(*model, dir.path + "/outside", DType::F32);
  for (const char* name : {"../outside/model.safetensors", "/etc/passwd", ".."}) {
    write_file_atomic(dir.path + "/m/model.safetensors.index.json",
                      cat(R"({"weight_map": {"model.norm.weight": ")", name, "\"}}"));
    std::string e = error_message([&] { SafetensorsReader reader(dir.path + "/m"); });
    EXPECT_NE(e.find(cat("model.norm.weight names '", name, "'")), std::string::npos) << e;
  }
}

TEST(ModelBadCheckpoint, ShardIndexNamesMissingFile) {
  auto model = random_model("llama");
  TempDir dir;
  model_save_hf(*model, dir.path, DType::F32, 1000);
  std::string shard;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path))
    if (entry.path().filename().string().rfind("model-00002-of-", 0) == 0) shard = entry.path().filename().string();
  ASSERT_FALSE(shard.empty());
  std::filesystem::remove(dir.path + "/" + shard);
  std::string e = error_message([&] { model_load_hf<float>(dir.path); });
  EXPECT_NE(e.find(shard), std::string::npos) << e;
}

}  // namespace
}  // namespace stapo::test
