// matmul_cpu through OpenBLAS. Row-major cblas calls: lda/ldb are the stored row lengths.
#include "model/ops/matmul.h"

#include <cblas.h>

namespace stapo {

template <>
void matmul_cpu<float>(float* d, const float* a, const float* b, int m, int n, int k, bool trans_a, bool trans_b,
                       float beta) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
              1.0f, a, trans_a ? m : k, b, trans_b ? k : n, beta, d, n);
}

template <>
void matmul_cpu<double>(double* d, const double* a, const double* b, int m, int n, int k, bool trans_a,
                        bool trans_b, float beta) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
              1.0, a, trans_a ? m : k, b, trans_b ? k : n, beta, d, n);
}

}  // namespace stapo
