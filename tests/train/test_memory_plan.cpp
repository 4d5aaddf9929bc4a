// The device memory plan (train/memory_plan.h) against totals computed by hand (the arithmetic is in the
// comments), the activation arena's layout rules, the cheapest flags that make Llama-3-8B fit in 79.6 GiB, and
// --recompute auto's choice.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <string>

#include "common/error.h"
#include "train/memory_plan.h"

namespace stapo {
namespace {

ModelConfig small_config() {
  ModelConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  return c;
}

ModelConfig llama3_8b() {
  ModelConfig c;
  c.vocab_size = 128256;
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_hidden_layers = 32;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 8;
  c.head_dim = 128;
  return c;
}

ModelConfig mistral_7b() {
  ModelConfig c = llama3_8b();
  c.model_type = "mistral";
  c.vocab_size = 32000;
  return c;
}

// The workspaces main's kernels allocate for C = 4096 at the default lm_head chunks (2048 rows × 16384 columns):
// cuBLASLt 32 MiB; lm_head logits 2048·16384·4 + dlogits 2048·16384·2 + dh 2048·4096·4 + running 4·2048·4
// = 134,217,728 + 67,108,864 + 33,554,432 + 32,768 = 234,913,792; RMSNorm scratch 264·4096·4 = 4,325,376;
// grad-norm partials 264·4 = 1,056.
std::vector<MemoryItem> workspaces_8b() {
  return {{"cuBLASLt workspace", 33554432, ""},
          {"lm_head workspace", 234913792, ""},
          {"RMSNorm scratch", 4325376, ""},
          {"grad-norm partials", 1056, ""}};
}

uint64_t item(const MemoryPlan& plan, const std::string& prefix) {
  for (const MemoryItem& i : plan.items)
    if (i.name.rfind(prefix, 0) == 0) return i.bytes;
  ADD_FAILURE() << "no item " << prefix;
  return 0;
}

// Tensors padded to 128 elements: embed 64·32 = 2048; per layer input norm 32 → 128, q 32·32 = 1024, k and v
// 16·32 = 512, o 1024, post norm 128, gate, up, down 64·32 = 2048 each: 9,472 per layer, 18,944 for two; final
// norm 128; lm_head 2048. P = 2048 + 18,944 + 128 + 2048 = 23,168 (22,688 without padding). Quantisation blocks
// of 2048: one per tensor (21 tensors) = 21.
// --master split --moments 8bit --grads bf16: weights 2P = 46,336, low halves 46,336, moments 8·2048 = 16,384 for
// the embedding (fp32 m, v) + 2·(23,168 − 2048) = 42,240 + 8·20 blocks of the other tensors = 58,784;
// gradients bf16 for the layers' matmul weights, 2 × (1024 + 512 + 512 + 1024 + 3 × 2048) = 18,432 elements, fp32
// for embed, lm_head and the 5 norms, 2048 + 2048 + 5 × 128 = 4,736: 2·18,432 + 4·4,736 = 55,808.
// --recompute 2, 1 pair × 64 = N = 128 tokens (every buffer a multiple of 256 bytes, so no padding):
//   layer inputs 2 × 128·32·2 = 16,384
//   shared: norm1, norm2 8,192 each, act 128·64·2 = 16,384; q 8,192, k, v 4,096 each, att, resid2 8,192 each,
//           gate, up 16,384 each, rstd1, rstd2 512 each, lse 128·4·4 = 2,048: 101,376
//   final norm etc.: branch, final_resid, final_norm, response_h 4 × 8,192, final_rstd 512, 7 int32 arrays
//           (tokens, positions, segments, response index, targets and sequence, prompt sequence) 7 × 512, logp,
//           entropy, response_lse, dlogp 4 × 512: 38,912
//   backward scratch: d_resid, d_norm, d_att, d_q 4 × 8,192, d_k, d_v 2 × 4,096, d_act, d_gate, d_up 3 × 16,384,
//           attention scratch 2,048: 92,160
// embedding index (3·128 + 1)·4 = 1,540; a workspace of 1,000; the allowance 64 MiB = 67,108,864.
// Total 46,336·2 + 55,808 + 58,784 + 16,384 + 101,376 + 38,912 + 92,160 + 1,540 + 1,000 + 67,108,864 = 67,567,500.
TEST(MemoryPlan, SmallModelByHand) {
  MemoryPlanInput in;
  in.master = MasterKind::split;
  in.moments = MomentKind::q8;
  in.grads = GradKind::bf16;
  in.recompute = 2;
  in.batch_size = 1;
  in.max_length = 64;
  in.workspaces = {{"a workspace", 1000, ""}};
  const MemoryPlan plan = memory_plan(small_config(), in);
  printf("%s", memory_plan_table(plan, 0).c_str());
  EXPECT_EQ(item(plan, "weights"), 46336u);
  EXPECT_EQ(item(plan, "master weights (split"), 46336u);
  EXPECT_EQ(item(plan, "gradients (bf16"), 55808u);
  EXPECT_EQ(item(plan, "AdamW moments (8-bit"), 58784u);
  EXPECT_EQ(item(plan, "activations: layer inputs"), 16384u);
  EXPECT_EQ(item(plan, "activations: one layer's"), 101376u);
  EXPECT_EQ(item(plan, "final norm"), 38912u);
  EXPECT_EQ(item(plan, "backward scratch"), 92160u);
  EXPECT_EQ(item(plan, "embedding gradient index"), 1540u);
  EXPECT_EQ(plan.total(), 67567500u);
  // The same model with the engine's defaults: fp32 master 4P = 92,672, fp32 gradients 92,672, fp32 moments
  // 8P = 185,344; at --recompute 1 each layer keeps q 8,192, k, v 4,096, att, resid2 8,192, gate, up 16,384,
  // rstd1, rstd2 512, lse 2,048 = 68,608, two layers 137,216, and one shared norm1, norm2, act = 32,768.
  in.master = MasterKind::fp32;
  in.moments = MomentKind::fp32;
  in.grads = GradKind::fp32;
  in.recompute = 1;
  const MemoryPlan defaults = memory_plan(small_config(), in);
  EXPECT_EQ(item(defaults, "master weights (fp32"), 92672u);
  EXPECT_EQ(item(defaults, "gradients (fp32)"), 92672u);
  EXPECT_EQ(item(defaults, "AdamW moments (fp32"), 185344u);
  EXPECT_EQ(item(defaults, "activations: kept per layer"), 137216u);
  EXPECT_EQ(item(defaults, "activations: one layer's"), 32768u);
}

// Llama-3-8B (V 128256, C 4096, F 14336, 32 layers, 32 heads, 8 KV heads of 128), untied: every tensor is a
// multiple of 2048 elements, so P = 2·128256·4096 + 32·(2·4096 + 2·4096² + 2·1024·4096 + 3·14336·4096) + 4096
// = 1,050,673,152 + 32·218,112,000 + 4,096 = 8,030,261,248 and blocks = P / 2048 = 3,921,026.
// --master split --moments 8bit --grads bf16: weights and low halves 2 × 2P = 32,121,044,992, moments 8 B for
// each of the embedding's 525,336,576 (fp32 m, v) = 4,202,692,608, 2 B for the other 7,504,924,672 and 8 per block
// of theirs, 3,921,026 − 256,512 = 3,664,514: 15,009,849,344 + 29,316,112, in all 19,241,858,064 (all 8-bit it
// was 2P + 8·3,921,026 = 16,091,890,704: +3,149,967,360, 2.93 GiB); gradients fp32 for embed, lm_head and the 65
// norms (2·525,336,576 + 65·4096 = 1,050,939,392 elements), bf16 for the other 6,979,321,856: 4·1,050,939,392 +
// 2·6,979,321,856 = 18,162,401,280; 69,525,304,336 (64.75 GiB).
// --recompute 2, 4 pairs × 2048 = N = 16,384 tokens (N·C·2 = 128 MiB, N·F·2 = 448 MiB, N·KD·2 = 32 MiB):
//   layer inputs 32 × 128 MiB = 4,294,967,296
//   shared: norm1, norm2, q, att, resid2 5 × 128 MiB, act, gate, up 3 × 448 MiB, k, v 2 × 32 MiB, rstd1, rstd2
//           2 × 65,536, lse 16,384·32·4 = 2,097,152: 2,048 MiB + 2,228,224 = 2,149,711,872
//   final norm etc.: 4 × 128 MiB + 65,536 + 7 × 65,536 + 4 × 65,536 = 537,657,344
//   backward scratch: 4 × 128 MiB + 2 × 32 MiB + 3 × 448 MiB + 2,097,152 = 2,015,363,072
//   arena 8,997,699,584 (8.38 GiB)
// embedding index (3·16,384 + 1)·4 = 196,612; workspaces 272,794,656 (workspaces_8b); allowance 67,108,864.
// Total 69,525,304,336 + 8,997,699,584 + 196,612 + 272,794,656 + 67,108,864 = 78,863,104,052 (73.45 GiB).
TEST(MemoryPlan, Llama3_8BByHand) {
  MemoryPlanInput in;
  in.master = MasterKind::split;
  in.moments = MomentKind::q8;
  in.grads = GradKind::bf16;
  in.recompute = 2;
  in.batch_size = 4;
  in.max_length = 2048;
  in.workspaces = workspaces_8b();
  const MemoryPlan plan = memory_plan(llama3_8b(), in);
  printf("Llama-3-8B, %s\n%s", memory_plan_flags(MemoryPlanInput{}, in).c_str(),
         memory_plan_table(plan, 0).c_str());
  EXPECT_EQ(item(plan, "weights"), 16060522496u);
  EXPECT_EQ(item(plan, "AdamW moments (8-bit"), 19241858064u);
  EXPECT_EQ(item(plan, "activations: layer inputs"), 4294967296u);
  EXPECT_EQ(item(plan, "activations: one layer's"), 2149711872u);
  EXPECT_EQ(item(plan, "final norm"), 537657344u);
  EXPECT_EQ(item(plan, "backward scratch"), 2015363072u);
  EXPECT_EQ(item(plan, "gradients (bf16"), 18162401280u);
  EXPECT_EQ(plan.total(), 78863104052u);
}

// Data parallel: the plan is one rank's. Llama-3-8B over W = 8 with ZeRO-1 and the engine's defaults (fp32
// master, moments, gradients; --recompute 1): P = 8,030,261,248 is a multiple of 8 × 128 (8,030,261,248 / 1024 =
// 7,842,052), so no padding; each rank holds the bf16 weights 2P = 16,060,522,496 and fp32 gradients 4P =
// 32,121,044,992 whole, the master 4P/8 = 4,015,130,624 and the moments 8P/8 = 8,030,261,248. Without ZeRO-1 the
// master and moments are whole (32,121,044,992 and 64,242,089,984). The small model over W = 3 pads its 23,168
// elements to a multiple of 384: 23,424; weights 2 × 23,424 = 46,848, gradients 4 × 23,424 = 93,696, master
// 4 × 23,424 / 3 = 31,232. Flags data parallel does not take are refused by name, and the fit never proposes them.
TEST(MemoryPlan, DataParallelPlanIsOneRanks) {
  MemoryPlanInput in;
  in.batch_size = 1;
  in.max_length = 2048;
  in.ranks = 8;
  const MemoryPlan zero1 = memory_plan(llama3_8b(), in);
  EXPECT_EQ(item(zero1, "weights"), 16060522496u);
  EXPECT_EQ(item(zero1, "gradients (fp32)"), 32121044992u);
  EXPECT_EQ(item(zero1, "master weights (fp32"), 4015130624u);
  EXPECT_EQ(item(zero1, "AdamW moments (fp32"), 8030261248u);
  in.zero1 = false;
  const MemoryPlan all_reduce = memory_plan(llama3_8b(), in);
  EXPECT_EQ(item(all_reduce, "master weights (fp32"), 32121044992u);
  EXPECT_EQ(item(all_reduce, "AdamW moments (fp32"), 64242089984u);
  EXPECT_EQ(all_reduce.total() - zero1.total(), 7u * (4015130624u + 8030261248u));

  MemoryPlanInput small;
  small.max_length = 64;
  small.ranks = 3;
  const MemoryPlan padded = memory_plan(small_config(), small);
  EXPECT_EQ(item(padded, "weights"), 46848u);
  EXPECT_EQ(item(padded, "gradients (fp32)"), 93696u);
  EXPECT_EQ(item(padded, "master weights (fp32"), 31232u);
  EXPECT_EQ(param_buffer_elements(model_param_specs(small_config()), 3), 23424u);
  EXPECT_EQ(grad_layout(model_param_specs(small_config()), GradKind::fp32, 3).fp32_elements, 23424u);

  EXPECT_EQ(data_parallel_unsupported(small), "");
  small.master = MasterKind::none;
  EXPECT_EQ(data_parallel_unsupported(small), "");
  small.master = MasterKind::split;
  small.moments = MomentKind::q8;
  small.grads = GradKind::bf16;
  const std::string why = data_parallel_unsupported(small);
  for (const char* flag : {"--master split", "--moments 8bit", "--grads bf16", "over 3 ranks"})
    EXPECT_NE(why.find(flag), std::string::npos) << why;
  small.ranks = 1;
  EXPECT_EQ(data_parallel_unsupported(small), "");

  // 8B over 8 ranks at 4 pairs × 2048: in 79.6 GiB --recompute 2 alone fits (64.79 GiB: 29.92 of fp32 gradients,
  // 3.74 master and 7.48 moments per rank). In 62 GiB one process's cheapest fit would add --grads bf16 (cost 4 + 8;
  // it saves 13 GiB here); data parallel does not take it, so the fit halves the batch instead (cost 4 + 16).
  MemoryPlanInput big;
  big.batch_size = 4;
  big.max_length = 2048;
  big.ranks = 8;
  big.workspaces = workspaces_8b();
  const std::optional<MemoryPlanInput> fit = memory_plan_fit(llama3_8b(), big, uint64_t(79.6 * double(1ull << 30)));
  ASSERT_TRUE(fit.has_value());
  EXPECT_EQ(memory_plan_flags(big, *fit), "--recompute 2");
  printf("Llama-3-8B over 8 ranks (ZeRO-1), 4 pairs × 2048, fit in 79.6 GiB: %s\n%s",
         memory_plan_flags(big, *fit).c_str(), memory_plan_table(memory_plan(llama3_8b(), *fit), 0).c_str());
  const std::optional<MemoryPlanInput> tight = memory_plan_fit(llama3_8b(), big, uint64_t(62) << 30);
  ASSERT_TRUE(tight.has_value());
  EXPECT_EQ(memory_plan_flags(big, *tight), "--recompute 2 --batch-size 2 --grad-accum 2");
  MemoryPlanInput unrestricted = *fit;
  unrestricted.grads = GradKind::bf16;
  EXPECT_LE(memory_plan(llama3_8b(), unrestricted).total(), uint64_t(62) << 30) << "bf16 gradients would fit";
}

// Data parallel's overlapped reduction cuts the buffer into the buckets the backward completes (train/cuda_zero.h).
// small_config by hand, every tensor padded to 128: embedding 64·32 = 2048; a layer 128 (input norm) + 1024 (q) +
// 512 (k) + 512 (v) + 1024 (o) + 128 (post norm) + 3·2048 (gate, up, down) = 9472; final norm 128, lm_head 2048.
// So the layers start at 2048 and 11520, the final norm at 20992; the buffer is 23168 (one rank) or 23424 (3 ranks:
// a multiple of 384), 21120 tied (no lm_head).
TEST(MemoryPlan, GradBucketsAreTheBackwardsPieces) {
  for (bool tied : {false, true})
    for (int shards : {1, 3}) {
      ModelConfig c = small_config();
      c.tie_word_embeddings = tied;
      const std::vector<ParamSpec> specs = model_param_specs(c);
      const std::vector<size_t> offsets = param_offsets(specs, kParamAlign, nullptr);
      const size_t total = param_buffer_elements(specs, shards);
      EXPECT_EQ(total, tied ? 21120u : shards == 1 ? 23168u : 23424u);
      const std::vector<size_t> bounds = grad_bucket_bounds(specs, offsets, total);
      EXPECT_EQ(bounds, (std::vector<size_t>{0, 2048, 11520, 20992, total})) << "tied " << tied << " shards " << shards;
      for (size_t i = 0; i < specs.size(); ++i) {  // every tensor inside its bucket
        const size_t b = specs[i].layer >= 0 ? 1 + size_t(specs[i].layer) : specs[i].role == ParamRole::embed ? 0 : 3;
        EXPECT_GE(offsets[i], bounds[b]) << specs[i].name;
        EXPECT_LE(offsets[i] + specs[i].numel, bounds[b + 1]) << specs[i].name;
      }
    }
  // Out of order (layer 1's first tensor before layer 0's last): refused, naming the tensor.
  std::vector<ParamSpec> specs = model_param_specs(small_config());
  const std::vector<size_t> offsets = param_offsets(specs, kParamAlign, nullptr);
  std::swap(specs[5], specs[specs.size() - 4]);
  try {
    grad_bucket_bounds(specs, offsets, param_buffer_elements(specs, 1));
    ADD_FAILURE() << "an out-of-order tensor was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is out of the order"), std::string::npos) << e.what();
  }
}

