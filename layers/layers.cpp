#include "layers/layers.h"

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

Conv2d::Conv2d(std::string name, int64_t in, int64_t out, int64_t kernel, Conv2dParams p, bool bias, Generator& gen,
               Init init)
    : Module(std::move(name)), p_(p) {
  KILN_CHECK(in >= 1 && out >= 1 && kernel >= 1, "Conv2d ", this->name(), ": channels and kernel must be >= 1, got in ",
             in, " out ", out, " kernel ", kernel);
  weight_ = &register_parameter("weight", init_weight(init, Shape{out, kernel, kernel, in}, gen), true);
  if (bias) bias_ = &register_parameter("bias", init::zeros(Shape{out}), false);
}

Tensor Conv2d::forward(const Tensor& x) { return conv2d(x, *weight_, bias_ ? *bias_ : Tensor(), p_); }

Linear::Linear(std::string name, int64_t in, int64_t out, bool bias, Generator& gen, Init init)
    : Module(std::move(name)) {
  KILN_CHECK(in >= 1 && out >= 1, "Linear ", this->name(), ": sizes must be >= 1, got in ", in, " out ", out);
  weight_ = &register_parameter("weight", init_weight(init, Shape{out, in}, gen), true);
  if (bias) bias_ = &register_parameter("bias", init::zeros(Shape{out}), false);
}

Tensor Linear::forward(const Tensor& x) { return linear(x, *weight_, bias_ ? *bias_ : Tensor()); }

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
  if (calibrating_) {
    // momentum 1/k on the k-th batch: the running statistics are the mean of the k batches'.
    ++calibration_batches_;
    return batch_norm2d(x, *weight_, *bias_, *running_mean_, *running_var_, true,
                        1.0f / static_cast<float>(calibration_batches_), eps_);
  }
  return batch_norm2d(x, *weight_, *bias_, *running_mean_, *running_var_, uses_batch_statistics(), momentum_, eps_);
}

Dropout::Dropout(std::string name, float keep_prob, Generator& gen)
    : Module(std::move(name)), keep_prob_(keep_prob), gen_(&gen) {
  KILN_CHECK(keep_prob > 0.0f && keep_prob <= 1.0f, "Dropout ", this->name(), ": keep_prob must be in (0, 1], got ",
             keep_prob);
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (const auto& c : children()) h = c->forward(h);
  return h;
}

std::shared_ptr<Module> Sequential::child(const std::string& name) const {
  for (const auto& c : children())
    if (c->name() == name) return c;
  return nullptr;
}

}  // namespace kiln
