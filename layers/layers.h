// The layers: thin Modules over the ops in core/ops.h, holding their parameters.
// Activations NHWC, conv weights OHWI, linear weights [out, in].
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "layers/init.h"
#include "layers/module.h"

namespace kiln {

// x in fp32 (cast through autograd when it is bf16): for layers that compute in fp32 only.
Tensor as_f32(const Tensor& x);

// How a layer's weight is initialised (biases start at zero); layers/init.h has the formulas.
enum class Init { xavier_uniform, kaiming_normal, kaiming_normal_fan_out, normal_0_01 };

// A layer with a weight (Conv2d, Linear). Its parameters are fp32 master copies whatever it
// computes in: fp32, or bf16 with fp32 accumulation (train/precision.h chooses per layer and
// phase). A frozen bf16 layer converts its weights once and keeps the copy while the master
// is unchanged (its version and memory); a trained one casts them on every forward, through
// autograd, so gradients reach the fp32 masters.
class WeightLayer : public Module {
 public:
  // f32 or bf16; out_f32 casts the output back to f32 (the model's last weight layer, so
  // losses and metrics see fp32). Frozen bf16 weights are converted here; a later change of
  // the weights (an import, a copy) or of their freezing is noticed at the next forward.
  void set_compute(DType compute, bool out_f32 = false);
  // What set_compute chose; f32 until it is called.
  DType compute_dtype() const { return compute_; }
  // The fp32 master, whatever the layer computes in.
  Tensor& weight() { return *weight_; }
  Tensor& bias() { return *bias_; }  // only when has_bias()
  // Whether it was built with a bias.
  bool has_bias() const { return bias_ != nullptr; }

 protected:
  // For subclasses, which then register their weights with add_weights.
  explicit WeightLayer(std::string name) : Module(std::move(name)) {}
  // Registers the parameters ([..] weight; bias [bias_out] when `bias_out` > 0).
  void add_weights(Tensor w, int64_t bias_out);
  // The forward's operands in the compute dtype (bias undefined when the layer has none).
  Tensor input(const Tensor& x) const;
  Tensor compute_weight() const;
  Tensor compute_bias() const;
  // `y` cast back to fp32 when out_f32 is set, else as computed.
  Tensor output(Tensor y) const;
  // set_compute's out_f32: whether outputs go back to fp32.
  bool out_f32() const { return out_f32_; }

 private:
  // A frozen master's bf16 copy, and which master values it was made from.
  struct FrozenCopy {
    Tensor bf16;
    TensorStamp made_from;
  };
  // A parameter as the compute dtype wants it: itself (fp32), its bf16 copy (frozen; remade
  // when the master changed), or cast now through autograd (trained: a copy would get no
  // gradient, and an unfrozen layer would silently stop training).
  Tensor operand(const Tensor& master, FrozenCopy& copy) const;
  Tensor* weight_ = nullptr;
  Tensor* bias_ = nullptr;
  DType compute_ = DType::f32;
  bool out_f32_ = false;
  mutable std::mutex frozen_mu_;  // research code may run one model from several threads
  mutable FrozenCopy frozen_weight_, frozen_bias_;
};

// 2-d convolution, x: [N, H, W, in] -> [N, OH, OW, out]. Parameters "weight" [out, k, k, in]
// and, with bias, "bias" [out].
class Conv2d final : public WeightLayer {
 public:
  // Channels and kernel must be >= 1; the weight is drawn from `gen` (default_generator() unless given) by
  // `init`, the bias starts at zero.
  Conv2d(std::string name, int64_t in, int64_t out, int64_t kernel, Conv2dParams p = {}, bool bias = true,
         Generator& gen = default_generator(), Init init = Init::xavier_uniform);
  // In the compute dtype (set_compute); out_f32 casts the result back to fp32.
  Tensor forward(const Tensor& x) override;
  // relu(forward(x)), in one pass where nothing needs a gradient, or on a backend whose fused
  // pass trains (the GPU's) also in training (core/ops.h conv2d_relu).
  Tensor forward_relu(const Tensor& x);
  // max_pool2d(relu(forward(x)), p), one node when it trains (core/ops.h conv2d_relu_max_pool2d).
  Tensor forward_relu_pool(const Tensor& x, const Pool2dParams& p);
  // The stride and padding it was built with.
  const Conv2dParams& params() const { return p_; }