TEST(MemoryPlan, ArenaBuffersAreAlignedAndDisjoint) {
  ModelConfig c = small_config();
  c.intermediate_size = 40;  // rows of 80 bytes: offsets need padding
  for (int level : {0, 1, 2})
    for (uint64_t n : {1u, 33u, 66u})
      for (bool fused : {false, true}) {
        const ActivationLayout layout = activation_layout(c, n, level, fused);
        uint64_t end = 0, sum = 0;
        for (const ActBuffer& b : layout.buffers) {
          EXPECT_EQ(b.offset % 256, 0u);
          EXPECT_GE(b.offset, end);
          end = b.offset + b.bytes;
          sum += b.bytes;
        }
        EXPECT_EQ(layout.bytes, end);
        EXPECT_LT(layout.bytes - sum, 256 * layout.buffers.size());
        // Every layer slot exists for every layer, or once shared; the resid of every layer always.
        int resid = 0;
        for (const ActBuffer& b : layout.buffers) resid += b.slot == ActSlot::resid;
        EXPECT_EQ(resid, c.num_hidden_layers);
      }
  EXPECT_THROW(activation_layout(c, 8, 3), Error);
}

// --fused-projections' layout (train/cuda_model.h): gate‖up in one slot twice as wide, no up slot; the shared d_gate
// slot as wide as the wider of d_gate‖d_up and q‖k‖v; the rest as without it.
TEST(MemoryPlan, FusedProjectionsLayout) {
  ModelConfig c = small_config();  // C 32, F 64, H 4, Hkv 2, D 8: q‖k‖v is 64 wide, gate‖up 128
  c.intermediate_size = 16;        // d_gate‖d_up 32 wide: q‖k‖v (64) sets the d_gate slot's width
  const uint64_t n = 33, QKV = (4 + 2 * 2) * 8;
  for (int level : {0, 1, 2}) {
    const ActivationLayout plain = activation_layout(c, n, level), fused = activation_layout(c, n, level, true);
    std::map<ActSlot, uint64_t> plain_bytes, fused_bytes;  // per slot, summed over layers
    for (const ActBuffer& b : plain.buffers) plain_bytes[b.slot] += b.bytes;
    for (const ActBuffer& b : fused.buffers) fused_bytes[b.slot] += b.bytes;
    EXPECT_EQ(fused_bytes.count(ActSlot::up), 0u);
    EXPECT_EQ(fused_bytes.count(ActSlot::d_up), 0u);
    EXPECT_EQ(fused_bytes[ActSlot::gate], plain_bytes[ActSlot::gate] + plain_bytes[ActSlot::up]);
    EXPECT_EQ(fused_bytes[ActSlot::d_gate], n * QKV * 2);
    EXPECT_GT(n * QKV * 2, plain_bytes[ActSlot::d_gate] + plain_bytes[ActSlot::d_up]);
    for (const auto& [slot, bytes] : plain_bytes) {
      if (slot == ActSlot::gate || slot == ActSlot::up || slot == ActSlot::d_gate || slot == ActSlot::d_up) continue;
      EXPECT_EQ(fused_bytes[slot], bytes) << "slot " << int(slot) << " level " << level;
    }
  }
  // Where 2F is the wider (every Llama), the fused plan takes no more than the plain one.
  const ModelConfig big = llama3_8b();
  MemoryPlanInput in;
  in.batch_size = 2;
  in.max_length = 1024;
  const uint64_t plain_total = memory_plan(big, in).total();
  in.fused_projections = true;
  EXPECT_LE(memory_plan(big, in).total(), plain_total);
  EXPECT_GT(memory_plan(big, in).total() + 256 * 100, plain_total);
}

