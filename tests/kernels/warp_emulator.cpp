// The CPU emulation of kernels/warp_mma.cuh (what it does and checks: warp_emulator.h). Fibers start as ucontext
// contexts and then switch with _setjmp/_longjmp (swapcontext saves the signal mask with a system call at every
// switch: 3× slower here). One scheduler runs the lowest runnable fiber; a fiber runs until it waits at a
// collective.
// glibc's fortified longjmp refuses to jump to another stack ("longjmp causes uninitialized stack frame"): off.
#undef _FORTIFY_SOURCE
#ifndef STAPO_WARP_EMULATION
#error "build with -DSTAPO_WARP_EMULATION: this file defines kernels/warp_mma.cuh's emulated instructions"
#endif
#include "tests/kernels/warp_emulator.h"

#include <cuda_bf16.h>
#include <setjmp.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <queue>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "kernels/warp_mma.cuh"

namespace stapo {
namespace {

constexpr size_t kStackBytes = 256 << 10;

enum class Kind { none, shfl, vote, ldmatrix, ldmatrix_trans, mma, barrier };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::shfl: return "shfl.xor";
    case Kind::vote: return "vote.all";
    case Kind::ldmatrix: return "ldmatrix.x4";
    case Kind::ldmatrix_trans: return "ldmatrix.x4.trans";
    case Kind::mma: return "mma.m16n8k16";
    case Kind::barrier: return "bar.sync";
    default: return "none";
  }
}

struct CopyOp {
  unsigned char* dst;
  const unsigned char* src;  // null: zero fill
  int bytes;
};

struct Fiber {
  ucontext_t context;  // the first start
  jmp_buf resume;      // later ones
  std::unique_ptr<char[]> stack;
  bool started = false, done = false;
  Kind waiting = Kind::none;
  std::vector<std::vector<CopyOp>> committed;  // oldest group first
  std::vector<CopyOp> open;                    // issued since the last commit
};

// One lane's part of a warp collective; two sets per warp, alternating, so a lane that has already moved on to
// the next collective never overwrites what a slower lane has yet to read.
struct Slot {
  uint32_t in[10];
  const unsigned char* address;
  uint32_t out[4];
};

struct WarpState {
  Kind kind = Kind::none;
  int arrived = 0;
  long generation = 0;
  Slot slots[2][32];
  std::vector<int> waiting;
};

struct Emulator {
  ucontext_t scheduler;  // the context a fiber's first start leaves
  jmp_buf back;          // where a fiber returns to the scheduler
  std::vector<Fiber> fibers;
  int current = -1, threads = 0;
  test::EmulatorOptions options;
  // The lowest runnable thread runs first: warp 0 gets as far ahead of the others as the collectives let it,
  // the order most likely to expose a missing barrier.
  std::priority_queue<int, std::vector<int>, std::greater<int>> runnable;
  std::vector<WarpState> warps;
  int barrier_arrived = 0;
  long barrier_generation = 0;
  std::vector<int> barrier_waiting;
  unsigned char* smem = nullptr;
  size_t smem_bytes = 0;
  const std::function<void(int, int, int, unsigned char*)>* body = nullptr;
  int block[3] = {0, 0, 0};
  test::EmulatorStats stats;
  std::vector<std::pair<const unsigned char*, size_t>> readable;
  std::vector<std::pair<const float*, size_t>> atomic;  // (begin, floats)
  std::string error;
};

Emulator& emulator() {
  static Emulator e;
  return e;
}

std::string where() {
  const Emulator& e = emulator();
  return cat("block (", e.block[0], ", ", e.block[1], ", ", e.block[2], ") thread ", e.current, " (warp ",
             e.current / 32, " lane ", e.current % 32, ")");
}

// Records the first error and leaves this fiber for good: the scheduler abandons the block and throws.
[[noreturn]] void emulation_fail(const std::string& what) {
  Emulator& e = emulator();
  if (e.error.empty()) e.error = cat("warp emulation: ", what, " at ", where());
  _longjmp(e.back, 1);
}

