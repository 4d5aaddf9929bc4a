// cuDNN SDPA attention (kernels/attention_cudnn.h). Host code only: cuDNN compiles and runs the kernels.
// Our token-major tensors are read in place through strides: q (rows, T, H, D) is cuDNN's (B, H, S, D) with
// strides (T·H·D, D, H·D, 1); k and v likewise with Hkv heads.
#include "kernels/attention_cudnn.h"

#include <cudnn.h>
#include <cudnn_frontend.h>

#include <cmath>
#include <map>
#include <tuple>
#include <unordered_map>

#include "common/error.h"
#include "kernels/cuda_common.h"

namespace stapo {
namespace fe = cudnn_frontend;

namespace {

void cudnn_check(cudnnStatus_t status, const char* what) {
  if (status != CUDNN_STATUS_SUCCESS) fail("cuDNN: ", what, ": ", cudnnGetErrorString(status));
}

void frontend_check(const fe::error_object& e, const char* what, const AttentionShape& s) {
  if (!e.is_good())
    fail("cuDNN attention: ", what, " failed for rows=", s.rows, " T=", s.T, " H=", s.H, " Hkv=", s.Hkv, " D=", s.D,
         " window=", s.window, ": ", e.err_msg, " (use --attention flash2 for our own kernels)");
}

// Tensor ids binding the graph's tensors to device pointers at execution.
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV, kSeqLenQ, kSeqLenKV };

using ShapeKey = std::tuple<int, int, int, int, int, int>;

ShapeKey key_of(const AttentionShape& s) { return {s.rows, s.T, s.H, s.Hkv, s.D, s.window}; }

fe::graph::Tensor_attributes token_major(const char* name, Uid uid, const AttentionShape& s, int heads) {
  const int64_t T = s.T, D = s.D, h = heads;
  return fe::graph::Tensor_attributes()
      .set_name(name)
      .set_uid(uid)
      .set_dim({s.rows, h, T, D})
      .set_stride({T * h * D, D, h * D, 1});
}

// (rows, H, T, 1) fp32, cuDNN's own layout for the statistics.
fe::graph::Tensor_attributes stats_tensor(const AttentionShape& s) {
  const int64_t T = s.T, H = s.H;
  return fe::graph::Tensor_attributes()
      .set_name("stats")
      .set_uid(kStats)
      .set_dim({s.rows, H, T, 1})
      .set_stride({H * T, T, 1, 1})
      .set_data_type(fe::DataType_t::FLOAT);
}

fe::graph::Tensor_attributes row_lengths_tensor(const char* name, Uid uid, const AttentionShape& s) {
  return fe::graph::Tensor_attributes()
      .set_name(name)
      .set_uid(uid)
      .set_dim({s.rows, 1, 1, 1})
      .set_stride({1, 1, 1, 1})
      .set_data_type(fe::DataType_t::INT32);
}

std::shared_ptr<fe::graph::Graph> new_graph() {
  auto graph = std::make_shared<fe::graph::Graph>();
  graph->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return graph;
}

}  // namespace

std::vector<int32_t> cudnn_attention_row_lengths(const std::vector<int32_t>& segments, int rows, int T) {
  STAPO_CHECK(segments.size() == (size_t)rows * T, "cuDNN attention: ", segments.size(), " segments for ", rows,
              " rows of ", T);
  std::vector<int32_t> lengths(rows);
  for (int r = 0; r < rows; ++r) {
    const int32_t* seg = segments.data() + (size_t)r * T;
    int length = 0;
    while (length < T && seg[length] == 0) ++length;
    for (int p = length; p < T; ++p)
      STAPO_CHECK(seg[p] == -1, "the cuDNN attention path takes one sequence per row, from position 0, then "
                  "padding; row ", r, " has segment ", seg[p], " at position ", p,
                  " (train without --pack, or use --attention flash2)");
    lengths[r] = length;
  }
  return lengths;
}

struct CudnnAttention::Impl {
  cudnnHandle_t handle = nullptr;
  std::map<ShapeKey, std::shared_ptr<fe::graph::Graph>> forward_graphs, backward_graphs;  // per shape
  void* workspace = nullptr;
  int64_t workspace_bytes = 0;
  std::vector<int32_t> lengths;        // host copy: which positions are padding
  int32_t* device_lengths = nullptr;   // cuDNN's seq_len_q and seq_len_kv (the same: self-attention)
  int device_lengths_capacity = 0;