// The fused GEMMs need each layer's q, k, v and gate, up tensors back to back: sizes that are multiples of
// kParamAlign (every real model's) allow it, a gate of 40 × 72 = 2880 elements (22.5 × 128) does not.
TEST(MemoryPlan, FusedProjectionsNeedConsecutiveTensors) {
  for (GradKind grads : {GradKind::fp32, GradKind::bf16}) {
    EXPECT_EQ(fused_projections_unsupported(llama3_8b(), grads), "");
    EXPECT_EQ(fused_projections_unsupported(small_config(), grads), "");  // 32·32, 16·32, 64·32: multiples of 128
    ModelConfig odd = small_config();
    odd.hidden_size = 72;
    odd.num_attention_heads = 8;
    odd.head_dim = 16;  // q 128 × 72, k 32 × 72 = 2304 (18 × 128): consecutive
    odd.intermediate_size = 40;  // gate 40 × 72 = 2880: padded to 2944, so up does not follow it
    const std::string why = fused_projections_unsupported(odd, grads);
    EXPECT_NE(why.find("model.layers.0.mlp.gate_proj.weight (2880 elements"), std::string::npos) << why;
    EXPECT_NE(why.find("--fused-projections"), std::string::npos) << why;
  }
}

// --attention flash2-atomic: the attention scratch holds the fp32 dq accumulator before δ, N·H·(D + 1) floats as
// kernels/attention.h's attention_flash2_backward_atomic_scratch_floats, and the plan counts it.
TEST(MemoryPlan, AtomicAttentionScratchHoldsTheDqAccumulator) {
  const ModelConfig c = small_config();
  const uint64_t n = 66;
  auto scratch_bytes = [&](bool dq_accumulator) {
    for (const ActBuffer& b : activation_layout(c, n, 1, false, dq_accumulator).buffers)
      if (b.slot == ActSlot::attention_scratch) return b.bytes;
    ADD_FAILURE() << "no attention scratch";
    return uint64_t{0};
  };
  EXPECT_EQ(scratch_bytes(false), n * c.num_attention_heads * 4);
  EXPECT_EQ(scratch_bytes(true), n * c.num_attention_heads * (c.head_dim + 1) * 4);
  MemoryPlanInput in;
  in.max_length = 33;  // N = 66
  const uint64_t plain = memory_plan(c, in).total();
  in.attention_dq_accumulator = true;
  EXPECT_GE(memory_plan(c, in).total() - plain, n * c.num_attention_heads * c.head_dim * 4);
}