void yield_to_scheduler() {
  Emulator& e = emulator();
  if (!_setjmp(e.fibers[e.current].resume)) _longjmp(e.back, 1);
}

void fiber_main() {
  Emulator& e = emulator();
  (*e.body)(e.block[0], e.block[1], e.block[2], e.smem);
  Fiber& f = e.fibers[e.current];
  for (const auto& group : f.committed)
    if (!group.empty()) emulation_fail("the thread exits with cp.async copies never waited for");
  if (!f.open.empty()) emulation_fail("the thread exits with cp.async copies never committed nor waited for");
  f.done = true;
  _longjmp(e.back, 1);
}

// A fresh context that starts in fiber_main. Alone in its function: getcontext returns twice, as setjmp does.
__attribute__((noinline)) void prepare_fiber(Fiber& f) {
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = f.stack.get();
  f.context.uc_stack.ss_size = kStackBytes;
  f.context.uc_link = nullptr;  // fiber_main never returns
  makecontext(&f.context, fiber_main, 0);
}

// Runs fiber `id` until it waits, finishes or fails. Alone in its function: nothing here lives across the jumps.
__attribute__((noinline)) void run_fiber(int id) {
  Emulator& e = emulator();
  e.current = id;
  if (_setjmp(e.back)) return;
  Fiber& f = e.fibers[id];
  if (!f.started) {
    f.started = true;
    swapcontext(&e.scheduler, &f.context);
  }
  _longjmp(f.resume, 1);
}

bool in_smem(const void* p, size_t bytes) {
  const Emulator& e = emulator();
  const unsigned char* c = static_cast<const unsigned char*>(p);
  return c >= e.smem && c + bytes <= e.smem + e.smem_bytes;
}

bool readable(const void* p, size_t bytes) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  for (const auto& [begin, size] : emulator().readable)
    if (c >= begin && c + bytes <= begin + size) return true;
  return false;
}

bool atomic_target(const float* p) {
  for (const auto& [begin, count] : emulator().atomic)
    if (p >= begin && p < begin + count) return true;
  return false;
}

float bf16_bits_to_float(uint16_t bits) {
  const uint32_t word = (uint32_t)bits << 16;
  float f;
  std::memcpy(&f, &word, 4);
  return f;
}

