// Neural-network ops: conv2d, max_pool2d, linear, relu, dropout, softmax and the fused
// softmax-cross-entropy. Each backward node saves only what its needed gradients use.
#include <cmath>

#include "core/op_checks.h"
#include "core/ops.h"

namespace kiln {
namespace {

// ---------------------------------------------------------------- conv2d
// What a weighted op (y = x (*) w + b: conv2d, linear) keeps for backward: x only when w
// needs a gradient, w only when x does (a frozen layer's input keeps nothing), and the
// shapes its gradients take.
struct WeightedNode : Node {
  explicit WeightedNode(const char* name) : Node(name) {}
  SavedTensor x, w;
  Shape x_shape, w_shape;
  bool has_bias = false;
  bool release_saved() override { return release_all(x, w); }
};

// Records `node` as y's history of x, w and b (b may be undefined).
void record_weighted(std::shared_ptr<WeightedNode> node, const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  node->x_shape = x.shape();
  node->w_shape = w.shape();
  node->has_bias = b.defined();
  if (w.requires_grad()) node->x = x.detach();
  if (x.requires_grad()) node->w = w.detach();
  node->next = {autograd::edge_for(x), autograd::edge_for(w)};
  if (b.defined()) node->next.push_back(autograd::edge_for(b));
  autograd::set_history(y, std::move(node));
}

// conv2d's input gradients from dy: dx, dw and db as the node's edges need them.
std::vector<Tensor> conv2d_grads(const WeightedNode& n, const Conv2dParams& p, const Tensor& dy) {
  Backend& be = backend_for(dy.device());
  Tensor dx, dw, db;
  if (n.next[0].needed()) {
    dx = Tensor::empty(n.x_shape, like(dy));
    be.conv2d_backward_data(dy, n.w.get(), p, dx);
  }
  const bool need_w = n.next[1].needed(), need_b = n.has_bias && n.next[2].needed();
  if (need_w || need_b) {
    Tensor dw_out = Tensor::empty(n.w_shape, like(dy));
    if (need_b) db = Tensor::empty(Shape{n.w_shape[0]}, like(dy));
    if (need_w) {
      be.conv2d_backward_filter(n.x.get(), dy, p, dw_out, db);
      dw = dw_out;
    } else {
      // Only the bias needs a gradient: column sums of dy viewed as [N*OH*OW, O].
      Tensor dy2 = dy.detach().reshape(Shape{dy.numel() / n.w_shape[0], n.w_shape[0]});
      Tensor none;
      be.linear_backward(dy2, Tensor(), Tensor(), none, none, db);
    }
  }
  std::vector<Tensor> g{dx, dw};
  if (n.has_bias) g.push_back(db);
  return g;
}

struct Conv2dNode final : WeightedNode {
  Conv2dNode() : WeightedNode("conv2d") {}
  Conv2dParams p;
  std::vector<Tensor> apply(const Tensor& dy) override { return conv2d_grads(*this, p, dy); }
};

// relu(conv2d(x, w, b)) computed in one forward pass (Backend::conv2d_forward_relu): the
// backward is relu's from the saved output, then conv2d's.
struct Conv2dReluNode final : WeightedNode {
  Conv2dReluNode() : WeightedNode("conv2d_relu") {}
  Conv2dParams p;
  SavedTensor y;
  std::vector<Tensor> apply(const Tensor& dy) override {
    Tensor g = Tensor::empty(dy.shape(), like(dy));
    backend_for(dy.device()).relu_backward(y.get(), dy, g);
    return conv2d_grads(*this, p, g);
  }
  bool release_saved() override { return WeightedNode::release_saved() | release_all(y); }  // | : both run
};

}  // namespace

int64_t window_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  int64_t span = 0;
  KILN_CHECK(!__builtin_mul_overflow(pad, 2, &span) && !__builtin_add_overflow(span, in, &span) &&
                 !__builtin_sub_overflow(span, kernel, &span),
             "a window of ", kernel, " over ", in, " elements with padding ", pad, " overflows 64-bit sizes");
  return span < 0 ? 0 : span / stride + 1;  // C++ division truncates toward zero: guard negatives
}

