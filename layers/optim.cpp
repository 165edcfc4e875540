#include "layers/optim.h"

#include <cmath>
#include <map>
#include <set>

namespace kiln {

Optimizer::Optimizer(std::vector<ParameterRef> params, float lr) : params_(std::move(params)), lr_(lr) {
  KILN_CHECK(std::isfinite(lr) && lr >= 0, "optimizer: lr must be finite and >= 0, got ", lr);
  // Its step() would change nothing, silently (torch.optim refuses an empty list too).
  KILN_CHECK(!params_.empty(), "optimizer: no trainable parameters to update: the model's are all frozen, or it "
             "has none; unfreeze the ones to train before making the optimizer");
  std::map<const void*, std::string> memory;  // one tensor under two names would be updated twice a step
  for (const ParameterRef& p : params_) {
    KILN_CHECK(p.tensor != nullptr && p.tensor->defined(), "optimizer: parameter '", p.name, "' has no tensor");
    KILN_CHECK(p.trainable, "optimizer: parameter '", p.name,
               "' is frozen; an optimizer takes trainable parameters only (Module::trainable_parameters())");
    KILN_CHECK(names_.insert(p.name).second, "optimizer: parameter '", p.name, "' is given twice");
    if (p.tensor->numel() == 0) continue;  // no memory to update twice (and may share an address)
    const auto [at, fresh] = memory.emplace(p.tensor->raw_data(), p.name);
    KILN_CHECK(fresh, "optimizer: parameters '", at->second, "' and '", p.name,
               "' are the same memory, and each step would update it twice; to tie weights, put one module in both "
               "places (parameters() lists a shared module once)");
  }
  steps_ = Tensor::zeros(Shape{}, TensorOptions{DType::i64, Device::cpu()});
}

void Optimizer::zero_grad() {
  for (ParameterRef& p : params_) p.tensor->zero_grad();
}

void Optimizer::set_lr(float lr) {
  KILN_CHECK(std::isfinite(lr) && lr >= 0, "optimizer: lr must be finite and >= 0, got ", lr);
  lr_ = lr;
}

int64_t Optimizer::steps() const { return steps_.data<int64_t>()[0]; }

void Optimizer::advance() { ++steps_.data<int64_t>()[0]; }

std::vector<OptimizerStateRef> Optimizer::state() {
  std::vector<OptimizerStateRef> out;
  for (auto& [name, t] : state_) out.push_back({name, &t});
  out.push_back({"optimizer/step", &steps_});
  return out;
}

Tensor& Optimizer::add_state(size_t i, const std::string& suffix) {
  const Tensor& p = *params_[i].tensor;
  state_.emplace_back(params_[i].name + "/" + suffix, Tensor::zeros(p.shape(), TensorOptions{DType::f32, p.device()}));
  return state_.back().second;
}

void Optimizer::check_watched() const {
  if (model_ == nullptr) return;
  for (const ParameterRef& p : model_->trainable_parameters())
    KILN_CHECK(names_.count(p.name) > 0, "optimizer: parameter '", p.name, "' trains now but was frozen when this "
               "optimizer was made, so the optimizer does not hold it and would leave it unchanged; make a new "
               "optimizer after unfreezing (an optimizer takes the model's trainable parameters when it is made)");
}

bool Optimizer::updates(size_t i) const {
  const Tensor& p = *params_[i].tensor;
  return p.requires_grad() && p.grad().defined();
}

// ---------------------------------------------------------------- SGD
SGD::SGD(std::vector<ParameterRef> params, const SgdOptions& opt) : Optimizer(std::move(params), opt.lr), opt_(opt) {
  // As a trainer's Phase: momentum 1 or more never forgets a gradient and diverges.
  KILN_CHECK(std::isfinite(opt.momentum) && opt.momentum >= 0 && opt.momentum < 1 && std::isfinite(opt.weight_decay) &&
                 opt.weight_decay >= 0,
             "SGD: momentum must be in [0, 1) and weight_decay finite and >= 0, got ", opt.momentum, ", ",
             opt.weight_decay);
  KILN_CHECK(!opt.nesterov || opt.momentum > 0, "SGD: Nesterov needs momentum > 0");
  // Pointers into state_ are taken after all are added: the vector may reallocate meanwhile.
  for (size_t i = 0; i < params_.size() && opt.momentum > 0; ++i) add_state(i, "momentum");
  std::vector<OptimizerStateRef> st = state();
  momentum_.assign(params_.size(), nullptr);
  for (size_t i = 0; i < params_.size() && opt.momentum > 0; ++i) momentum_[i] = st[i].tensor;
}

void SGD::step() {
  check_watched();
  SgdOptions o = opt_;
  o.lr = lr_;
  std::vector<SgdParamRef> refs;
  refs.reserve(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = *params_[i].tensor;
    if (!updates(i)) continue;  // left out entirely: bit-for-bit unchanged
    refs.push_back({p, p.grad(), momentum_[i] ? *momentum_[i] : Tensor()});
  }
  sgd_update(refs, o);
  advance();
}

std::vector<OptimizerSetting> SGD::settings() const {
  return {{"momentum", opt_.momentum}, {"weight_decay", opt_.weight_decay}, {"nesterov", opt_.nesterov ? 1.0 : 0.0}};
}

// ---------------------------------------------------------------- Adam
Adam::Adam(std::vector<ParameterRef> params, const AdamOptions& opt) : Optimizer(std::move(params), opt.lr), opt_(opt) {
  KILN_CHECK(opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 && opt.beta2 < 1,
             "Adam: beta1 and beta2 must be in [0, 1), got ", opt.beta1, ", ", opt.beta2);
  KILN_CHECK(opt.eps > 0 && opt.weight_decay >= 0, "Adam: eps must be > 0 and weight_decay >= 0, got ", opt.eps,
             ", ", opt.weight_decay);
  for (size_t i = 0; i < params_.size(); ++i) {
    add_state(i, "exp_avg");
    add_state(i, "exp_avg_sq");
  }
  std::vector<OptimizerStateRef> st = state();
  for (size_t i = 0; i < params_.size(); ++i) {
    exp_avg_.push_back(st[2 * i].tensor);
    exp_avg_sq_.push_back(st[2 * i + 1].tensor);
  }
}

void Adam::step() {
  check_watched();
  AdamOptions o = opt_;
  o.lr = lr_;
  std::vector<AdamParamRef> refs;
  refs.reserve(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = *params_[i].tensor;
    if (!updates(i)) continue;
    refs.push_back({p, p.grad(), *exp_avg_[i], *exp_avg_sq_[i]});
  }
  adam_update(refs, o, steps() + 1);
  advance();
}

std::vector<OptimizerSetting> Adam::settings() const {
  return {{"beta1", opt_.beta1}, {"beta2", opt_.beta2}, {"eps", opt_.eps}, {"weight_decay", opt_.weight_decay}};
}

}  // namespace kiln
