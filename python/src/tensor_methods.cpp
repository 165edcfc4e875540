// Tensor methods as torch users write them: x.sum(-1), x.permute(0, 2, 1, 3), x.softmax(-1),
// x.masked_fill(mask, value). Each calls the core op that the module function of the same name
// calls (python/src/tensor.cpp), with the same arguments after self; the docstrings point there.
#include <array>
#include <tuple>

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include "core/op_checks.h"
#include "python/src/bindings.h"

namespace kiln::python {
namespace {

using nb::arg;

// Binds fn as method `name` of kiln.Tensor (self first) with docstring `doc`. Extra: the arguments'
// names and defaults, and Release() where fn holds no Python object.
template <typename Fn, typename... Extra>
void method_with_doc(nb::handle cls, const char* name, const char* doc, Fn&& fn, const Extra&... extra) {
  cls.attr(name) = nb::cpp_function(std::forward<Fn>(fn), nb::is_method(), nb::name(name), nb::scope(cls), extra...,
                                    doc);
}

// Whether a sequence holds a bool (an int to nanobind, as to Python, but no extent or dimension).
bool holds_bool(nb::handle seq) {
  if (!nb::isinstance<nb::sequence>(seq)) return false;
  for (nb::handle h : seq)
    if (PyBool_Check(h.ptr())) return true;
  return false;
}

// As method_with_doc, pointing at the module function's docstring.
template <typename Fn, typename... Extra>
void method(nb::handle cls, const char* name, Fn&& fn, const Extra&... extra) {
  const std::string doc = std::string("self.") + name + "(...) is kiln." + name + "(self, ...).";
  method_with_doc(cls, name, doc.c_str(), std::forward<Fn>(fn), extra...);
}

// x.expand(*sizes): torch's, -1 keeping x's extent there (counted from the end, as broadcasting
// lines dimensions up); new leading dimensions are given.
Tensor expanded_to(const Tensor& x, std::vector<int64_t> sizes) {
  const auto rank = static_cast<int64_t>(sizes.size());
  for (int64_t k = 0; k < rank; ++k) {
    if (sizes[static_cast<size_t>(k)] != -1) continue;
    const int64_t d = k - (rank - x.rank());  // x's dimension lined up with k
    if (d < 0)
      throw nb::value_error(("Tensor.expand: -1 (keep the extent) at position " + std::to_string(k) + " of " +
                             std::to_string(rank) + " names a new leading dimension of " + x.description() +
                             ", which has no extent to keep").c_str());
    sizes[static_cast<size_t>(k)] = x.dim(d);
  }
  nb::gil_scoped_release release;
  return expanded_view(x, kiln::broadcast_to(x, Shape(sizes)));
}

// The reductions over dims: sum, mean, var, std, amax, amin (dim None: every element), logsumexp,
// argmax, argmin, and max and min (along one, with positions, or of all); and cumsum, a running sum
// along one.
void bind_reductions(nb::handle cls) {
  method(cls, "sum", &sum_over, arg("dim") = nb::none(), arg("keepdim") = false, Release());
  method(cls, "mean", &mean_over, arg("dim") = nb::none(), arg("keepdim") = false, Release());
  for (const auto& [name, fn] : {std::pair{"var", &var_over}, std::pair{"std", &std_over}}) {
    method(cls, name, [fn](const Tensor& x, bool unbiased) {  // torch 1.13's x.var(unbiased), first
      return fn(x, nb::none(), std::nullopt, false, unbiased);
    }, arg("unbiased"));
    method(cls, name, fn, arg("dim") = nb::none(), arg("correction") = nb::none(), arg("keepdim") = false,
           nb::kw_only(), arg("unbiased") = nb::none(),
           nb::sig((std::string("def ") + name + "(self, dim: int | Sequence[int] | None = None, correction: int | "
                    "None = None, keepdim: bool = False, *, unbiased: bool | None = None) -> Tensor").c_str()));
  }
  method(cls, "amax", &amax_over, arg("dim") = nb::none(), arg("keepdim") = false, Release());
  method(cls, "amin", &amin_over, arg("dim") = nb::none(), arg("keepdim") = false, Release());
  method(cls, "argmax", [](const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
    return arg_extreme_over(true, x, dim, keepdim);
  }, arg("dim") = nb::none(), arg("keepdim") = false, Release());
  method(cls, "argmin", [](const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
    return arg_extreme_over(false, x, dim, keepdim);
  }, arg("dim") = nb::none(), arg("keepdim") = false, Release());
  method(cls, "cumsum", &kiln::cumsum, arg("dim"), Release());
  method(cls, "logsumexp", &logsumexp_over, arg("dim"), arg("keepdim") = false, Release());
  // x.max(other) is kiln.maximum, x.max(dim) and x.max() kiln.max's.
  method(cls, "max", [](const Tensor& x, const Tensor& other) { return kiln::maximum(x, other); }, arg("other"),
         Release());
  method(cls, "max", [](const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
    return extreme_of(true, x, dim, keepdim);
  }, arg("dim") = nb::none(), arg("keepdim") = false,
         nb::sig("def max(self, dim: int | None = None, keepdim: bool = False) -> Tensor | ValuesIndices"));
  method(cls, "min", [](const Tensor& x, const Tensor& other) { return kiln::minimum(x, other); }, arg("other"),
         Release());
  method(cls, "min", [](const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
    return extreme_of(false, x, dim, keepdim);
  }, arg("dim") = nb::none(), arg("keepdim") = false,
         nb::sig("def min(self, dim: int | None = None, keepdim: bool = False) -> Tensor | ValuesIndices"));
}

// The views and cuts: reshape and view (the same), expand, squeeze, unsqueeze, flatten, flip, split,
// chunk, unbind.
void bind_cuts(nb::handle cls) {
  // kiln's tensors are contiguous: every view is a reshape. torch's keywords: reshape(shape=), view(size=).
  for (const auto& [name, keyword] : {std::pair{"reshape", "shape"}, std::pair{"view", "size"}})
    method_with_doc(cls, name, "x.reshape(2, -1) or x.reshape([2, -1]): kiln.reshape, the same memory (reshape: a "
                    "copy of its own where torch's would copy, as of x.T).",
                    [name, keyword](const Tensor& x, nb::args shape, nb::kwargs kwargs) {
      const Shape s(ints_given(shape, kwargs, std::string("Tensor.") + name, keyword, "the new shape", "2, -1"));
      const bool view = std::string_view(name) == "view";
      nb::gil_scoped_release release;
      return view ? kiln::reshape(x, s) : own_where_torch_copies(x, kiln::reshape(x, s));
    });
  method_with_doc(cls, "expand", "x.expand(4, -1, 3): x broadcast to those extents, -1 keeping x's (torch's "
                  "expand, but a copy: kiln.broadcast_to; float32 or bfloat16).",
                  [](const Tensor& x, nb::args sizes, nb::kwargs kwargs) {
    return expanded_to(x, ints_given(sizes, kwargs, "Tensor.expand", "size", "the extents", "4, -1, 3"));
  });
  method(cls, "squeeze", &squeeze_dim, arg("dim") = nb::none(), Release());
  method(cls, "flatten", [](const Tensor& x, int64_t start, int64_t end) {
    return own_where_torch_copies(x, kiln::flatten(x, start, end));
  }, arg("start_dim") = 0, arg("end_dim") = -1, Release());
  method(cls, "unsqueeze", [](const Tensor& x, int64_t dim) { return kiln::unsqueeze(x, dim); }, arg("dim"),
         Release());
  const char* flip_doc = "x.flip(0, 1) or x.flip([0, 1]): kiln.flip(x, dims).";
  method_with_doc(cls, "flip", flip_doc, [](const Tensor& x, nb::args dims, nb::kwargs kwargs) {
    const std::vector<int64_t> d = ints_given(dims, kwargs, "Tensor.flip", "dims", "the dimensions", "0, 1");
    nb::gil_scoped_release release;
    return kiln::flip(x, d);
  });
  method(cls, "split", &split_into, arg("split_size_or_sections"), arg("dim") = 0);
  method(cls, "chunk", &chunk_into, arg("chunks"), arg("dim") = 0);
  method(cls, "unbind", &unbind_into, arg("dim") = 0);
}

// The reorderings and the ops along a chosen dimension.
void bind_layout(nb::handle cls) {
  // x.permute(0, 2, 1, 3) or x.permute([0, 2, 1, 3]), as torch takes both.
  method(cls, "permute", [](const Tensor& x, nb::args dims, nb::kwargs kwargs) {
    const std::vector<int64_t> order =
        ints_given(dims, kwargs, "Tensor.permute", "dims", "the new order", "0, 2, 1, 3");
    nb::gil_scoped_release release;
    return permuted_view(x, order, kiln::permute(x, order));
  });
  method(cls, "index_select", [](const Tensor& x, int64_t dim, const Tensor& index) {
    return kiln::index_select(x, dim, index);
  }, arg("dim"), arg("index"), Release());
  method(cls, "gather", [](const Tensor& x, int64_t dim, const Tensor& index) { return kiln::gather(x, dim, index); },
         arg("dim"), arg("index"), Release());
  method(cls, "index_add", [](const Tensor& x, int64_t dim, const Tensor& index, const Tensor& source) {
    return kiln::index_add(x, dim, index, source);
  }, arg("dim"), arg("index"), arg("source"), Release());
  method(cls, "scatter_add", [](const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
    return kiln::scatter_add(x, dim, index, src);
  }, arg("dim"), arg("index"), arg("src"), Release());
  method(cls, "transpose", [](const Tensor& x, int64_t d0, int64_t d1) {
    return transposed_view(x, d0, d1);
  }, arg("dim0"), arg("dim1"), Release());
  method(cls, "sort", [](const Tensor& x, int64_t dim, bool descending) { return kiln::sort(x, dim, descending); },
         arg("dim") = -1, arg("descending") = false, Release());
  method(cls, "argsort", [](const Tensor& x, int64_t dim, bool descending) {
    return kiln::argsort(x, dim, descending);
  }, arg("dim") = -1, arg("descending") = false, Release());
  method(cls, "topk", [](const Tensor& x, int64_t k, int64_t dim, bool largest) {
    return kiln::topk(x, k, dim, largest);
  }, arg("k"), arg("dim") = -1, arg("largest") = true, Release());
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
      {"sigmoid", &kiln::sigmoid}, {"relu", &kiln::relu}, {"abs", &kiln::abs}, {"square", &kiln::square},
      {"reciprocal", &kiln::reciprocal}, {"rsqrt", &kiln::rsqrt}, {"isnan", &kiln::isnan}, {"isinf", &kiln::isinf},
      {"isfinite", &kiln::isfinite}};
  for (const auto& [name, fn] : unary) method(cls, name, [fn](const Tensor& x) { return fn(x); }, Release());
  method(cls, "pow", [](nb::handle x, nb::handle exponent) {  // x ** exponent: the operator's meaning
    nb::object y = nb::steal(PyNumber_Power(x.ptr(), exponent.ptr(), Py_None));
    if (!y.is_valid()) throw nb::python_error();
    return y;
  }, arg("exponent"), nb::sig("def pow(self, exponent: Tensor | float) -> Tensor"));
  method(cls, "clamp", &clamp_between, arg("min") = nb::none(), arg("max") = nb::none(), Release());
  method(cls, "masked_fill", [](const Tensor& x, const Tensor& mask, float value) {
    return kiln::masked_fill(x, mask, value);
  }, arg("mask"), arg("value"), Release());
  for (const auto& [name, fn] : {std::pair{"tril", &kiln::tril}, std::pair{"triu", &kiln::triu}})
    method(cls, name, fn, arg("diagonal") = 0, Release());
  method(cls, "norm", &norm_over, arg("p") = 2.0, arg("dim") = nb::none(), arg("keepdim") = false, Release());
  for (const auto& [name, every] : {std::pair{"all", true}, std::pair{"any", false}})
    method(cls, name, [every](const Tensor& x, std::optional<Dims> dim, bool keepdim) {
      return truth_over(every, x, dim, keepdim);
    }, arg("dim") = nb::none(), arg("keepdim") = false, Release());
}

// x.repeat(*sizes): torch's tiling, x padded with leading 1s to len(sizes) dimensions. One dimension
// k at a time where its repeat is not 1: viewed as [A, 1, B] (A the extents before k, B from k on),
// broadcast to [A, s, B] and viewed back with extent k times s; three dimensions each, any rank.
Tensor repeated(const Tensor& x, const std::vector<int64_t>& sizes) {
  const auto rank = static_cast<int64_t>(sizes.size());
  if (rank < x.rank())
    throw nb::value_error(("Tensor.repeat: " + std::to_string(rank) + " repeats for " + x.description() +
                           ", which has " + std::to_string(x.rank()) + " dimensions (give one per dimension or more)")
                              .c_str());
  for (int64_t s : sizes)
    if (s < 0) throw nb::value_error(("Tensor.repeat: repeat " + std::to_string(s) + " is negative").c_str());
  std::vector<int64_t> dims(static_cast<size_t>(rank - x.rank()), 1);
  dims.insert(dims.end(), x.shape().dims().begin(), x.shape().dims().end());
  nb::gil_scoped_release release;
  Tensor y = kiln::reshape(x, Shape(dims));
  for (size_t k = 0; k < dims.size(); ++k) {
    const int64_t s = sizes[k];
    if (s == 1) continue;
    int64_t before = 1, from = 1;
    for (size_t j = 0; j < dims.size(); ++j) (j < k ? before : from) *= dims[j];
    y = kiln::broadcast_to(kiln::reshape(y, Shape{before, 1, from}), Shape{before, s, from});
    dims[k] *= s;
    y = kiln::reshape(y, Shape(dims));
  }
  return y.impl().storage == x.impl().storage ? kiln::copy_of(y) : y;  // a copy always, as torch's
}

// The shorthands torch code is full of: x.size(), x.dim(), x.t(), x.float() and the other dtype names,
// x.cpu(), x.cuda(), x.contiguous(), x.requires_grad_(), x.neg().
void bind_shorthands(nb::handle cls) {
  method_with_doc(cls, "size", "x.size(): the shape, a tuple; x.size(d): extent d (negative from the end), torch's.",
                  [](const Tensor& x, std::optional<int64_t> dim) -> nb::object {
    if (!dim) return nb::tuple(nb::cast(x.shape().dims()));
    if (*dim < -x.rank() || *dim >= x.rank())
      throw nb::index_error(("dimension " + std::to_string(*dim) + " is out of range for " + x.description() + " (" +
                             std::to_string(x.rank()) + " dimensions)").c_str());
    return nb::int_(x.dim(*dim < 0 ? *dim + x.rank() : *dim));
  }, arg("dim") = nb::none(), nb::sig("def size(self, dim: int | None = None) -> int | tuple[int, ...]"));
  method_with_doc(cls, "dim", "The number of dimensions (x.ndim), torch's x.dim().",
                  [](const Tensor& x) { return x.rank(); });
  method_with_doc(cls, "t", "A matrix transposed (a copy), a vector or 0-d tensor as it is (a view, as torch's x.t()).",
                  [](const Tensor& x) {
    if (x.rank() > 2)
      throw nb::value_error(("t() transposes a matrix: " + x.description() + " has " + std::to_string(x.rank()) +
                             " dimensions (x.mT swaps the last two, x.permute any)").c_str());
    nb::gil_scoped_release release;
    return x.rank() < 2 ? kiln::reshape(x, x.shape()) : transposed_view(x, 0, 1);
  });
  const std::pair<const char*, DType> casts[] = {
      {"float", DType::f32}, {"bfloat16", DType::bf16}, {"long", DType::i64}, {"int", DType::i32}};
  for (const auto& [name, dtype] : casts) {
    const std::string doc = std::string("x.astype(\"") + dtype_name(dtype) + "\") (torch's x." + name + "()).";
    method_with_doc(cls, name, doc.c_str(), [dtype](const Tensor& x) { return x.to(dtype); }, Release());
  }
  method_with_doc(cls, "cpu", "x.to(\"cpu\"): x itself when already there.",
                  [](const Tensor& x) { return x.to(Device::cpu()); }, Release());
  method_with_doc(cls, "cuda", "x.to(\"cuda:N\") (device None: GPU 0), x itself when already there.",
                  [](const Tensor& x, std::optional<int64_t> device) {
    return x.to(Device::cuda(static_cast<int>(device.value_or(0))));
  }, arg("device") = nb::none(), Release());
  method_with_doc(cls, "contiguous", "x itself (kiln's tensors are contiguous), or, for a copy kiln made where torch "
                  "views (x.T, x[:, i]), a copy of its own, as torch's contiguous() of a strided view.",
                  [](nb::handle self) -> nb::object {
    const Tensor& x = nb::cast<const Tensor&>(self);
    return is_view_copy(x) ? nb::cast(kiln::copy_of(x)) : nb::borrow(self);
  });
  method_with_doc(cls, "is_contiguous", "True: kiln's tensors are always contiguous.", [](const Tensor&) {
    return true;
  });
  method_with_doc(cls, "requires_grad_", "Sets requires_grad (on a leaf, as the property; a no-op where it already "
                  "holds, as torch's) and returns x.", [](nb::handle self, bool requires_grad) {
    if (nb::cast<const Tensor&>(self).requires_grad() != requires_grad) self.attr("requires_grad") = requires_grad;
    return nb::borrow(self);
  }, arg("requires_grad") = true);
  method_with_doc(cls, "neg", "-x (torch's x.neg()).", [](const Tensor& x) { return kiln::neg(x); }, Release());
  method_with_doc(cls, "type_as", "x converted to other's dtype and moved to its device (torch's x.type_as(other)).",
                  [](const Tensor& x, const Tensor& other) { return x.to(other.device()).to(other.dtype()); },
                  arg("other"), Release());
  method_with_doc(cls, "repeat", "x.repeat(2, 1, 3): x tiled that many times along each dimension, new leading "
                  "ones first (torch's repeat; a copy, through broadcast_to).",
                  [](const Tensor& x, nb::args sizes, nb::kwargs kwargs) {
    return repeated(x, ints_given(sizes, kwargs, "Tensor.repeat", "repeats", "the repeats", "2, 1, 3"));
  });
}

// One entry of an index: what it does to the dimension it meets (None meets none, adding an extent
// of 1; an int narrows to one element and drops the dimension; a slice of step 1 narrows and keeps
// it, one of a larger step takes every step-th entry; a list or tensor of indices selects those
// entries, and drops the dimension if it is one index, 0-d).
struct IndexStep {
  enum Kind { add_one, take_one, take_range, take_every, keep, take_listed } kind;
  int64_t start = 0, length = 0;
  Tensor listed = {};  // take_listed: int32 or int64, rank 0 or 1; take_every: the int64 positions
};

// A NumPy scalar (np.int64(1), np.uint8(1), np.True_), not an array.
bool is_numpy_scalar(nb::handle h) {
  const std::string type = Py_TYPE(h.ptr())->tp_name;
  return type.rfind("numpy.", 0) == 0 && type != "numpy.ndarray";
}

// An int index entry: an int or NumPy integer scalar, or another object with __index__ that is
// not an array: one with ndim (a NumPy array, a torch tensor) counts only 0-d and of an integer
// dtype but uint8 (torch's __index__ takes any one-element tensor, and reads bool and uint8 ones
// as masks). Never a bool.
bool is_int_index(nb::handle h) {
  if (is_bool_number(h) || !is_index_integer(h)) return false;  // NumPy and torch read a bool as a mask
  if (PyLong_Check(h.ptr()) || is_numpy_scalar(h) || !nb::hasattr(h, "ndim")) return true;  // np.uint8(1) too
  int64_t ndim = -1;
  // The dtype's repr: "dtype('int64')" (NumPy), "torch.bool".
  const std::string dtype = nb::hasattr(h, "dtype") ? nb::repr(h.attr("dtype")).c_str() : "";
  return nb::try_cast(h.attr("ndim"), ndim) && ndim == 0 && dtype.find("bool") == std::string::npos &&
         dtype.find("uint8") == std::string::npos;
}

// Indices with negative ones counted from the end of `extent`, each checked as an int index is
// (IndexError naming `where`: the user's dimension and tensor).
std::vector<int64_t> wrapped(std::vector<int64_t> v, int64_t extent, const std::string& where) {
  for (int64_t& i : v) {
    if (i < -extent || i >= extent)
      throw nb::index_error(("index " + std::to_string(i) + " is out of range for " + where + " (extent " +
                             std::to_string(extent) + ")").c_str());
    if (i < 0) i += extent;
  }
  return v;
}

// A list of ints (Python's or NumPy's scalars; a list holding tensors, arrays or lists is refused:
// torch reads one as a tuple of indices), as given.
std::vector<int64_t> listed_indices(nb::handle list, const std::string& where) {
  std::vector<int64_t> v;
  for (nb::handle h : nb::borrow<nb::list>(list)) {
    if (!(PyLong_Check(h.ptr()) || is_numpy_scalar(h)) || !is_int_index(h))
      throw nb::type_error(("a list index holds ints, not " + std::string(nb::str(h.type()).c_str()) +
                            " (torch reads a list holding tensors or lists as a tuple of indices: write the tuple; "
                            "a mask's elements are kiln.where or kiln.masked_fill)").c_str());
    int overflow = 0;
    v.push_back(PyLong_AsLongLongAndOverflow(nb::int_(h).ptr(), &overflow));
    if (overflow != 0)
      throw nb::index_error(("index " + std::string(nb::str(h).c_str()) + " is out of range for " + where).c_str());
  }
  return v;
}

// An int32 or int64 kiln tensor index (0-d: one index; rank 1: a list), read on the host from any
// device (index_select reads its indices there too), so negative entries count from the end as in
// torch.
std::vector<int64_t> tensor_indices(const Tensor& idx) {
  if (idx.dtype() != DType::i32 && idx.dtype() != DType::i64)
    throw nb::type_error(("a tensor index holds int32 or int64 indices, not " + idx.description() +
                          " (a mask's elements are kiln.where or kiln.masked_fill)").c_str());
  if (idx.rank() > 1)
    throw nb::index_error(("a tensor index is one index (0-d) or a list of them (rank 1), not " + idx.description() +
                           ": index with idx.reshape([-1]) and reshape the result").c_str());
  nb::gil_scoped_release release;
  return idx.cpu().to(DType::i64).to_vector<int64_t>();
}

// A slice over dimension d of t: a narrow for step 1, else the positions start, start + step, ...
// (index_select's, on t's device). Python's rules first (a step that is no int, or 0, raises as
// torch's); a negative step is refused, as torch's.
IndexStep slice_step(const Tensor& t, int64_t d, const nb::slice& sl) {
  const auto [start, stop, step, length] = sl.compute(static_cast<size_t>(t.dim(d)));
  if (step < 1)
    throw nb::value_error(("a slice of a kiln tensor steps forward, as torch's: step " + std::to_string(step) +
                           " is negative (dimension " + std::to_string(d) + " of " + t.description() +
                           "; kiln.flip reverses)").c_str());
  const auto first = static_cast<int64_t>(start), n = static_cast<int64_t>(length);
  if (step == 1) return {IndexStep::take_range, first, n};
  nb::gil_scoped_release release;
  const Tensor positions = Tensor::arange(n, static_cast<double>(first), static_cast<double>(step),
                                          TensorOptions{DType::i64, t.device()});
  return {IndexStep::take_every, 0, 0, positions};
}

// The index's entries, in order, as steps over t's dimensions (the ellipsis expanded).
std::vector<IndexStep> index_steps(const Tensor& t, nb::handle key) {
  std::vector<nb::handle> items;
  if (nb::isinstance<nb::tuple>(key))
    for (nb::handle h : nb::borrow<nb::tuple>(key)) items.push_back(h);
  else
    items.push_back(key);
  int64_t named = 0, ellipses = 0, listed = 0;
  for (nb::handle h : items) {
    if (h.ptr() == Py_Ellipsis) ++ellipses;
    else if (!h.is_none()) ++named;
  }
  if (ellipses > 1) throw nb::index_error("an index can hold one ellipsis ('...') at most");
  if (named > t.rank())
    throw nb::index_error(("too many indices for " + t.description() + ": " + std::to_string(named) + " given for " +
                           std::to_string(t.rank()) + " dimensions").c_str());
  std::vector<IndexStep> steps;
  int64_t d = 0;
  for (nb::handle h : items) {
    if (h.is_none()) {
      steps.push_back({IndexStep::add_one});
    } else if (h.ptr() == Py_Ellipsis) {
      for (int64_t k = 0; k < t.rank() - named; ++k, ++d) steps.push_back({IndexStep::keep});
    } else if (is_int_index(h)) {
      int overflow = 0;  // an int past int64 (2**70) is out of range too, not a failed cast
      const int64_t extent = t.dim(d), i = PyLong_AsLongLongAndOverflow(nb::int_(h).ptr(), &overflow);
      if (overflow != 0 || i < -extent || i >= extent)
        throw nb::index_error(("index " + std::string(nb::str(h).c_str()) + " is out of range for dimension " +
                               std::to_string(d) +
                               " of " + t.description() + " (extent " + std::to_string(extent) + ")").c_str());
      steps.push_back({IndexStep::take_one, i < 0 ? i + extent : i, 1});
      ++d;
    } else if (nb::isinstance<nb::slice>(h)) {
      steps.push_back(slice_step(t, d, nb::borrow<nb::slice>(h)));
      ++d;
    } else if (nb::isinstance<nb::list>(h) || nb::isinstance<Tensor>(h)) {
      const std::string where = "dimension " + std::to_string(d) + " of " + t.description();
      const Tensor* given = nb::isinstance<Tensor>(h) ? &nb::cast<const Tensor&>(h) : nullptr;
      const std::vector<int64_t> raw = given ? tensor_indices(*given) : listed_indices(h, where);
      const std::vector<int64_t> v = wrapped(raw, t.dim(d), where);
      if (given && given->rank() == 0) {  // torch reads a 0-d index tensor as an int
        steps.push_back({IndexStep::take_one, v[0], 1});
      } else {
        if (++listed > 1)
          throw nb::index_error("a kiln index holds one list or tensor of indices at most (torch pairs several "
                                "up; kiln.index_select one dimension at a time selects their product)");
        const auto n = static_cast<int64_t>(v.size());
        // The user's tensor where nothing wrapped (no copy back to a GPU), else the wrapped indices.
        const bool as_given = given && v == raw && given->device() == t.device();
        Tensor listed_tensor = as_given ? *given : Tensor::from_vector(v, Shape{n}).to(t.device());
        steps.push_back({IndexStep::take_listed, 0, 0, std::move(listed_tensor)});
      }
      ++d;
    } else {
      throw nb::type_error(("kiln tensors are indexed by ints, slices, '...', None, and one list or int "
                            "tensor of indices, not " +
                            std::string(nb::str(nb::handle(reinterpret_cast<PyObject*>(Py_TYPE(h.ptr())))).c_str()) +
                            ": an array of indices from NumPy or torch becomes one through kiln.from_dlpack or "
                            ".tolist(); a mask's elements are kiln.where or kiln.masked_fill").c_str());
    }
  }
  for (; d < t.rank(); ++d) steps.push_back({IndexStep::keep});
  return steps;
}

// y's elements [start, start + length) along d: a view of y's memory where every extent before d is 1
// (one block of it, torch's t[i], t[a:b], t[i, a:b] as views), else a copy (kiln.narrow).
Tensor narrowed(const Tensor& y, int64_t d, int64_t start, int64_t length) {
  for (int64_t k = 0; k < d; ++k)
    if (y.dim(k) != 1) return kiln::narrow(y, d, start, length);
  if (d == 0) return y.slice(start, start + length);
  std::vector<int64_t> dims = y.shape().dims();
  const std::vector<int64_t> from_d(dims.begin() + d, dims.end());
  dims[static_cast<size_t>(d)] = length;
  return kiln::reshape(kiln::reshape(y, Shape(from_d)).slice(start, start + length), Shape(dims));
}


// The positions a selecting step takes along its dimension, on the host.
std::vector<int64_t> picked_by(const IndexStep& s) {
  if (s.kind == IndexStep::take_every || s.kind == IndexStep::take_listed)
    return s.listed.cpu().to(DType::i64).to_vector<int64_t>();
  std::vector<int64_t> p(static_cast<size_t>(s.length));
  for (size_t j = 0; j < p.size(); ++j) p[j] = s.start + static_cast<int64_t>(j);
  return p;
}

// x with the entries steps[k..] select replaced by v (x has t's rank, an int's dimension kept at
// extent 1; v the selection's extents in that rank). Along a selecting dimension the selection is
// taken, replaced within, and merged back by one index_select of x and the replaced part joined
// along it (positions past x's extent pick the replaced entries; a position listed twice takes its
// last value). Byte moves only: exact, any dtype, any device.
Tensor replaced(const Tensor& x, const std::vector<IndexStep>& steps, size_t k, const Tensor& v) {
  if (k == steps.size()) return v;
  const IndexStep& s = steps[k];
  if (s.kind == IndexStep::keep) return replaced(x, steps, k + 1, v);
  const auto d = static_cast<int64_t>(k);
  const std::vector<int64_t> picked = picked_by(s);
  const auto n = static_cast<int64_t>(picked.size());
  const Tensor inner =
      replaced(kiln::index_select(x, d, Tensor::from_vector(picked, Shape{n}).to(x.device())), steps, k + 1, v);
  std::vector<int64_t> order(static_cast<size_t>(x.dim(d)));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  for (int64_t j = 0; j < n; ++j) order[static_cast<size_t>(picked[static_cast<size_t>(j)])] = x.dim(d) + j;
  const Tensor merge = Tensor::from_vector(order, Shape{x.dim(d)}).to(x.device());
  return kiln::index_select(kiln::concat({x, inner}, d), d, merge);
}

// The one dimension the steps narrow (ints and step-1 slices; every other dimension kept whole), as
// {dimension, start, length}: t[key] is then one band of t, written in one pass (write_band).
std::optional<std::array<int64_t, 3>> single_band(const Tensor& t, const std::vector<IndexStep>& steps) {
  std::optional<std::array<int64_t, 3>> band;
  int64_t d = 0;
  for (const IndexStep& s : steps) {
    if (s.kind == IndexStep::add_one) continue;
    if (s.kind == IndexStep::take_every || s.kind == IndexStep::take_listed) return std::nullopt;
    if (s.kind != IndexStep::keep && (s.start != 0 || s.length != t.dim(d))) {
      if (band) return std::nullopt;
      band = std::array<int64_t, 3>{d, s.start, s.length};
    }
    ++d;
  }
  return band;
}

// assign_index's work on the steps, without Python: a view-copy's recipe writes it back to its base
// with it.
void assign_by_steps(const Tensor& t, std::vector<IndexStep> steps, const Tensor& value_given,
                     const std::string& name) {
  const NoGradGuard no_grad;  // the caller refused where a gradient was wanted
  std::vector<int64_t> result, kept;  // t[key]'s shape, and the selection's extents in t's rank
  std::vector<int64_t> extents = t.shape().dims();
  bool block = true;  // t[key] is one block of t's memory (narrowed's views)
  for (const IndexStep& s : steps) {
    if (s.kind == IndexStep::add_one) {
      result.push_back(1);
      continue;
    }
    const size_t d = kept.size();
    const int64_t extent = s.kind == IndexStep::keep ? t.dim(static_cast<int64_t>(d))
                           : s.kind == IndexStep::take_one ? 1
                           : s.kind == IndexStep::take_range ? s.length
                                                             : s.listed.numel();
    const bool narrows = extent != t.dim(static_cast<int64_t>(d)) || s.start != 0;
    if (s.kind == IndexStep::take_every || s.kind == IndexStep::take_listed) block = false;
    for (size_t j = 0; j < d && block && narrows; ++j) block = extents[j] == 1;
    extents[d] = extent;
    kept.push_back(extent);
    if (s.kind != IndexStep::take_one) result.push_back(extent);
  }
  Tensor value = value_given;  // torch's: a value's leading extents of 1 beyond t[key]'s rank are dropped
  while (value.rank() > static_cast<int64_t>(result.size()) && value.dim(0) == 1)
    value = kiln::reshape(value, Shape(std::vector<int64_t>(value.shape().dims().begin() + 1,
                                                            value.shape().dims().end())));
  KILN_CHECK(checks::broadcasts_to(value.shape(), Shape(result)), name, ": the value ", value.description(),
             " does not broadcast to t[key]'s shape ", Shape(result), " (t is ", t.description(), ")");
  std::erase_if(steps, [](const IndexStep& s) { return s.kind == IndexStep::add_one; });
  const Tensor v = kiln::broadcast_to(value.to(t.device()).to(t.dtype()), Shape(result));
  if (block) {
    Tensor y = t;  // the block itself: narrowed's views, then v copied over it
    for (size_t d = 0; d < steps.size(); ++d)
      if (steps[d].kind == IndexStep::take_one || steps[d].kind == IndexStep::take_range)
        if (steps[d].start != 0 || steps[d].length != y.dim(static_cast<int64_t>(d)))
          y = narrowed(y, static_cast<int64_t>(d), steps[d].start, steps[d].length);
    copy_in_place(y, kiln::reshape(v, y.shape()), false, name);
    return;
  }
  if (const auto band = single_band(t, steps)) return write_band(t, (*band)[0], (*band)[1], v);
  copy_in_place(t, replaced(t, steps, 0, kiln::reshape(v, Shape(kept))), false, name);
}

// t indexed by the steps: narrows (views where they take one block), then the one selection by a
// list or step (index_select), and one reshape for the extents dropped or added.
Tensor index_by_steps(const Tensor& t, const std::vector<IndexStep>& steps) {
  Tensor y = t;
  int64_t d = 0;  // the dimension of y (and t) the next step meets: narrows keep every dimension
  for (const IndexStep& s : steps) {
    if (s.kind == IndexStep::take_one || s.kind == IndexStep::take_range) {
      if (s.start != 0 || s.length != y.dim(d)) y = narrowed(y, d, s.start, s.length);
    }
    d += s.kind == IndexStep::add_one ? 0 : 1;
  }
  std::vector<int64_t> shape;
  d = 0;
  for (const IndexStep& s : steps) {
    if (s.kind == IndexStep::add_one) {
      shape.push_back(1);
      continue;
    }
    if (s.kind == IndexStep::take_listed || s.kind == IndexStep::take_every) y = kiln::index_select(y, d, s.listed);
    if (s.kind != IndexStep::take_one) shape.push_back(y.dim(d));
    ++d;
  }
  return kiln::reshape(y, Shape(shape));
}

}  // namespace