 private:
  Conv2dParams p_;
};

// x: [N, in] -> [N, out]. Parameters "weight" [out, in] and, with bias, "bias" [out].
class Linear final : public WeightLayer {
 public:
  // Sizes must be >= 1; the weight is drawn from `gen` (default_generator() unless given) by `init`, the bias
  // starts at zero.
  Linear(std::string name, int64_t in, int64_t out, bool bias = true, Generator& gen = default_generator(),
         Init init = Init::xavier_uniform);
  // In the compute dtype (set_compute); out_f32 casts the result back to fp32.
  Tensor forward(const Tensor& x) override;
};

// max(x, 0), no parameters; after a Conv2d in a Sequential, it runs fused into it.
class ReLU final : public Module {
 public:
  // No parameters: a name is all it needs.
  explicit ReLU(std::string name) : Module(std::move(name)) {}
  // core/ops.h relu, where nothing fused it.
  Tensor forward(const Tensor& x) override { return relu(x); }
};

// Max pooling (core/ops.h max_pool2d); a Sequential runs Conv2d, ReLU, MaxPool2d in a row as one op where it can.
class MaxPool2d final : public Module {
 public:
  // `p` is checked when it runs (core/ops.h max_pool2d), not here.
  MaxPool2d(std::string name, Pool2dParams p);
  // core/ops.h max_pool2d, where nothing fused it.
  Tensor forward(const Tensor& x) override { return max_pool2d(x, p_); }
  // Its window, for Sequential's fused conv-ReLU-pool.
  const Pool2dParams& params() const { return p_; }

 private:
  Pool2dParams p_;
};

// Adaptive average pooling to a fixed grid (core/ops.h adaptive_avg_pool2d).
class AdaptiveAvgPool2d final : public Module {
 public:
  // The output grid is out_h x out_w.
  AdaptiveAvgPool2d(std::string name, int64_t out_h, int64_t out_w) : Module(std::move(name)), h_(out_h), w_(out_w) {}
  // bf16 input is pooled in fp32 (the pooled map is small; what follows is the head).
  Tensor forward(const Tensor& x) override { return adaptive_avg_pool2d(as_f32(x), h_, w_); }

 private:
  int64_t h_, w_;
};

// Batch normalisation over the channels of NHWC activations (core/ops.h batch_norm2d).
// Parameters "weight" (gamma, ones) and "bias" (beta, zeros): torchvision's names, so a
// ResNet state dict maps name for name; no weight decay on either, as for biases.
// Buffers "running_mean" (zeros) and "running_var" (ones), saved by checkpoints. momentum
// is PyTorch's (Keras's momentum m is 1 - m here). In training mode the layer normalises
// with batch statistics and updates the buffers -- unless it is frozen (either parameter
// not trainable): frozen batch norm means frozen statistics (issue 16, Keras's rule for
// trainable=False), so a frozen layer always takes the inference form, even in train().
class BatchNorm2d final : public Module {
 public:
  // PyTorch's defaults; channels must be >= 1.
  BatchNorm2d(std::string name, int64_t channels, float momentum = 0.1f, float eps = 1e-5f);
  // Batch statistics while calibrating or when uses_batch_statistics(), else the running ones.
  Tensor forward(const Tensor& x) override;
  // True when forward normalises with batch statistics (and updates the running ones).
  bool uses_batch_statistics() const;
  // Calibration: while on, forward normalises with batch statistics whatever the mode and
  // freezing, and the running statistics become the plain average over the batches seen
  // since it was turned on (PyTorch's momentum=None), replacing what they held; for a model
  // whose statistics mean nothing for this data (random initialisation, another domain).
  void calibrate(bool on);
  // gamma (torchvision's "weight"), ones at first.
  Tensor& weight() { return *weight_; }
  // beta (torchvision's "bias"), zeros at first.
  Tensor& bias() { return *bias_; }
  // A buffer, saved by checkpoints; forward updates it only when it normalises with batch statistics.
  Tensor& running_mean() { return *running_mean_; }
  // A buffer, as running_mean.
  Tensor& running_var() { return *running_var_; }