namespace {

// conv2d's argument checks; returns the (unfilled) output.
Tensor conv2d_output(const char* op, const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p) {
  checks::float32_or_bf16(op, "input x", x);
  checks::defined(op, "weight w", w);
  checks::same_dtype(op, "input x", x, "weight w", w);
  checks::rank(op, "input x", x, 4, "[N, H, W, C]");
  checks::rank(op, "weight w", w, 4, "[O, KH, KW, C]");
  checks::same_device(op, "input x", x, "weight w", w);
  KILN_CHECK(w.dim(3) == x.dim(3), op, ": input x ", x.shape(), " has ", x.dim(3), " channels but weight w ",
             w.shape(), " expects ", w.dim(3), " (x is NHWC, w is OHWI)");
  KILN_CHECK(w.numel() > 0, op, ": weight w ", w.shape(), " is empty (no output channel, input channel or kernel "
             "tap); a convolution needs at least one of each");
  checks::conv_params(op, p);
  if (b.defined()) {
    checks::same_dtype(op, "input x", x, "bias b", b);
    checks::same_device(op, "input x", x, "bias b", b);
    KILN_CHECK(b.rank() == 1 && b.dim(0) == w.dim(0), op, ": bias b must be [", w.dim(0), "] for weight ",
               w.shape(), ", got ", b.shape());
  }
  const int64_t oh = window_out_size(x.dim(1), w.dim(1), p.stride_h, p.pad_h);
  const int64_t ow = window_out_size(x.dim(2), w.dim(2), p.stride_w, p.pad_w);
  KILN_CHECK(oh >= 1 && ow >= 1, op, ": kernel ", w.dim(1), "x", w.dim(2), " with padding ", p.pad_h, "x", p.pad_w,
             " does not fit input ", x.shape());
  KILN_CHECK(oh <= checks::kMaxWindowArg && ow <= checks::kMaxWindowArg, op, ": padding ", p.pad_h, "x", p.pad_w,
             " makes an output of ", oh, "x", ow, " per image, beyond the ", checks::kMaxWindowArg,
             " per side oneDNN and cuDNN take");
  return Tensor::empty(Shape{x.dim(0), oh, ow, w.dim(0)}, like(x));
}

}  // namespace

Tensor conv2d_relu(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p) {
  const bool record = autograd::needs_grad({&x, &w, &b});
  Backend& be = backend_for(x.device());
  if (record && !be.conv2d_forward_relu_trains()) return relu(conv2d(x, w, b, p));
  Tensor y = conv2d_output("conv2d_relu", x, w, b, p);
  if (!be.conv2d_forward_relu(x, w, b, p, y)) {
    if (record) return relu(conv2d(x, w, b, p));
    be.conv2d_forward(x, w, b, p, y);
    be.relu(y, y);
    return y;
  }
  if (record) {
    auto node = std::make_shared<Conv2dReluNode>();
    node->p = p;
    node->y = y.detach();
    record_weighted(std::move(node), x, w, b, y);
  }
  return y;
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p) {
  Tensor y = conv2d_output("conv2d", x, w, b, p);
  const bool record = autograd::needs_grad({&x, &w, &b});
  backend_for(x.device()).conv2d_forward(x, w, b, p, y);
  if (record) {
    auto node = std::make_shared<Conv2dNode>();
    node->p = p;
    record_weighted(std::move(node), x, w, b, y);
  }
  return y;
}

// ---------------------------------------------------------------- max_pool2d
namespace {
struct MaxPoolNode final : Node {
  MaxPoolNode() : Node("max_pool2d") {}
  SavedTensor argmax;
  Shape x_shape;
  Pool2dParams p;
  std::vector<Tensor> apply(const Tensor& dy) override {
    Tensor dx = Tensor::empty(x_shape, like(dy));
    backend_for(dy.device()).max_pool2d_backward(dy, argmax.get(), p, dx);
    return {dx};
  }
  bool release_saved() override { return release_all(argmax); }
};
}  // namespace

namespace {

// max_pool2d's argument checks; returns the (unfilled) output.
Tensor max_pool2d_output(const char* op, const Tensor& x, const Pool2dParams& p) {
  checks::float32_or_bf16(op, "input x", x);
  checks::rank(op, "input x", x, 4, "[N, H, W, C]");
  checks::pool_params(op, p);
  const int64_t oh = window_out_size(x.dim(1), p.kernel_h, p.stride_h, p.pad_h);
  const int64_t ow = window_out_size(x.dim(2), p.kernel_w, p.stride_w, p.pad_w);
  KILN_CHECK(oh >= 1 && ow >= 1, op, ": window ", p.kernel_h, "x", p.kernel_w, " does not fit input ", x.shape());
  return Tensor::empty(Shape{x.dim(0), oh, ow, x.dim(3)}, like(x));
}

}  // namespace

