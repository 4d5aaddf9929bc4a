// A functional emulation of the warp-level instructions of kernels/warp_mma.cuh on the CPU, so that kernel code
// written against that header (the tensor-core attention, kernels/attention_flash2.cuh) runs and is tested
// without a GPU. Each thread of a block is a fiber; the fibers of a block take turns on one CPU thread and meet
// at the collective instructions (shuffle, vote, ldmatrix, mma: a warp's 32 lanes; barriers: the block), where
// the last arriving lane computes every lane's result from the PTX ISA's fragment layouts. cp.async copies are
// held back until the wait that completes their group, so a read before that wait sees poison, not data.
//
// What it checks, failing with stapo::Error (naming the instruction, lane and address):
//   - lanes of one warp at different collectives (divergence), fibers that can never proceed (deadlock);
//   - ldmatrix rows and cp.async destinations outside shared memory or not 16-byte (cp.async 4: 4-byte) aligned;
//   - cp.async sources outside the global memory the caller declared readable;
//   - atomic adds (red) to addresses outside the global memory the caller declared for atomics, or misaligned;
//   - copies still pending when a thread exits (a prefetch that was never waited for).
// Shared memory starts each block as all-ones bytes (NaN in bf16 and fp32), so what nobody wrote poisons the
// output. The lowest runnable thread always runs first, so warp 0 runs as far ahead of the others as the
// collectives let it; then copies that land at their wait (the default) catch a read before the wait, or before
// the barrier that publishes other threads' copies, and copies that land at once (EmulatorOptions) catch a buffer
// refilled while another warp still reads it. What it cannot see: timing, occupancy,
// other interleavings of ordinary shared-memory stores and loads, and the hardware's own accumulation order
// inside an mma (fp32 here).
#pragma once
#include <cstddef>
#include <functional>

namespace stapo::test {

struct EmulatorStats {
  long long ldmatrix_phases = 0;             // 8-row phases of ldmatrix (4 per .x4)
  long long ldmatrix_conflicted_phases = 0;  // phases whose 8 16-byte rows do not fall in 8 different bank groups
  long long mma = 0, block_syncs = 0, cp_async_bytes = 0, atomics = 0;
};

struct EmulatorOptions {
  bool copies_land_at_issue = false;  // else at the cp.async.wait that completes their group
};

// Global memory the emulated kernels may read through cp.async, and add to atomically; any other address is an
// error. emulator_clear_ranges forgets both.
void emulator_allow_reads(const void* begin, size_t bytes);
void emulator_allow_atomics(float* begin, size_t count);
void emulator_clear_ranges();

// Runs body(block_x, block_y, block_z, smem) for every block of the grid with `threads` threads (a multiple of
// 32) and `smem_bytes` of 128-byte-aligned shared memory, blocks one after another.
EmulatorStats emulate_grid(int grid_x, int grid_y, int grid_z, int threads, size_t smem_bytes,
                           const std::function<void(int, int, int, unsigned char*)>& body,
                           const EmulatorOptions& options = {});

}  // namespace stapo::test
