// Matmul on the CPU: the one place the reference model's matmuls go, through OpenBLAS (cblas_sgemm/dgemm).
// Same row-major convention as kernels/matmul.h (the GPU twin):
//   D(m,n) = op(A) · op(B) + beta · D,
// op(A) = A stored (m,k) or, with trans_a, Aᵀ where A is stored (k,m); likewise op(B) is B (k,n) or Bᵀ of (n,k).
// A Linear layer y = x·Wᵀ with W stored (out,in) is matmul_cpu(y, x, W, rows, out, in, false, true, 0).
// beta = 0 overwrites D (activations); beta = 1 accumulates (parameter gradients).
#pragma once

namespace stapo {

template <typename T>
void matmul_cpu(T* d, const T* a, const T* b, int m, int n, int k, bool trans_a, bool trans_b, float beta);

// D = alpha · op(A)·op(B) + beta · D on strided operands (ld* = stored row lengths), computed in the calling
// thread: for ops that run many small products inside their own parallel loop (attention per head).
template <typename T>
void matmul_cpu_strided(T* d, int ldd, const T* a, int lda, const T* b, int ldb, int m, int n, int k, bool trans_a,
                        bool trans_b, float alpha, float beta);

}  // namespace stapo
