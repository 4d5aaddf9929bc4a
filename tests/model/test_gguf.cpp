// GGUF import (model/gguf.h, model/gguf_convert.h, tokenizer/gguf_vocab.h) and model_convert (GGUF and HF input)
// against the tiny files of dev/reference/make_gguf_fixtures.py: every supported type dequantises bit-exactly as
// the gguf package does; a random Llama written as llama.cpp writes one loads bit-exactly as transformers loads it
// (q/k permutation undone); the tokenizer files we write give transformers' ids and texts; bad files, types
// and architectures are errors that name them.
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "model/gguf.h"
#include "model/gguf_convert.h"
#include "model/model.h"
#include "tests/test_util.h"
#include "tokenizer/tokenizer.h"

namespace stapo::test {
namespace {

std::string gguf_fixture(const std::string& name) { return fixture_path("gguf/" + name); }

// Every parameter of `model` bit-identical to the same-named tensor of `expected` (converted to fp32 as loaded).
void expect_equal_to(CpuModel<float>& model, const SafetensorsReader& expected) {
  for (const Parameter<float>& p : model.parameters()) {
    const TensorView& t = expected.tensor(p.name);
    ASSERT_EQ(t.shape, p.shape) << p.name;
    std::vector<float> ref(t.numel);
    tensor_convert(ref.data(), t);
    EXPECT_EQ(0, std::memcmp(ref.data(), p.data, p.numel * sizeof(float))) << p.name << ": not bit-identical";
  }
}

TEST(Gguf, EveryTypeDequantisesAsTheGgufPackage) {
  GgufFile file(gguf_fixture("types.gguf"));
  SafetensorsReader expected(gguf_fixture("types_expected.safetensors"));
  EXPECT_EQ(file.version(), 3u);
  std::vector<std::string> seen;
  for (const GgufTensor& t : file.tensors()) {
    EXPECT_EQ(t.dims, (std::vector<int64_t>{64, 3})) << t.name;
    EXPECT_EQ("t_" + gguf_type_name(t.type), t.name);
    std::vector<float> ours(t.numel, std::nanf("")), ref(t.numel);
    gguf_dequantize(ours.data(), t, file.path());
    tensor_convert(ref.data(), expected.tensor(t.name));
    EXPECT_EQ(0, std::memcmp(ours.data(), ref.data(), ref.size() * sizeof(float))) << t.name;
    EXPECT_TRUE(all_close(ours, ref, 0, 0)) << t.name;  // prints the first differing elements
    seen.push_back(t.name);
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"t_F32", "t_F16", "t_BF16", "t_Q8_0", "t_Q4_0", "t_Q4_1"}));
}

TEST(Gguf, UnsupportedTypeIsNamed) {
  GgufFile file(gguf_fixture("unsupported_type.gguf"));
  ASSERT_EQ(file.tensors().size(), 1u);
  std::vector<float> out(file.tensors()[0].numel);
  const std::string msg = error_message([&] { gguf_dequantize(out.data(), file.tensors()[0], file.path()); });
  EXPECT_NE(msg.find("t_Q5_0 is of type Q5_0, which is not supported"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unsupported_type.gguf"), std::string::npos) << msg;
}

TEST(Gguf, UnsupportedArchitectureIsNamed) {
  GgufFile file(gguf_fixture("unsupported_arch.gguf"));
  const std::string msg = error_message([&] { gguf_config(file); });
  EXPECT_NE(msg.find("general.architecture is \"qwen2\""), std::string::npos) << msg;
}

// A copy of types.gguf with `edit` applied to its bytes; returns the error of opening it.
std::string open_edited(const std::function<void(std::string&)>& edit) {
  std::string bytes = read_text_file(gguf_fixture("types.gguf"));
  edit(bytes);
  TempDir dir;
  const std::string path = dir.path + "/edited.gguf";
  write_file_atomic(path, bytes);
  return error_message([&] { GgufFile file(path); });
}

TEST(Gguf, BadFilesAreErrorsNamingWhatIsWrong) {
  std::string msg = open_edited([](std::string& b) { b[0] = 'X'; });
  EXPECT_NE(msg.find("not a GGUF file"), std::string::npos) << msg;
  msg = open_edited([](std::string& b) { b[4] = 1; });
  EXPECT_NE(msg.find("GGUF version 1 is not supported"), std::string::npos) << msg;
  msg = open_edited([](std::string& b) { b.resize(b.size() - 100); });
  EXPECT_NE(msg.find("truncated: tensor t_Q4_1"), std::string::npos) << msg;
  msg = open_edited([](std::string& b) { b.resize(40); });
  EXPECT_NE(msg.find("truncated at byte"), std::string::npos) << msg;
  EXPECT_NE(msg.find("while reading"), std::string::npos) << msg;
}

TEST(Gguf, TinyLlamaLoadsAsTransformersLoadsIt) {
  GgufFile file(gguf_fixture("tiny_llama.gguf"));
  const ModelConfig c = gguf_config(file);
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.intermediate_size, 96);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_ids, std::vector<int>{1});
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{2});
  auto model = gguf_load_model(file);
  expect_equal_to(*model, SafetensorsReader(gguf_fixture("tiny_llama_expected.safetensors")));
}

