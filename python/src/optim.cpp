// Training's small parts, torch's names: the optimizers (SGD, Adam, AdamW), the learning-rate
// schedules of layers/schedule.h, and torch.nn.utils' gradient clipping. Steps and clipping
// release the GIL.
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "layers/module.h"
#include "layers/optim.h"
#include "layers/schedule.h"
#include "python/src/bindings.h"

namespace kiln::python {
namespace {

using nb::arg;

// A float32 setting as Python shows it (0.01, not 0.009999999776...).
std::string py_float(float v) { return nb::cast<std::string>(nb::repr(nb::float_(as_decimal(v)))); }

// An optimizer's settings as Python shows them: "kiln.SGD(lr=0.01, momentum=0.9, ..., 2 parameters)",
// under its Python class (an Adam with decoupled decay is a kiln.Adam saying so, not a kiln.AdamW).
std::string optimizer_repr(nb::handle self) {
  const Optimizer& o = nb::cast<const Optimizer&>(self);
  const std::string type = nb::cast<std::string>(self.type().attr("__name__"));
  std::string s = "kiln." + type + "(lr=" + py_float(o.lr());
  for (const OptimizerSetting& v : o.settings())
    s += ", " + v.name + "=" +
         (v.name == "nesterov" ? std::string(v.value != 0 ? "True" : "False") : py_float(static_cast<float>(v.value)));
  if (type == "Adam" && o.kind() == "AdamW") s += ", decoupled_weight_decay=True";
  return s + ", " + std::to_string(o.parameters().size()) + " parameters)";
}

// A schedule as the call that makes it: "kiln.WarmupLR(kiln.CosineLR(0.1, steps=100, floor=0.0), warmup=5)".
std::string schedule_repr(const Schedule& s) {
  const auto n = [](int64_t v) { return std::to_string(v); };
  if (auto* c = dynamic_cast<const ConstantLR*>(&s)) return "kiln.ConstantLR(" + py_float(c->base()) + ")";
  if (auto* c = dynamic_cast<const StepLR*>(&s))
    return "kiln.StepLR(" + py_float(c->base()) + ", every=" + n(c->every()) + ", gamma=" + py_float(c->gamma()) + ")";
  if (auto* c = dynamic_cast<const CosineLR*>(&s))
    return "kiln.CosineLR(" + py_float(c->base()) + ", steps=" + n(c->steps()) + ", floor=" + py_float(c->floor()) +
           ")";
  if (auto* c = dynamic_cast<const WarmupLR*>(&s))
    return "kiln.WarmupLR(" + schedule_repr(*c->after()) + ", warmup=" + n(c->warmup()) + ")";
  return "kiln.Schedule()";
}

// Tensors given as torch's optimizers and clip_grad_* take them, named: one Tensor
// ("params[0]"), a dict of them (Module.parameters()'s; its keys name them) or an iterable of
// Tensors ("params[i]"). A Module is each caller's own case.
std::vector<NamedTensor> named_tensors_of(const char* op, nb::handle params) {
  if (nb::isinstance<Tensor>(params)) return {{"params[0]", nb::cast<Tensor>(params)}};
  const std::string what = std::string(op) + ": parameters must be a kiln.Module, a Tensor, a dict of them (as "
                           "Module.parameters() gives) or an iterable of Tensors; got ";
  if (!nb::hasattr(params, "__iter__") || nb::isinstance<nb::str>(params))
    throw nb::type_error((what + python_type(params)).c_str());
  std::vector<NamedTensor> out;
  if (nb::isinstance<nb::dict>(params)) {
    for (const auto& [key, value] : nb::borrow<nb::dict>(params)) {
      if (!nb::isinstance<nb::str>(key) || !nb::isinstance<Tensor>(value))
        throw nb::type_error(
            (what + "a dict with an item of types " + python_type(key) + ": " + python_type(value)).c_str());
      out.push_back({nb::cast<std::string>(key), nb::cast<Tensor>(value)});
    }
    return out;
  }
  for (nb::handle h : params) {
    if (!nb::isinstance<Tensor>(h))
      throw nb::type_error((what + "an iterable with an item of type " + python_type(h) +
                            (nb::isinstance<nb::dict>(h) ? " (parameter groups are not taken: one optimizer per group)"
                                                         : "")).c_str());
    out.push_back({"params[" + std::to_string(out.size()) + "]", nb::cast<Tensor>(h)});
  }
  return out;
}

// The tensors clip_grad_norm_ and clip_grad_value_ take: a Module's trainable parameters, or
// named_tensors_of's.
std::vector<Tensor> tensors_of(const char* op, nb::handle params) {
  std::vector<Tensor> out;
  if (nb::isinstance<Module>(params)) {
    for (const ParameterRef& p : nb::cast<Module&>(params).trainable_parameters()) out.push_back(*p.tensor);
    return out;
  }
  for (NamedTensor& t : named_tensors_of(op, params)) out.push_back(std::move(t.tensor));
  return out;
}

// An optimizer over a Module's trainable parameters (watching it for layers unfrozen later) or
// over tensors held by handle.
template <typename Opt, typename Options>
void make_optimizer(Opt* self, const char* kind, nb::handle params, const Options& options) {
  if (nb::isinstance<Module>(params))
    new (self) Opt(nb::cast<Module&>(params), options);
  else
    new (self) Opt(named_tensors_of(kind, params), options);
}

// Adam's betas as torch passes them, (beta1, beta2), or kiln's beta1 and beta2; not both.
std::pair<float, float> betas_of(const std::optional<std::pair<double, double>>& betas, double beta1, double beta2) {
  if (!betas) return {static_cast<float>(beta1), static_cast<float>(beta2)};
  if (beta1 != 0.9 || beta2 != 0.999)
    throw nb::type_error("Adam: give betas=(beta1, beta2) or beta1= and beta2=, not both");
  return {static_cast<float>(betas->first), static_cast<float>(betas->second)};
}

// What an optimizer's first argument may be.
constexpr const char* kParamsDoc =
    "Over `params`: a kiln.Module's parameters that train now (freeze first; the model is kept alive and a layer "
    "unfrozen later is refused at step()), or tensors of your own: a dict {name: Tensor}, an iterable of Tensors "
    "(float32 leaves; each held by the optimizer). The settings are kept as float32.";

void bind_optimizers(nb::module_& m) {
  nb::class_<Optimizer>(m, "Optimizer", "Updates a model's trainable parameters from their gradients.")
      .def("step", &Optimizer::step, Release(), "One update of every parameter it holds (the model's trainable ones "
           "when it was made) that has a gradient; a kiln.Error, changing nothing, when a layer was unfrozen since "
           "(make a new optimizer then).")
      .def("zero_grad", [](Optimizer& o, bool set_to_none) {
             if (set_to_none) return o.zero_grad();
             for (const ParameterRef& p : o.parameters()) {
               const Tensor g = p.tensor->grad();
               if (g.defined()) p.tensor->set_grad(Tensor::zeros(g.shape(), TensorOptions{g.dtype(), g.device()}));
             }
           }, arg("set_to_none") = true,
           "Drops every parameter's gradient (torch's default), or with set_to_none=False makes each one that "
           "exists zeros (a new tensor: one read before keeps its values).")
      .def_prop_rw("lr", [](const Optimizer& o) { return as_decimal(o.lr()); },
                   [](Optimizer& o, double lr) { o.set_lr(static_cast<float>(lr)); },
                   "The learning rate (settable: opt.lr = schedule.lr(opt.steps)); kept as a float32.")
      .def_prop_ro("steps", &Optimizer::steps, "step() calls done so far.")
      .def("__repr__", &optimizer_repr);
  // keep_alive<1, 2>: the optimizer points into the model's parameters, so it keeps the model.
  nb::class_<SGD, Optimizer>(m, "SGD", "torch.optim.SGD over the model's trainable parameters.")
      .def("__init__", [](SGD* self, nb::handle params, double lr, double momentum, double weight_decay,
                          bool nesterov) {
             make_optimizer(self, "SGD", params, SgdOptions{static_cast<float>(lr), static_cast<float>(momentum),
                                                            static_cast<float>(weight_decay), nesterov});
           }, arg("params"), arg("lr") = 0.01, arg("momentum") = 0.0, arg("weight_decay") = 0.0,
           arg("nesterov") = false, nb::keep_alive<1, 2>(),
           kParamsDoc);
  using Betas = std::optional<std::pair<double, double>>;
  const auto adam_options = [](double lr, const Betas& betas, double beta1, double beta2, double eps, double wd,
                               bool decoupled) {
    const auto [b1, b2] = betas_of(betas, beta1, beta2);
    return AdamOptions{static_cast<float>(lr), b1, b2, static_cast<float>(eps), static_cast<float>(wd), decoupled};
  };
  // Static: nanobind keeps the pointer it is given.
  static const std::string adam_doc = std::string(kParamsDoc) + " Weight decay is added to the gradient (L2), or, "
      "decoupled, shrinks every parameter by 1 - lr * weight_decay (AdamW's). betas=(b1, b2) as torch's, or beta1= "
      "and beta2= (kiln's order for positional arguments).";
  static const std::string adamw_doc = std::string(kParamsDoc) + " Each step first shrinks every parameter, biases "
      "and norms too, by 1 - lr * weight_decay. betas=(b1, b2) as torch's, or beta1= and beta2=.";
  nb::class_<Adam, Optimizer>(m, "Adam", "torch.optim.Adam (no amsgrad) over the model's trainable parameters.")
      .def("__init__", [adam_options](Adam* self, nb::handle params, double lr, double beta1, double beta2, double eps,
                                      double weight_decay, bool decoupled, const Betas& betas) {
             make_optimizer(self, "Adam", params, adam_options(lr, betas, beta1, beta2, eps, weight_decay, decoupled));
           }, arg("params"), arg("lr") = 1e-3, arg("beta1") = 0.9, arg("beta2") = 0.999, arg("eps") = 1e-8,
           arg("weight_decay") = 0.0, arg("decoupled_weight_decay") = false, arg("betas") = nb::none(),
           nb::keep_alive<1, 2>(), adam_doc.c_str());
  nb::class_<AdamW, Adam>(m, "AdamW", "torch.optim.AdamW (no amsgrad): Adam with decoupled weight decay.")
      .def("__init__", [adam_options](AdamW* self, nb::handle params, double lr, double beta1, double beta2, double eps,
                                      double weight_decay, const Betas& betas) {
             make_optimizer(self, "AdamW", params, adam_options(lr, betas, beta1, beta2, eps, weight_decay, true));
           }, arg("params"), arg("lr") = 1e-3, arg("beta1") = 0.9, arg("beta2") = 0.999, arg("eps") = 1e-8,
           arg("weight_decay") = 1e-2, arg("betas") = nb::none(), nb::keep_alive<1, 2>(), adamw_doc.c_str());
}

void bind_schedules(nb::module_& m) {
  nb::class_<Schedule>(m, "Schedule", "A learning rate by optimizer step: opt.lr = schedule.lr(opt.steps) "
                                      "before each opt.step(), or kiln.Phase(schedule=...).")
      .def("lr", [](const Schedule& s, int64_t step) { return as_decimal(s.lr(step)); }, arg("step"),
           "The rate for `step` (from 0: the step about to be taken), as a float32.")
      .def("__repr__", &schedule_repr);
  // The rates are taken as Python floats and kept as float32 (the signatures then show 0.1, not 0.10000000149).
  const auto f = [](double v) { return static_cast<float>(v); };
  nb::class_<ConstantLR, Schedule>(m, "ConstantLR", "lr at every step.")
      .def("__init__", [f](ConstantLR* self, double lr) { new (self) ConstantLR(f(lr)); }, arg("lr"));
  nb::class_<StepLR, Schedule>(m, "StepLR", "lr * gamma^(step // every): torch's StepLR, counted in steps.")
      .def("__init__", [f](StepLR* self, double lr, int64_t every, double gamma) {
             new (self) StepLR(f(lr), every, f(gamma));
           }, arg("lr"), arg("every"), arg("gamma") = 0.1);
  nb::class_<CosineLR, Schedule>(m, "CosineLR", "From lr at step 0 down to floor at step `steps` along a half cosine, "
                                                "then floor: torch's CosineAnnealingLR(T_max=steps, eta_min=floor).")
      .def("__init__", [f](CosineLR* self, double lr, int64_t steps, double floor) {
             new (self) CosineLR(f(lr), steps, f(floor));
           }, arg("lr"), arg("steps"), arg("floor") = 0.0);
  nb::class_<WarmupLR, Schedule>(m, "WarmupLR", "A linear warm-up over `warmup` steps to after.lr(0), then `after` "
                                                "with its clock starting at 0.")
      .def("__init__", [](WarmupLR* self, std::shared_ptr<Schedule> after, int64_t warmup) {
             new (self) WarmupLR(std::move(after), warmup);
           }, arg("after"), arg("warmup"));
}

void bind_clipping(nb::module_& m) {
  m.def("clip_grad_norm_", [](nb::handle params, double max_norm, nb::handle norm_type, bool error_if_nonfinite) {
          const std::vector<Tensor> tensors = tensors_of("clip_grad_norm_", params);
          const double p = nb::cast<double>(nb::float_(norm_type));  // float() as torch's: 'inf' too
          const nb::gil_scoped_release release;
          return clip_grad_norm(tensors, max_norm, p, error_if_nonfinite);
        }, arg("parameters"), arg("max_norm"), arg("norm_type") = 2.0, arg("error_if_nonfinite") = false,
        "torch.nn.utils.clip_grad_norm_: every gradient times min(1, max_norm / (total + 1e-6)), total the "
        "norm_type-norm of all of them together (inf: the largest |g|); returns total, 0-d float32. No host wait "
        "unless error_if_nonfinite. In place, as torch's: a .grad read before sees the new values.");
  m.def("clip_grad_value_", [](nb::handle params, double clip_value) {
          const std::vector<Tensor> tensors = tensors_of("clip_grad_value_", params);
          const nb::gil_scoped_release release;
          clip_grad_value(tensors, clip_value);
        }, arg("parameters"), arg("clip_value"),
        "torch.nn.utils.clip_grad_value_: every gradient clamped into [-clip_value, clip_value], in place.");
}

}  // namespace

void bind_optim(nb::module_& m) {
  bind_optimizers(m);
  bind_schedules(m);
  bind_clipping(m);
}

}  // namespace kiln::python
