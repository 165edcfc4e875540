// Tensor methods as torch users write them: x.sum(-1), x.permute(0, 2, 1, 3), x.softmax(-1),
// x.masked_fill(mask, value). Each calls the core op that the module function of the same name
// calls (python/src/tensor.cpp), with the same arguments after self; the docstrings point there.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include "python/src/bindings.h"

namespace kiln::python {
namespace {

using nb::arg;

// Binds fn as method `name` of kiln.Tensor (self first), pointing at the module function's
// docstring. Extra: the arguments' names and defaults, and Release() where fn holds no Python object.
template <typename Fn, typename... Extra>
void method(nb::handle cls, const char* name, Fn&& fn, const Extra&... extra) {
  const std::string doc = std::string("self.") + name + "(...) is kiln." + name + "(self, ...).";
  cls.attr(name) = nb::cpp_function(std::forward<Fn>(fn), nb::is_method(), nb::name(name), nb::scope(cls), extra...,
                                    doc.c_str());
}

// The reductions over dims: sum, mean, var, std, amax, amin (dim None: every element), argmax.
void bind_reductions(nb::handle cls) {
  method(cls, "sum", &sum_over, arg("dim") = nb::none(), arg("keepdim") = false, Release());
  method(cls, "mean", &mean_over, arg("dim") = nb::none(), arg("keepdim") = false, Release());
  method(cls, "var", &var_over, arg("dim") = nb::none(), arg("correction") = 1, arg("keepdim") = false, Release());
  method(cls, "std", &std_over, arg("dim") = nb::none(), arg("correction") = 1, arg("keepdim") = false, Release());
  method(cls, "amax", &amax_over, arg("dim") = nb::none(), arg("keepdim") = false, Release());
  method(cls, "amin", &amin_over, arg("dim") = nb::none(), arg("keepdim") = false, Release());
  // dim is required: torch's x.argmax() with none is the index into the flattened tensor, and
  // kiln.argmax(x)'s default is the last dimension, so neither default would be the other's.
  method(cls, "argmax", [](const Tensor& x, int64_t dim) { return kiln::argmax(x, dim); }, arg("dim"), Release());
}

// The reorderings and the ops along a chosen dimension.
void bind_layout(nb::handle cls) {
  // x.permute(0, 2, 1, 3) or x.permute([0, 2, 1, 3]), as torch takes both.
  method(cls, "permute", [](const Tensor& x, nb::args dims) {
    std::vector<int64_t> order;
    int64_t one = 0;
    const bool as_list = dims.size() == 1 && !nb::try_cast(dims[0], one);
    if (!nb::try_cast(as_list ? nb::handle(dims[0]) : nb::handle(dims), order))
      throw nb::type_error("Tensor.permute takes the new order as ints, x.permute(0, 2, 1, 3), or as one list or "
                           "tuple of ints, x.permute([0, 2, 1, 3])");
    nb::gil_scoped_release release;
    return kiln::permute(x, order);
  });
  method(cls, "transpose", [](const Tensor& x, int64_t d0, int64_t d1) { return kiln::transpose(x, d0, d1); },
         arg("dim0"), arg("dim1"), Release());
  method(cls, "softmax", [](const Tensor& x, int64_t dim) { return kiln::softmax(x, dim); }, arg("dim"), Release());
  method(cls, "log_softmax", [](const Tensor& x, int64_t dim) { return kiln::log_softmax(x, dim); }, arg("dim"),
         Release());
  method(cls, "matmul", [](const Tensor& a, const Tensor& b) { return kiln::matmul(a, b); }, arg("other"),
         Release());
}

// The elementwise math.
void bind_elementwise(nb::handle cls) {
  using Unary = Tensor (*)(const Tensor&);
  const std::pair<const char*, Unary> unary[] = {
      {"exp", &kiln::exp},         {"log", &kiln::log},   {"sqrt", &kiln::sqrt}, {"tanh", &kiln::tanh},
      {"sigmoid", &kiln::sigmoid}, {"relu", &kiln::relu}, {"abs", &kiln::abs}};
  for (const auto& [name, fn] : unary) method(cls, name, [fn](const Tensor& x) { return fn(x); }, Release());
  method(cls, "pow", [](const Tensor& x, std::variant<Tensor, double> exponent) {
    if (const Tensor* t = std::get_if<Tensor>(&exponent)) return kiln::pow(x, *t);
    return kiln::pow(x, static_cast<float>(std::get<double>(exponent)));
  }, arg("exponent"), Release());
  method(cls, "clamp", &clamp_between, arg("min") = nb::none(), arg("max") = nb::none(), Release());
  method(cls, "masked_fill", [](const Tensor& x, const Tensor& mask, float value) {
    return kiln::masked_fill(x, mask, value);
  }, arg("mask"), arg("value"), Release());
}

}  // namespace

void bind_tensor_methods(nb::module_& m) {
  const nb::handle cls = m.attr("Tensor");
  bind_reductions(cls);
  bind_layout(cls);
  bind_elementwise(cls);
}

}  // namespace kiln::python