// With train_stapo's defaults (fp32 master, moments and gradients, --recompute 1) 8B needs 18 bytes per parameter
// (134.6 GiB) plus activations. In 79.6 GiB the cheapest fit: split master (2 B), 8-bit moments (2 B), bf16
// gradients (2 B, 4 for the 1.05 G embedding, lm_head and norm elements) and --recompute 2 (at --recompute 1 each
// layer keeps ~1.4 GiB of activations for 16,384 tokens): 73.45 GiB (Llama3_8BByHand), cost 1 + 8 + 8 + 4 = 21.
// With fp32 gradients the split master and 8-bit moments (the embedding's fp32) need 86.45 GiB at 4 pairs, 82.26 at
// 2 and 80.16 at 1 (train_stapo --dry-run): no batch size fits without --grads bf16 but --master none (cost 100).
TEST(MemoryPlan, CheapestFlagsThatFit) {
  MemoryPlanInput in;
  in.batch_size = 4;
  in.max_length = 2048;
  in.grad_accum = 2;
  in.workspaces = workspaces_8b();
  const uint64_t cap = uint64_t(79.6 * double(1ull << 30));
  const ModelConfig c = llama3_8b();
  EXPECT_GT(memory_plan(c, in).total(), uint64_t(18) * 8030261248u);
  const std::optional<MemoryPlanInput> fit = memory_plan_fit(c, in, cap);
  ASSERT_TRUE(fit.has_value());
  EXPECT_EQ(memory_plan_flags(in, *fit), "--master split --recompute 2 --moments 8bit --grads bf16");
  EXPECT_EQ(memory_plan(c, *fit).total(), 78863104052u);
  // A configuration that fits is returned unchanged.
  const std::optional<MemoryPlanInput> same = memory_plan_fit(c, *fit, cap);
  ASSERT_TRUE(same.has_value());
  EXPECT_EQ(memory_plan_flags(*fit, *same), "");
  // From the fit with fp32 gradients (86.45 GiB): --grads bf16 (cost 8); halving the batch (16) would not fit.
  MemoryPlanInput fp32_grads = *fit;
  fp32_grads.grads = GradKind::fp32;
  const std::optional<MemoryPlanInput> halved = memory_plan_fit(c, fp32_grads, cap);
  ASSERT_TRUE(halved.has_value());
  EXPECT_EQ(memory_plan_flags(fp32_grads, *halved), "--grads bf16");
  // At 48 GiB nothing fits: the least, bf16 weights without a master (14.96 GiB), bf16 gradients (16.92 GiB) and
  // 8-bit moments with the embedding's fp32 (17.92 GiB), is 49.80 GiB before any activation or workspace.
  EXPECT_FALSE(memory_plan_fit(c, in, uint64_t(48) << 30).has_value());
  // Mistral-7B (vocabulary 32000): 7,241,732,096 parameters; at 8 pairs × 2048 the same flags fit.
  MemoryPlanInput mistral = *fit;
  mistral.batch_size = 8;
  mistral.grad_accum = 1;
  const MemoryPlan plan = memory_plan(mistral_7b(), mistral);
  EXPECT_EQ(item(plan, "weights"), 2u * 7241732096u);
  printf("Mistral-7B, %s, 8 pairs × 2048\n%s", memory_plan_flags(MemoryPlanInput{}, mistral).c_str(),
         memory_plan_table(plan, cap).c_str());
  EXPECT_LE(plan.total(), cap);
}

