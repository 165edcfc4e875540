#include "layers/layers.h"

#include <cmath>
#include <optional>

#include "core/op_checks.h"

namespace kiln {
namespace {
Tensor init_weight(Init init, const Shape& s, Generator& gen) {
  switch (init) {
    case Init::xavier_uniform: return init::xavier_uniform(s, gen);
    case Init::kaiming_normal: return init::kaiming_normal(s, gen);
    case Init::kaiming_normal_fan_out: return init::kaiming_normal_fan_out(s, gen);
    case Init::normal_0_01: return init::normal(s, 0.01f, gen);
  }
  KILN_FAIL("unknown Init value ", static_cast<int>(init));
}
}  // namespace

Tensor as_f32(const Tensor& x) { return x.dtype() == DType::bf16 ? x.to(DType::f32) : x; }

void WeightLayer::add_weights(Tensor w, int64_t bias_out) {
  weight_ = &register_parameter("weight", std::move(w), true);
  if (bias_out > 0) bias_ = &register_parameter("bias", init::zeros(Shape{bias_out}), false);
}

void WeightLayer::set_compute(DType compute, bool out_f32) {
  KILN_CHECK(compute == DType::f32 || compute == DType::bf16, name(), ": a layer computes in float32 or bfloat16, not ",
             dtype_name(compute));
  compute_ = compute;
  out_f32_ = out_f32;
  {
    const std::lock_guard<std::mutex> lock(frozen_mu_);
    frozen_weight_ = frozen_bias_ = FrozenCopy{};
  }
  if (compute_ == DType::bf16) {  // convert frozen weights now, not in the first timed step
    if (!weight_->requires_grad()) (void)compute_weight();
    if (bias_ && !bias_->requires_grad()) (void)compute_bias();
  }
}

Tensor WeightLayer::input(const Tensor& x) const {
  checks::defined(name().c_str(), "input x", x);  // else Tensor's own message, which names no layer
  return x.dtype() == compute_ ? x : x.to(compute_);
}

Tensor WeightLayer::operand(const Tensor& master, FrozenCopy& copy) const {
  if (compute_ == DType::f32) return master;
  if (master.requires_grad()) return master.to(DType::bf16);
  const std::lock_guard<std::mutex> lock(frozen_mu_);
  if (!copy.bf16.defined() || !copy.made_from.unchanged(master)) {
    NoGradGuard no_grad;
    copy.bf16 = master.to(DType::bf16);
    copy.made_from = TensorStamp(master);
  }
  return copy.bf16;
}

Tensor WeightLayer::compute_weight() const { return operand(*weight_, frozen_weight_); }

Tensor WeightLayer::compute_bias() const { return bias_ ? operand(*bias_, frozen_bias_) : Tensor(); }

Tensor WeightLayer::output(Tensor y) const { return out_f32_ ? as_f32(y) : y; }

Conv2d::Conv2d(std::string name, int64_t in, int64_t out, int64_t kernel, Conv2dParams p, bool bias, Generator& gen,
               Init init)
    : WeightLayer(std::move(name)), p_(p) {
  KILN_CHECK(in >= 1 && out >= 1 && kernel >= 1, "Conv2d ", this->name(), ": channels and kernel must be >= 1, got in ",
             in, " out ", out, " kernel ", kernel);
  checks::window_arg(("Conv2d " + this->name()).c_str(), "kernel", kernel, kernel, 1);
  checks::conv_params(("Conv2d " + this->name()).c_str(), p);
  add_weights(init_weight(init, Shape{out, kernel, kernel, in}, gen), bias ? out : 0);
}

MaxPool2d::MaxPool2d(std::string name, Pool2dParams p) : Module(std::move(name)), p_(p) {
  checks::pool_params(("MaxPool2d " + this->name()).c_str(), p);
}

Tensor Conv2d::forward(const Tensor& x) { return output(conv2d(input(x), compute_weight(), compute_bias(), p_)); }

Tensor Conv2d::forward_relu(const Tensor& x) {
  return output(conv2d_relu(input(x), compute_weight(), compute_bias(), p_));
}

Tensor Conv2d::forward_relu_pool(const Tensor& x, const Pool2dParams& p) {
  // An output cast to fp32 is pooled after the cast, as the layers run apart: overlapping
  // windows would otherwise sum their gradients in bf16.
  if (out_f32()) return max_pool2d(forward_relu(x), p);
  return conv2d_relu_max_pool2d(input(x), compute_weight(), compute_bias(), p_, p);
}

Linear::Linear(std::string name, int64_t in, int64_t out, bool bias, Generator& gen, Init init)
    : WeightLayer(std::move(name)) {
  KILN_CHECK(in >= 1 && out >= 1, "Linear ", this->name(), ": sizes must be >= 1, got in ", in, " out ", out);
  add_weights(init_weight(init, Shape{out, in}, gen), bias ? out : 0);
}

Tensor Linear::forward(const Tensor& x) { return output(linear(input(x), compute_weight(), compute_bias())); }

BatchNorm2d::BatchNorm2d(std::string name, int64_t channels, float momentum, float eps)
    : Module(std::move(name)), momentum_(momentum), eps_(eps) {
  KILN_CHECK(channels >= 1, "BatchNorm2d ", this->name(), ": channels must be >= 1, got ", channels);
  weight_ = &register_parameter("weight", Tensor::ones(Shape{channels}), false);
  bias_ = &register_parameter("bias", init::zeros(Shape{channels}), false);
  running_mean_ = &register_buffer("running_mean", init::zeros(Shape{channels}));
  running_var_ = &register_buffer("running_var", Tensor::ones(Shape{channels}));
}

// requires_grad mirrors the trainable flag (layers/module.h), so it tells frozen apart.
bool BatchNorm2d::uses_batch_statistics() const {
  return training() && weight_->requires_grad() && bias_->requires_grad();
}

void BatchNorm2d::calibrate(bool on) {
  calibrating_ = on;
  calibration_batches_ = 0;
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  // A bf16 backbone's activations stay bf16: the op reduces and normalises in fp32 and
  // rounds once on store, so no cast passes run before or after it.
  if (calibrating_) {
    // momentum 1/k on the k-th batch: the running statistics are the mean of the k batches'.
    ++calibration_batches_;
    return batch_norm2d(x, *weight_, *bias_, *running_mean_, *running_var_, true,
                        1.0f / static_cast<float>(calibration_batches_), eps_);
  }
  return batch_norm2d(x, *weight_, *bias_, *running_mean_, *running_var_, uses_batch_statistics(), momentum_, eps_);
}

LayerNorm::LayerNorm(std::string name, int64_t features, float eps) : Module(std::move(name)), eps_(eps) {
  KILN_CHECK(features >= 1, "LayerNorm ", this->name(), ": features must be >= 1, got ", features);
  KILN_CHECK(std::isfinite(eps) && eps >= 0.0f, "LayerNorm ", this->name(), ": eps must be finite and >= 0, got ", eps);
  weight_ = &register_parameter("weight", Tensor::ones(Shape{features}), false);
  bias_ = &register_parameter("bias", init::zeros(Shape{features}), false);
}

Tensor LayerNorm::forward(const Tensor& x) {
  KILN_CHECK(!x.defined() || (x.rank() >= 1 && x.dim(-1) == weight_->dim(0)), "LayerNorm ", name(), ": input ",
             x.description(), " does not end in its ", weight_->dim(0), " features");
  return layer_norm(as_f32(x), *weight_, *bias_, eps_);  // fp32-only, as AdaptiveAvgPool2d (layers.h)
}

Embedding::Embedding(std::string name, int64_t count, int64_t features, Generator& gen) : Module(std::move(name)) {
  KILN_CHECK(count >= 1 && features >= 1, "Embedding ", this->name(), ": count and features must be >= 1, got ", count,
             " and ", features);
  weight_ = &register_parameter("weight", Tensor::normal(Shape{count, features}, 0.0f, 1.0f, gen), true);
}

Tensor Embedding::forward(const Tensor& indices) { return embedding(*weight_, indices); }

Dropout::Dropout(std::string name, float keep_prob, Generator& gen)
    : Module(std::move(name)), keep_prob_(keep_prob), gen_(&gen), gen_alive_(gen.lifetime()) {
  KILN_CHECK(keep_prob > 0.0f && keep_prob <= 1.0f, "Dropout ", this->name(), ": keep_prob must be in (0, 1], got ",
             keep_prob);
}

Tensor Dropout::forward(const Tensor& x) {
  // A Generator declared in a function that builds the model ends with that function, while
  // the model lives on: the masks then came from freed memory, silently.
  const bool draws = training() && keep_prob_ < 1.0f;
  KILN_CHECK(!draws || !gen_alive_.expired(), "Dropout ", name(), ": the Generator it was made with has been ",
             "destroyed; keep it alive as long as the model trains (e.g. beside the model, not inside the ",
             "function that builds it)");
  return dropout(x, keep_prob_, training(), draws ? *gen_ : default_generator());  // no draw: gen_ unread
}

Tensor Sequential::forward(const Tensor& x) { return forward_range(0, children().size(), x); }

namespace {

// An op's error inside a model names the layer it came from, as a path from the model
// ("in layer 'vgg16/fc6': linear: ..."): each Sequential on the way out adds its name.
// A Sequential child has put its own name first; any other child (a residual block holding
// Sequentials) has not, so its name goes in here. A backward error's path runs from the outermost
// model (the nodes recorded it), so it passes unchanged.
[[noreturn]] void rethrow_in_layer(const Error& e, const std::string& container, const Module& child) {
  const std::string& m = e.message();
  const size_t n = std::char_traits<char>::length(kInLayer);
  if (m.compare(0, n, kInLayer) != 0) throw Error(kInLayer + container + "/" + child.name() + "': " + m, e.location());
  // An error from a backward run inside the child's forward: its path is whole already (LayerScope).
  const size_t close = m.find("': ", n);
  const size_t b = std::char_traits<char>::length(kBackwardOf);
  if (close != std::string::npos && m.compare(close + 3, b, kBackwardOf) == 0) throw e;
  const bool named = dynamic_cast<const Sequential*>(&child) != nullptr;
  throw Error(kInLayer + container + "/" + (named ? "" : child.name() + "/") + m.substr(n), e.location());
}

}  // namespace

Tensor Sequential::forward_range(size_t from, size_t to, Tensor x) {
  const auto& c = children();
  KILN_CHECK(from <= to && to <= c.size(), "Sequential ", name(), ": forward_range(", from, ", ", to,
             ") is not a range of its ", c.size(), " layers (0 <= from <= to <= ", c.size(), ")");
  const LayerScope self(name());  // the nodes the children record name their layer, for backward's errors
  for (size_t i = from; i < to; ++i) {
    size_t at = i;  // the layer an error names
    std::optional<LayerScope> layer;  // a Sequential child opens its own
    if (!dynamic_cast<const Sequential*>(c[i].get())) layer.emplace(c[i]->name());
    try {
      auto* conv = dynamic_cast<Conv2d*>(c[i].get());
      const bool relu_next = conv && i + 1 < to && dynamic_cast<ReLU*>(c[i + 1].get());
      auto* pool = relu_next && i + 2 < to ? dynamic_cast<MaxPool2d*>(c[i + 2].get()) : nullptr;
      if (pool) {  // VGG's block end
        try {
          x = conv->forward_relu_pool(x, pool->params());
        } catch (const Error&) {
          // Again apart, so that the error names the layer it came from: a pooling window
          // that does not fit the convolution's output is the pool's, not the conv's.
          x = conv->forward_relu(x);
          at = i + 2;
          layer.emplace(pool->name());
          x = (*pool)(x);
        }
        i += 2;
      } else if (relu_next) {
        x = conv->forward_relu(x);
        ++i;
      } else {
        x = (*c[i])(x);
      }
    } catch (const Error& e) {
      rethrow_in_layer(e, name(), *c[at]);
    }
  }
  return x;
}

std::shared_ptr<Module> Sequential::child(const std::string& name) const {
  for (const auto& c : children())
    if (c->name() == name) return c;
  return nullptr;
}

}  // namespace kiln