uint16_t smem_u16(const unsigned char* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// ---- what the last arriving lane computes for the whole warp ----

void compute_shfl(Slot* s) {
  for (int lane = 0; lane < 32; ++lane) s[lane].out[0] = s[lane ^ (int)s[lane].in[1]].in[0];
}

void compute_vote(Slot* s) {
  uint32_t all = 1;
  for (int lane = 0; lane < 32; ++lane) all &= s[lane].in[0] ? 1u : 0u;
  for (int lane = 0; lane < 32; ++lane) s[lane].out[0] = all;
}

// Lanes 8i..8i+7 address the rows of matrix i; lane l gets row l/4, columns 2(l%4)..+1 (or, transposed, rows
// 2(l%4)..+1 of column l/4) of each matrix.
void compute_ldmatrix(Slot* s, bool trans) {
  Emulator& e = emulator();
  for (int m = 0; m < 4; ++m) {
    bool group_used[8] = {false, false, false, false, false, false, false, false};
    bool conflict = false;
    for (int r = 0; r < 8; ++r) {
      const unsigned char* row = s[8 * m + r].address;
      if (!in_smem(row, 16) || (row - e.smem) % 16 != 0)
        emulation_fail(cat(trans ? "ldmatrix.trans" : "ldmatrix", ": lane ", 8 * m + r, "'s row address (offset ",
                           (long long)(row - e.smem), " of ", e.smem_bytes,
                           " bytes) is outside shared memory or not 16-byte aligned"));
      const int group = (int)(((row - e.smem) / 16) % 8);  // 8 groups of 4 banks
      conflict |= group_used[group];
      group_used[group] = true;
    }
    e.stats.ldmatrix_phases++;
    e.stats.ldmatrix_conflicted_phases += conflict ? 1 : 0;
  }
  for (int lane = 0; lane < 32; ++lane)
    for (int m = 0; m < 4; ++m) {
      if (!trans) {
        std::memcpy(&s[lane].out[m], s[8 * m + lane / 4].address + 4 * (lane % 4), 4);
      } else {
        const uint16_t lo = smem_u16(s[8 * m + 2 * (lane % 4)].address + 2 * (lane / 4));
        const uint16_t hi = smem_u16(s[8 * m + 2 * (lane % 4) + 1].address + 2 * (lane / 4));
        s[lane].out[m] = (uint32_t)lo | ((uint32_t)hi << 16);
      }
    }
}

// in[0..3] = a, in[4..5] = b, in[6..9] = c (fp32 bits); out = d.
void compute_mma(Slot* s) {
  float A[16][16], B[16][8], C[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    const uint32_t* a = s[lane].in;
    const int a_row[4] = {g, g + 8, g, g + 8}, a_col[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
    for (int r = 0; r < 4; ++r) {
      A[a_row[r]][a_col[r]] = bf16_bits_to_float((uint16_t)(a[r] & 0xffff));
      A[a_row[r]][a_col[r] + 1] = bf16_bits_to_float((uint16_t)(a[r] >> 16));
    }
    for (int r = 0; r < 2; ++r) {
      const uint32_t b = s[lane].in[4 + r];
      B[2 * t + 8 * r][g] = bf16_bits_to_float((uint16_t)(b & 0xffff));
      B[2 * t + 8 * r + 1][g] = bf16_bits_to_float((uint16_t)(b >> 16));
    }
    for (int r = 0; r < 4; ++r) std::memcpy(&C[g + 8 * (r / 2)][2 * t + r % 2], &s[lane].in[6 + r], 4);
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int r = 0; r < 4; ++r) {
      const int i = g + 8 * (r / 2), j = 2 * t + r % 2;
      double sum = 0;
      for (int k = 0; k < 16; ++k) sum += (double)A[i][k] * B[k][j];
      const float d = (float)(sum + C[i][j]);
      std::memcpy(&s[lane].out[r], &d, 4);
    }
  }
  emulator().stats.mma++;
}

// The calling lane has filled its slot (slot_for); waits until the warp's 32 lanes have, and returns its slot
// with the outputs. The last lane to arrive computes them.
Slot& slot_for(Kind kind) {
  Emulator& e = emulator();
  WarpState& w = e.warps[e.current / 32];
  if (w.arrived == 0) w.kind = kind;
  if (w.kind != kind)
    emulation_fail(cat("warp divergence: this lane is at ", kind_name(kind), " while lanes of its warp wait at ",
                       kind_name(w.kind)));
  return w.slots[w.generation & 1][e.current % 32];
}

Slot& warp_collective(Kind kind) {
  Emulator& e = emulator();
  const int lane = e.current % 32;
  WarpState& w = e.warps[e.current / 32];
  const long generation = w.generation;
  Slot* slots = w.slots[generation & 1];
  if (++w.arrived == 32) {
    switch (kind) {
      case Kind::shfl: compute_shfl(slots); break;
      case Kind::vote: compute_vote(slots); break;
      case Kind::ldmatrix: compute_ldmatrix(slots, false); break;
      case Kind::ldmatrix_trans: compute_ldmatrix(slots, true); break;
      case Kind::mma: compute_mma(slots); break;
      default: break;
    }
    w.arrived = 0;
    w.kind = Kind::none;
    w.generation++;
    for (int f : w.waiting) {
      e.fibers[f].waiting = Kind::none;
      e.runnable.push(f);
    }
    w.waiting.clear();
  } else {
    w.waiting.push_back(e.current);
    e.fibers[e.current].waiting = kind;
    yield_to_scheduler();
  }
  return slots[lane];
}

void run_copies(const std::vector<CopyOp>& group) {
  for (const CopyOp& c : group) {
    if (c.src)
      std::memcpy(c.dst, c.src, c.bytes);
    else
      std::memset(c.dst, 0, c.bytes);
  }
}

void cp_async(void* dst, const void* src, bool fill, int bytes) {
  if (!in_smem(dst, bytes) || (static_cast<unsigned char*>(dst) - emulator().smem) % bytes != 0)
    emulation_fail(cat("cp.async ", bytes, ": the destination is outside shared memory or not ", bytes,
                       "-byte aligned"));
  if (fill && (reinterpret_cast<uintptr_t>(src) % bytes != 0 || !readable(src, bytes)))
    emulation_fail(cat("cp.async ", bytes, ": the source ", src, " is not ", bytes,
                       "-byte aligned or outside the readable global memory"));
  const CopyOp op{static_cast<unsigned char*>(dst), fill ? static_cast<const unsigned char*>(src) : nullptr, bytes};
  if (emulator().options.copies_land_at_issue)
    run_copies({op});
  else
    emulator().fibers[emulator().current].open.push_back(op);
  emulator().stats.cp_async_bytes += fill ? bytes : 0;
}

}  // namespace