TEST(Gguf, ConvertedTokenizerGivesTransformersIdsAndTexts) {
  TempDir dir;
  gguf_convert(gguf_fixture("tiny_llama.gguf"), dir.path, GgufConvertOptions{});
  expect_equal_to(*model_load_hf<float>(dir.path), SafetensorsReader(gguf_fixture("tiny_llama_expected.safetensors")));

  const nlohmann::json fx = json_fixture("gguf/tiny_llama_tokenizer.json", 1);
  auto tok = Tokenizer::load(dir.path);
  ASSERT_TRUE(tok->adds_bos_by_default());  // tokenizer.ggml.add_bos_token is true in the file
  ASSERT_EQ(tok->bos_id(), 1);
  ASSERT_EQ(fx["texts"].size(), fx["ids"].size());
  for (size_t i = 0; i < fx["texts"].size(); ++i) {
    const std::string text = fx["texts"][i];
    std::vector<int32_t> ids = {tok->bos_id()};
    for (int32_t id : tok->encode(text, /*allow_special=*/true)) ids.push_back(id);
    EXPECT_EQ(ids, fx["ids"][i].get<std::vector<int32_t>>()) << "text " << i << ": \"" << text << "\"";
  }
  for (size_t i = 0; i < fx["decode_ids"].size(); ++i)
    EXPECT_EQ(tok->decode(fx["decode_ids"][i].get<std::vector<int32_t>>()), fx["decoded"][i].get<std::string>())
        << "id list " << i;
  EXPECT_NE(tok->config().chat_template.find("<|im_start|>{{ m['role'] }}"), std::string::npos);
}

TEST(Gguf, ModelConvertBinary) {
  TempDir dir;
  const std::string bin = std::string(STAPO_SOURCE_DIR) + "/model_convert";
  CommandResult ok = run_command(bin + " --in " + gguf_fixture("tiny_llama.gguf") + " --out " + dir.path + "/m");
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("f32, tokenizer.json + tokenizer_config.json"), std::string::npos) << ok.output;
  EXPECT_TRUE(file_exists(dir.path + "/m/tokenizer.json"));
  EXPECT_NE(read_text_file(dir.path + "/m/config.json").find("\"torch_dtype\": \"float32\""), std::string::npos);

  CommandResult bare = run_command(bin + " --in " + gguf_fixture("tiny_llama.gguf") + " --out " + dir.path +
                                   "/bare --no-tokenizer --dtype bf16");
  ASSERT_EQ(bare.exit_code, 0) << bare.output;
  EXPECT_FALSE(file_exists(dir.path + "/bare/tokenizer.json"));
  EXPECT_NE(read_text_file(dir.path + "/bare/config.json").find("bfloat16"), std::string::npos);

  CommandResult arch = run_command(bin + " --in " + gguf_fixture("unsupported_arch.gguf") + " --out " + dir.path + "/x");
  EXPECT_EQ(arch.exit_code, 1) << arch.output;
  EXPECT_NE(arch.output.find("error: "), std::string::npos) << arch.output;
  EXPECT_NE(arch.output.find("qwen2"), std::string::npos) << arch.output;
  EXPECT_FALSE(file_exists(dir.path + "/x/config.json"));

  CommandResult misuse = run_command(bin + " --in " + dir.path + "/m --out " + dir.path + "/y --no-tokenizer");
  EXPECT_EQ(misuse.exit_code, 1) << misuse.output;
  EXPECT_NE(misuse.output.find("--no-tokenizer applies to a GGUF --in only"), std::string::npos) << misuse.output;
}

// The HF path of model_convert, which no other test ran (an iteration over a destroyed reader went unseen): without
// --dtype every value comes back bit for bit in the input's dtype (F32 and BF16 fixtures); F64, which the model
// holds as fp32, is written F32 with a note.
TEST(ModelConvert, HfCheckpointKeepsEveryValue) {
  TempDir dir;
  const std::string bin = std::string(STAPO_SOURCE_DIR) + "/model_convert";
  const std::pair<std::string, DType> inputs[] = {{"llama", DType::F32}, {"mistral_bf16", DType::BF16}};
  for (const auto& [name, dtype] : inputs) {
    const std::string in = fixture_path("model/" + name), out = dir.path + "/" + name;
    CommandResult r = run_command(bin + " --in " + in + " --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(dtype_name(dtype)), std::string::npos) << r.output;
    const SafetensorsReader written(out);
    for (const auto& [tensor_name, view] : written.tensors())
      EXPECT_EQ(view.dtype, dtype) << name << " " << tensor_name;
    expect_equal_to(*model_load_hf<float>(out), SafetensorsReader(in));
  }
  const std::string f64 = dir.path + "/f64", back = dir.path + "/f64_back";
  model_save_hf(*model_load_hf<float>(fixture_path("model/llama")), f64, DType::F64);
  CommandResult r = run_command(bin + " --in " + f64 + " --out " + back);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("F64 values are rounded to F32"), std::string::npos) << r.output;
  expect_equal_to(*model_load_hf<float>(back), SafetensorsReader(fixture_path("model/llama")));
}

}  // namespace
}  // namespace stapo::test