// t[key]: the steps run as narrows (views where they take one block of t, else copies), then the
// one selection by a list or step (index_select, on what the narrows left), and one reshape for the
// extents dropped or added, so gradients flow through all. The reshape always runs: t[...] is a view
// of t's memory with a node of its own, not t (whose requires_grad and .grad it would share).
Tensor index_tensor(const Tensor& t, nb::handle key) {
  const std::vector<IndexStep> steps = index_steps(t, key);
  nb::gil_scoped_release release;
  Tensor out = index_by_steps(t, steps);
  // torch's listed index copies too; its others are views, which a recipe keeps this copy in step with
  if (std::any_of(steps.begin(), steps.end(), [](const IndexStep& s) { return s.kind == IndexStep::take_listed; }))
    return out;
  CopyRecipe recipe{[steps](const Tensor& base) { return index_by_steps(base, steps); },
                    [steps](const Tensor& base, const Tensor& part) { assign_by_steps(base, steps, part, "t[key]"); }};
  if (const auto band = single_band(t, steps)) std::tie(recipe.band_dim, recipe.band_start, recipe.band_length) =
      std::tuple{(*band)[0], (*band)[1], (*band)[2]};
  return view_copy(t, std::move(out), std::move(recipe));
}

void assign_index(const Tensor& t, nb::handle key, const Tensor& value, const std::string& name) {
  std::vector<IndexStep> steps = index_steps(t, key);
  nb::gil_scoped_release release;
  assign_by_steps(t, std::move(steps), value, name);
}

