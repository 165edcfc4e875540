// Optimizers over a model's trainable parameters. Each step is one multi-tensor backend call
// (kiln::sgd_update / kiln::adam_update), so a step of VGG16 costs one or two launches.
// The state (momentum, Adam's moments, the step count) is exposed as named tensors, so a
// checkpoint can save and restore it beside the weights.
#pragma once

#include <deque>
#include <set>
#include <string>
#include <vector>

#include "core/kiln.h"
#include "layers/module.h"

namespace kiln {

// One hyper-parameter that shapes the optimizer's state, recorded in checkpoints so a resume
// into an optimizer built otherwise is caught (the learning rate is not one: schedules move it).
struct OptimizerSetting {
  std::string name;  // "momentum", "beta2", ...
  double value;      // the float the optimizer uses, widened; booleans as 0 or 1
};

// One tensor of optimizer state, e.g. "vgg16/fc8/weight/momentum". A checkpoint reads the
// tensor to save it and copies into it (same shape, device and dtype) to restore it.
struct OptimizerStateRef {
  std::string name;
  Tensor* tensor;
};

// A tensor that no Module owns, for an optimizer to update (research code's own weights):
// the optimizer keeps this handle, so the tensor lives as long as the optimizer does. A
// Module's parameters may be given this way too: Module::to moves them in place, so the handle
// follows them.
struct NamedTensor {
  std::string name;  // names its state ("<name>/exp_avg") and its errors
  Tensor tensor;
};

// Base of the optimizers. It holds exactly the trainable parameters it was given: frozen
// parameters are refused (building from a Module takes its trainable_parameters()). The state
// lives beside each parameter, and moves with it at the next step() after Module::to.
class Optimizer {
 public:
  // At least one ref; every ref must be trainable and name a tensor; names must be unique.
  explicit Optimizer(std::vector<ParameterRef> params, float lr);
  // Over tensors held by handle: float32 leaves, names unique. One that does not require grad
  // is held but skipped by step(), as torch skips a parameter without a gradient.
  Optimizer(std::vector<NamedTensor> tensors, float lr);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient. A parameter whose grad is undefined
  // (not reached by backward) or that stopped requiring grad (frozen since) is skipped and
  // stays bit-for-bit unchanged.
  virtual void step() = 0;
  // Drops every parameter's gradient (the next backward starts from nothing).
  void zero_grad();

  float lr() const { return lr_; }
  // For schedules: opt.set_lr(schedule.lr(opt.steps())) before each step().
  void set_lr(float lr);
  // step() calls done so far (restored with the state).
  int64_t steps() const;

  const std::vector<ParameterRef>& parameters() const { return params_; }
  // Built from a model: step() then refuses to run while a parameter of it trains that this
  // optimizer does not hold (unfrozen after the optimizer was made), which it would leave
  // unchanged without a word. The model must outlive the optimizer (as its tensors must).
  void watch(Module& model) { model_ = &model; }
  // Named state tensors, including "optimizer/step" (int64 [], on the host).
  std::vector<OptimizerStateRef> state();
  // "SGD" or "Adam": which update the state belongs to.
  virtual std::string kind() const = 0;
  // The hyper-parameters besides lr, in a fixed order per kind.
  virtual std::vector<OptimizerSetting> settings() const = 0;

 protected:
  // Adds a zero tensor shaped and placed like parameter i, named "<param name>/<suffix>".
  Tensor& add_state(size_t i, const std::string& suffix);
  // Counts one step done (after the update succeeded).
  void advance();
  // True when parameter i is updated this step: it has a gradient and still requires grad
  // (requires_grad mirrors Module's trainable flag, so one frozen after the optimizer was
  // built is left out). Not a second "frozen" flag: derived each step.
  bool updates(size_t i) const;
  // At the start of every step(): the check watch() asks for, and state moved to the device its
  // parameter is on now (after Module::to).
  void prepare_step();
  // The check watch() asks for.
  void check_watched() const;

 private:
  std::deque<Tensor> held_;  // NamedTensor's handles, which params_ points into; before params_ (init order)