Tensor max_pool2d(const Tensor& x, const Pool2dParams& p) {
  Tensor y = max_pool2d_output("max_pool2d", x, p);
  const bool record = autograd::needs_grad({&x});
  Tensor idx;
  if (record) idx = Tensor::empty(y.shape(), like(x, DType::i32));
  backend_for(x.device()).max_pool2d_forward(x, p, y, idx);
  if (record) {
    auto node = std::make_shared<MaxPoolNode>();
    node->argmax = idx;
    node->x_shape = x.shape();
    node->p = p;
    node->next = {autograd::edge_for(x)};
    autograd::set_history(y, node);
  }
  return y;
}

// ---------------------------------------------------------------- conv2d_relu_max_pool2d
namespace {
// max_pool2d(conv2d_relu(x, w, b)) as one node. A window's maximum is above 0 exactly when
// ReLU passed the element the pooled gradient goes to, so the backward masks the pooled
// gradient with ReLU's derivative at the pooled values, routes it, then runs conv2d's: the
// same values as the two nodes, ReLU's backward over a quarter of the elements (VGG's 2x2
// windows), and the convolution's output not kept (the pooled output and indices are).
struct Conv2dReluPoolNode final : WeightedNode {
  Conv2dReluPoolNode() : WeightedNode("conv2d_relu_max_pool2d") {}
  Conv2dParams cp;
  Pool2dParams pp;
  Shape y_shape;  // the convolution's output
  SavedTensor pooled, argmax;
  std::vector<Tensor> apply(const Tensor& dpooled) override {
    Backend& be = backend_for(dpooled.device());
    Tensor masked = Tensor::empty(dpooled.shape(), like(dpooled));
    be.relu_backward(pooled.get(), dpooled, masked);
    Tensor dy = Tensor::empty(y_shape, like(dpooled));
    be.max_pool2d_backward(masked, argmax.get(), pp, dy);
    return conv2d_grads(*this, cp, dy);
  }
  bool release_saved() override { return WeightedNode::release_saved() | release_all(pooled, argmax); }
};
}  // namespace

Tensor conv2d_relu_max_pool2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& cp,
                              const Pool2dParams& pp) {
  if (!autograd::needs_grad({&x, &w, &b})) return max_pool2d(conv2d_relu(x, w, b, cp), pp);
  Tensor y;
  {
    const NoGradGuard no_grad;  // the values only: this op's node is the one recorded
    y = conv2d_relu(x, w, b, cp);
  }
  Tensor pooled = max_pool2d_output("conv2d_relu_max_pool2d", y, pp);
  Tensor idx = Tensor::empty(pooled.shape(), like(y, DType::i32));
  backend_for(y.device()).max_pool2d_forward(y, pp, pooled, idx);
  auto node = std::make_shared<Conv2dReluPoolNode>();
  node->cp = cp;
  node->pp = pp;
  node->y_shape = y.shape();
  node->pooled = pooled.detach();
  node->argmax = idx;
  record_weighted(std::move(node), x, w, b, pooled);
  return pooled;
}

// ---------------------------------------------------------------- adaptive_avg_pool2d
namespace {
struct AdaptiveAvgPoolNode final : Node {
  AdaptiveAvgPoolNode() : Node("adaptive_avg_pool2d") {}
  Shape x_shape;
  std::vector<Tensor> apply(const Tensor& dy) override {
    Tensor dx = Tensor::empty(x_shape, like(dy));
    backend_for(dy.device()).adaptive_avg_pool2d_backward(dy, dx);
    return {dx};
  }
};
}  // namespace

Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  const char* op = "adaptive_avg_pool2d";
  checks::float32_or_bf16(op, "input x", x);
  checks::rank(op, "input x", x, 4, "[N, H, W, C]");
  KILN_CHECK(out_h >= 1 && out_w >= 1, op, ": output size must be >= 1, got ", out_h, "x", out_w);
  KILN_CHECK(x.dim(1) >= 1 && x.dim(2) >= 1, op, ": input x has an empty spatial grid ", x.shape());
  Tensor y = Tensor::empty(Shape{x.dim(0), out_h, out_w, x.dim(3)}, like(x));
  backend_for(x.device()).adaptive_avg_pool2d_forward(x, y);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<AdaptiveAvgPoolNode>();
    node->x_shape = x.shape();
    node->next = {autograd::edge_for(x)};
    autograd::set_history(y, node);
  }
  return y;
}