namespace {

// Indexing as torch's and NumPy's basic indexing; iteration over the first dimension through it.
void bind_indexing(nb::handle cls) {
  method_with_doc(cls, "__getitem__",
       "t[i], t[a:b], t[::2], t[..., i], t[:, None], t[[2, 0, 2]], t[:, idx]: ints (negative from the end) drop "
       "their dimension, slices narrow it (a step of 2 or more takes every step-th entry), '...' stands for the "
       "dimensions not named, None adds an extent of 1, and one list of ints or int32/int64 kiln tensor of indices "
       "(rank 1; negative ones from the end; a 0-d one is an int) selects those entries in order "
       "(kiln.index_select). The result is t's memory, a view as torch's, where it is one block of t (t[i], "
       "t[a:b], t[i, a:b], t[..., None]: ints and step-1 slices with one index in every dimension before them), "
       "and a copy otherwise (kiln's tensors are contiguous): t[:, i] and t[::2], which torch views, refuse "
       "in-place writes (they would not reach t), and a list's selection copies in torch too. Gradients flow "
       "back to t.", &index_tensor, arg("key").none());
  method_with_doc(cls, "__iter__", "The rows t[0], t[1], ... (each a view of t's memory).", [](nb::handle self) {
    if (nb::cast<const Tensor&>(self).rank() == 0)
      throw nb::type_error("iteration over a 0-d tensor (item() reads it)");
    return nb::steal(PySeqIter_New(self.ptr()));  // t[0], t[1], ... until the IndexError past the end
  });
  // Without it, `v in t` would iterate the rows and compare each by identity (kiln's ==): False.
  method_with_doc(cls, "__contains__", "Refused: `in` would compare rows by identity (the error says what to use).",
                  [](nb::handle, nb::handle) -> bool {
    throw nb::type_error("`v in t` is not defined for kiln tensors (== is identity): kiln.eq(t, v).amax().item() "
                         "is 1 where some element equals v");
  }, arg("value").none());
}

}  // namespace

