#!/usr/bin/env python3
# Instructions one warp executes per tile step of each flash2 kernel, read from the compiled SASS. The step's core is
# the code between the main loop's two block barriers (the pair with the most HMMA): its shortest path is a tile
# without the mask (every pair visible) when no element branches (code that branched per element, as before
# 4408818, has shorter paths: the masked-out elements'). Beside it, the static size of the whole tile loop (from
# the target of its back edge to the back edge: the core, choosing the next tile, issuing its loads). Counts
# instructions, not cycles: a static measure of what a change removed, for reading beside the profiler's issue
# rates (docs/kernels.md).
# Run: cuobjdump -sass kernels.o > k.sass && python3 dev/cuda/sass_paths.py k.sass
#      (cuobjdump ships with the CUDA toolkit; without it, pip's nvidia-cuda-cuobjdump has it)
import re
import sys

KERNEL = re.compile(r"Function : \S*?\dflash2_(\w+?)_kernelILi(\d+)E((?:Lb[01]E)*)E")
INSTRUCTION = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s*(.*?)\s*;")
BRANCH = re.compile(r"^(@!?U?P\w+\s+)?BRA\s+(?:\S+\s+)?0x([0-9a-f]+)$")


def kernels(text):
    name, code = None, {}
    for line in text.splitlines():
        header = KERNEL.search(line)
        if header:
            flags = [b == "1" for b in re.findall(r"Lb([01])E", header.group(3))]
            if header.group(1) == "dkv":  # <D, DQ_ATOMIC, NARROW>
                atomic, narrow = flags
            else:  # <D, NARROW>
                atomic, narrow = False, flags[0]
            name = (f"{header.group(1)} D = {header.group(2)}" + (" atomic (its dQ barrier splits the step)" if atomic
                                                                   else "") + (" 32-row tiles" if narrow else ""))
            code[name] = []
        elif name and (m := INSTRUCTION.match(line)):
            code[name].append((int(m.group(1), 16), m.group(2)))
    return code


def step_paths(code):
    barriers = [i for i, (_, text) in enumerate(code) if text.startswith("BAR.SYNC")]
    pairs = list(zip(barriers, barriers[1:]))
    if not pairs:
        return None
    first, last = max(pairs, key=lambda p: sum("HMMA" in text for _, text in code[p[0]:p[1]]))
    index = {address: i for i, (address, _) in enumerate(code)}
    shortest = {first: 1}
    loop = None
    for i, (address, text) in enumerate(code):
        m = BRANCH.match(text)
        target = index.get(int(m.group(2), 16)) if m else None
        if target is not None and target <= first and i >= last:  # a back edge around the step: the innermost is
            loop = min(loop or 1 << 30, i - target + 1)             # the tile loop
        if first <= i < last and i in shortest:  # forward edges only: node order is a topological order
            successors = [] if m and not m.group(1) else [i + 1]  # no fall-through after an unconditional branch
            if target is not None and first < target <= last:
                successors.append(target)
            for j in successors:
                shortest[j] = min(shortest.get(j, 1 << 30), shortest[i] + 1)
    hmma = sum("HMMA" in text for _, text in code[first:last])
    return shortest.get(last), last - first + 1, loop, hmma


text = open(sys.argv[1]).read() if len(sys.argv) > 1 else sys.exit("usage: sass_paths.py FILE.sass")
print("| kernel | full tile: shortest path between the barriers | code between them | tile loop code | HMMA |")
print("|---|---:|---:|---:|---:|")
for name, code in kernels(text).items():
    paths = step_paths(code)
    if paths and paths[3]:
        print(f"| {name} | {paths[0]} | {paths[1]} | {paths[2]} | {paths[3]} |")
