// train_stapo --device-check: one optimizer step of tiny random models on the CPU reference (CpuEngine<float>)
// and on the CUDA engine, from the same weights and the same batch (two pairs: a packed row, a full row and a
// padded row), through the trainer's own step code. Compared per case, with bf16 tolerances:
//   per-sequence log-prob sums S (error per response token), the loss, the gradient norm, every gradient tensor
//   (relative L2 error, worst tensor named), and every tensor's AdamW update w_after − w_before (the same).
// Cases: a Llama (llama3 RoPE, untied) under each recompute level and under bf16 weights with stochastic
// rounding, and a Mistral (sliding window, tied embeddings); in builds with the cuDNN attention path, both
// models again on it (with an unpacked batch: one sequence per row). The lm_head runs in small chunks so that
// its chunk loops are exercised. Recompute levels 1 and 2 must also reproduce level 0's gradients (the
// recomputed activations are the same values). Prints one table; returns 0 when everything is within tolerance, else 1.
#pragma once

namespace stapo {

int device_check_run();

}  // namespace stapo
