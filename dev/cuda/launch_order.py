#!/usr/bin/env python3
# A model, not a measurement: how long a causal attention grid takes in the launch order the kernels had (the tile
# as blockIdx.x) against the longest-first numbering of kernels/attention_flash2.cuh's longest_first.
# The hardware hands blocks to free slots (SMs × blocks per SM) in index order; the model does the same with each
# block's length in tile steps (the query or key tiles it visits) and assumes every step takes the same time
# however many blocks share the SM (the dK/dV kernel is latency-bound: Nsight Compute, docs/benchmarks.md). It
# prints each grid's finishing time over the perfect split (total steps / slots): what the order wastes.
# Run: python3 dev/cuda/launch_order.py
import heapq

SMS = 132  # H100 SXM and H200


def finish(lengths, slots):
    free_at = [0] * slots
    for length in lengths:  # in launch order: the next block takes the slot that frees first
        heapq.heappush(free_at, heapq.heappop(free_at) + length)
    return max(free_at)


# (name, T, query heads, kv heads, rows, head dim), as dev/cuda/attention.cu times them; blocks per SM of each
# kernel at D = 64 and 128 (registers and shared memory: make -C dev/cuda ptxas, docs/kernels.md).
SHAPES = [("gpu_step 1B", 1024, 32, 8, 8, 64), ("8B", 2048, 32, 8, 4, 128), ("FA3 16k D64 T1k", 1024, 32, 32, 16, 64),
          ("FA3 16k D64 T4k", 4096, 32, 32, 4, 64), ("FA3 16k D128 T2k", 2048, 16, 16, 8, 128)]
BLOCKS_PER_SM = {64: {"forward": 3, "dq": 3, "dkv": 2}, 128: {"forward": 2, "dq": 3, "dkv": 2}}

print("| shape | kernel | blocks | old order / perfect | longest first / perfect |")
print("|---|---|---:|---:|---:|")
for name, T, H, Hkv, rows, D in SHAPES:
    tiles, group = T // 64, H // Hkv  # 64-query blocks (forward, dq), 64-key blocks (dk, dv)
    # heads, the steps of a block on tile x of the old order's blockIdx.x (forward and dq: reversed, the longest
    # first within a head and row)
    kernels = {"forward": (H, lambda x: tiles - x), "dq": (H, lambda x: tiles - x),
               "dkv": (Hkv, lambda x: group * (tiles - x))}
    for kernel, (heads, steps) in kernels.items():
        slots = SMS * BLOCKS_PER_SM[D][kernel]
        old = [steps(x) for _ in range(heads * rows) for x in range(tiles)]
        perfect = sum(old) / slots
        print(f"| {name} | {kernel} | {len(old)} | {finish(old, slots) / perfect:.2f} | "
              f"{finish(sorted(old, reverse=True), slots) / perfect:.2f} |")