// ---------------------------------------------------------------- batch_norm2d
namespace {
struct BatchNormNode final : Node {
  BatchNormNode() : Node("batch_norm2d") {}
  // mean/var: the batch's (training) or a copy of the running statistics (inference), so a
  // later training step updating the running buffers cannot change this backward.
  SavedTensor x, gamma, mean, var;
  bool has_x = false, has_gamma = false, kept_gamma = false, has_beta = false, training = false;
  float eps = 0.0f;
  Shape x_shape;
  std::vector<Tensor> apply(const Tensor& dy) override {
    const int64_t c = x_shape[3];
    Tensor dx, dg, db;
    if (next[0].needed()) dx = Tensor::empty(x_shape, like(dy));
    // gamma and beta are float32 whatever x is: so are their gradients.
    const TensorOptions f32{DType::f32, dy.device()};
    if (has_gamma && next[1].needed()) dg = Tensor::empty(Shape{c}, f32);
    if (has_beta && next[has_gamma ? 2 : 1].needed()) db = Tensor::empty(Shape{c}, f32);
    const Tensor none;
    backend_for(dy.device())
        .batch_norm_backward(dy, has_x ? x.get() : none, mean.get(), var.get(), kept_gamma ? gamma.get() : none, eps,
                             training, dx, dg, db);
    std::vector<Tensor> g{dx};
    if (has_gamma) g.push_back(dg);
    if (has_beta) g.push_back(db);
    return g;
  }
  bool release_saved() override { return release_all(x, gamma, mean, var); }
};

// t holds one float32 value per entry of x's last dimension (batch norm's channels, layer
// norm's features), on x's device; `layout` names that dimension in the message.
void check_channel_vector(const char* op, const char* what, const Tensor& t, const Tensor& x,
                          const char* layout = "NHWC, one value per channel") {
  checks::float32(op, what, t);
  checks::same_device(op, "input x", x, what, t);
  KILN_CHECK(t.rank() == 1 && t.dim(0) == x.dim(-1), op, ": ", what, " must be [", x.dim(-1), "] for input x ",
             x.shape(), " (", layout, "), got ", t.shape());
}
}  // namespace

Tensor batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                    Tensor& running_var, bool training, float momentum, float eps) {
  const char* op = "batch_norm2d";
  checks::float32_or_bf16(op, "input x", x);
  checks::rank(op, "input x", x, 4, "[N, H, W, C]");
  if (gamma.defined()) check_channel_vector(op, "gamma", gamma, x);
  if (beta.defined()) check_channel_vector(op, "beta", beta, x);
  KILN_CHECK(running_mean.defined() == running_var.defined(), op,
             ": running_mean and running_var must both be given or both be undefined");
  if (running_mean.defined()) {
    check_channel_vector(op, "running_mean", running_mean, x);
    check_channel_vector(op, "running_var", running_var, x);
  }
  KILN_CHECK(eps > 0.0f && momentum >= 0.0f && momentum <= 1.0f, op, ": eps must be > 0 and momentum in [0, 1], got eps ",
             eps, " momentum ", momentum);
  const int64_t c = x.dim(3), rows = x.dim(0) * x.dim(1) * x.dim(2);
  KILN_CHECK(c > 0, op, ": input x ", x.shape(), " has no channels (its last dimension, C, is 0)");
  Backend& be = backend_for(x.device());
  Tensor mean, var;
  if (training) {
    KILN_CHECK(rows > 1, op, ": training needs more than one value per channel to take batch statistics, got input x ",
               x.shape(), " (N*H*W = ", rows, "); use a batch of two or more (an epoch's last batch too: another "
               "batch size), larger images, or the inference form (eval(), or freeze the layer)");
    mean = Tensor::empty(Shape{c}, TensorOptions{DType::f32, x.device()});  // fp32 for a bf16 x too
    var = Tensor::empty(Shape{c}, TensorOptions{DType::f32, x.device()});
    be.batch_norm_stats(x, momentum, mean, var, running_mean, running_var);
    if (running_mean.defined()) {
      running_mean.mark_modified();
      running_var.mark_modified();
    }
  } else {
    KILN_CHECK(running_mean.defined(), op, ": the inference form (training false) needs running_mean and running_var");
    mean = running_mean;
    var = running_var;
  }
  Tensor y = Tensor::empty(x.shape(), like(x));
  be.batch_norm_forward(x, mean, var, gamma, beta, eps, y);
  if (autograd::needs_grad({&x, &gamma, &beta})) {
    auto node = std::make_shared<BatchNormNode>();
    node->training = training;
    node->eps = eps;
    node->x_shape = x.shape();
    node->has_gamma = gamma.defined();
    node->has_beta = beta.defined();
    // x for dgamma (a sum over x_hat) and a training-form dx; gamma for dx; dbeta needs dy only.
    const auto wants = [](const Tensor& t) { return t.defined() && t.requires_grad(); };
    node->has_x = wants(gamma) || (training && x.requires_grad());
    if (node->has_x) node->x = x.detach();
    node->kept_gamma = gamma.defined() && x.requires_grad();
    if (node->kept_gamma) node->gamma = gamma.detach();
    node->mean = training ? mean : mean.clone();
    node->var = training ? var : var.clone();
    node->next = {autograd::edge_for(x)};
    if (gamma.defined()) node->next.push_back(autograd::edge_for(gamma));
    if (beta.defined()) node->next.push_back(autograd::edge_for(beta));
    autograd::set_history(y, node);
  }
  return y;
}

