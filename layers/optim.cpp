#include "layers/optim.h"

#include <cmath>
#include <map>
#include <set>

namespace kiln {

namespace {

// The handles an optimizer over NamedTensors keeps, each checked first.
std::deque<Tensor> handles_of(const std::vector<NamedTensor>& tensors) {
  std::deque<Tensor> held;
  for (const NamedTensor& t : tensors) {
    KILN_CHECK(t.tensor.defined(), "optimizer: tensor '", t.name, "' is undefined");
    KILN_CHECK(t.tensor.is_leaf(), "optimizer: tensor '", t.name, "' (", t.tensor.description(), ") is the result of "
               "an op, not a leaf, so backward gives it no gradient to step along; make the weight itself a tensor "
               "that requires grad (requires_grad_()), or detach() this one");
    KILN_CHECK(t.tensor.dtype() == DType::f32, "optimizer: tensor '", t.name, "' is ", t.tensor.description(),
               "; optimizers update float32 tensors (keep float32 weights and cast them for the compute)");
    held.push_back(t.tensor);
  }
  return held;
}

std::vector<ParameterRef> refs_into(const std::vector<NamedTensor>& tensors, std::deque<Tensor>& held) {
  std::vector<ParameterRef> refs;
  for (size_t i = 0; i < tensors.size(); ++i) refs.push_back({tensors[i].name, &held[i], true, true});
  return refs;
}

}  // namespace

Optimizer::Optimizer(std::vector<ParameterRef> params, float lr) : params_(std::move(params)), lr_(lr) {
  check_parameters();
}

Optimizer::Optimizer(std::vector<NamedTensor> tensors, float lr)
    : held_(handles_of(tensors)), params_(refs_into(tensors, held_)), lr_(lr) {
  check_parameters();
}

void Optimizer::check_parameters() {
  KILN_CHECK(std::isfinite(lr_) && lr_ >= 0, "optimizer: lr must be finite and >= 0, got ", lr_);
  // Its step() would change nothing, silently (torch.optim refuses an empty list too).
  KILN_CHECK(!params_.empty(), "optimizer: no trainable parameters to update: the model's are all frozen, or it "
             "has none, or the list of tensors is empty; unfreeze the ones to train before making the optimizer");
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

void Optimizer::prepare_step() {
  check_watched();
  // State follows its parameter to another device (Module::to moves parameters in place, so this
  // optimizer's handles see the move, as torch's do); state names are "<param name>/<suffix>".
  std::map<std::string, Device> device_of;
  for (const ParameterRef& p : params_) device_of.emplace(p.name, p.tensor->device());
  for (auto& [name, t] : state_) {
    const auto at = device_of.find(name.substr(0, name.rfind('/')));
    if (at != device_of.end() && t.device() != at->second) t = t.to(at->second);
  }
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
  init();
}

SGD::SGD(std::vector<NamedTensor> tensors, const SgdOptions& opt) : Optimizer(std::move(tensors), opt.lr), opt_(opt) {
  init();
}

void SGD::init() {
  const SgdOptions& opt = opt_;
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
  prepare_step();
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
  init();
}

Adam::Adam(std::vector<NamedTensor> tensors, const AdamOptions& opt)
    : Optimizer(std::move(tensors), opt.lr), opt_(opt) {
  init();
}

void Adam::init() {
  const AdamOptions& opt = opt_;
  KILN_CHECK(opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 && opt.beta2 < 1,
             "Adam: beta1 and beta2 must be in [0, 1) as float32 (0.99999999 rounds to 1), got ", opt.beta1, ", ",
             opt.beta2);
  KILN_CHECK(opt.eps > 0 && std::isfinite(opt.eps) && opt.weight_decay >= 0 && std::isfinite(opt.weight_decay),
             "Adam: eps must be finite and > 0, and weight_decay finite and >= 0, got ", opt.eps, ", ",
             opt.weight_decay);
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
  prepare_step();
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

// ---------------------------------------------------------------- clipping
namespace {

// The gradients of `params` that exist, as float32 or bfloat16 (what the ops below take).
std::vector<Tensor> gradients_of(const char* op, const std::vector<Tensor>& params) {
  std::vector<Tensor> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    KILN_CHECK(params[i].defined(), op, ": tensor ", i, " is undefined");
    Tensor g = params[i].grad();
    if (!g.defined()) continue;
    KILN_CHECK(g.dtype() == DType::f32 || g.dtype() == DType::bf16, op, ": tensor ", i, "'s gradient is ",
               g.description(), "; float32 or bfloat16 gradients");
    grads.push_back(std::move(g));
  }
  return grads;
}

// torch.linalg.vector_norm(x, p) over every element, in float32.
Tensor vector_norm(const Tensor& x, double p) {
  const Tensor f = x.dtype() == DType::f32 ? x : x.to(DType::f32);
  if (p == 2) return sqrt(l2_penalty(std::span<const Tensor>(&f, 1), 2.0f));  // sum_squares: one pass, no temporary
  const Tensor a = abs(f);
  if (std::isinf(p) && a.numel() == 0) return Tensor::zeros(Shape{}, TensorOptions{DType::f32, x.device()});
  if (std::isinf(p)) return amax(reshape(a, Shape{-1}), 0);
  if (p == 1) return sum(a);
  return pow(sum(pow(a, static_cast<float>(p))), static_cast<float>(1.0 / p));
}

}  // namespace

Tensor clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type, bool error_if_nonfinite) {
  constexpr const char* op = "clip_grad_norm";
  // inf is torch's way to measure the norm without clipping (the factor clamps to 1).
  KILN_CHECK(max_norm >= 0, op, ": max_norm must be >= 0 (inf: measure only), got ", max_norm);
  KILN_CHECK(norm_type > 0 && !std::isnan(norm_type), op, ": norm_type must be > 0 (inf: the largest |g|), got ",
             norm_type);
  NoGradGuard no_grad;
  const std::vector<Tensor> grads = gradients_of(op, params);
  if (grads.empty()) return Tensor::zeros(Shape{});
  const Device dev = grads[0].device();
  std::vector<Tensor> norms;
  for (const Tensor& g : grads) norms.push_back(vector_norm(g, norm_type).to(dev));
  const Tensor total = vector_norm(stack(norms, 0), norm_type);
  if (error_if_nonfinite) {
    const double t = total.item();
    KILN_CHECK(std::isfinite(t), op, ": the total norm of order ", norm_type, " of the gradients is ", t,
               ", so they cannot be clipped; find the NaN or inf first, or pass error_if_nonfinite=false to "
               "scale them by it anyway");
  }
  const Tensor scale = clamp(div(static_cast<float>(max_norm), add(total, 1e-6f)), -INFINITY, 1.0f);
  // In place, as torch's mul_: .grad is the caller's (backward stores no gradient another tensor holds).
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    backend_for(g.device()).binary(BinaryOp::mul, g, scale.to(g.device()).to(g.dtype()), g);
    g.mark_modified();  // a graph that saved this gradient refuses its backward, as torch's
  }
  return total;
}

void clip_grad_value(const std::vector<Tensor>& params, double clip_value) {
  constexpr const char* op = "clip_grad_value";
  KILN_CHECK(clip_value >= 0 && !std::isnan(clip_value), op, ": clip_value must be >= 0, got ", clip_value);
  NoGradGuard no_grad;
  (void)gradients_of(op, params);  // checks every gradient before changing any
  const float v = static_cast<float>(clip_value);
  for (const Tensor& p : params) {  // in place, as torch's clamp_; NaN stays NaN through both
    Tensor g = p.grad();
    if (!g.defined()) continue;
    Backend& be = backend_for(g.device());
    be.binary_scalar(BinaryOp::maximum, g, -v, g);
    be.binary_scalar(BinaryOp::minimum, g, v, g);
    g.mark_modified();
  }
}

}  // namespace kiln
