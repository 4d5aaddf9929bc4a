// Per-op checks of model/ops/ against naive loops written here from the definitions (the whole-model tests
// compare against transformers): matmul in every transpose mode, RoPE's inverse, the attention mask rule
// (segments, causality, window), and the chunked lm_head against explicit logits.
#include <cmath>

#include "model/ops/attention.h"
#include "model/ops/lm_head.h"
#include "model/ops/matmul.h"
#include "model/ops/rope.h"
#include "tests/model/model_test_util.h"

namespace stapo::test {
namespace {

TEST(ModelOps, MatmulEveryTransposeAndBeta) {
  const int m = 5, n = 7, k = 3;
  std::vector<float> a = random_normal(m * k, 1.0f, 1), b = random_normal(k * n, 1.0f, 2);
  std::vector<float> d0 = random_normal(m * n, 1.0f, 3);
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (float beta : {0.0f, 1.0f}) {
        std::vector<float> ref(m * n), d = d0;
        for (int i = 0; i < m; ++i)
          for (int j = 0; j < n; ++j) {
            double s = beta * d0[i * n + j];
            for (int p = 0; p < k; ++p) s += (double)a[ta ? p * m + i : i * k + p] * b[tb ? j * k + p : p * n + j];
            ref[i * n + j] = (float)s;
          }
        matmul_cpu(d.data(), a.data(), b.data(), m, n, k, ta, tb, beta);
        EXPECT_TRUE(all_close(d, ref, 1e-5, 1e-5)) << "trans_a " << ta << " trans_b " << tb << " beta " << beta;
      }
}

TEST(ModelOps, RopeBackwardInvertsForwardAndPositionZeroIsIdentity) {
  const int N = 6, nh = 3, D = 8;
  std::vector<int32_t> positions{0, 1, 2, 7, 0, 30};
  std::vector<float> inv_freq = rope_inv_freq<float>(D, 10000.0, RopeScaling{true, 8.0, 1.0, 4.0, 16});
  std::vector<float> x = random_normal(N * nh * D, 1.0f), y = x;
  rope_forward(y.data(), positions.data(), inv_freq.data(), N, nh, D);
  for (int i = 0; i < nh * D; ++i) EXPECT_EQ(y[i], x[i]);  // position 0
  EXPECT_FALSE(all_close(y, x, 1e-3, 0));
  rope_backward(y.data(), positions.data(), inv_freq.data(), N, nh, D);
  EXPECT_TRUE(all_close(y, x, 1e-6, 1e-5));
}

TEST(ModelOps, RopeLlama3Bands) {
  // theta 10000, D 8: wavelengths 2π·{1, 10, 100, 1000}. Context 16, factors 1 and 4: 6.28 < 4? no, so
  // the first is blended, the last two (> 16) divided by 8, per HF's rule.
  RopeScaling s{true, 8.0, 1.0, 4.0, 16};
  std::vector<double> f = rope_inv_freq<double>(8, 10000.0, s), plain = rope_inv_freq<double>(8, 10000.0, {});
  double smooth = (16 / (2 * M_PI) - 1.0) / 3.0;
  EXPECT_NEAR(f[0], (1 - smooth) * plain[0] / 8 + smooth * plain[0], 1e-15);
  EXPECT_DOUBLE_EQ(f[2], plain[2] / 8);
  EXPECT_DOUBLE_EQ(f[3], plain[3] / 8);
}

TEST(ModelOps, AttentionMatchesNaiveMaskedSoftmax) {
  AttentionShape s{2, 150, 4, 2, 5, 70};  // 150 positions: three query blocks, the window crossing them
  const int N = s.rows * s.T;
  std::vector<int32_t> segments(N);
  for (int i = 0; i < s.T; ++i) {
    segments[i] = i < 100 ? 0 : 1;         // packed row: sequences of 100 and 50
    segments[s.T + i] = i < 140 ? 0 : -1;  // right padding
  }
  std::vector<float> q = random_normal(N * s.H * s.D, 1.0f, 1), k = random_normal(N * s.Hkv * s.D, 1.0f, 2),
                     v = random_normal(N * s.Hkv * s.D, 1.0f, 3);
  std::vector<float> out(q.size()), lse(N * s.H), ref(q.size(), 0.0f);
  attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s, segments.data());
  for (int b = 0; b < s.rows; ++b)
    for (int h = 0; h < s.H; ++h)
      for (int i = 0; i < s.T; ++i) {
        int qi = b * s.T + i, hk = h / (s.H / s.Hkv);
        std::vector<double> w(s.T, 0.0);
        double total = 0;
        for (int j = 0; j < s.T; ++j) {
          int kj = b * s.T + j;
          bool visible = segments[qi] >= 0 && segments[kj] == segments[qi] && j <= i && i - j < s.window;
          if (!visible) continue;
          double dot = 0;
          for (int d = 0; d < s.D; ++d) dot += (double)q[(qi * s.H + h) * s.D + d] * k[(kj * s.Hkv + hk) * s.D + d];
          w[j] = std::exp(dot / std::sqrt((double)s.D));
          total += w[j];
        }
        for (int j = 0; j < s.T; ++j)
          for (int d = 0; d < s.D && total > 0; ++d)
            ref[(qi * s.H + h) * s.D + d] += (float)(w[j] / total * v[((b * s.T + j) * s.Hkv + hk) * s.D + d]);
        if (total > 0) {
          EXPECT_NEAR(lse[qi * s.H + h], std::log(total), 1e-5);
        }
      }
  EXPECT_TRUE(all_close(out, ref, 1e-6, 1e-5));
}

// Several query blocks (T = 150 > 64), a window reaching across block boundaries, and a packed row: the
// backward against central differences (double) on a sample of q, k and v elements, loss Σ out·G.
TEST(ModelOps, AttentionBackwardAcrossBlocksMatchesFiniteDifferences) {
  AttentionShape s{2, 150, 4, 2, 4, 70};
  const int N = s.rows * s.T;
  std::vector<int32_t> segments(N);
  for (int i = 0; i < s.T; ++i) {
    segments[i] = i < 100 ? 0 : 1;                 // row 0: sequences of 100 and 50
    segments[s.T + i] = i < 140 ? 0 : -1;          // row 1: 140 tokens, then padding
  }
  auto to_double = [](const std::vector<float>& f) { return std::vector<double>(f.begin(), f.end()); };
  std::vector<double> q = to_double(random_normal(N * s.H * s.D, 1.0f, 1));
  std::vector<double> k = to_double(random_normal(N * s.Hkv * s.D, 1.0f, 2));
  std::vector<double> v = to_double(random_normal(N * s.Hkv * s.D, 1.0f, 3));
  std::vector<double> G = to_double(random_normal(N * s.H * s.D, 1.0f, 4));
  std::vector<double> out(q.size()), lse(N * s.H);
  auto loss = [&] {
    attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s, segments.data());
    double sum = 0;
    for (size_t i = 0; i < out.size(); ++i) sum += out[i] * G[i];
    return sum;
  };
  loss();
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
  attention_backward(dq.data(), dk.data(), dv.data(), G.data(), out.data(), lse.data(), q.data(), k.data(), v.data(),
                     s, segments.data());
  std::vector<float> picks = random_uniform(3 * 80, 0.0f, 1.0f, 5);
  int n = 0;
  for (auto [x, dx] : {std::pair{&q, &dq}, std::pair{&k, &dk}, std::pair{&v, &dv}}) {
    std::vector<double> fd, an;
    for (int t = 0; t < 80; ++t) {
      size_t i = std::min(x->size() - 1, (size_t)(picks[n++] * x->size()));
      double saved = (*x)[i];
      (*x)[i] = saved + 1e-5;
      double plus = loss();
      (*x)[i] = saved - 1e-5;
      double minus = loss();
      (*x)[i] = saved;
      fd.push_back((plus - minus) / 2e-5);
      an.push_back((*dx)[i]);
    }
    EXPECT_LE(relative_error(an.data(), fd.data(), fd.size()), 1e-7);
  }
}