// ---------------------------------------------------------------- linear
namespace {
struct LinearNode final : WeightedNode {
  LinearNode() : WeightedNode("linear") {}
  std::vector<Tensor> apply(const Tensor& dy) override {
    Tensor dx, dw, db;
    if (next[0].needed()) dx = Tensor::empty(x_shape, like(dy));
    if (next[1].needed()) dw = Tensor::empty(w_shape, like(dy));
    if (has_bias && next[2].needed()) db = Tensor::empty(Shape{w_shape[0]}, like(dy));
    Tensor xs = x.defined() ? x.get() : Tensor();
    Tensor ws = w.defined() ? w.get() : Tensor();
    backend_for(dy.device()).linear_backward(dy, xs, ws, dx, dw, db);
    std::vector<Tensor> g{dx, dw};
    if (has_bias) g.push_back(db);
    return g;
  }
};
}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  const char* op = "linear";
  checks::float32_or_bf16(op, "input x", x);
  checks::defined(op, "weight w", w);
  checks::same_dtype(op, "input x", x, "weight w", w);
  checks::rank(op, "input x", x, 2, "[N, in]");
  checks::rank(op, "weight w", w, 2, "[out, in]");
  checks::same_device(op, "input x", x, "weight w", w);
  KILN_CHECK(x.dim(1) == w.dim(1), op, ": input x ", x.shape(), " has ", x.dim(1), " features but weight w ",
             w.shape(), " expects ", w.dim(1), " (w is [out, in])");
  if (b.defined()) {
    checks::same_dtype(op, "input x", x, "bias b", b);
    checks::same_device(op, "input x", x, "bias b", b);
    KILN_CHECK(b.rank() == 1 && b.dim(0) == w.dim(0), op, ": bias b must be [", w.dim(0), "] for weight ",
               w.shape(), ", got ", b.shape());
  }
  const bool record = autograd::needs_grad({&x, &w, &b});
  Tensor y = Tensor::empty(Shape{x.dim(0), w.dim(0)}, like(x));
  backend_for(x.device()).linear_forward(x, w, b, y);
  if (record) record_weighted(std::make_shared<LinearNode>(), x, w, b, y);
  return y;
}