 protected:
  std::vector<ParameterRef> params_;
  float lr_;

 private:
  // Refuses what the constructors' comments say, once params_ is set.
  void check_parameters();
  std::vector<std::pair<std::string, Tensor>> state_;  // in creation order
  std::set<std::string> names_;                         // of params_
  Module* model_ = nullptr;                             // watch()
  Tensor steps_;                                        // int64 [] on the host
};

// torch.optim.SGD: g += weight_decay * w; v = momentum * v + g; w -= lr * (nesterov ? g +
// momentum * v : v). Weight decay here is PyTorch's coupled decay; kiln usually puts decay
// in the loss instead (classification_loss), leaving this 0. State: "<param>/momentum" when
// momentum > 0.
class SGD final : public Optimizer {
 public:
  SGD(std::vector<ParameterRef> params, const SgdOptions& opt);
  SGD(Module& model, const SgdOptions& opt) : SGD(model.trainable_parameters(), opt) { watch(model); }
  SGD(std::vector<NamedTensor> tensors, const SgdOptions& opt);
  void step() override;
  std::string kind() const override { return "SGD"; }
  std::vector<OptimizerSetting> settings() const override;
  const SgdOptions& options() const { return opt_; }

 private:
  void init();  // checks the options, makes the state
  SgdOptions opt_;
  std::vector<Tensor*> momentum_;  // one per parameter, null when momentum is 0
};

// torch.optim.Adam (amsgrad off), bias-corrected by the optimizer's step count. State:
// "<param>/exp_avg" and "<param>/exp_avg_sq". One step count covers all parameters (PyTorch
// keeps one per parameter; they differ only when some parameter misses a gradient).
class Adam : public Optimizer {
 public:
  Adam(std::vector<ParameterRef> params, const AdamOptions& opt);
  Adam(Module& model, const AdamOptions& opt) : Adam(model.trainable_parameters(), opt) { watch(model); }
  Adam(std::vector<NamedTensor> tensors, const AdamOptions& opt);
  void step() override;
  // "AdamW" with decoupled weight decay: a checkpoint of one does not resume into the other.
  std::string kind() const override { return opt_.decoupled_weight_decay ? "AdamW" : "Adam"; }
  std::vector<OptimizerSetting> settings() const override;
  const AdamOptions& options() const { return opt_; }

 private:
  void init();  // checks the options, makes the state
  AdamOptions opt_;
  std::vector<Tensor*> exp_avg_, exp_avg_sq_;
};

// torch.optim.AdamW: Adam with decoupled_weight_decay set, whatever `opt` says (the decay
// itself is opt.weight_decay: AdamOptions' default 0, where torch's AdamW defaults to 0.01).
class AdamW final : public Adam {
 public:
  AdamW(std::vector<ParameterRef> params, AdamOptions opt) : Adam(std::move(params), decoupled(opt)) {}
  AdamW(Module& model, AdamOptions opt) : Adam(model, decoupled(opt)) {}
  AdamW(std::vector<NamedTensor> tensors, AdamOptions opt) : Adam(std::move(tensors), decoupled(opt)) {}

 private:
  static AdamOptions decoupled(AdamOptions o) {
    o.decoupled_weight_decay = true;
    return o;
  }
};

// torch.nn.utils.clip_grad_norm_: scales every gradient by min(1, max_norm / (total + 1e-6)),
// where total is the norm_type-norm of all the gradients together (the norm of their norms;
// inf: the largest |g|), and returns total, a 0-d float32 tensor on the first gradient's
// device. Tensors without a gradient are skipped (none: total 0). The scale stays on the
// device (no host wait) unless error_if_nonfinite asks to refuse a NaN or infinite total.
// Each gradient is scaled in place, as torch's mul_: a grad() read before sees the new values.
Tensor clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0,
                      bool error_if_nonfinite = false);
// torch.nn.utils.clip_grad_value_: clamps every gradient into [-clip_value, clip_value], in place.
void clip_grad_value(const std::vector<Tensor>& params, double clip_value);

}  // namespace kiln