 private:
  float momentum_, eps_;
  Tensor *weight_, *bias_, *running_mean_, *running_var_;
  bool calibrating_ = false;
  int64_t calibration_batches_ = 0;
};

// Layer normalisation over the last dimension (core/ops.h layer_norm), for sequence and token
// models: parameters weight (gamma, ones at first) and bias (beta, zeros), [features], no decay.
class LayerNorm final : public Module {
 public:
  // features must be >= 1; eps torch's default.
  LayerNorm(std::string name, int64_t features, float eps = 1e-5f);
  // x: [..., features]; a bfloat16 x (after a bf16 layer) is normalised in float32.
  Tensor forward(const Tensor& x) override;
  // gamma (torch's "weight").
  Tensor& weight() { return *weight_; }
  // beta (torch's "bias").
  Tensor& bias() { return *bias_; }

 private:
  float eps_;
  Tensor *weight_, *bias_;
};

// A lookup table of learned rows (core/ops.h embedding), for tokens and other categories:
// parameter weight [count, features], N(0, 1) at first as torch's, with weight decay.
class Embedding final : public Module {
 public:
  // count and features must be >= 1.
  Embedding(std::string name, int64_t count, int64_t features, Generator& gen = default_generator());
  // indices: int32 or int64, any shape, each in [0, count) -> [..., features].
  Tensor forward(const Tensor& indices) override;
  // The table.
  Tensor& weight() { return *weight_; }

 private:
  Tensor* weight_;
};

// Active in training mode only; draws masks from `gen`, which must outlive the layer's training
// (a destroyed one is a kiln::Error when a mask is drawn, not a read of freed memory).
class Dropout final : public Module {
 public:
  // keep_prob in (0, 1], else a kiln::Error.
  Dropout(std::string name, float keep_prob, Generator& gen);
  // x itself outside training mode or at keep_prob 1.
  Tensor forward(const Tensor& x) override;
  // What ranks of one data-parallel run must agree on (train/trainer.cpp run_fingerprint).
  float keep_prob() const { return keep_prob_; }

 private:
  float keep_prob_;
  Generator* gen_;
  std::weak_ptr<const void> gen_alive_;  // gen_->lifetime()
};

// [N, ...] -> [N, prod(...)].
class Flatten final : public Module {
 public:
  // No parameters: a name is all it needs.
  explicit Flatten(std::string name) : Module(std::move(name)) {}
  // A view (core/ops.h flatten), in NHWC order as Keras flattens.
  Tensor forward(const Tensor& x) override { return flatten(x); }
};

// Runs its children in order.
class Sequential final : public Module {
 public:
  // Empty; add() appends the layers.
  explicit Sequential(std::string name) : Module(std::move(name)) {}
  // Appends a layer; returns it for further use.
  template <typename M>
  std::shared_ptr<M> add(std::shared_ptr<M> m) {
    KILN_CHECK(m != nullptr, "Sequential ", name(), ": cannot add a null module");
    // A module inside itself would recurse without end when run or listed.
    KILN_CHECK(!m->contains(*this), "Sequential ", name(), ": cannot add '", m->name(), "', which ",
               m.get() == static_cast<const Module*>(this) ? "is this Sequential itself" : "contains this Sequential");
    return register_module(std::move(m));
  }
  // forward_range over every child, so a Conv2d and the ReLU (and MaxPool2d) after it run fused.
  Tensor forward(const Tensor& x) override;
  // Children [from, to) on x. A Conv2d followed by a ReLU runs as one conv2d_relu, and then a
  // MaxPool2d as one conv2d_relu_max_pool2d (core/ops.h says where each fuses), unless `to`
  // splits them; an error still names the layer it came from. from == to gives x; a range
  // outside the children is a kiln::Error.
  Tensor forward_range(size_t from, size_t to, Tensor x);
  // The child with this (relative) name, or nullptr.
  std::shared_ptr<Module> child(const std::string& name) const;
};

}  // namespace kiln
