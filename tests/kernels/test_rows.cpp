// kernels/rows.cu (gather and scatter of rows by index) against the plain loops they stand for.
#include <algorithm>
#include <numeric>
#include <random>

#include "kernels/rows.h"
#include "tests/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace stapo::test {
namespace {

// M distinct rows of N, in increasing order (as the engine lists response positions).
std::vector<int32_t> random_rows(int N, int M, uint64_t salt) {
  std::vector<int32_t> all(N);
  std::iota(all.begin(), all.end(), 0);
  std::mt19937_64 rng(seed_from_test_name(salt));
  std::shuffle(all.begin(), all.end(), rng);
  std::vector<int32_t> rows(all.begin(), all.begin() + M);
  std::sort(rows.begin(), rows.end());
  return rows;
}

TEST(KernelRows, GatherAndScatterMatchLoops) {
  STAPO_REQUIRE_GPU();
  struct Shape {
    int N, M, C;
  };
  // C = 8 (one vector per row), M = N (every row), M = 1, sizes that are not multiples of the block.
  const Shape shapes[] = {{1, 1, 8}, {37, 1, 64}, {130, 67, 136}, {300, 300, 8}, {257, 129, 4096}};
  for (const Shape& s : shapes) {
    const std::string what = cat("N=", s.N, " M=", s.M, " C=", s.C);
    const std::vector<int32_t> index = random_rows(s.N, s.M, s.N + s.C);
    const auto full = round_bf16(random_normal((size_t)s.N * s.C, 1.0f, s.N));
    const auto part = round_bf16(random_normal((size_t)s.M * s.C, 1.0f, s.M + 1));
    std::vector<float> gathered((size_t)s.M * s.C), scattered = full;  // scatter leaves unlisted rows alone
    for (int m = 0; m < s.M; ++m)
      for (int c = 0; c < s.C; ++c) {
        gathered[(size_t)m * s.C + c] = full[(size_t)index[m] * s.C + c];
        scattered[(size_t)index[m] * s.C + c] = part[(size_t)m * s.C + c];
      }
    DeviceArray<int32_t> d_index(index);
    auto d_full = device_bf16(full), d_part = device_bf16(part);
    DeviceArray<bf16> d_gathered((size_t)s.M * s.C);
    rows_gather(d_gathered.get(), d_full->get(), d_index.get(), s.M, s.C, 0);
    EXPECT_TRUE(all_close(download_bf16(d_gathered), gathered, 0, 0)) << "gather " << what;
    rows_scatter(d_full->get(), d_part->get(), d_index.get(), s.M, s.C, 0);
    EXPECT_TRUE(all_close(download_bf16(*d_full), scattered, 0, 0)) << "scatter " << what;
  }
}

TEST(KernelRows, RejectsChannelsNotMultipleOf8) {
  EXPECT_THROW(rows_gather(nullptr, nullptr, nullptr, 1, 12, 0), Error);
  EXPECT_THROW(rows_scatter(nullptr, nullptr, nullptr, 1, 0, 0), Error);
}

}  // namespace
}  // namespace stapo::test
