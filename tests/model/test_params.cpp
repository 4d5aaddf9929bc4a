// model/params.h: the one description of the parameters, that the CPU model, the CUDA model and the checkpoint
// loaders share. Names and shapes are checked against the HF checkpoints elsewhere (test_model_hf: the CPU model
// loads transformers' files through it); here its layout rules and the role → pointer mapping.
#include <set>

#include "model/params.h"
#include "tests/model/model_test_util.h"

namespace stapo {
namespace {

// The model tests' tiny config: the Mistral one has tied embeddings, the Llama one not.
ModelConfig params_config(bool tied) { return test::tiny_config(tied ? "mistral" : "llama"); }

TEST(Params, HfOrderShapesNormsAndLayers) {
  for (bool tied : {false, true}) {
    const ModelConfig c = params_config(tied);
    const std::vector<ParamSpec> specs = model_param_specs(c);
    ASSERT_EQ(specs.size(), 1 + 9 * 2 + 1 + (tied ? 0 : 1));
    EXPECT_EQ(specs[0].name, "model.embed_tokens.weight");
    EXPECT_EQ(specs[0].shape, (std::vector<int64_t>{11, 8}));
    const char* layer_names[] = {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                                 "self_attn.v_proj", "self_attn.o_proj", "post_attention_layernorm",
                                 "mlp.gate_proj",   "mlp.up_proj",      "mlp.down_proj"};
    // C 8, H·D 16, Hkv·D 8, F 12
    const std::vector<int64_t> layer_shapes[] = {{8}, {16, 8}, {8, 8}, {8, 8}, {8, 16}, {8}, {12, 8}, {12, 8}, {8, 12}};
    for (int l = 0; l < 2; ++l)
      for (int k = 0; k < 9; ++k) {
        const ParamSpec& s = specs[1 + 9 * l + k];
        EXPECT_EQ(s.name, cat("model.layers.", l, ".", layer_names[k], ".weight"));
        EXPECT_EQ(s.shape, layer_shapes[k]) << s.name;
        EXPECT_EQ(s.layer, l) << s.name;
        EXPECT_EQ(s.is_norm(), k == 0 || k == 5) << s.name;
      }
    EXPECT_EQ(specs[19].name, "model.norm.weight");
    EXPECT_TRUE(specs[19].is_norm());
    if (!tied) {
      EXPECT_EQ(specs[20].name, "lm_head.weight");
    }
    for (const ParamSpec& s : specs) {
      size_t n = 1;
      for (int64_t d : s.shape) n *= (size_t)d;
      EXPECT_EQ(s.numel, n) << s.name;
    }
    // The CPU model is laid out from it, in its order.
    CpuModel<float> model(c);
    ASSERT_EQ(model.parameters().size(), specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_EQ(model.parameters()[i].name, specs[i].name);
      EXPECT_EQ(model.parameters()[i].is_norm, specs[i].is_norm());
    }
  }
}

TEST(Params, OffsetsAlignedAndDisjoint) {
  const std::vector<ParamSpec> specs = model_param_specs(params_config(false));
  for (size_t align : {1, 128}) {
    size_t total = 0;
    const std::vector<size_t> offsets = param_offsets(specs, align, &total);
    ASSERT_EQ(offsets.size(), specs.size());
    EXPECT_EQ(total % align, 0u);
    size_t end = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_EQ(offsets[i] % align, 0u) << specs[i].name;
      EXPECT_GE(offsets[i], end) << specs[i].name << " overlaps the tensor before it";
      EXPECT_LT(offsets[i] - end, align) << specs[i].name << ": more padding than the alignment needs";
      end = offsets[i] + specs[i].numel;
    }
    EXPECT_LE(end, total);
    if (align == 1) {
      EXPECT_EQ(end, total);
    }
  }
}

// Every pointer of param_pointers is the tensor of its role and layer, each tensor is reached once, and a tied
// lm_head is the embedding.
TEST(Params, PointersFollowRolesAndLayers) {
  for (bool tied : {false, true}) {
    const ModelConfig c = params_config(tied);
    const std::vector<ParamSpec> specs = model_param_specs(c);
    size_t total = 0;
    const std::vector<size_t> offsets = param_offsets(specs, 128, &total);
    std::vector<float> buffer(total);
    const ParamPointers<float> p = param_pointers(c, specs, offsets, buffer.data());
    auto at = [&](const std::string& name) {
      for (size_t i = 0; i < specs.size(); ++i)
        if (specs[i].name == name) return buffer.data() + offsets[i];
      ADD_FAILURE() << "no tensor " << name;
      return (float*)nullptr;
    };
    std::set<const float*> seen;
    ASSERT_EQ(p.layers.size(), 2u);
    for (int l = 0; l < 2; ++l) {
      const LayerParams<float>& w = p.layers[l];
      const std::string pre = cat("model.layers.", l, ".");
      const std::pair<float*, const char*> fields[] = {
          {w.input_norm, "input_layernorm"}, {w.wq, "self_attn.q_proj"}, {w.wk, "self_attn.k_proj"},
          {w.wv, "self_attn.v_proj"},        {w.wo, "self_attn.o_proj"}, {w.post_norm, "post_attention_layernorm"},
          {w.w_gate, "mlp.gate_proj"},       {w.w_up, "mlp.up_proj"},    {w.w_down, "mlp.down_proj"}};
      for (const auto& [ptr, name] : fields) {
        EXPECT_EQ(ptr, at(pre + name + ".weight")) << pre << name;
        seen.insert(ptr);
      }
    }
    EXPECT_EQ(p.globals.embed, at("model.embed_tokens.weight"));
    EXPECT_EQ(p.globals.final_norm, at("model.norm.weight"));
    EXPECT_EQ(p.globals.lm_head, tied ? p.globals.embed : at("lm_head.weight"));
    seen.insert({p.globals.embed, p.globals.final_norm, p.globals.lm_head});
    EXPECT_EQ(seen.size(), specs.size()) << "every tensor reached exactly once";
  }
}

TEST(Params, CheckTensorsListsEveryProblem) {
  const ModelConfig c = params_config(true);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const ParamSpec& s : model_param_specs(c)) shapes[s.name] = s.shape;
  EXPECT_NO_THROW(model_check_tensors(c, shapes, {}, "ok.safetensors"));
  shapes.erase("model.layers.1.mlp.up_proj.weight");
  shapes["model.layers.0.self_attn.k_proj.weight"] = {8, 9};
  shapes["model.layers.7.mlp.up_proj.weight"] = {12, 8};
  const std::string msg = test::error_message([&] { model_check_tensors(c, shapes, {"extra (bad dtype)"}, "x.bin"); });
  EXPECT_NE(msg.find("x.bin: the checkpoint does not match its config"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1 missing:\n    model.layers.1.mlp.up_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.layers.0.self_attn.k_proj.weight is (8, 9), expected (8, 8)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 unexpected:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("extra (bad dtype)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.layers.7.mlp.up_proj.weight"), std::string::npos) << msg;
}

}  // namespace
}  // namespace stapo