  // Builds (cuDNN compiles the fused kernels: seconds) and sizes the workspace for a new graph.
  void finish(const std::shared_ptr<fe::graph::Graph>& graph, const AttentionShape& s) {
    frontend_check(graph->validate(), "validate", s);
    frontend_check(graph->build_operation_graph(handle), "build_operation_graph", s);
    frontend_check(graph->create_execution_plans({fe::HeurMode_t::A}), "create_execution_plans", s);
    frontend_check(graph->check_support(handle), "check_support", s);
    frontend_check(graph->build_plans(handle), "build_plans", s);
    int64_t bytes = 0;
    frontend_check(graph->get_workspace_size(bytes), "get_workspace_size", s);
    if (bytes > workspace_bytes) {
      if (workspace) cudaCheck(cudaFree(workspace));
      cudaCheck(cudaMalloc(&workspace, bytes));
      workspace_bytes = bytes;
    }
  }

  template <class Options>  // SDPA_attributes or SDPA_backward_attributes: the same masks both ways
  void set_masks(fe::graph::Graph& graph, const AttentionShape& s, Options& options) {
    options.set_causal_mask(true)
        .set_padding_mask(true)
        .set_seq_len_q(graph.tensor(row_lengths_tensor("seq_len_q", kSeqLenQ, s)))
        .set_seq_len_kv(graph.tensor(row_lengths_tensor("seq_len_kv", kSeqLenKV, s)))
        .set_attn_scale(1.0f / std::sqrt((float)s.D));
    if (s.window > 0) options.set_sliding_window_length(s.window);
  }

  using GraphCache = std::map<ShapeKey, std::shared_ptr<fe::graph::Graph>>;
  using TensorPtr = std::shared_ptr<fe::graph::Tensor_attributes>;

  // The graph for shape s from `cache`, else a new one: q, k, v as inputs, then `define` adds the rest.
  template <class Define>
  std::shared_ptr<fe::graph::Graph> cached_graph(GraphCache& cache, const AttentionShape& s, Define define) {
    auto found = cache.find(key_of(s));
    if (found != cache.end()) return found->second;
    auto graph = new_graph();
    define(*graph, graph->tensor(token_major("q", kQ, s, s.H)), graph->tensor(token_major("k", kK, s, s.Hkv)),
           graph->tensor(token_major("v", kV, s, s.Hkv)));
    finish(graph, s);
    return cache[key_of(s)] = graph;
  }

  // Marks an operation's result as an output with the uid, dims and strides of `layout`.
  static void bind_output(const TensorPtr& tensor, const fe::graph::Tensor_attributes& layout) {
    tensor->set_output(true).set_uid(layout.get_uid()).set_dim(layout.get_dim()).set_stride(layout.get_stride());
  }

  std::shared_ptr<fe::graph::Graph> forward_graph(const AttentionShape& s) {
    return cached_graph(forward_graphs, s, [&](fe::graph::Graph& graph, TensorPtr q, TensorPtr k, TensorPtr v) {
      auto options = fe::graph::SDPA_attributes().set_name("sdpa").set_generate_stats(true);
      set_masks(graph, s, options);
      auto [o, stats] = graph.sdpa(q, k, v, options);
      bind_output(o, token_major("o", kO, s, s.H));
      bind_output(stats, stats_tensor(s));
      stats->set_data_type(fe::DataType_t::FLOAT);
    });
  }

  std::shared_ptr<fe::graph::Graph> backward_graph(const AttentionShape& s) {
    return cached_graph(backward_graphs, s, [&](fe::graph::Graph& graph, TensorPtr q, TensorPtr k, TensorPtr v) {
      auto o = graph.tensor(token_major("o", kO, s, s.H));
      auto d_o = graph.tensor(token_major("dO", kDO, s, s.H));
      auto stats = graph.tensor(stats_tensor(s));
      // Deterministic: the trainer promises bitwise-identical resumed runs.
      auto options =
          fe::graph::SDPA_backward_attributes().set_name("sdpa_backward").set_deterministic_algorithm(true);
      set_masks(graph, s, options);
      auto [dq, dk, dv] = graph.sdpa_backward(q, k, v, o, d_o, stats, options);
      bind_output(dq, token_major("dq", kDQ, s, s.H));
      bind_output(dk, token_major("dk", kDK, s, s.Hkv));
      bind_output(dv, token_major("dv", kDV, s, s.Hkv));
    });
  }

