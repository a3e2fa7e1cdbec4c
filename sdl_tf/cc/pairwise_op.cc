// The label-set terms of the SDL loss as one fused CPU op: the pairwise rank sum of eq. (2)
// with its derivative, and the positives' word-vector variance of the SDW (eq. 3).
//
// SdlPairwiseSoftplus(scores (B, C), targets (B, C), vectors (C, d)) ->
//   pair_sum (B,):     sum over the image's positive j and negative k of softplus(s_k - s_j)
//   d_scores (B, C):   d pair_sum[b] / d scores[b, :] (the op's gradient is upstream * this)
//   pos_variance (B,): sum over the d dimensions of the unbiased variance of the positives'
//                      vectors (0 when |P| < 2), so SDW = 1 + pos_variance
// targets > 0.5 marks positives; every other label (0 = unknown, -1 = verified negative) is a
// negative, as in the authors' code. Images run in parallel on the intra-op thread pool; the
// per-image math is in pairwise_kernel.h. sdl_tf/native_ops.py compiles this file on first use
// and sdl_tf/losses.py falls back to an XLA kernel when it cannot.

#include <algorithm>
#include <cstdint>

#include "pairwise_kernel.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/platform/threadpool.h"

namespace sdl_tf {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::TensorShapeUtils;
using ::tensorflow::errors::InvalidArgument;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

REGISTER_OP("SdlPairwiseSoftplus")
    .Input("scores: T")
    .Input("targets: T")
    .Input("vectors: T")
    .Output("pair_sum: T")
    .Output("d_scores: T")
    .Output("pos_variance: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle scores, vectors;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &scores));
      TF_RETURN_IF_ERROR(c->Merge(scores, c->input(1), &scores));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &vectors));
      DimensionHandle labels;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(scores, 1), c->Dim(vectors, 0), &labels));
      c->set_output(0, c->Vector(c->Dim(scores, 0)));
      c->set_output(1, scores);
      c->set_output(2, c->Vector(c->Dim(scores, 0)));
      return ::absl::OkStatus();
    })
    .Doc(R"doc(
SDL loss label-set terms (eqs. 2-3): per-image sum over positive-negative pairs of
softplus(s_neg - s_pos), its derivative w.r.t. the scores, and the sum over dimensions of the
unbiased variance of the positives' label vectors. targets > 0.5 marks positives.
)doc");

template <typename T>
class SdlPairwiseSoftplusOp : public OpKernel {
 public:
  explicit SdlPairwiseSoftplusOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& scores_t = ctx->input(0);
    const Tensor& targets_t = ctx->input(1);
    const Tensor& vectors_t = ctx->input(2);
    OP_REQUIRES(ctx, TensorShapeUtils::IsMatrix(scores_t.shape()),
                InvalidArgument("scores must be (B, C), got ", scores_t.shape().DebugString()));
    OP_REQUIRES(ctx, targets_t.shape() == scores_t.shape(),
                InvalidArgument("targets ", targets_t.shape().DebugString(), " and scores ",
                                scores_t.shape().DebugString(), " must have the same shape"));
    OP_REQUIRES(ctx,
                TensorShapeUtils::IsMatrix(vectors_t.shape()) &&
                    vectors_t.dim_size(0) == scores_t.dim_size(1),
                InvalidArgument("vectors must be (C, d) with C = ", scores_t.dim_size(1),
                                ", got ", vectors_t.shape().DebugString()));
    const int64_t batch = scores_t.dim_size(0);
    const int64_t labels = scores_t.dim_size(1);
    const int64_t dim = vectors_t.dim_size(1);
    Tensor* pair_sum_t = nullptr;
    Tensor* d_scores_t = nullptr;
    Tensor* variance_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch}), &pair_sum_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, scores_t.shape(), &d_scores_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({batch}), &variance_t));
    const T* scores = scores_t.flat<T>().data();
    const T* targets = targets_t.flat<T>().data();
    const T* vectors = vectors_t.flat<T>().data();
    T* pair_sum = pair_sum_t->flat<T>().data();
    T* d_scores = d_scores_t->flat<T>().data();
    T* variance = variance_t->flat<T>().data();
    if (labels == 0) {
      std::fill(pair_sum, pair_sum + batch, T(0));
      std::fill(variance, variance + batch, T(0));
      return;
    }

    auto image_range = [&](int64_t begin, int64_t end) {
      ImageScratch<T> scratch;
      for (int64_t b = begin; b < end; ++b) {
        pair_sum[b] = static_cast<T>(ImagePairs<T>(scores + b * labels, targets + b * labels,
                                                   labels, &scratch, d_scores + b * labels));
        variance[b] =
            static_cast<T>(PositiveVariance<T>(vectors, dim, scratch.pos_index, &scratch.mean));
      }
    };
    // Cost of one image in the pool's units (~cycles): C labels x ~10 positives x ~2 cycles
    // per pair. Only its order of magnitude matters for the sharding.
    const int64_t cost = labels * 20;
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(batch, cost,
                                                                         image_range);
  }
};

REGISTER_KERNEL_BUILDER(
    Name("SdlPairwiseSoftplus").Device(DEVICE_CPU).TypeConstraint<float>("T"),
    SdlPairwiseSoftplusOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("SdlPairwiseSoftplus").Device(DEVICE_CPU).TypeConstraint<double>("T"),
    SdlPairwiseSoftplusOp<double>);

}  // namespace
}  // namespace sdl_tf