// ---- kernels/warp_mma.cuh's instructions ----

namespace warp {

int thread_index() { return emulator().current; }

void block_sync() {
  Emulator& e = emulator();
  e.stats.block_syncs++;
  if (++e.barrier_arrived == e.threads) {
    e.barrier_arrived = 0;
    e.barrier_generation++;
    for (int f : e.barrier_waiting) {
      e.fibers[f].waiting = Kind::none;
      e.runnable.push(f);
    }
    e.barrier_waiting.clear();
  } else {
    e.barrier_waiting.push_back(e.current);
    e.fibers[e.current].waiting = Kind::barrier;
    yield_to_scheduler();
  }
}

float shfl_xor(float value, int lane_mask) {
  Slot& s = slot_for(Kind::shfl);
  std::memcpy(&s.in[0], &value, 4);
  s.in[1] = (uint32_t)lane_mask;
  const Slot& r = warp_collective(Kind::shfl);
  float out;
  std::memcpy(&out, &r.out[0], 4);
  return out;
}

int shfl_xor(int value, int lane_mask) {
  Slot& s = slot_for(Kind::shfl);
  s.in[0] = (uint32_t)value;
  s.in[1] = (uint32_t)lane_mask;
  return (int)warp_collective(Kind::shfl).out[0];
}

bool warp_all(bool predicate) {
  slot_for(Kind::vote).in[0] = predicate ? 1 : 0;
  return warp_collective(Kind::vote).out[0] != 0;
}

void cp_async_16(void* dst, const void* src, bool fill) { cp_async(dst, src, fill, 16); }
void cp_async_4(void* dst, const void* src, bool fill) { cp_async(dst, src, fill, 4); }

void cp_async_commit() {
  Fiber& f = emulator().fibers[emulator().current];
  f.committed.push_back(std::move(f.open));
  f.open.clear();
}

void cp_async_wait_pending(int groups) {
  Fiber& f = emulator().fibers[emulator().current];
  while ((int)f.committed.size() > groups) {
    run_copies(f.committed.front());
    f.committed.erase(f.committed.begin());
  }
}

void ldmatrix_x4(uint32_t r[4], const void* smem_row) {
  slot_for(Kind::ldmatrix).address = static_cast<const unsigned char*>(smem_row);
  const Slot& s = warp_collective(Kind::ldmatrix);
  for (int i = 0; i < 4; ++i) r[i] = s.out[i];
}

void ldmatrix_x4_trans(uint32_t r[4], const void* smem_row) {
  slot_for(Kind::ldmatrix_trans).address = static_cast<const unsigned char*>(smem_row);
  const Slot& s = warp_collective(Kind::ldmatrix_trans);
  for (int i = 0; i < 4; ++i) r[i] = s.out[i];
}

void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  Slot& s = slot_for(Kind::mma);
  for (int i = 0; i < 4; ++i) s.in[i] = a[i];
  s.in[4] = b[0];
  s.in[5] = b[1];
  std::memcpy(&s.in[6], d, 16);
  const Slot& r = warp_collective(Kind::mma);
  std::memcpy(d, r.out, 16);
}