std::vector<int64_t> ints_given(nb::args args, nb::dict kwargs, const std::string& call, const char* keyword,
                                const char* what, const char* example) {
  // a method's examples call it on x: "Tensor.permute" is shown as x.permute(0, 2, 1)
  const std::string shown = call.rfind("Tensor.", 0) == 0 ? "x." + call.substr(7) : call;
  const std::string usage = call + " takes " + what + " as ints, " + shown + "(" + example +
                            "), as one list or tuple of ints, " + shown + "([" + example + "]), or as " + keyword +
                            "=[" + example + "]";
  nb::handle given = args;
  int64_t one = 0;
  if (kwargs.size() > 0) {
    if (args.size() > 0 || kwargs.size() != 1 || !kwargs.contains(keyword)) throw nb::type_error(usage.c_str());
    given = kwargs[keyword];
  } else if (args.size() == 1 && !nb::try_cast(args[0], one)) {
    given = args[0];  // one list or tuple
  }
  std::vector<int64_t> v;
  if (args.size() + kwargs.size() == 0 || holds_bool(given) || !nb::try_cast(given, v))
    throw nb::type_error(usage.c_str());
  return v;
}

void bind_tensor_methods(nb::module_& m) {
  const nb::handle cls = m.attr("Tensor");
  bind_reductions(cls);
  bind_layout(cls);
  bind_cuts(cls);
  bind_shorthands(cls);
  bind_elementwise(cls);
  bind_indexing(cls);
}

}  // namespace kiln::python
