// Optimizers over a model's trainable parameters. Each step is one multi-tensor backend call
// (kiln::sgd_update / kiln::adam_update), so a step of VGG16 costs one or two launches.
// The state (momentum, Adam's moments, the step count) is exposed as named tensors, so a
// checkpoint can save and restore it beside the weights.
#pragma once

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

// Base of the optimizers. It holds exactly the trainable parameters it was given: frozen
// parameters are refused (building from a Module takes its trainable_parameters()). Build
// it after moving the model to its device: the state lives beside each parameter.
class Optimizer {
 public:
  // At least one ref; every ref must be trainable and name a tensor; names must be unique.
  explicit Optimizer(std::vector<ParameterRef> params, float lr);
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
  // The check watch() asks for, at the start of every step().
  void check_watched() const;

  std::vector<ParameterRef> params_;
  float lr_;

 private:
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
  void step() override;
  std::string kind() const override { return "SGD"; }
  std::vector<OptimizerSetting> settings() const override;
  const SgdOptions& options() const { return opt_; }

 private:
  SgdOptions opt_;
  std::vector<Tensor*> momentum_;  // one per parameter, null when momentum is 0
};

// torch.optim.Adam (amsgrad off), bias-corrected by the optimizer's step count. State:
// "<param>/exp_avg" and "<param>/exp_avg_sq". One step count covers all parameters (PyTorch
// keeps one per parameter; they differ only when some parameter misses a gradient).
class Adam final : public Optimizer {
 public:
  Adam(std::vector<ParameterRef> params, const AdamOptions& opt);
  Adam(Module& model, const AdamOptions& opt) : Adam(model.trainable_parameters(), opt) { watch(model); }
  void step() override;
  std::string kind() const override { return "Adam"; }
  std::vector<OptimizerSetting> settings() const override;
  const AdamOptions& options() const { return opt_; }

 private:
  AdamOptions opt_;
  std::vector<Tensor*> exp_avg_, exp_avg_sq_;
};

}  // namespace kiln