// ---------------------------------------------------------------- layer_norm
namespace {
// The fused forward's backward: dx from the backend; gamma's gradient the sum over rows of
// dy * xhat and beta's of dy (sum_to: the same bits whatever the thread count).
struct LayerNormNode final : Node {
  LayerNormNode() : Node("layer_norm") {}
  SavedTensor x, gamma, mean, rstd;  // gamma only when the op had one
  bool has_gamma = false;
  std::vector<Tensor> apply(const Tensor& dy) override {
    const Tensor xv = x.get(), gv = has_gamma ? gamma.get() : Tensor();
    Backend& be = backend_for(dy.device());
    const bool want_x = next[0].needed(), want_gamma = next[1].needed(), want_beta = next[2].needed();
    Tensor dx, dy_xhat;
    if (want_x) dx = Tensor::empty(xv.shape(), like(xv));
    if (want_gamma) dy_xhat = Tensor::empty(xv.shape(), like(xv));
    if (want_x || want_gamma) be.layer_norm_backward(dy, xv, gv, mean.get(), rstd.get(), dx, dy_xhat);
    Tensor dgamma, dbeta;
    const Shape c{xv.dim(-1)};
    if (want_gamma) {
      dgamma = Tensor::empty(c, like(xv));
      be.sum_to(dy_xhat, dgamma);
    }
    if (want_beta) {
      dbeta = Tensor::empty(c, like(xv));
      be.sum_to(dy, dbeta);
    }
    return {dx, dgamma, dbeta};
  }
  bool release_saved() override { return release_all(x, gamma, mean, rstd); }
};

// layer_norm of kiln's ops, where the backend has no fused kernel: gradients through them.
Tensor composed_layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  const Tensor centred = sub(x, mean(x, -1, true));
  Tensor y = div(centred, sqrt(add(mean(mul(centred, centred), -1, true), eps)));
  if (gamma.defined()) y = mul(y, gamma);
  if (beta.defined()) y = add(y, beta);
  return y;
}
}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  const char* op = "layer_norm";
  checks::float32(op, "input x", x);
  KILN_CHECK(x.rank() >= 1 && x.dim(-1) >= 1, op, ": needs a non-empty last dimension to normalise, got ",
             x.description());
  KILN_CHECK(std::isfinite(eps) && eps >= 0.0f, op, ": eps must be finite and >= 0, got ", eps);
  const int64_t c = x.dim(-1);
  if (gamma.defined()) check_channel_vector(op, "gamma", gamma, x, "one value per feature of its last dimension");
  if (beta.defined()) check_channel_vector(op, "beta", beta, x, "one value per feature of its last dimension");
  Backend& be = backend_for(x.device());
  if (!be.has_layer_norm()) return composed_layer_norm(x, gamma, beta, eps);
  Tensor y = Tensor::empty(x.shape(), like(x));
  const Shape rows{x.numel() / c};
  Tensor mean_t = Tensor::empty(rows, like(x)), rstd = Tensor::empty(rows, like(x));
  be.layer_norm_forward(x, gamma, beta, eps, y, mean_t, rstd);
  if (autograd::needs_grad({&x, &gamma, &beta})) {
    auto node = std::make_shared<LayerNormNode>();
    node->x = x.detach();
    node->has_gamma = gamma.defined();
    if (node->has_gamma) node->gamma = gamma.detach();
    node->mean = mean_t;
    node->rstd = rstd;
    node->next = {autograd::edge_for(x), autograd::edge_for(gamma), autograd::edge_for(beta)};
    autograd::set_history(y, node);
  }
  return y;
}

// ---------------------------------------------------------------- relu
namespace {
struct ReluNode final : Node {
  ReluNode() : Node("relu") {}
  SavedTensor y;
  std::vector<Tensor> apply(const Tensor& dy) override {
    Tensor dx = Tensor::empty(dy.shape(), like(dy));
    backend_for(dy.device()).relu_backward(y.get(), dy, dx);
    return {dx};
  }
  bool release_saved() override { return release_all(y); }
};
}  // namespace

Tensor relu(const Tensor& x) {
  checks::float32_or_bf16("relu", "input x", x);
  const bool record = autograd::needs_grad({&x});
  Tensor y = Tensor::empty(x.shape(), like(x));
  backend_for(x.device()).relu(x, y);
  if (record) {
    auto node = std::make_shared<ReluNode>();
    node->y = y.detach();
    node->next = {autograd::edge_for(x)};
    autograd::set_history(y, node);
  }
  return y;
}

// ---------------------------------------------------------------- dropout
namespace {
struct DropoutNode final : Node {
  DropoutNode() : Node("dropout") {}
  float keep = 1;
  PhiloxState state;
  std::vector<Tensor> apply(const Tensor& dy) override {
    Tensor dx = Tensor::empty(dy.shape(), like(dy));
    backend_for(dy.device()).dropout(dy, keep, state, dx);
    return {dx};
  }
};
}  // namespace