// --recompute auto: the least recomputation that fits, whatever the other flags; nothing below level 2's plan.
TEST(MemoryPlan, RecomputeAutoTakesTheLeastRecomputationThatFits) {
  MemoryPlanInput in;
  in.batch_size = 4;
  in.max_length = 2048;
  in.master = MasterKind::split;
  in.workspaces = workspaces_8b();
  const ModelConfig c = llama3_8b();
  uint64_t total[3];
  for (int level = 0; level <= 2; ++level) {
    in.recompute = level;
    total[level] = memory_plan(c, in).total();
  }
  ASSERT_GT(total[0], total[1]);
  ASSERT_GT(total[1], total[2]);
  in.recompute = 2;  // the input's own level does not matter
  EXPECT_EQ(memory_plan_recompute_auto(c, in, total[0]), 0);
  EXPECT_EQ(memory_plan_recompute_auto(c, in, total[0] - 1), 1);
  EXPECT_EQ(memory_plan_recompute_auto(c, in, total[1]), 1);
  EXPECT_EQ(memory_plan_recompute_auto(c, in, total[1] - 1), 2);
  EXPECT_EQ(memory_plan_recompute_auto(c, in, total[2]), 2);
  EXPECT_FALSE(memory_plan_recompute_auto(c, in, total[2] - 1).has_value());
}

}  // namespace
}  // namespace stapo
