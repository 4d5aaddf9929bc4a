// The device memory plan (train/memory_plan.h).
#include "train/memory_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/error.h"
#include "train/adamw.h"

namespace stapo {

namespace {

constexpr uint64_t kArenaAlign = 256;  // bytes: every activation buffer suits 128-bit loads and cuBLASLt
// cudaMalloc rounds every allocation up (2 MiB pages for large ones), and the engine holds a few small buffers
// (RoPE table, per-sequence sums, step scalars) beside the items below: an allowance, not a count.
constexpr uint64_t kAllocationAllowance = 64ull << 20;

uint64_t round_up(uint64_t n, uint64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

std::string gib_mib(uint64_t bytes) {
  char text[48];
  snprintf(text, sizeof(text), "%9.2f GiB %11.1f MiB", double(bytes) / double(1ull << 30),
           double(bytes) / double(1ull << 20));
  return text;
}

}  // namespace

std::string gib(uint64_t bytes) {
  char text[48];
  snprintf(text, sizeof(text), "%.2f GiB", double(bytes) / double(1ull << 30));
  return text;
}

const char* master_name(MasterKind kind) {
  return kind == MasterKind::fp32 ? "fp32" : kind == MasterKind::split ? "split" : "none";
}
const char* moments_name(MomentKind kind) { return kind == MomentKind::q8 ? "8bit" : "fp32"; }
const char* grads_name(GradKind kind) { return kind == GradKind::bf16 ? "bf16" : "fp32"; }

MasterKind master_from_name(const std::string& name, const std::string& flag) {
  for (MasterKind k : {MasterKind::fp32, MasterKind::split, MasterKind::none})
    if (name == master_name(k)) return k;
  fail(flag, " ", name, ": expected fp32, split or none");
}

MomentKind moments_from_name(const std::string& name, const std::string& flag) {
  for (MomentKind k : {MomentKind::fp32, MomentKind::q8})
    if (name == moments_name(k)) return k;
  fail(flag, " ", name, ": expected fp32 or 8bit");
}

GradKind grads_from_name(const std::string& name, const std::string& flag) {
  for (GradKind k : {GradKind::fp32, GradKind::bf16})
    if (name == grads_name(k)) return k;
  fail(flag, " ", name, ": expected fp32 or bf16");
}

size_t param_buffer_elements(const std::vector<ParamSpec>& specs, int shards) {
  STAPO_CHECK(shards >= 1, "param_buffer_elements: ", shards, " shards");
  size_t padded = 0;
  param_offsets(specs, kParamAlign, &padded);
  return round_up(padded, kParamAlign * size_t(shards));
}

GradLayout grad_layout(const std::vector<ParamSpec>& specs, GradKind kind, int shards) {
  GradLayout out;
  size_t largest = 0;
  for (const ParamSpec& s : specs) {
    const bool matmul = s.layer >= 0 && !s.is_norm();
    const bool bf16 = kind == GradKind::bf16 && matmul;
    size_t& end = bf16 ? out.bf16_elements : out.fp32_elements;
    out.offsets.push_back(end);
    out.bf16.push_back(bf16);
    end += round_up(s.numel, kParamAlign);
    largest = std::max(largest, s.numel);
  }
  out.fp32_elements = kind == GradKind::fp32 ? param_buffer_elements(specs, shards)
                                             : std::max<size_t>(out.fp32_elements, round_up(largest, kParamAlign));
  return out;
}

std::string fused_projections_unsupported(const ModelConfig& c, GradKind grads) {
  const std::vector<ParamSpec> specs = model_param_specs(c);
  const std::vector<size_t> offsets = param_offsets(specs, kParamAlign, nullptr);
  const GradLayout g = grad_layout(specs, grads);
  // Tensor i + 1 starts where tensor i ends, in the weights and in the gradient buffer that holds both.
  auto follows = [&](size_t i) {
    return offsets[i + 1] == offsets[i] + specs[i].numel && g.bf16[i] == g.bf16[i + 1] &&
           g.offsets[i + 1] == g.offsets[i] + specs[i].numel;
  };
  for (size_t i = 0; i + 1 < specs.size(); ++i) {
    const ParamRole r = specs[i].role;
    if ((r == ParamRole::q_proj || r == ParamRole::k_proj || r == ParamRole::gate_proj) && !follows(i))
      return cat(specs[i].name, " (", specs[i].numel, " elements, not a multiple of ", kParamAlign,
                 ") is not followed directly by ", specs[i + 1].name, " in the parameter buffers: run without "
                 "--fused-projections");
  }
  return "";
}

std::vector<size_t> grad_bucket_bounds(const std::vector<ParamSpec>& specs, const std::vector<size_t>& offsets,
                                       size_t total) {
  STAPO_CHECK(specs.size() == offsets.size(), "grad_bucket_bounds: ", specs.size(), " tensors, ", offsets.size(),
              " offsets");
  int layers = 0;
  for (const ParamSpec& s : specs) layers = std::max(layers, s.layer + 1);
  std::vector<size_t> bounds(size_t(layers) + 3, total);
  bounds[0] = 0;
  int bucket = 0;  // of the tensor before: buckets must come in order, each once
  for (size_t i = 0; i < specs.size(); ++i) {
    const int b = specs[i].layer >= 0 ? 1 + specs[i].layer : specs[i].role == ParamRole::embed ? 0 : layers + 1;
    STAPO_CHECK(b >= bucket && offsets[i] <= total, "grad_bucket_bounds: tensor ", specs[i].name, " (", i,
                ") is out of the order embedding, layers 0..", layers - 1, ", final norm and lm_head");
    for (int skipped = bucket + 1; skipped <= b; ++skipped) bounds[size_t(skipped)] = offsets[i];
    bucket = b;
  }
  return bounds;
}

ActivationLayout activation_layout(const ModelConfig& c, uint64_t n, int level, bool fused_projections,
                                   bool dq_accumulator) {
  STAPO_CHECK(level >= 0 && level <= 2, "--recompute ", level, " is not 0, 1 or 2");
  const uint64_t C = c.hidden_size, F = c.intermediate_size, H = c.num_attention_heads;
  const uint64_t HD = H * c.head_dim, KD = uint64_t(c.num_key_value_heads) * c.head_dim;
  // Fused: gate‖up side by side in the gate slot (no up slot), and the d_gate slot holds d_gate‖d_up and, at other
  // times of the step, the q‖k‖v projection's output and its gradient (train/cuda_model.h).
  const uint64_t gate_width = fused_projections ? 2 * F : F;
  const uint64_t d_gate_width = fused_projections ? std::max(2 * F, HD + 2 * KD) : F;
  const uint64_t bf16 = 2, f32 = 4, i32 = 4;
  ActivationLayout out;
  auto take = [&](ActSlot slot, int layer, uint64_t bytes) {
    out.bytes = round_up(out.bytes, kArenaAlign);
    out.buffers.push_back({slot, layer, out.bytes, bytes});
    out.bytes += bytes;
  };
  auto layer_buffers = [&](int layer) {  // what every level keeps per layer, unless level 2 shares them
    take(ActSlot::q, layer, n * HD * bf16);
    take(ActSlot::k, layer, n * KD * bf16);
    take(ActSlot::v, layer, n * KD * bf16);
    take(ActSlot::att, layer, n * HD * bf16);
    take(ActSlot::resid2, layer, n * C * bf16);
    take(ActSlot::gate, layer, n * gate_width * bf16);
    if (!fused_projections) take(ActSlot::up, layer, n * F * bf16);
    take(ActSlot::rstd1, layer, n * f32);
    take(ActSlot::rstd2, layer, n * f32);
    take(ActSlot::lse, layer, n * H * f32);
  };
  auto recomputed = [&](int layer) {  // level ≥ 1 recomputes these in backward
    take(ActSlot::norm1, layer, n * C * bf16);
    take(ActSlot::norm2, layer, n * C * bf16);
    take(ActSlot::act, layer, n * F * bf16);
  };
  if (level >= 1) recomputed(-1);
  if (level == 2) layer_buffers(-1);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    take(ActSlot::resid, l, n * C * bf16);
    if (level == 0) recomputed(l);
    if (level <= 1) layer_buffers(l);
  }
  for (ActSlot s : {ActSlot::branch, ActSlot::final_resid, ActSlot::final_norm}) take(s, -1, n * C * bf16);
  take(ActSlot::final_rstd, -1, n * f32);
  for (ActSlot s : {ActSlot::tokens, ActSlot::positions, ActSlot::segments, ActSlot::response_index,
                    ActSlot::response_targets, ActSlot::response_sequence, ActSlot::prompt_sequence})
    take(s, -1, n * i32);
  take(ActSlot::response_h, -1, n * C * bf16);  // M ≤ N response rows
  for (ActSlot s : {ActSlot::logp, ActSlot::entropy, ActSlot::response_lse, ActSlot::dlogp}) take(s, -1, n * f32);
  take(ActSlot::d_resid, -1, n * C * bf16);
  take(ActSlot::d_norm, -1, n * C * bf16);
  take(ActSlot::d_att, -1, n * HD * bf16);
  take(ActSlot::d_q, -1, n * HD * bf16);
  take(ActSlot::d_k, -1, n * KD * bf16);
  take(ActSlot::d_v, -1, n * KD * bf16);
  take(ActSlot::d_act, -1, n * F * bf16);
  take(ActSlot::d_gate, -1, n * d_gate_width * bf16);
  if (!fused_projections) take(ActSlot::d_up, -1, n * F * bf16);
  take(ActSlot::attention_scratch, -1, n * H * f32 * (dq_accumulator ? 1 + c.head_dim : 1));
  return out;
}

uint64_t MemoryPlan::total() const {
  uint64_t sum = 0;
  for (const MemoryItem& item : items) sum += item.bytes;
  return sum;
}

MemoryPlan memory_plan(const ModelConfig& c, const MemoryPlanInput& in) {
  STAPO_CHECK(in.batch_size >= 1 && in.max_length >= 2, "memory_plan: batch size ", in.batch_size,
              " and max length ", in.max_length, " must be at least 1 and 2");
  STAPO_CHECK(in.ranks >= 1, "memory_plan: ", in.ranks, " ranks");
  const std::vector<ParamSpec> specs = model_param_specs(c);
  // The engine's buffers, tensors padded as it pads them; under ZeRO-1 a rank's optimizer state is 1/ranks of them.
  const uint64_t P = param_buffer_elements(specs, in.ranks);
  const bool sharded = in.ranks > 1 && in.zero1;
  const uint64_t S = sharded ? P / uint64_t(in.ranks) : P;
  uint64_t numel = 0;
  for (const ParamSpec& s : specs) numel += s.numel;
  MemoryPlan plan;
  const std::string per = cat(" × ", P, " parameters");
  const std::string state = sharded ? cat(" × ", S, " parameters (ZeRO-1: 1/", in.ranks, " of ", P, ")") : per;
  plan.items.push_back({"weights (bf16)", 2 * P, cat("2 B", per, " (", numel, " without alignment padding)")});
  if (in.master == MasterKind::fp32) plan.items.push_back({"master weights (fp32)", 4 * S, cat("4 B", state)});
  if (in.master == MasterKind::split)
    plan.items.push_back({"master weights (split: low 16 bits)", 2 * S, cat("2 B", state, "; with the bf16 weights "
                                                                            "the fp32 master exactly")});
  if (in.master == MasterKind::none)
    plan.items.push_back({"master weights (none)", 0, "bf16 weights updated with stochastic rounding"});
  const GradLayout grads = grad_layout(specs, in.grads, in.ranks);
  if (in.grads == GradKind::fp32)
    plan.items.push_back({"gradients (fp32)", 4 * grads.fp32_elements, cat("4 B", per)});
  else
    plan.items.push_back({"gradients (bf16, fp32-partial)", 2 * grads.bf16_elements + 4 * grads.fp32_elements,
                          cat("2 B × ", grads.bf16_elements, " layer matmul weights + 4 B × ", grads.fp32_elements,
                              " embedding, lm_head and RMSNorm weights")});
  if (in.moments == MomentKind::fp32)
    plan.items.push_back({"AdamW moments (fp32 m, v)", 8 * S, cat("8 B", state)});
  else {  // never sharded (data_parallel_unsupported); the engine's layout
    const Q8MomentLayout q8 = q8_moment_layout(specs, kParamAlign);
    plan.items.push_back({"AdamW moments (8-bit m, v; embedding fp32)",
                          8 * q8.fp32_elements + 2 * q8.code_elements + 8 * q8.blocks,
                          cat("8 B × ", q8.fp32_elements, " embedding parameters + 2 B × ", q8.code_elements,
                              " + 2 fp32 absmax × ", q8.blocks, " blocks of ", kQuantBlock)});
  }

  const uint64_t N = 2 * uint64_t(in.batch_size) * uint64_t(in.max_length);
  const ActivationLayout layout =
      activation_layout(c, N, in.recompute, in.fused_projections, in.attention_dq_accumulator);
  uint64_t inputs = 0, kept = 0, shared = 0, head = 0, scratch = 0;
  for (const ActBuffer& b : layout.buffers) {
    if (b.slot == ActSlot::resid)
      inputs += b.bytes;
    else if (act_slot_per_layer(b.slot))
      (b.layer >= 0 ? kept : shared) += b.bytes;
    else if (b.slot >= ActSlot::d_resid)
      scratch += b.bytes;
    else
      head += b.bytes;
  }
  const std::string tokens = cat(N, " tokens (2 × ", in.batch_size, " pairs × ", in.max_length, ")");
  plan.items.push_back({"activations: layer inputs", inputs, cat(c.num_hidden_layers, " layers × ", tokens, " × ",
                                                                 c.hidden_size, " bf16")});
  if (kept > 0)
    plan.items.push_back({cat("activations: kept per layer (--recompute ", in.recompute, ")"), kept,
                          in.recompute == 0 ? "every activation backward reads" : "all but RMSNorm outputs and SwiGLU"});
  if (shared > 0)
    plan.items.push_back({"activations: one layer's, refilled in backward", shared,
                          in.recompute == 2 ? "every layer buffer, once" : "RMSNorm outputs and SwiGLU, once"});
  plan.items.push_back({"final norm, lm_head rows, batch indices", head + (layout.bytes - inputs - kept - shared -
                                                                          head - scratch),
                        "(N, C) rows and per-token values (alignment padding included)"});
  plan.items.push_back({"backward scratch (one layer)", scratch, "gradients of one layer's activations"});
  plan.items.push_back({"embedding gradient index", (3 * N + 1) * 4, "positions grouped by token, 3N + 1 int32"});
  for (const MemoryItem& w : in.workspaces) plan.items.push_back(w);
  plan.items.push_back({"allocation rounding, small buffers", kAllocationAllowance, "allowance"});
  return plan;
}

std::string data_parallel_unsupported(const MemoryPlanInput& in) {
  if (in.ranks <= 1) return "";
  std::string flags;
  if (in.master == MasterKind::split) flags += " --master split";
  if (in.moments == MomentKind::q8) flags += " --moments 8bit";
  if (in.grads == GradKind::bf16) flags += " --grads bf16";
  if (flags.empty()) return "";
  return cat("data parallel over ", in.ranks, " ranks takes --master fp32|none, --moments fp32 and --grads fp32 "
             "only, not", flags, " (the split master and 8-bit moments are neither sharded nor gathered for "
             "checkpoints, bf16 gradients are not reduced): drop", flags, ", or run on one GPU");
}

std::string memory_plan_table(const MemoryPlan& plan, uint64_t available) {
  std::string out;
  char line[512];
  for (const MemoryItem& item : plan.items) {
    snprintf(line, sizeof(line), "  %-46s %s  %s\n", item.name.c_str(), gib_mib(item.bytes).c_str(),
             item.detail.c_str());
    out += line;
  }
  const uint64_t total = plan.total();
  snprintf(line, sizeof(line), "  %-46s %s  (%llu bytes)\n", "total", gib_mib(total).c_str(),
           (unsigned long long)total);
  out += line;
  if (available > 0) {
    snprintf(line, sizeof(line), "  %-46s %s  %s %s\n", "device memory available", gib_mib(available).c_str(),
             total <= available ? "fits, margin" : "DOES NOT FIT, short by",
             gib(total <= available ? available - total : total - available).c_str());
    out += line;
  }
  return out;
}

std::string memory_plan_flags(const MemoryPlanInput& from, const MemoryPlanInput& to) {
  std::string out;
  auto add = [&](const std::string& flag) { out += (out.empty() ? "" : " ") + flag; };
  if (to.master != from.master) add(cat("--master ", master_name(to.master)));
  if (to.recompute != from.recompute) add(cat("--recompute ", to.recompute));
  if (to.moments != from.moments) add(cat("--moments ", moments_name(to.moments)));
  if (to.grads != from.grads) add(cat("--grads ", grads_name(to.grads)));
  if (to.batch_size != from.batch_size) add(cat("--batch-size ", to.batch_size, " --grad-accum ", to.grad_accum));
  return out;
}

std::optional<MemoryPlanInput> memory_plan_fit(const ModelConfig& c, const MemoryPlanInput& in, uint64_t available) {
  auto master_bytes = [](MasterKind k) { return k == MasterKind::fp32 ? 4 : k == MasterKind::split ? 2 : 0; };
  std::optional<MemoryPlanInput> best;
  int best_cost = 0;
  uint64_t best_total = 0;
  for (MasterKind master : {MasterKind::fp32, MasterKind::split, MasterKind::none}) {
    if (master_bytes(master) > master_bytes(in.master)) continue;
    for (int recompute = in.recompute; recompute <= 2; ++recompute)
      for (MomentKind moments : {in.moments, MomentKind::q8})
        for (GradKind grads : {in.grads, GradKind::bf16})
          for (int split = 1; split <= in.batch_size; ++split) {
            if (in.batch_size % split != 0) continue;
            MemoryPlanInput candidate = in;
            candidate.master = master;
            candidate.recompute = recompute;
            candidate.moments = moments;
            candidate.grads = grads;
            candidate.batch_size = in.batch_size / split;
            candidate.grad_accum = in.grad_accum * split;
            int cost = 0;
            if (master != in.master) cost += master == MasterKind::split ? 1 : 100;
            if (recompute > in.recompute) cost += (recompute == 2 ? 4 : 0) + (in.recompute == 0 ? 1 : 0);
            if (moments != in.moments) cost += 8;
            if (grads != in.grads) cost += 8;
            cost += 16 * int(std::ceil(std::log2(double(split))));
            if (!data_parallel_unsupported(candidate).empty()) continue;
            const uint64_t total = memory_plan(c, candidate).total();
            if (total > available) continue;
            if (!best || cost < best_cost || (cost == best_cost && total < best_total)) {
              best = candidate;
              best_cost = cost;
              best_total = total;
            }
          }
  }
  return best;
}

std::optional<int> memory_plan_recompute_auto(const ModelConfig& config, MemoryPlanInput input, uint64_t available) {
  for (int level = 0; level <= 2; ++level) {
    input.recompute = level;
    if (memory_plan(config, input).total() <= available) return level;
  }
  return std::nullopt;
}

}  // namespace stapo