Tensor dropout(const Tensor& x, float keep_prob, bool training, Generator& gen) {
  checks::float32_or_bf16("dropout", "input x", x);
  KILN_CHECK(keep_prob > 0.0f && keep_prob <= 1.0f, "dropout: keep_prob must be in (0, 1], got ", keep_prob);
  if (!training || keep_prob == 1.0f) return x;
  const PhiloxState s = gen.reserve(static_cast<uint64_t>(x.numel()));
  Tensor y = Tensor::empty(x.shape(), like(x));
  backend_for(x.device()).dropout(x, keep_prob, s, y);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<DropoutNode>();
    node->keep = keep_prob;
    node->state = s;
    node->next = {autograd::edge_for(x)};
    autograd::set_history(y, node);
  }
  return y;
}

// ---------------------------------------------------------------- softmax / log_softmax
namespace {
struct SoftmaxNode final : Node {
  explicit SoftmaxNode(bool log) : Node(log ? "log_softmax" : "softmax"), log(log) {}
  bool log;
  SavedTensor y;
  std::vector<Tensor> apply(const Tensor& dy) override {
    const Tensor& ys = y.get();
    Tensor dx = Tensor::empty(ys.shape(), like(dy));
    backend_for(dy.device()).softmax_backward(ys, dy, log, dx);
    return {dx};
  }
  bool release_saved() override { return release_all(y); }
};

Tensor softmax_impl(const Tensor& x, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  checks::float32(op, "input x", x);
  KILN_CHECK(x.rank() >= 1 && x.dim(-1) >= 1, op, ": needs a non-empty last dimension, got ", x.description());
  Tensor y = Tensor::empty(x.shape(), like(x));
  backend_for(x.device()).softmax(x, log, y);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<SoftmaxNode>(log);
    node->y = y.detach();
    node->next = {autograd::edge_for(x)};
    autograd::set_history(y, node);
  }
  return y;
}
}  // namespace

Tensor softmax(const Tensor& x) { return softmax_impl(x, false); }
Tensor log_softmax(const Tensor& x) { return softmax_impl(x, true); }

// ---------------------------------------------------------------- softmax cross-entropy
namespace {
struct SoftmaxCrossEntropyNode final : Node {
  SoftmaxCrossEntropyNode() : Node("softmax_cross_entropy") {}
  SavedTensor logits, labels;
  std::vector<Tensor> apply(const Tensor& dloss) override {
    const Tensor& l = logits.get();
    Tensor dx = Tensor::empty(l.shape(), like(l));
    backend_for(l.device()).softmax_cross_entropy_backward(l, labels.get(), dloss, dx);
    return {dx, Tensor()};
  }
  bool release_saved() override { return release_all(logits, labels); }
};
}  // namespace

Tensor softmax_cross_entropy(const Tensor& logits, const Tensor& labels) {
  const char* op = "softmax_cross_entropy";
  checks::float32(op, "logits", logits);
  checks::rank(op, "logits", logits, 2, "[N, classes]");
  checks::defined(op, "labels", labels);
  KILN_CHECK(labels.dtype() == DType::i32 || labels.dtype() == DType::i64, op,
             ": labels must be int32 or int64 class indices, got ", labels.description());
  KILN_CHECK(labels.rank() == 1 && labels.dim(0) == logits.dim(0), op, ": labels must be [", logits.dim(0),
             "] for logits ", logits.shape(), ", got ", labels.shape());
  KILN_CHECK(logits.dim(0) >= 1 && logits.dim(1) >= 1, op, ": empty logits ", logits.shape());
  checks::same_device(op, "logits", logits, "labels", labels);
  Tensor loss = Tensor::empty(Shape{}, like(logits));
  backend_for(logits.device()).softmax_cross_entropy(logits, labels, loss);
  if (autograd::needs_grad({&logits})) {
    auto node = std::make_shared<SoftmaxCrossEntropyNode>();
    node->logits = logits.detach();
    node->labels = labels.detach();
    node->next = {autograd::edge_for(logits), Edge{}};
    autograd::set_history(loss, node);
  }
  return loss;
}

}  // namespace kiln
