// matmul_cpu through OpenBLAS. Row-major cblas calls: lda/ldb are the stored row lengths.
// Threads: the rows of D are split across the OpenMP team, each slice one single-threaded sgemm/dgemm.
// OpenBLAS's own pthreads are switched off: with two thread pools on the same cores, OpenMP threads spin
// while OpenBLAS threads yield, and perf showed over a third of a training step spent in spinning and
// rescheduling.
#include "model/ops/matmul.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstddef>

namespace stapo {

// OpenBLAS's own pthreads stay off (see the top of the file); called before any BLAS use.
static void blas_single_threaded() {
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

static void gemm(float* d, int ldd, const float* a, int lda, const float* b, int ldb, int m, int n, int k, bool ta,
                 bool tb, float alpha, float beta) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda,
              b, ldb, beta, d, ldd);
}

static void gemm(double* d, int ldd, const double* a, int lda, const double* b, int ldb, int m, int n, int k, bool ta,
                 bool tb, float alpha, float beta) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda,
              b, ldb, beta, d, ldd);
}

template <typename T>
void matmul_cpu_strided(T* d, int ldd, const T* a, int lda, const T* b, int ldb, int m, int n, int k, bool trans_a,
                        bool trans_b, float alpha, float beta) {
  blas_single_threaded();
  gemm(d, ldd, a, lda, b, ldb, m, n, k, trans_a, trans_b, alpha, beta);
}

template <typename T>
void matmul_cpu(T* d, const T* a, const T* b, int m, int n, int k, bool trans_a, bool trans_b, float beta) {
  blas_single_threaded();
  const int lda = trans_a ? m : k, ldb = trans_b ? k : n;
  // Below ~1 MFLOP per thread, splitting costs more than it saves.
  const int threads = std::max(1, std::min<int>(omp_get_max_threads(), (int)((double)m * n * k / (1 << 20))));
  if (threads == 1 || m < 2 * threads) {
    gemm(d, n, a, lda, b, ldb, m, n, k, trans_a, trans_b, 1.0f, beta);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int rows = (m + nt - 1) / nt, m0 = std::min(m, t * rows), m1 = std::min(m, m0 + rows);
    // Rows m0..m1 of op(A): rows of A, or columns of a transposed A.
    const T* a_slice = trans_a ? a + m0 : a + (size_t)m0 * k;
    if (m1 > m0) gemm(d + (size_t)m0 * n, n, a_slice, lda, b, ldb, m1 - m0, n, k, trans_a, trans_b, 1.0f, beta);
  }
}

template void matmul_cpu<float>(float*, const float*, const float*, int, int, int, bool, bool, float);
template void matmul_cpu<double>(double*, const double*, const double*, int, int, int, bool, bool, float);
template void matmul_cpu_strided<float>(float*, int, const float*, int, const float*, int, int, int, int, bool, bool,
                                       float, float);
template void matmul_cpu_strided<double>(double*, int, const double*, int, const double*, int, int, int, int, bool,
                                         bool, float, float);

}  // namespace stapo