TEST(ModelOps, LmHeadForwardBackwardMatchExplicitLogitsAcrossChunks) {
  const int N = 300, C = 16, V = 50;  // 300 rows: more than one chunk
  std::vector<float> h = random_normal(N * C, 1.0f, 1), w = random_normal(V * C, 0.5f, 2);
  std::vector<float> u = random_uniform(N, 0.0f, (float)V, 3);
  std::vector<int32_t> targets(N);
  for (int i = 0; i < N; ++i) targets[i] = i % 7 == 3 ? -1 : std::min(V - 1, (int)u[i]);
  std::vector<float> logp(N), entropy(N), ref_logp(N), ref_entropy(N);
  std::vector<float> dlogp = random_normal(N, 1.0f, 4), dh(N * C), dw = random_normal(V * C, 1.0f, 5);
  std::vector<float> ref_dh(N * C, 0.0f), ref_dw = dw;  // dw accumulates onto what is there
  lm_head_forward(logp.data(), entropy.data(), h.data(), w.data(), targets.data(), N, C, V);
  lm_head_backward(dh.data(), dw.data(), dlogp.data(), h.data(), w.data(), targets.data(), N, C, V);
  for (int i = 0; i < N; ++i) {
    if (targets[i] < 0) continue;
    std::vector<double> z(V);
    double zmax = -1e300, sum = 0;
    for (int v = 0; v < V; ++v) {
      for (int c = 0; c < C; ++c) z[v] += (double)h[i * C + c] * w[v * C + c];
      zmax = std::max(zmax, z[v]);
    }
    for (int v = 0; v < V; ++v) sum += std::exp(z[v] - zmax);
    double lse = zmax + std::log(sum), ent = 0;
    for (int v = 0; v < V; ++v) ent -= std::exp(z[v] - lse) * (z[v] - lse);
    ref_logp[i] = (float)(z[targets[i]] - lse);
    ref_entropy[i] = (float)ent;
    for (int v = 0; v < V; ++v) {  // d logit = dlogp·(onehot − p)
      double g = dlogp[i] * ((v == targets[i]) - std::exp(z[v] - lse));
      for (int c = 0; c < C; ++c) {
        ref_dh[i * C + c] += (float)(g * w[v * C + c]);
        ref_dw[v * C + c] += (float)(g * h[i * C + c]);
      }
    }
  }
  EXPECT_TRUE(all_close(logp, ref_logp, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(entropy, ref_entropy, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(dh, ref_dh, 1e-5, 1e-4));
  EXPECT_TRUE(all_close(dw, ref_dw, 1e-4, 1e-4));
}

}  // namespace
}  // namespace stapo::test