// Fibers take turns on one CPU thread, so a plain add is atomic here; the order of the adds is the emulation's.
void red_add(float* dst, float value) {
  if (reinterpret_cast<uintptr_t>(dst) % sizeof(float) != 0 || !atomic_target(dst))
    emulation_fail(cat("red.add.f32: the address ", static_cast<void*>(dst),
                       " is not 4-byte aligned or outside the memory declared for atomics"));
  *dst += value;
  emulator().stats.atomics++;
}

}  // namespace warp

// ---- running a grid ----

namespace test {

void emulator_allow_reads(const void* begin, size_t bytes) {
  emulator().readable.push_back({static_cast<const unsigned char*>(begin), bytes});
}

void emulator_allow_atomics(float* begin, size_t count) { emulator().atomic.push_back({begin, count}); }

void emulator_clear_ranges() {
  emulator().readable.clear();
  emulator().atomic.clear();
}

EmulatorStats emulate_grid(int grid_x, int grid_y, int grid_z, int threads, size_t smem_bytes,
                           const std::function<void(int, int, int, unsigned char*)>& body,
                           const EmulatorOptions& options) {
  STAPO_CHECK(threads > 0 && threads % 32 == 0, "emulate_grid: ", threads, " threads is not a multiple of 32");
  Emulator& e = emulator();
  e.threads = threads;
  e.options = options;
  e.body = &body;
  e.stats = EmulatorStats{};
  e.error.clear();
  std::unique_ptr<unsigned char[]> smem_storage(new unsigned char[smem_bytes + 128]);
  e.smem = smem_storage.get() + (128 - reinterpret_cast<uintptr_t>(smem_storage.get()) % 128) % 128;
  e.smem_bytes = smem_bytes;
  e.fibers.clear();
  e.fibers.resize(threads);
  for (Fiber& f : e.fibers) f.stack.reset(new char[kStackBytes]);

  for (int z = 0; z < grid_z; ++z)
    for (int y = 0; y < grid_y; ++y)
      for (int x = 0; x < grid_x; ++x) {
        e.block[0] = x;
        e.block[1] = y;
        e.block[2] = z;
        std::memset(e.smem, 0xff, smem_bytes);
        e.warps.assign(threads / 32, WarpState{});
        e.barrier_arrived = 0;
        e.barrier_waiting.clear();
        e.runnable = {};
        for (int t = 0; t < threads; ++t) {
          Fiber& f = e.fibers[t];
          f.started = f.done = false;
          f.waiting = Kind::none;
          f.committed.clear();
          f.open.clear();
          prepare_fiber(f);
          e.runnable.push(t);
        }
        int finished = 0;
        while (!e.runnable.empty() && e.error.empty()) {
          const int id = e.runnable.top();
          e.runnable.pop();
          run_fiber(id);
          if (e.fibers[id].done) ++finished;
        }
        if (e.error.empty() && finished < threads) {
          std::string stuck;
          for (int t = 0; t < threads && stuck.size() < 400; ++t)
            if (!e.fibers[t].done) stuck += cat(" thread ", t, " at ", kind_name(e.fibers[t].waiting), ";");
          e.error = cat("warp emulation: deadlock in block (", x, ", ", y, ", ", z, "): ", threads - finished,
                        " threads can never proceed:", stuck);
        }
        if (!e.error.empty()) {
          e.current = -1;
          fail(e.error);
        }
      }
  e.current = -1;
  return e.stats;
}

}  // namespace test
}  // namespace stapo