  void check_rows(const AttentionShape& s) const {
    STAPO_CHECK((int)lengths.size() == s.rows, "cuDNN attention: set_rows was given ", lengths.size(),
                " rows, the call has ", s.rows);
  }

  void execute(fe::graph::Graph& graph, std::unordered_map<int64_t, void*> pack, const AttentionShape& s,
               cudaStream_t stream) {
    pack[kSeqLenQ] = device_lengths;
    pack[kSeqLenKV] = device_lengths;
    cudnn_check(cudnnSetStream(handle, stream), "cudnnSetStream");
    frontend_check(graph.execute(handle, pack, workspace), "execute", s);
    cudaCheck(cudaGetLastError());
  }

  // Zeroes the padding positions of a token-major tensor with `width` values per token.
  void clear_padding(__nv_bfloat16* x, const AttentionShape& s, int width, cudaStream_t stream) const {
    for (int r = 0; r < s.rows; ++r) {
      const size_t first = (size_t)r * s.T + lengths[r], count = (size_t)(s.T - lengths[r]);
      if (count > 0) cudaCheck(cudaMemsetAsync(x + first * width, 0, count * width * sizeof(__nv_bfloat16), stream));
    }
  }
};

CudnnAttention::CudnnAttention() : impl_(std::make_unique<Impl>()) {
  cudnn_check(cudnnCreate(&impl_->handle), "cudnnCreate");
}

CudnnAttention::~CudnnAttention() {
  // No throwing from a destructor: errors on release are ignored.
  if (impl_->workspace) cudaFree(impl_->workspace);
  if (impl_->device_lengths) cudaFree(impl_->device_lengths);
  cudnnDestroy(impl_->handle);
}

void CudnnAttention::set_rows(const std::vector<int32_t>& segments, int rows, int T, cudaStream_t stream) {
  impl_->lengths = cudnn_attention_row_lengths(segments, rows, T);
  if (rows > impl_->device_lengths_capacity) {
    if (impl_->device_lengths) cudaCheck(cudaFree(impl_->device_lengths));
    cudaCheck(cudaMalloc(&impl_->device_lengths, rows * sizeof(int32_t)));
    impl_->device_lengths_capacity = rows;
  }
  cudaCheck(cudaMemcpyAsync(impl_->device_lengths, impl_->lengths.data(), rows * sizeof(int32_t),
                            cudaMemcpyHostToDevice, stream));
}

void CudnnAttention::forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k,
                             const __nv_bfloat16* v, const AttentionShape& s, cudaStream_t stream) {
  impl_->check_rows(s);
  auto graph = impl_->forward_graph(s);
  impl_->execute(*graph,
                 {{kQ, (void*)q}, {kK, (void*)k}, {kV, (void*)v}, {kO, (void*)out}, {kStats, (void*)lse}}, s,
                 stream);
  impl_->clear_padding(out, s, s.H * s.D, stream);
}

void CudnnAttention::backward(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, const __nv_bfloat16* dout,
                              const __nv_bfloat16* out, const float* lse, const __nv_bfloat16* q,
                              const __nv_bfloat16* k, const __nv_bfloat16* v, const AttentionShape& s,
                              cudaStream_t stream) {
  impl_->check_rows(s);
  auto graph = impl_->backward_graph(s);
  impl_->execute(*graph,
                 {{kQ, (void*)q}, {kK, (void*)k}, {kV, (void*)v}, {kO, (void*)out}, {kDO, (void*)dout},
                  {kStats, (void*)lse}, {kDQ, (void*)dq}, {kDK, (void*)dk}, {kDV, (void*)dv}},
                 s, stream);
  impl_->clear_padding(dq, s, s.H * s.D, stream);
  impl_->clear_padding(dk, s, s.Hkv * s.D, stream);
  impl_->clear_padding(dv, s, s.Hkv * s.D, stream);
}

}  // namespace stapo
