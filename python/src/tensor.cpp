// kiln.Tensor, its factories and the ops with autograd. Every call that runs a kernel (ops,
// backward, copies) releases the GIL; metadata reads do not.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <chrono>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include <nanobind/eval.h>
#include <nanobind/operators.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include "python/src/bindings.h"

namespace kiln::python {

using nb::arg;

Shape to_shape(const std::vector<int64_t>& dims) { return Shape(dims); }

std::vector<int64_t> dims_of(const Dims& d) {
  if (const int64_t* one = std::get_if<int64_t>(&d)) return {*one};
  return std::get<std::vector<int64_t>>(d);
}

namespace {
// torch's loss arguments as ClassLossOptions; an unknown reduction is a ValueError.
ClassLossOptions class_loss_options(const std::optional<Tensor>& weight, int64_t ignore_index,
                                    const std::string& reduction, float label_smoothing) {
  ClassLossOptions o;
  if (weight) o.weight = *weight;
  o.ignore_index = ignore_index;
  o.label_smoothing = label_smoothing;
  if (reduction == "mean") o.reduction = Reduction::mean;
  else if (reduction == "sum") o.reduction = Reduction::sum;
  else if (reduction == "none") o.reduction = Reduction::none;
  else throw nb::value_error(("reduction must be 'mean', 'sum' or 'none', got '" + reduction + "'").c_str());
  return o;
}
}  // namespace

std::string python_type(nb::handle h) {
  std::string t = nb::type_name(h.type()).c_str();
  if (t.rfind("kiln._kiln.", 0) == 0) t = "kiln." + t.substr(11);  // the package's name for its classes
  return t;
}

std::optional<nb::object> index_of(nb::handle h) {
  // a NumPy array of several values has __index__, which raises
  nb::object i = nb::steal(PyNumber_Index(h.ptr()));
  if (!i.is_valid()) {
    PyErr_Clear();
    return std::nullopt;
  }
  return i;
}

bool is_index_integer(nb::handle h) { return index_of(h).has_value(); }

bool is_bool_number(nb::handle h) {
  const std::string type = Py_TYPE(h.ptr())->tp_name;
  std::string kind;  // a 0-d NumPy bool array: dtype.kind "b"
  return PyBool_Check(h.ptr()) || type == "numpy.bool_" || type == "numpy.bool" ||
         (nb::hasattr(h, "dtype") && nb::try_cast(nb::getattr(nb::getattr(h, "dtype"), "kind", nb::none()), kind) &&
          kind == "b");
}

std::vector<int64_t> dims_or_all(const Tensor& x, const std::optional<Dims>& dim) {
  if (dim) return dims_of(*dim);
  std::vector<int64_t> all(static_cast<size_t>(std::max<int64_t>(x.rank(), 1)));
  for (size_t d = 0; d < all.size(); ++d) all[d] = static_cast<int64_t>(d);
  return all;
}

// Every element through core's whole-tensor sum (float32 or bfloat16), or over the dimensions given.
// x's rank of extents 1: a reduction over every dimension with keepdim.
Shape all_kept(const Tensor& x) { return Shape(std::vector<int64_t>(static_cast<size_t>(x.rank()), 1)); }

Tensor sum_over(const Tensor& x, std::optional<Dims> dim, bool keepdim) {
  if (!dim && keepdim && x.defined() && !is_floating(x.dtype()))  // integers sum whole only: kept as 1s
    return kiln::reshape(kiln::sum(x), all_kept(x));
  return dim || keepdim ? kiln::sum(x, dims_or_all(x, dim), keepdim) : kiln::sum(x);
}

Tensor mean_over(const Tensor& x, std::optional<Dims> dim, bool keepdim) {
  return dim || keepdim ? kiln::mean(x, dims_or_all(x, dim), keepdim) : kiln::mean(x);
}

Tensor amax_over(const Tensor& x, std::optional<Dims> dim, bool keepdim) {
  return kiln::amax(x, dims_or_all(x, dim), keepdim);
}

// kiln.norm and Tensor.norm: torch's p, a number or "fro" (2 over the elements), over dim (None:
// every element).
Tensor norm_over(const Tensor& x, const std::variant<double, std::string>& p, std::optional<Dims> dim, bool keepdim) {
  const std::string* name = std::get_if<std::string>(&p);
  KILN_CHECK(!name || *name == "fro", "norm: p must be a number or \"fro\", got \"", name ? *name : "",
             "\" (kiln has no nuclear norm)");
  if (dim && dims_of(*dim).empty()) dim.reset();  // dim=() is every dimension, as torch's
  return kiln::vector_norm(x, name ? 2.0 : std::get<double>(p), dims_or_all(x, dim), keepdim);
}

// kiln.all and kiln.any over dim (None: every element): whether every (any) element is nonzero, a
// 0/1 mask (kiln has no bool), NaN counting as nonzero, as torch's. Counts of the zeros (nonzeros):
// an empty extent gives all's 1 and any's 0, as torch's, and a count never rounds to 0.
Tensor truth_over(bool every, const Tensor& x, std::optional<Dims> dim, bool keepdim) {
  const Tensor marks = every ? kiln::eq(x, 0.0) : kiln::ne(x, 0.0);
  const Tensor count = dim || keepdim ? kiln::sum(marks, dims_or_all(x, dim), keepdim) : kiln::sum(marks);
  return every ? kiln::eq(count, 0.0) : kiln::gt(count, 0.0);
}

Tensor amin_over(const Tensor& x, std::optional<Dims> dim, bool keepdim) {
  return kiln::amin(x, dims_or_all(x, dim), keepdim);
}

// var's and std's correction from torch's two spellings: correction= (1 by default), or torch
// 1.13's unbiased= (True: 1, False: 0), not both.
int64_t correction_of(const char* name, std::optional<int64_t> correction, std::optional<bool> unbiased) {
  KILN_CHECK(!(correction && unbiased), name, ": give correction or unbiased, not both");
  return unbiased ? (*unbiased ? 1 : 0) : correction.value_or(1);
}

// var's and std's dim: None, an int or a list of ints, but no bool (torch's var(x, True, ...) is
// no call: a bool beside other arguments would read as dimension 1).
std::optional<Dims> moment_dims(const char* name, nb::handle dim) {
  if (dim.is_none()) return std::nullopt;
  Dims d;
  if (is_bool_number(dim) || !nb::try_cast(dim, d))
    throw nb::type_error((std::string(name) + ": dim must be an int or a list of ints, not " + python_type(dim) +
                          " (torch 1.13's unbiased is var(x, unbiased) alone, or the keyword unbiased=)").c_str());
  return d;
}

Tensor var_over(const Tensor& x, nb::handle dim, std::optional<int64_t> correction, bool keepdim,
                std::optional<bool> unbiased) {
  const std::optional<Dims> d = moment_dims("var", dim);
  nb::gil_scoped_release release;
  return kiln::var(x, dims_or_all(x, d), correction_of("var", correction, unbiased), keepdim);
}

Tensor std_over(const Tensor& x, nb::handle dim, std::optional<int64_t> correction, bool keepdim,
                std::optional<bool> unbiased) {
  const std::optional<Dims> d = moment_dims("std", dim);
  nb::gil_scoped_release release;
  return kiln::stddev(x, dims_or_all(x, d), correction_of("std", correction, unbiased), keepdim);
}

Tensor logsumexp_over(const Tensor& x, const Dims& dim, bool keepdim) {
  return kiln::logsumexp(x, dims_of(dim), keepdim);
}

// torch.argmax's dims: dim None is the position in the flattened x (0-d, or every extent 1 with
// keepdim), so kiln.argmax(logits) means what torch.argmax(logits) does; a dim is Tensor's own.
Tensor arg_extreme_over(bool largest, const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
  const auto arg = largest ? &kiln::argmax : &kiln::argmin;
  if (dim) return arg(x, *dim, keepdim);
  KILN_CHECK(!x.defined() || x.numel() > 0, largest ? "argmax" : "argmin", ": ", x.description(),
             " holds no element, so it has no ", largest ? "maximum" : "minimum",
             "; with a dim, each row of a non-empty dimension has one");
  const Tensor flat = arg(kiln::reshape(x, Shape{-1}), 0, false);
  return kiln::reshape(flat, keepdim ? all_kept(x) : Shape{});
}

nb::object extreme_of(bool largest, const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
  if (!dim) {
    if (keepdim)  // torch's max() has no keepdim
      throw nb::type_error(largest ? "max(x, keepdim=True) needs a dim; amax(x, keepdim=True) keeps every one"
                                   : "min(x, keepdim=True) needs a dim; amin(x, keepdim=True) keeps every one");
    Tensor t;
    {
      nb::gil_scoped_release release;
      t = largest ? amax_over(x, std::nullopt, false) : amin_over(x, std::nullopt, false);
    }
    return nb::cast(std::move(t));
  }
  ValuesIndices r;
  {
    nb::gil_scoped_release release;
    r = largest ? kiln::max(x, *dim, keepdim) : kiln::min(x, *dim, keepdim);
  }
  return nb::cast(std::move(r));
}

Tensor squeeze_dim(const Tensor& x, std::optional<int64_t> dim) {
  return dim ? kiln::squeeze(x, *dim) : kiln::squeeze(x);
}

namespace {

// The pieces cut made of x along dim, run without the GIL, as a tuple: each a narrowed_view of x
// (unbound: each piece one index, its dimension dropped).
template <typename Cut>
Pieces tuple_of_pieces(const Cut& cut, const Tensor& x, int64_t dim, bool unbound = false) {
  std::vector<Tensor> parts;
  {
    nb::gil_scoped_release release;
    parts = cut();
    const int64_t d = dim < 0 ? dim + x.rank() : dim;
    int64_t start = 0;
    for (Tensor& t : parts) {
      const int64_t length = unbound ? 1 : t.dim(d);
      t = narrowed_view(x, d, start, length, t);
      start += length;
    }
  }
  nb::list out;
  for (Tensor& t : parts) out.append(nb::cast(std::move(t)));
  return Pieces(nb::tuple(out));
}

}  // namespace

Pieces split_into(const Tensor& x, const std::variant<int64_t, std::vector<int64_t>>& size, int64_t dim) {
  return tuple_of_pieces([&] {
    if (const int64_t* one = std::get_if<int64_t>(&size)) return kiln::split(x, *one, dim);
    return kiln::split_with_sizes(x, std::get<std::vector<int64_t>>(size), dim);
  }, x, dim);
}

Pieces chunk_into(const Tensor& x, int64_t chunks, int64_t dim) {
  return tuple_of_pieces([&] { return kiln::chunk(x, chunks, dim); }, x, dim);
}

Pieces unbind_into(const Tensor& x, int64_t dim) {
  return tuple_of_pieces([&] { return kiln::unbind(x, dim); }, x, dim, true);
}

Tensor clamp_between(const Tensor& x, std::optional<float> lo, std::optional<float> hi) {
  KILN_CHECK(lo || hi, "clamp: give min, max or both (with neither it would change nothing)");
  constexpr float inf = std::numeric_limits<float>::infinity();
  return kiln::clamp(x, lo.value_or(-inf), hi.value_or(inf));
}


DType dtype_from_name(const std::string& name) {
  for (DType t : kDTypes)
    if (name == dtype_name(t)) return t;
  KILN_FAIL("unknown dtype '", name, "': use one of float32, bfloat16, int32, int64, uint8");
}

Device device_from_name(const std::string& name) {
  if (name == "cpu") return Device::cpu();
  if (name == "cuda") return Device::cuda(0);
  int index = 0;
  const char* end = name.data() + name.size();
  if (name.rfind("cuda:", 0) == 0 && name.size() > 5 && name.find_first_not_of("0123456789", 5) == std::string::npos) {
    const auto [at, ec] = std::from_chars(name.data() + 5, end, index);
    if (ec == std::errc() && at == end) return Device::cuda(index);
  }
  KILN_FAIL("unknown device '", name, "': use \"cpu\", \"cuda\" or \"cuda:N\" (N a GPU's index)");
}

void warn(const std::string& text) {
  if (PyErr_WarnEx(PyExc_UserWarning, text.c_str(), 1) != 0) throw nb::python_error();
}

bool python_exiting() {
#if PY_VERSION_HEX >= 0x030D0000
  return !Py_IsInitialized() || Py_IsFinalizing();
#else
  return !Py_IsInitialized() || _Py_IsFinalizing();
#endif
}

void park_if_python_exiting() {
  if (!python_exiting()) return;
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

namespace {

// A Python tuple of the shape's extents.
nb::typed<nb::tuple, int, nb::ellipsis> shape_tuple(const Tensor& t) {
  nb::list l;
  for (int64_t d : t.shape().dims()) l.append(d);
  return nb::typed<nb::tuple, int, nb::ellipsis>(nb::tuple(l));
}

// float(t) and int(t) of more than one element: ValueError, as torch and NumPy raise
// (kiln.Error is a RuntimeError).
void one_value(const char* what, const Tensor& t) {
  if (t.numel() != 1)
    throw nb::value_error((std::string(what) + ": only a one-element tensor converts, this is " + t.description() +
                           "; take t.tolist() for its values").c_str());
}

// A tensor's values on the host, as Python reads them: an integer dtype's as int64 (exact past
// 2**53, where a double would round), a float dtype's as double (bfloat16 and float32 exactly).
struct HostValues {
  bool integer;
  std::vector<int64_t> ints;
  std::vector<double> reals;
  explicit HostValues(const Tensor& t) : integer(!is_floating(t.dtype())) {
    nb::gil_scoped_release unlocked;  // a GPU tensor's copy waits for its stream (callers hold the GIL: no Release())
    if (integer)
      ints = t.cpu().to(DType::i64).to_vector<int64_t>();
    else
      reals = t.to_vector<double>();
  }
  nb::object at(size_t i) const { return integer ? nb::object(nb::int_(ints[i])) : nb::object(nb::float_(reals[i])); }
};

// The number of a one-element tensor (item(), int()): torch's types, an int for an integer dtype.
nb::object python_number(const Tensor& t, const char* what) {
  one_value(what, t);
  return HostValues(t).at(0);
}

// Rows of dims[d..] from flat position *next on: nested lists as torch's tolist builds them.
nb::object nested_rows(const HostValues& v, const std::vector<int64_t>& dims, size_t d, size_t* next) {
  if (d == dims.size()) return v.at((*next)++);
  nb::list rows;
  for (int64_t i = 0; i < dims[d]; ++i) rows.append(nested_rows(v, dims, d + 1, next));
  return rows;
}

// torch's tolist: nested lists of the shape; a 0-d tensor gives its number.
nb::object nested_list(const Tensor& t) {
  const HostValues values(t);
  size_t next = 0;
  return nested_rows(values, t.shape().dims(), 0, &next);
}

}  // namespace

// The other operand of an arithmetic operator when it is not a kiln tensor: a number
// (Python's, NumPy's scalars and 0-d arrays, a 0-d torch tensor) as a float; nullopt for
// what Python should offer the other operand (NotImplemented). An array (NumPy's, torch's) is
// a TypeError naming the converter, in either order: torch converts an ndarray on its right
// silently (a copy, float64 arithmetic) and fails with it on the left; kiln has no float64,
// and its converter, kiln.from_dlpack, shares memory, so the conversion is the caller's.
std::optional<double> scalar_operand(nb::handle other, const char* symbol, bool reflected) {
  double s = 0;
  const bool number = PyFloat_Check(other.ptr()) || PyLong_Check(other.ptr());
  if (!number && (nb::hasattr(other, "__dlpack__") || nb::hasattr(other, "__array_interface__") ||
                  nb::hasattr(other, "__array__"))) {
    int64_t ndim = -1;
    if (!nb::try_cast(nb::getattr(other, "ndim", nb::none()), ndim) || ndim != 0) {
      const nb::handle t = other.type();  // "numpy.ndarray", "torch.Tensor"
      const std::string type =
          std::string(nb::str(t.attr("__module__")).c_str()) + "." + nb::str(t.attr("__qualname__")).c_str();
      const std::string operands = reflected ? "'" + type + "' and 'kiln.Tensor'" : "'kiln.Tensor' and '" + type + "'";
      throw nb::type_error(("unsupported operand types for " + std::string(symbol) + ": " + operands +
                            "; kiln does not convert arrays implicitly: convert it with kiln.from_dlpack(array) "
                            "(shares its memory; kiln takes float32, bfloat16, int32, int64 and uint8: convert a "
                            "float64 one first, NumPy's a.astype(np.float32), torch's t.float())").c_str());
    }
  }
  return nb::try_cast(other, s) ? std::optional(s) : std::nullopt;
}

// An int (Python's, or NumPy's integer scalars) beside an int32 or int64 tensor, as a 0-d tensor
// of its dtype: exact past 2^24, where the float path would round it; one the dtype cannot hold
// raises (torch 1.13 wraps it). nullopt for any other pair, a float number included.
std::optional<Tensor> integer_number(const Tensor& a, nb::handle other, const char* symbol) {
  if (!a.defined() || (a.dtype() != DType::i32 && a.dtype() != DType::i64)) return std::nullopt;
  PyObject* o = other.ptr();
  if (PyFloat_Check(o) || !PyIndex_Check(o)) return std::nullopt;
  int64_t ndim = 0;  // NumPy's integer scalars and 0-d arrays count; a larger array is scalar_operand's error
  if (nb::hasattr(other, "ndim") && (!nb::try_cast(nb::getattr(other, "ndim"), ndim) || ndim != 0)) return std::nullopt;
  const nb::object index = nb::steal(PyNumber_Index(o));
  if (!index.is_valid()) {  // a 0-d float array or tensor has __index__ too, which refuses: a number after all
    if (!PyErr_ExceptionMatches(PyExc_TypeError)) throw nb::python_error();
    PyErr_Clear();
    return std::nullopt;
  }
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (v == -1 && PyErr_Occurred()) throw nb::python_error();
  const bool fits = overflow == 0 && (a.dtype() == DType::i64 || (v >= INT32_MIN && v <= INT32_MAX));
  if (!fits && std::string_view(symbol) == "/") {  // division is float32's: any int goes, as torch's
    if (overflow != 0) return std::nullopt;          // past int64: the float path's number
    return Tensor::from_vector(std::vector<int64_t>{v}, Shape{}).to(a.device());
  }
  if (!fits) {
    PyObject* text = PyObject_Str(index.ptr());
    if (text == nullptr) throw nb::python_error();
    KILN_FAIL(symbol, ": ", nb::steal<nb::str>(text).c_str(), " does not fit the dtype of ", a.description(),
              a.dtype() == DType::i32 ? "; widen it with astype(\"int64\")" : "");
  }
  return Tensor::from_vector(std::vector<int64_t>{v}, Shape{}).to(a.dtype()).to(a.device());
}

// A number as float32, rounded once: an int within int64 from the integer itself (through a double,
// one past 2^53 would round twice), anything else from the double s it reads as.
float as_float(nb::handle number, double s) {
  // NumPy's and torch's integers too; a 0-d float array's __index__ refuses: its double
  const std::optional<nb::object> index = PyFloat_Check(number.ptr()) ? std::nullopt : index_of(number);
  if (!index) return static_cast<float>(s);
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(index->ptr(), &overflow);
  if (v == -1 && PyErr_Occurred()) throw nb::python_error();
  return overflow == 0 ? static_cast<float>(v) : static_cast<float>(s);
}

// Whether h is an integer operand: an int32/int64 tensor, or a number whose __index__ gives an int
// (not a float, nor a 0-d float array, whose __index__ refuses).
bool integral_operand(nb::handle h) {
  if (nb::isinstance<Tensor>(h)) {
    const Tensor& t = nb::cast<const Tensor&>(h);
    return t.defined() && !is_floating(t.dtype());
  }
  return is_index_integer(h);
}

// b times alpha for kiln.add(a, b, alpha=) and Tensor.add_: a float alpha between integers refused,
// as torch's; b itself where alpha is None.
nb::object scaled_operand(const char* name, nb::handle a, nb::handle b, nb::handle alpha) {
  nb::object scaled = nb::borrow(b);
  if (alpha.is_valid() && !alpha.is_none()) {
    int64_t ndim = 0;  // a number: Python's, or a NumPy scalar (torch: "alpha must be Number")
    if (nb::isinstance<Tensor>(alpha) ||
        (nb::hasattr(alpha, "ndim") && (!nb::try_cast(nb::getattr(alpha, "ndim"), ndim) || ndim != 0)) ||
        !(PyFloat_Check(alpha.ptr()) || PyIndex_Check(alpha.ptr()) || nb::hasattr(alpha, "__float__")))
      throw nb::type_error((std::string(name) + ": alpha must be a number, not " + python_type(alpha)).c_str());
    const bool integers = integral_operand(a) && integral_operand(b);
    if (!integral_operand(alpha) && integers) {
      PyObject* text = PyObject_Repr(alpha.ptr());
      if (text == nullptr) throw nb::python_error();
      KILN_FAIL(name, ": alpha must be an int between integer operands (torch's rule), got ",
                nb::steal<nb::str>(text).c_str());
    }
    // an integer b scaled for a float result is scaled as a float (in its own dtype it would wrap)
    if (!integers && nb::isinstance<Tensor>(b) && integral_operand(b)) {
      const bool a_float = nb::isinstance<Tensor>(a) && is_floating(nb::cast<const Tensor&>(a).dtype());
      scaled = nb::cast(nb::cast<const Tensor&>(b).to(a_float ? nb::cast<const Tensor&>(a).dtype() : DType::f32));
    }
    scaled = nb::steal(PyNumber_Multiply(scaled.ptr(), alpha.ptr()));
    if (!scaled.is_valid()) throw nb::python_error();
  }
  return scaled;
}

namespace {

// Tensor.`name`(other) for a non-tensor other (the tensor-tensor overload comes first): `op`
// of the tensor and the number, or NotImplemented, or scalar_operand's TypeError. An int beside
// an integer tensor goes exactly through `exact`, the operator on (a, the int as a 0-d tensor); a
// float beside one is torch's promotion, the tensor as float32.
template <typename Op, typename Exact>
void bind_scalar_operator(nb::class_<Tensor>& c, const char* name, const char* symbol, bool reflected, Op op,
                          Exact exact) {
  c.def(name, [symbol, reflected, op, exact](const Tensor& a, nb::handle other) -> nb::object {
          Tensor y;
          if (const std::optional<Tensor> b = integer_number(a, other, symbol)) {
            nb::gil_scoped_release release;
            y = exact(a, *b);
            return nb::cast(std::move(y));
          }
          const std::optional<double> s = scalar_operand(other, symbol, reflected);
          if (!s) return nb::not_implemented();
          const float f = as_float(other, *s);
          {
            nb::gil_scoped_release release;
            const bool integer = a.defined() && (a.dtype() == DType::i32 || a.dtype() == DType::i64);
            y = op(integer ? a.to(DType::f32) : a, f);
          }
          return nb::cast(std::move(y));
        },
        nb::is_operator(), nb::sig((std::string("def ") + name + "(self, arg: float, /) -> Tensor").c_str()));
}

using Compare = Tensor (*)(const Tensor&, const Tensor&);
using CompareNumber = Tensor (*)(const Tensor&, double);

// A Python number as a comparison takes it: an integer (an int or a bool, or NumPy's and torch's
// 0-d integer scalars through __index__) as an int64, one past int64 as +-inf (past every integer
// tensor's range, so the same answers), any other number as a double; nullopt for what is no
// number, and scalar_operand's TypeError for an array of one or more dimensions (checked first:
// torch's one-element tensors have an __index__ too).
std::optional<std::variant<int64_t, double>> comparison_number(nb::handle other, const char* symbol) {
  const std::optional<double> s = scalar_operand(other, symbol, false);
  if (!s) return std::nullopt;
  PyObject* o = other.ptr();
  if (!PyFloat_Check(o) && PyIndex_Check(o)) {
    const nb::object index = nb::steal(PyNumber_Index(o));
    if (index.is_valid()) {
      int overflow = 0;
      const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
      if (overflow != 0) return overflow > 0 ? std::numeric_limits<double>::infinity()
                                             : -std::numeric_limits<double>::infinity();
      if (!(v == -1 && PyErr_Occurred())) return static_cast<int64_t>(v);
    }
    if (!PyErr_ExceptionMatches(PyExc_TypeError)) throw nb::python_error();
    PyErr_Clear();  // no integer after all (a float tensor's __index__): the number above
  }
  return *s;
}

// a compared with a number: an integer tensor meets an integer as a 0-d tensor of its dtype
// (exact at any magnitude, no widening copy of an int32 a), or core's constant answer when the
// integer is past int32's range for an int32 a; everything else through core's double overload.
Tensor compare_number(Compare fn, CompareNumber fn_n, const Tensor& a, const std::variant<int64_t, double>& b) {
  const int64_t* i = std::get_if<int64_t>(&b);
  if (i == nullptr) return fn_n(a, std::get<double>(b));
  // A float tensor meets an int rounded once, to float32 (through a double, one past 2^53 would
  // round twice: torch rounds int64 to float directly).
  if (a.defined() && is_floating(a.dtype())) return fn_n(a, static_cast<double>(static_cast<float>(*i)));
  const bool past_int32 = *i < std::numeric_limits<int32_t>::min() || *i > std::numeric_limits<int32_t>::max();
  if (!a.defined() || is_floating(a.dtype()) || (a.dtype() == DType::i32 && past_int32))
    return fn_n(a, static_cast<double>(*i));
  return fn(a, Tensor::from_vector(std::vector<int64_t>{*i}, Shape{}).to(a.dtype()).to(a.device()));
}

// A comparison's number overload, Tensor.__gt__ and the like (operator: NotImplemented for what is
// no number) and kiln.gt (a TypeError), both through compare_number.
nb::object compare_with(Compare fn, CompareNumber fn_n, const Tensor& a, nb::handle other, const char* symbol,
                        bool op) {
  const std::optional<std::variant<int64_t, double>> b = comparison_number(other, symbol);
  if (!b) {
    if (op) return nb::not_implemented();
    throw nb::type_error((std::string(symbol) + ": b must be a kiln.Tensor or a number").c_str());
  }
  Tensor y;
  {
    nb::gil_scoped_release release;
    y = compare_number(fn, fn_n, a, *b);
  }
  return nb::cast(std::move(y));
}

// x.to(device), x.to(dtype), x.to(device, dtype), x.to(other) (other's device and dtype) or the
// keywords device= and dtype=, as torch's: a string is a dtype where it names one (float32, ...),
// else a device. The tensor itself where nothing changes; the device moves first.
Tensor tensor_to(const Tensor& t, nb::args args, nb::kwargs kwargs) {
  std::optional<Device> device;
  std::optional<DType> dtype;
  const auto take = [&](nb::handle h, bool as_device, bool as_dtype) {
    if (nb::isinstance<Tensor>(h) && as_device && as_dtype) {
      if (device || dtype) throw nb::type_error("Tensor.to takes one device and one dtype: a tensor gives both");
      const Tensor& other = nb::cast<const Tensor&>(h);
      device = other.device();
      dtype = other.dtype();
      return;
    }
    if ((as_dtype && !as_device && dtype) || (as_device && !as_dtype && device))
      throw nb::type_error("Tensor.to takes one device and one dtype");
    std::string name;
    if (!nb::try_cast(h, name))
      throw nb::type_error(("Tensor.to takes a device (\"cuda\"), a dtype (\"bfloat16\"), both, or a tensor, not " +
                            python_type(h)).c_str());
    const bool names_dtype = std::any_of(std::begin(kDTypes), std::end(kDTypes),
                                         [&](DType d) { return name == dtype_name(d); });
    KILN_CHECK(names_dtype || !as_dtype || !as_device || name.rfind("cpu", 0) == 0 || name.rfind("cuda", 0) == 0,
               "to: '", name, "' names no device (\"cpu\", \"cuda\", \"cuda:N\") and no dtype (float32, bfloat16, ",
               "int32, int64, uint8)");
    if ((names_dtype && as_dtype && dtype) || (!(names_dtype && as_dtype) && as_device && device))
      throw nb::type_error(("Tensor.to takes one device and one dtype: " + name + " is a second").c_str());
    if (names_dtype && as_dtype) dtype = dtype_from_name(name);
    else if (as_device) device = device_from_name(name);
    else dtype = dtype_from_name(name);  // dtype= with no dtype's name: its error lists the names
  };
  if (args.size() > 2) throw nb::type_error("Tensor.to takes at most a device and a dtype");
  for (nb::handle h : args) take(h, true, true);
  for (const auto& [key, value] : kwargs) {
    const std::string name = nb::cast<std::string>(key);
    if (name == "non_blocking") continue;  // torch's hint; kiln's copies finish before to() returns
    if (name != "device" && name != "dtype")
      throw nb::type_error(("Tensor.to() got an unexpected keyword argument '" + name + "'").c_str());
    if (!value.is_none()) take(value, name == "device", name == "dtype");
  }
  nb::gil_scoped_release release;
  Tensor y = device ? t.to(*device) : t;
  return dtype ? y.to(*dtype) : y;
}

// What a tensor is, read without its values: shape, dtype, device, ndim, is_cuda, nbytes; and the
// transposed copies T and mT.
void bind_tensor_properties(nb::class_<Tensor>& c) {
  c.def_prop_ro("shape", &shape_tuple, "The extents, a tuple of ints.")
      .def_prop_ro("dtype", [](const Tensor& t) { return std::string(dtype_name(t.dtype())); },
                   "The element type's name: float32, bfloat16, int32, int64 or uint8.")
      .def_prop_ro("device", [](const Tensor& t) { return t.device().str(); }, "\"cpu\" or \"cuda:N\".")
      .def_prop_ro("ndim", &Tensor::rank, "The number of dimensions.")
      .def_prop_ro("is_cuda", [](const Tensor& t) { return t.device().is_cuda(); }, "Whether it lives on a GPU.")
      .def_prop_ro("nbytes", [](const Tensor& t) { return t.numel() * static_cast<int64_t>(dtype_size(t.dtype())); },
                   "The bytes its elements take.")
      .def_prop_ro("T", [](const Tensor& t) {
             std::vector<int64_t> reversed(static_cast<size_t>(t.rank()));
             for (int64_t d = 0; d < t.rank(); ++d) reversed[static_cast<size_t>(d)] = t.rank() - 1 - d;
             nb::gil_scoped_release release;
             return permuted_view(t, reversed, kiln::permute(t, reversed));
           }, "The dimensions in reverse order (torch's .T; a copy, as permute).")
      .def_prop_ro("mT", [](const Tensor& t) {
             if (t.rank() < 2)
               throw nb::value_error(("mT swaps the last two dimensions: " + t.description() + " has fewer than two")
                                         .c_str());
             nb::gil_scoped_release release;
             return transposed_view(t, -2, -1);
           }, "The last two dimensions swapped (torch's .mT; a copy).")
      .def_prop_ro("data", &Tensor::detach,
                   "torch's x.data: x's memory without autograd history (x.detach()); writes into it reach x.");
}

// The autograd state: requires_grad, grad (settable, as torch's), is_leaf, zero_grad, backward.
void bind_tensor_autograd(nb::class_<Tensor>& c) {
  c.def_prop_rw("requires_grad", &Tensor::requires_grad,
                   [](Tensor& t, bool r) { t.set_requires_grad(r); },
                   "Whether backward() computes a gradient for this tensor (settable on leaves).")
      .def_prop_rw("grad", [](const Tensor& t) -> std::optional<Tensor> {
                     Tensor g = t.grad();
                     return g.defined() ? std::optional<Tensor>(g) : std::nullopt;
                   },
                   [](Tensor& t, std::optional<Tensor> g) {
                     if (!g) return t.zero_grad();  // torch's p.grad = None
                     KILN_CHECK(g->device() == t.device(), "Tensor.grad: a gradient on ", g->device().str(),
                                " for a tensor on ", t.device().str(), "; move it first (.to(device))");
                     t.set_grad(g->detach());  // its values, not its history
                   }, nb::arg("grad").none(),
                   "The gradient accumulated by backward(), or None; settable, as torch's: None forgets it, a "
                   "tensor of the same shape, dtype and device becomes it (shared, not copied).")
      .def_prop_ro("is_leaf", &Tensor::is_leaf, "True when no recorded op made this tensor.")
      .def("zero_grad", &Tensor::zero_grad, "Forgets the accumulated gradient.")
      .def("backward",
           [](const Tensor& t, std::optional<Tensor> seed, bool retain_graph) {
             t.backward(seed ? *seed : Tensor(), retain_graph);
           },
           arg("gradient") = nb::none(), arg("retain_graph") = false, Release(),
           "Backpropagates from this tensor (a non-scalar needs `gradient`); frees the graph unless retain_graph.");
}

void bind_tensor_class(nb::module_& m) {
  nb::class_<Tensor> c(m, "Tensor",
                     "A kiln tensor: contiguous, row-major (images NHWC), on one device, with autograd state. "
                     "Shares memory with NumPy and PyTorch through DLPack (kiln.from_dlpack, torch.from_dlpack).");
  // torch.tensor(data)'s users reach for kiln.Tensor(data): say where tensors come from.
  c.def("__init__", [](Tensor*, nb::args, nb::kwargs) {
             throw nb::type_error("kiln.Tensor is not made directly: kiln.tensor(data) copies numbers, lists or an "
                                  "array, kiln.from_dlpack(array) shares a NumPy array's or a torch tensor's memory, "
                                  "and kiln.zeros/ones/full/uniform/normal make new ones");
           });
  bind_tensor_properties(c);
  bind_tensor_autograd(c);
  c.def("numel", &Tensor::numel, "The number of elements.")
      .def("__len__", [](const Tensor& t) {
             if (t.rank() == 0) throw nb::type_error("len() of a 0-d tensor (it has one value: item())");
             return t.dim(0);
           })
      // Truth and numbers of one-element tensors, as torch's: `if loss:` and float(loss) read the
      // value; a larger tensor's truth is ambiguous, not its length's.
      .def("__bool__", [](const Tensor& t) {
             if (t.numel() != 1)
               throw nb::value_error(("the truth value of a tensor of " + std::to_string(t.numel()) +
                                      " elements is ambiguous; compare its item() or tolist()").c_str());
             return t.item() != 0;
           })
      .def("__float__", [](const Tensor& t) {
             one_value("float()", t);
             return t.item();
           })
      // Integers exactly (Tensor::item goes through a double: 2**63 - 1 came back as -2**63); a
      // float as Python's int(float) does: NaN and infinities raise, large values stay exact.
      .def("__int__", [](const Tensor& t) -> nb::object {
             one_value("int()", t);
             if (!is_floating(t.dtype())) return HostValues(t).at(0);
             PyObject* i = PyLong_FromDouble(t.item());
             if (i == nullptr) throw nb::python_error();
             return nb::steal(i);
           })
      .def_prop_ro("data_ptr", [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw_data()); },
                   "The address of the first element (to check that memory is shared).")
      .def("detach", &Tensor::detach, "Same memory, no autograd history.")
      .def("clone", &kiln::copy_of, Release(),
           "A copy in new memory that gradients flow through, as torch's clone (x.detach().clone() for one outside "
           "the graph).")
      .def("to", &tensor_to,
           nb::sig("def to(self, *args: str | Tensor, device: str | None = None, dtype: str | None = None, "
                   "non_blocking: bool = False) -> Tensor"),
           "torch's to: x.to(\"cuda:0\"), x.to(\"bfloat16\"), x.to(\"cuda\", \"bfloat16\"), x.to(other) (its "
           "device and dtype), or device= and dtype= (non_blocking= is accepted: kiln's copy is done when to() "
           "returns); a copy where something changes (the dtype as astype converts), this tensor otherwise.")
      .def("astype", [](const Tensor& t, const std::string& dtype) { return t.to(dtype_from_name(dtype)); },
           arg("dtype"), Release(),
           "A copy converted to `dtype`; this tensor when it already has it. A float to an integer type truncates "
           "toward zero; NaN, infinities and values outside the type's range give its minimum (int32 -2**31, int64 "
           "-2**63), and uint8 takes the low byte of the int32 result (NaN and inf give 0, 300.7 gives 44, -1.5 "
           "gives 255). An integer to a narrower one wraps modulo 2**bits. The same on CPU and GPU "
           "(kernels/common/convert.h); torch leaves the float cases undefined.")
      .def("item", [](const Tensor& t) { return python_number(t, "item()"); },
           "The value of a one-element tensor: an int for an integer dtype (exact), else a float (torch's item).")
      .def("tolist", &nested_list,
           "The values as nested lists of the shape (a 0-d tensor gives its number): ints for integer dtypes, "
           "exact, floats otherwise (torch's tolist).")
      .def("__repr__", [](const Tensor& t) {  // str()'s first line, without reading the values
             return "kiln.Tensor(" + t.description() + (t.requires_grad() ? ", requires_grad" : "") +
                    (t.grad_fn() ? ", grad_fn=" + t.grad_fn()->name() : std::string()) + ")";
           })
      .def("__str__", [](const Tensor& t) { return t.str(); })
      .def(nb::self + nb::self, Release())
      .def(nb::self - nb::self, Release())
      .def(nb::self * nb::self, Release())
      .def(nb::self / nb::self, Release())
      .def("__neg__", [](const Tensor& a) { return kiln::neg(a); }, Release())
      .def("__matmul__", [](const Tensor& a, const Tensor& b) { return matmul(a, b); }, nb::is_operator(), Release())
      .def("__abs__", [](const Tensor& a) { return kiln::abs(a); }, Release());
  using Pair = Tensor (*)(const Tensor&, const Tensor&);
  const Pair add2 = &kiln::add, sub2 = &kiln::sub, mul2 = &kiln::mul, div2 = &kiln::div, pow2 = &kiln::pow;
  const auto rsub2 = [](const Tensor& a, const Tensor& b) { return kiln::sub(b, a); };
  bind_scalar_operator(c, "__add__", "+", false, [](const Tensor& a, float s) { return add(a, s); }, add2);
  bind_scalar_operator(c, "__sub__", "-", false, [](const Tensor& a, float s) { return sub(a, s); }, sub2);
  bind_scalar_operator(c, "__mul__", "*", false, [](const Tensor& a, float s) { return mul(a, s); }, mul2);
  bind_scalar_operator(c, "__truediv__", "/", false, [](const Tensor& a, float s) { return div(a, s); }, div2);
  bind_scalar_operator(c, "__radd__", "+", true, [](const Tensor& a, float s) { return add(a, s); }, add2);
  bind_scalar_operator(c, "__rmul__", "*", true, [](const Tensor& a, float s) { return mul(a, s); }, mul2);
  // s - a and s / a in one pass each (core's scalar-on-the-left ops); a bf16 a is computed in
  // float32 with s as given and rounded once, as a - s and a / s are. torch 1.13 rounds s to
  // bfloat16 first for all four (measured: bf16 3.03125 * 2.0078125 is 6.0625 there, kiln's
  // 6.09375 is the product rounded once), so the two may differ by a bfloat16 ulp.
  bind_scalar_operator(c, "__rsub__", "-", true, [](const Tensor& a, float s) { return sub(s, a); }, rsub2);
  bind_scalar_operator(c, "__rtruediv__", "/", true, [](const Tensor& a, float s) { return div(s, a); },
                       [](const Tensor& a, const Tensor& b) { return kiln::div(b, a); });
  c.def("__pow__", pow2, nb::is_operator(), Release());
  bind_scalar_operator(c, "__pow__", "**", false, [](const Tensor& a, float p) { return kiln::pow(a, p); }, pow2);
  bind_scalar_operator(c, "__rpow__", "**", true, [](const Tensor& a, float base) { return kiln::pow(base, a); },
                       [](const Tensor& a, const Tensor& b) { return kiln::pow(b, a); });
  // Comparisons give 0/1 masks in the tensor's dtype (float32 for integer tensors), as kiln has
  // no bool tensors (core/ops.h); s < t reaches t.__gt__(s) through Python's reflection. == and !=
  // stay Python's identity: each return from C++ is a new wrapper, so elementwise == would make
  // `t in list` and dict lookups of a model's own parameters raise; kiln.eq and kiln.ne compare
  // elements.
  const std::tuple<const char*, const char*, Compare, CompareNumber> comparisons[] = {
      {"__gt__", ">", &kiln::gt, &kiln::gt}, {"__ge__", ">=", &kiln::ge, &kiln::ge},
      {"__lt__", "<", &kiln::lt, &kiln::lt}, {"__le__", "<=", &kiln::le, &kiln::le}};
  for (const auto& [name, symbol, fn, fn_n] : comparisons) {
    c.def(name, fn, nb::is_operator(), Release());
    c.def(name, [symbol, fn, fn_n](const Tensor& a, nb::handle other) {
            return compare_with(fn, fn_n, a, other, symbol, true);
          }, nb::is_operator(), nb::sig((std::string("def ") + name + "(self, arg: float, /) -> Tensor").c_str()));
  }
}


// kiln.no_grad() and kiln.enable_grad(): context managers that turn recording off or on
// (GradModeGuard). One object may be entered again inside itself (`with ng: with ng:`): each
// enter pushes a guard, each exit pops the newest, so grad mode comes back as it was at each level.
template <bool Enabled>
struct GradMode {
  GradMode() = default;
  GradMode(const GradMode&) = delete;  // std::vector's copy is declared for move-only elements too
  GradMode& operator=(const GradMode&) = delete;
  std::vector<std::unique_ptr<GradModeGuard>> guards;
};

// Called on a function, no_grad() and enable_grad() decorate it as torch's do. The wrapper is
// a Python function, which nanobind's are not: functools.wraps keeps the name, docstring and
// signature, and it binds as a method. Each call enters a fresh object of the mode, so a
// decorated function is reentrant and runs on several threads at once. A generator function
// is refused: its body runs after the call has returned, outside the mode.
constexpr const char kGradModeDecorator[] = R"py(
import functools, inspect
def grad_mode_decorator(mode, fn):
    name = "kiln." + mode.__name__ + "()"
    if inspect.isgeneratorfunction(fn) or inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(f"{name} cannot decorate {fn.__qualname__}, a generator or coroutine function: its body "
                        f"runs after the call has returned, outside the mode; write `with {name}:` inside it")
    @functools.wraps(fn)
    def in_mode(*args, **kwargs):
        with mode():
            return fn(*args, **kwargs)
    return in_mode
)py";

// Binds GradMode<Enabled> as kiln.`name`; `decorate` is kGradModeDecorator's function.
template <bool Enabled>
void bind_grad_mode(nb::module_& m, const char* name, const char* doc, const nb::object& decorate) {
  using Mode = GradMode<Enabled>;
  nb::class_<Mode>(m, name, doc)
      .def(nb::init<>())
      .def("__enter__", [](Mode& g) { g.guards.push_back(std::make_unique<GradModeGuard>(Enabled)); })
      .def("__exit__", [](Mode& g, nb::args) {
        if (!g.guards.empty()) g.guards.pop_back();
      })
      .def("__call__", [decorate](const Mode&, nb::callable fn) { return decorate(nb::type<Mode>(), fn); },
           arg("fn"), "As a decorator: the function runs in this mode at every call (as torch's).")
      // "kiln.no_grad()", or while its `with` runs "kiln.no_grad(entered)" ("entered 2 times" inside itself).
      .def("__repr__", [name](const Mode& g) {
        const size_t n = g.guards.size();
        return std::string("kiln.") + name + "(" +
               (n == 0 ? "" : n == 1 ? "entered" : "entered " + std::to_string(n) + " times") + ")";
      });
}

void bind_grad_modes(nb::module_& m) {
  nb::dict scope;
  scope["__builtins__"] = nb::handle(PyEval_GetBuiltins());
  nb::exec(kGradModeDecorator, scope);
  const nb::object decorate = scope["grad_mode_decorator"];
  bind_grad_mode<false>(m, "no_grad", "Context manager or decorator: ops inside record no autograd graph "
                        "(inference).", decorate);
  bind_grad_mode<true>(m, "enable_grad", "Context manager or decorator: ops inside record autograd graphs, also "
                       "within no_grad (a part that trains in a frozen forward).", decorate);
  m.def("grad_enabled", &grad_enabled, "Whether ops record autograd graphs on this thread.");
}

// An int, or a pair (h, w) of ints, as torch's conv and pooling arguments take: (h, w).
std::pair<int64_t, int64_t> two_ints(const nb::handle& v, const char* what) {
  // One int as int64; beyond its range a kiln.Error naming the argument (nanobind: bad_cast).
  const auto int64 = [&](const nb::handle& h) {
    int64_t n = 0;
    KILN_CHECK(nb::try_cast(nb::int_(h), n), what, " ", nb::str(nb::repr(h)).c_str(), " does not fit int64");
    return n;
  };
  if (is_index_integer(v)) {
    const int64_t n = int64(v);
    return {n, n};
  }
  if ((nb::isinstance<nb::tuple>(v) || nb::isinstance<nb::list>(v)) && nb::len(v) == 2 &&
      is_index_integer(v[0]) && is_index_integer(v[1]))
    return {int64(v[0]), int64(v[1])};
  KILN_FAIL(what, " must be an int or a pair (h, w) of ints, got ", nb::str(nb::repr(v)).c_str());
}

void bind_nn_ops(nb::module_& m) {
  m.def("conv2d", [](const Tensor& x, const Tensor& w, std::optional<Tensor> b, nb::handle stride, nb::handle padding) {
          const auto [sh, sw] = two_ints(stride, "conv2d: stride");
          const auto [ph, pw] = two_ints(padding, "conv2d: padding");
          nb::gil_scoped_release release;
          return conv2d(x, w, b ? *b : Tensor(), Conv2dParams{sh, sw, ph, pw});
        }, arg("x"), arg("weight"), arg("bias") = nb::none(), arg("stride") = 1, arg("padding") = 0,
        "Convolution. x: [N, H, W, C] (NHWC), weight: [O, KH, KW, C] (OHWI), bias: [O] -> [N, OH, OW, O]. "
        "stride and padding: an int or (h, w), as in torch.");
  m.def("max_pool2d", [](const Tensor& x, nb::handle kernel, nb::handle stride, nb::handle padding) {
          const auto [kh, kw] = two_ints(kernel, "max_pool2d: kernel");
          const auto [sh, sw] = stride.is_none() ? std::pair{kh, kw} : two_ints(stride, "max_pool2d: stride");
          const auto [ph, pw] = two_ints(padding, "max_pool2d: padding");
          nb::gil_scoped_release release;
          return max_pool2d(x, Pool2dParams{kh, kw, sh, sw, ph, pw});
        }, arg("x"), arg("kernel") = 2, arg("stride") = nb::none(), arg("padding") = 0,
        "Max pooling of NHWC x. kernel, stride and padding: an int or (h, w); stride defaults to the kernel, "
        "as in torch.");
  m.def("adaptive_avg_pool2d", &adaptive_avg_pool2d, arg("x"), arg("out_h"), arg("out_w"), Release(),
        "Average pooling of NHWC x to an out_h x out_w grid (torch.nn.AdaptiveAvgPool2d).");
  m.def("embedding", &kiln::embedding, arg("weight"), arg("indices"), Release(),
        "The rows of weight [rows, features] (float32) at int32/int64 indices of any shape -> [..., features] "
        "(torch.nn.functional.embedding(indices, weight): note the order). Gradient to weight.");
  m.def("layer_norm", [](const Tensor& x, std::optional<Tensor> w, std::optional<Tensor> b, float eps) {
          return layer_norm(x, w ? *w : Tensor(), b ? *b : Tensor(), eps);
        }, arg("x"), arg("weight") = nb::none(), arg("bias") = nb::none(), arg("eps") = 1e-5f, Release(),
        "Normalises x over its last dimension, then * weight + bias ([C] each, or None): "
        "torch.nn.functional.layer_norm(x, (C,), weight, bias, eps). float32.");
  m.def("linear", [](const Tensor& x, const Tensor& w, std::optional<Tensor> b) { return linear(x, w, b ? *b : Tensor()); },
        arg("x"), arg("weight"), arg("bias") = nb::none(), Release(), "x @ weight.T + bias. x: [N, in], weight: [out, in].");
  m.def("relu", &relu, arg("x"), Release(), "max(x, 0); NaN maps to 0 (torch.relu keeps it; core/ops.h).");
  // torch's p, the probability of zeroing (core's dropout takes the keep probability). keep_prob= is
  // the name this took before, as a keyword only: a positional second argument is torch's p.
  m.def("dropout", [](const Tensor& x, std::optional<double> p, bool training, std::optional<double> keep_prob) {
          KILN_CHECK(!(p && keep_prob), "dropout: give p (torch's: the probability of zeroing) or keep_prob, not both");
          KILN_CHECK(!keep_prob || (*keep_prob > 0 && *keep_prob <= 1), "dropout: keep_prob must be in (0, 1], got ",
                     *keep_prob);
          KILN_CHECK(keep_prob || (p.value_or(0.5) >= 0 && p.value_or(0.5) <= 1), "dropout: p must be in [0, 1], ",
                     "got ", p.value_or(0.5), " (the probability of zeroing an element, as torch's)");
          const double keep = keep_prob ? *keep_prob : 1.0 - p.value_or(0.5);
          if (keep == 0) return training ? kiln::mul(x, 0.0f) : x;  // torch's p = 1: x * 0, no mask to scale by
          return dropout(x, static_cast<float>(keep), training);
        }, arg("x"), arg("p") = nb::none(), arg("training") = true, nb::kw_only(), arg("keep_prob") = nb::none(),
        Release(),
        "torch.nn.functional.dropout: in training each element zeroed with probability p (default 0.5), the rest "
        "scaled by 1 / (1 - p), the mask from the default generator; x itself otherwise.");
  m.def("flatten", [](const Tensor& x, int64_t start, int64_t end) {
          return own_where_torch_copies(x, kiln::flatten(x, start, end));
        }, arg("x"),
        arg("start_dim") = 0, arg("end_dim") = -1, Release(),
        "torch.flatten: dimensions start_dim to end_dim joined into one, the same memory; flatten(x, 1) is "
        "[N, ...] -> [N, prod(...)] (kiln.Flatten's, torch.nn.Flatten's).");
  m.def("slice", &kiln::slice, arg("x"), arg("begin"), arg("end"), Release(), "Rows [begin, end) of dimension 0, same memory.");
  m.def("softmax_cross_entropy", &softmax_cross_entropy, arg("logits"), arg("labels"), Release(),
        "Mean over the batch of -log softmax(logits)[label]. logits: [N, K] float32, labels: [N] int32/int64.");
  m.def("softmax", [](const Tensor& x, int64_t dim) { return softmax(x, dim); }, arg("x"), arg("dim") = -1,
        Release(),
        "Softmax over dimension dim (the last by default; another runs in place on the CPU, permuted last and back "
        "on a GPU).");
  m.def("log_softmax", [](const Tensor& x, int64_t dim) { return log_softmax(x, dim); }, arg("x"),
        arg("dim") = -1, Release(), "Log-softmax over dimension dim, as softmax.");
}

// kiln.add and the like, torch's function forms: the operators' meaning (a tensor or a number on
// either side, an int beside an integer tensor exact, promotion as torch's), through Python's own
// operator dispatch so that the two cannot drift apart. alpha scales b first (torch's a + alpha * b);
// a float alpha between integers is refused, as torch's.
nb::object arithmetic(const char* name, binaryfunc op, nb::handle a, nb::handle b, nb::handle alpha) {
  if (!nb::isinstance<Tensor>(a) && !nb::isinstance<Tensor>(b))
    throw nb::type_error((std::string("kiln.") + name + ": a or b must be a kiln.Tensor (the other may be a number)")
                             .c_str());
  const nb::object scaled = scaled_operand(name, a, b, alpha);
  nb::object out = nb::steal(op(a.ptr(), scaled.ptr()));
  if (!out.is_valid()) throw nb::python_error();
  return out;
}

// The elementwise math with gradients, and torch's shorthands composed of it.
void bind_elementwise_ops(nb::module_& m) {
  // Unary math (core/ops.h): fp32 or bf16, any shape, with gradients.
  using Unary = Tensor (*)(const Tensor&);
  m.def("exp", static_cast<Unary>(&kiln::exp), arg("x"), Release(), "e ** x, elementwise.");
  m.def("log", static_cast<Unary>(&kiln::log), arg("x"), Release(), "Natural log, elementwise (log(0) = -inf).");
  m.def("sqrt", static_cast<Unary>(&kiln::sqrt), arg("x"), Release(), "Square root, elementwise.");
  m.def("tanh", static_cast<Unary>(&kiln::tanh), arg("x"), Release(), "tanh, elementwise.");
  m.def("sigmoid", &kiln::sigmoid, arg("x"), Release(), "1 / (1 + exp(-x)), elementwise (torch.sigmoid).");
  m.def("gelu", [](const Tensor& x, const std::string& approximate) {
          KILN_CHECK(approximate == "none" || approximate == "tanh", "gelu: approximate must be \"none\" or \"tanh\", ",
                     "got \"", approximate, "\"");
          return approximate == "tanh" ? kiln::gelu_tanh(x) : kiln::gelu(x);
        }, arg("x"), arg("approximate") = "none", Release(),
        "torch.nn.functional.gelu: x * Phi(x), the exact erf form, or approximate=\"tanh\": 0.5 x (1 + tanh(sqrt(2 / "
        "pi) (x + 0.044715 x^3))).");
  m.def("silu", &kiln::silu, arg("x"), Release(), "x * sigmoid(x) (torch.nn.functional.silu, swish).");
  m.def("abs", static_cast<Unary>(&kiln::abs), arg("x"), Release(), "|x|, elementwise; its gradient is 0 at 0.");
  m.def("softplus", static_cast<Tensor (*)(const Tensor&, float, float)>(&kiln::softplus), arg("x"),
        arg("beta") = 1.0f, arg("threshold") = 20.0f, Release(),
        "torch.nn.functional.softplus: log(1 + exp(beta x)) / beta, stable for any x, and x itself where beta x > "
        "threshold; gradient sigmoid(beta x).");
  // torch's shorthands and masks (core/ops.h), composed of the ops above.
  const std::tuple<const char*, Unary, const char*> composed[] = {
      {"square", &kiln::square, "x * x (torch.square; integers exactly)."},
      {"reciprocal", &kiln::reciprocal, "1 / x (torch.reciprocal; an integer x as float32)."},
      {"rsqrt", &kiln::rsqrt, "1 / sqrt(x) (torch.rsqrt)."},
      {"isnan", &kiln::isnan, "1 where x is NaN, else 0 (torch.isnan; a 0/1 mask, kiln has no bool)."},
      {"isinf", &kiln::isinf, "1 where x is +-inf, else 0 (torch.isinf)."},
      {"isfinite", &kiln::isfinite, "1 where x is neither NaN nor +-inf, else 0 (torch.isfinite)."}};
  for (const auto& [name, fn, doc] : composed) m.def(name, fn, arg("x"), Release(), doc);
  m.def("tril", &kiln::tril, arg("x"), arg("diagonal") = 0, Release(),
        "torch.tril: x with the elements above diagonal `diagonal` of its last two dimensions zeroed (j - i > "
        "diagonal); tril(ones([T, T])) is a causal mask.");
  m.def("triu", &kiln::triu, arg("x"), arg("diagonal") = 0, Release(),
        "torch.triu: x with the elements below diagonal `diagonal` zeroed (j - i < diagonal).");
  m.def("norm", &norm_over, arg("x"), arg("p") = 2.0, arg("dim") = nb::none(), arg("keepdim") = false, Release(),
        "torch.norm and torch.linalg.vector_norm: (sum |x|^p)^(1/p) over dim (None: every element), p > 0 or "
        "inf (the largest |x|), \"fro\" for 2; float32 or bfloat16; gradient 0 where the norm is 0, as torch's.");
  m.def("all", [](const Tensor& x, std::optional<Dims> dim, bool keepdim) {
          return truth_over(true, x, dim, keepdim);
        }, arg("x"), arg("dim") = nb::none(), arg("keepdim") = false, Release(),
        "torch.all: 1 where every element (over dim, or of all) is nonzero, else 0, a mask (kiln has no bool); NaN "
        "counts as nonzero, an empty extent as 1.");
  m.def("any", [](const Tensor& x, std::optional<Dims> dim, bool keepdim) {
          return truth_over(false, x, dim, keepdim);
        }, arg("x"), arg("dim") = nb::none(), arg("keepdim") = false, Release(),
        "torch.any: 1 where some element (over dim, or of all) is nonzero, else 0, as all.");
}

// torch's function forms of the arithmetic operators: kiln.add, sub, mul, div, pow.
void bind_arithmetic_ops(nb::module_& m) {
  // Shapes broadcast as in NumPy and torch (core/ops.h); a or b may be a number, as the operators'.
  m.def("add", [](nb::handle a, nb::handle b, nb::handle alpha) {
          return arithmetic("add", PyNumber_Add, a, b, alpha);
        }, arg("a"), arg("b"), nb::kw_only(), arg("alpha") = nb::none(),
        nb::sig("def add(a: Tensor | float, b: Tensor | float, *, alpha: float = 1) -> Tensor"),
        "a + alpha * b, broadcast (torch.add): either may be a number, as with +.");
  m.def("sub", [](nb::handle a, nb::handle b, nb::handle alpha) {
          return arithmetic("sub", PyNumber_Subtract, a, b, alpha);
        }, arg("a"), arg("b"), nb::kw_only(), arg("alpha") = nb::none(),
        nb::sig("def sub(a: Tensor | float, b: Tensor | float, *, alpha: float = 1) -> Tensor"),
        "a - alpha * b, broadcast (torch.sub): either may be a number, as with -.");
  m.def("mul", [](nb::handle a, nb::handle b) { return arithmetic("mul", PyNumber_Multiply, a, b, nb::handle()); },
        arg("a"), arg("b"), nb::sig("def mul(a: Tensor | float, b: Tensor | float) -> Tensor"),
        "a * b, broadcast (torch.mul): either may be a number, as with *.");
  m.def("div", [](nb::handle a, nb::handle b, const std::optional<std::string>& rounding_mode) {
          KILN_CHECK(!rounding_mode, "div: rounding_mode=\"", rounding_mode.value_or(""),
                     "\" is not in kiln (it has no floor or trunc op yet); rounding_mode=None, true division, is");
          return arithmetic("div", PyNumber_TrueDivide, a, b, nb::handle());
        }, arg("a"), arg("b"), nb::kw_only(), arg("rounding_mode") = nb::none(),
        nb::sig("def div(a: Tensor | float, b: Tensor | float, *, rounding_mode: str | None = None) -> Tensor"),
        "a / b, broadcast (torch.div): either may be a number, as with /; IEEE division (x / 0 is +-inf, 0 / 0 "
        "NaN); integers divide into float32, as torch's.");
  const char* pow_doc =
      "a ** b per element, broadcast; either may be a number (torch.pow). A number exponent 2, 3, 0.5, -0.5, -1 "
      "or -2 takes torch's exact forms (x * x, sqrt, 1 / x, ...); otherwise powf per element, or on the CPU, for a "
      "positive finite base and finite exponent (a tensor, broadcast or not, or a number), the double power rounded "
      "once (a number is used as a float32). A negative base to a non-integer power is NaN. Gradients to every "
      "tensor operand.";
  // through **, as add through + (an integer tensor to a float power promoted, as the operator does)
  m.def("pow", [](nb::handle a, nb::handle b) {
          const binaryfunc power = [](PyObject* x, PyObject* y) { return PyNumber_Power(x, y, Py_None); };
          return arithmetic("pow", power, a, b, nb::handle());
        }, arg("a"), arg("b"), nb::sig("def pow(a: Tensor | float, b: Tensor | float) -> Tensor"), pow_doc);
}

// The reductions, losses and comparisons.
void bind_math_ops(nb::module_& m) {
  m.def("sum_to", [](const Tensor& x, const std::vector<int64_t>& s) { return sum_to(x, to_shape(s)); }, arg("x"),
        arg("shape"), Release(), "x summed down to `shape`, which broadcasts to x's (torch's sum_to_size).");
  m.def("broadcast_to", [](const Tensor& x, const std::vector<int64_t>& s) {
          return expanded_view(x, broadcast_to(x, to_shape(s)));
        },
        arg("x"), arg("shape"), Release(), "x repeated up to `shape` (a copy; torch's expand).");
  // Losses (core/ops.h): float32, pred and target of one shape, the mean over all elements.
  m.def("mse_loss", &kiln::mse_loss, arg("pred"), arg("target"), Release(),
        "mean((pred - target) ** 2) (torch.nn.functional.mse_loss); shapes must match, no broadcast.");
  m.def("l1_loss", &kiln::l1_loss, arg("pred"), arg("target"), Release(),
        "mean(|pred - target|) (torch.nn.functional.l1_loss); shapes must match, no broadcast.");
  m.def("binary_cross_entropy_with_logits", &kiln::binary_cross_entropy_with_logits, arg("logits"), arg("targets"),
        Release(), "mean(softplus(x) - x * y), targets y in [0, 1] (torch's binary_cross_entropy_with_logits).");
  m.def("cross_entropy", [](const Tensor& x, const Tensor& t, std::optional<Tensor> w, int64_t ignore,
                            const std::string& reduction, float smoothing) {
          return cross_entropy(x, t, class_loss_options(w, ignore, reduction, smoothing));
        }, arg("input"), arg("target"), arg("weight") = nb::none(), arg("ignore_index") = -100,
        arg("reduction") = "mean", arg("label_smoothing") = 0.0f, Release(),
        "torch.nn.functional.cross_entropy: input [C], [N, C] or [N, C, d1, ...] float32 logits (classes second); "
        "target int class indices (input's shape without C; ignore_index adds nothing) or float32 probabilities "
        "(input's shape); weight [C] per class; reduction 'mean' (over the targets' weights), 'sum' or 'none'; "
        "label_smoothing in [0, 1].");
  m.def("nll_loss", [](const Tensor& x, const Tensor& t, std::optional<Tensor> w, int64_t ignore,
                       const std::string& reduction) {
          return nll_loss(x, t, class_loss_options(w, ignore, reduction, 0.0f));
        }, arg("input"), arg("target"), arg("weight") = nb::none(), arg("ignore_index") = -100,
        arg("reduction") = "mean", Release(),
        "torch.nn.functional.nll_loss: -input[target] per element (log-probabilities, as cross_entropy's input), "
        "weighted, reduced as cross_entropy's.");
  m.def("sum", &sum_over, arg("x"), arg("dim") = nb::none(), arg("keepdim") = false, Release(),
        "The sum of all elements (a scalar tensor), or over dimension `dim`, an int or a list of ints, keeping "
        "them as extents 1 with keepdim (torch.sum).");
  m.def("mean", &mean_over, arg("x"), arg("dim") = nb::none(), arg("keepdim") = false, Release(),
        "The mean of all elements (a scalar tensor), or over `dim` as sum's (torch.mean).");
  // torch 1.13's var(x, unbiased) and std(x, unbiased) first: a bool there is no dimension.
  for (const auto& [name, fn] : {std::pair{"var", &var_over}, std::pair{"std", &std_over}})
    m.def(name, [fn](const Tensor& x, bool unbiased) { return fn(x, nb::none(), std::nullopt, false, unbiased); },
          arg("x"), arg("unbiased"), "Over every element, unbiased (True) or not (torch 1.13's form).");
  const char* dims_sig = "dim: int | Sequence[int] | None = None, correction: int | None = None, keepdim: bool = "
                         "False, *, unbiased: bool | None = None) -> Tensor";
  m.def("var", &var_over, arg("x"), arg("dim") = nb::none(), arg("correction") = nb::none(), arg("keepdim") = false,
        nb::kw_only(), arg("unbiased") = nb::none(), nb::sig((std::string("def var(x: Tensor, ") + dims_sig).c_str()),
        "The variance over dim (None: every element): sum((x - mean)^2) / (count - correction), "
        "correction 1 the unbiased estimate, 0 the population's (torch.var's correction); gradients through it.");
  m.def("std", &std_over, arg("x"), arg("dim") = nb::none(), arg("correction") = nb::none(), arg("keepdim") = false,
        nb::kw_only(), arg("unbiased") = nb::none(), nb::sig((std::string("def std(x: Tensor, ") + dims_sig).c_str()),
        "The square root of var (torch.std).");
  m.def("amax", &amax_over, arg("x"), arg("dim") = nb::none(), arg("keepdim") = false, Release(),
        "The largest element (a scalar tensor), or the largest over `dim` as sum's; NaN wins (torch.amax). The "
        "gradient is shared evenly among the elements equal to the result.");
  m.def("amin", &amin_over, arg("x"), arg("dim") = nb::none(), arg("keepdim") = false, Release(),
        "The smallest element, or over `dim`, as amax (torch.amin).");
  m.def("logsumexp", &logsumexp_over, arg("x"), arg("dim"), arg("keepdim") = false, Release(),
        "log(sum(exp(x))) over dim (an int or a list), each row shifted by its maximum so no exp overflows "
        "(torch.logsumexp): a row of -inf or an empty one gives -inf; float32, or bfloat16 computed in float32. "
        "Gradient: softmax(x) * g.");
  const char* where_doc =
      "a where cond is nonzero, else b (torch.where); cond, a and b broadcast together. cond: a mask of any dtype "
      "(a comparison's 0/1, an integer tensor; NaN counts as true); a or b may be a number (both: a float32 "
      "result of cond's shape). Gradients to a where cond holds, to b elsewhere.";
  m.def("where", static_cast<Tensor (*)(const Tensor&, const Tensor&, const Tensor&)>(&kiln::where), arg("cond"),
        arg("a"), arg("b"), Release(), where_doc);
  m.def("where", static_cast<Tensor (*)(const Tensor&, const Tensor&, float)>(&kiln::where), arg("cond"), arg("a"),
        arg("b"), Release(), where_doc);
  m.def("where", static_cast<Tensor (*)(const Tensor&, float, const Tensor&)>(&kiln::where), arg("cond"), arg("a"),
        arg("b"), Release(), where_doc);
  m.def("where", static_cast<Tensor (*)(const Tensor&, float, float)>(&kiln::where), arg("cond"), arg("a"),
        arg("b"), Release(), where_doc);
  m.def("masked_fill", &kiln::masked_fill, arg("x"), arg("mask"), arg("value"), Release(),
        "x with `value` where mask is nonzero (torch.masked_fill; e.g. -inf over the attention scores a token may "
        "not see); mask broadcasts to x's shape.");
  m.def("maximum", &kiln::maximum, arg("a"), arg("b"), Release(),
        "The larger of a and b per element, broadcast; NaN wins (torch.maximum). Gradient to the larger, half each "
        "on a tie.");
  m.def("minimum", &kiln::minimum, arg("a"), arg("b"), Release(), "The smaller of a and b per element, as maximum.");
  m.def("clamp", &clamp_between, arg("x"), arg("min") = nb::none(), arg("max") = nb::none(), Release(),
        "x limited to [min, max] (either may be None); NaN stays NaN. Gradient where min <= x <= max (torch.clamp).");
  // Each: 1 where a op b, else 0, in a's dtype (a mask; no gradient); b a tensor (broadcast) or a number.
  const std::tuple<const char*, const char*, Compare, CompareNumber> comparisons[] = {
      {"gt",
       "1 where a > b, else 0 (a mask in a's dtype, no gradient); b: a tensor, broadcast, or a number. Integer "
       "tensors (int32, int64) compare exactly, with each other or with a number, into a float32 mask: "
       "kiln.eq(logits.argmax(-1), labels).mean() is the accuracy.",
       &kiln::gt, &kiln::gt},
      {"ge", "1 where a >= b, else 0, as gt.", &kiln::ge, &kiln::ge},
      {"lt", "1 where a < b, else 0, as gt.", &kiln::lt, &kiln::lt},
      {"le", "1 where a <= b, else 0, as gt.", &kiln::le, &kiln::le},
      {"eq", "1 where a == b, else 0, as gt (NaN equals nothing).", &kiln::eq, &kiln::eq},
      {"ne", "1 where a != b, else 0, as gt.", &kiln::ne, &kiln::ne}};
  for (const auto& [name, doc, fn, fn_n] : comparisons) {
    m.def(name, fn, arg("a"), arg("b"), Release(), doc);
    m.def(name, [name, fn, fn_n](const Tensor& a, nb::handle b) { return compare_with(fn, fn_n, a, b, name, false); },
          arg("a"), arg("b"), nb::sig((std::string("def ") + name + "(a: Tensor, b: float) -> Tensor").c_str()), doc);
  }
}

// sort, argsort and topk, max and min along a dimension, and ValuesIndices, the (values, indices)
// pair four of them return.
void bind_sorting(nb::module_& m) {
  nb::class_<ValuesIndices>(m, "ValuesIndices",
                            "What sort, topk, and max and min along a dimension return: values (differentiable) and "
                            "indices (int64), also unpacked and indexed as a pair: values, indices = kiln.sort(x).")
      .def_ro("values", &ValuesIndices::values, "The entries: x's dtype, with gradient to x.")
      .def_ro("indices", &ValuesIndices::indices, "Their positions along the dimension (int64).")
      .def("__len__", [](const ValuesIndices&) { return 2; })
      .def("__getitem__", [](const ValuesIndices& s, nb::handle key) {  // as a tuple's: ints and slices
        int64_t i = 0;
        if (nb::try_cast(key, i) && (i < -2 || i > 1))
          throw nb::index_error("ValuesIndices holds two tensors: values (0) and indices (1)");
        PyObject* item = PyObject_GetItem(nb::make_tuple(s.values, s.indices).ptr(), key.ptr());
        if (item == nullptr) throw nb::python_error();  // the tuple's IndexError or TypeError
        return nb::steal(item);
      })
      .def("__iter__", [](const ValuesIndices& s) { return nb::iter(nb::make_tuple(s.values, s.indices)); })
      .def("__repr__", [](const ValuesIndices& s) {
        return "ValuesIndices(values=" + s.values.description() + ", indices=" + s.indices.description() + ")";
      });
  m.def("sort", &kiln::sort, arg("x"), arg("dim") = -1, arg("descending") = false, Release(),
        "x's entries along dim in ascending (or descending) order, and their positions: ValuesIndices(values, "
        "indices) (torch.sort(stable=True)). NaN above everything, -0 equal to 0, equal entries kept in order; "
        "float32 or bfloat16; gradient to x through the values.");
  m.def("argsort", &kiln::argsort, arg("x"), arg("dim") = -1, arg("descending") = false, Release(),
        "sort(x, dim, descending).indices, without the values (torch.argsort(stable=True)).");
  m.def("topk", &kiln::topk, arg("x"), arg("k"), arg("dim") = -1, arg("largest") = true, Release(),
        "The k largest (largest=False: smallest) entries along dim and their positions, in sorted order: "
        "ValuesIndices(values, indices) (torch.topk; equal entries by position). Top-5 accuracy: "
        "kiln.eq(kiln.topk(logits, 5).indices, labels.reshape([-1, 1])).sum(1).mean().");
  const char* max_doc =
      "max(x, dim): the largest entry along dim and its first position, ValuesIndices(values, indices) (torch.max: "
      "values, pred = logits.max(1)); a NaN wins, as argmax's; the gradient goes to that position. max(x): the "
      "largest element (a 0-d tensor, amax's: the gradient shared among ties, NaN where the maximum is NaN, which "
      "torch sends to the NaNs). max(a, b), two tensors: kiln.maximum. Float32 or bfloat16.";
  m.def("max", [](const Tensor& a, const Tensor& b) { return kiln::maximum(a, b); }, arg("x"), arg("other"),
        Release(), max_doc);
  m.def("max", [](const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
    return extreme_of(true, x, dim, keepdim);
  }, arg("x"), arg("dim") = nb::none(), arg("keepdim") = false,
        nb::sig("def max(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor | ValuesIndices"),
        max_doc);
  const char* min_doc = "As max, the smallest (torch.min); min(a, b), two tensors: kiln.minimum.";
  m.def("min", [](const Tensor& a, const Tensor& b) { return kiln::minimum(a, b); }, arg("x"), arg("other"),
        Release(), min_doc);
  m.def("min", [](const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
    return extreme_of(false, x, dim, keepdim);
  }, arg("x"), arg("dim") = nb::none(), arg("keepdim") = false,
        nb::sig("def min(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor | ValuesIndices"),
        min_doc);
}

// The ops that cut a tensor or drop and add extents of 1: squeeze, unsqueeze, flip, split, chunk,
// unbind.
void bind_cut_ops(nb::module_& m) {
  m.def("squeeze", &squeeze_dim, arg("x"), arg("dim") = nb::none(), Release(),
        "x without its extents of 1 (torch.squeeze): every one, or dim's only (x's shape kept where that extent "
        "is not 1); the same memory.");
  m.def("unsqueeze", &kiln::unsqueeze, arg("x"), arg("dim"), Release(),
        "x with an extent of 1 inserted as dimension dim, 0 to x's rank (-1 appends), torch.unsqueeze; the same "
        "memory.");
  m.def("flip", [](const Tensor& x, const Dims& dims) { return kiln::flip(x, dims_of(dims)); }, arg("x"),
        arg("dims"), Release(), "x reversed along each of dims (an int or a list; torch.flip), a copy, any dtype.");
  m.def("split", &split_into, arg("x"), arg("split_size_or_sections"), arg("dim") = 0,
        "x cut along dim into pieces of one size (the last shorter where it does not divide the extent) or of the "
        "sizes listed, which sum to the extent: a tuple of copies, each with its gradient to x (torch.split).");
  m.def("chunk", &chunk_into, arg("x"), arg("chunks"), arg("dim") = 0,
        "x cut along dim into at most `chunks` pieces of ceil(extent / chunks) (torch.chunk: 6 in 4 chunks is 3 "
        "of 2), a tuple of copies.");
  m.def("unbind", &unbind_into, arg("x"), arg("dim") = 0,
        "x's slices along dim with that dimension dropped, a tuple (torch.unbind).");
}

// The ops that cut, join, select and reorder: narrow, index_select, gather, their reverses index_add
// and scatter_add, concat, stack, permute, transpose, argmax along a dimension, matmul and reshape.
void bind_layout_ops(nb::module_& m) {
  m.def("permute", [](const Tensor& x, const std::vector<int64_t>& dims) {
          return permuted_view(x, dims, kiln::permute(x, dims));
        }, arg("x"), arg("dims"), Release(),
        "x with its dimensions reordered: the result's dimension i is x's dims[i] (torch.permute, but a copy: "
        "kiln's tensors are contiguous); any dtype. permute(x, [0, 2, 1, 3]) takes [B, T, H, D] to [B, H, T, D].");
  m.def("narrow", [](const Tensor& x, int64_t dim, int64_t start, int64_t length) {
          return narrowed_view(x, dim, start, length, kiln::narrow(x, dim, start, length));
        }, arg("x"), arg("dim"), arg("start"), arg("length"), Release(),
        "Elements [start, start + length) of dimension dim (torch.narrow, but a copy: kiln's tensors are "
        "contiguous).");
  m.def("index_select", &kiln::index_select, arg("x"), arg("dim"), arg("index"), Release(),
        "x's entries along dim at index (an int32 or int64 tensor, one index or a list, each in [0, extent): a "
        "negative one is refused, as torch's), in that order, repeats allowed (torch.index_select, a copy); any "
        "dtype. Gradient to x: each entry's uses summed in order.");
  m.def("gather", &kiln::gather, arg("x"), arg("dim"), arg("index"), Release(),
        "out[i][j][k] = x[i][index[i][j][k]][k] for dim 1, and so along any dim (torch.gather, a copy): index an "
        "int32 or int64 tensor of x's rank, its extents but dim's at most x's, each entry in [0, x.shape[dim]); "
        "the result has index's shape; any dtype. Gradient to x: each entry's uses summed in order. "
        "gather(log_softmax(logits), 1, labels.reshape([-1, 1])) picks each row's label's log-probability.");
  m.def("index_add", &kiln::index_add, arg("x"), arg("dim"), arg("index"), arg("source"), Release(),
        "x with source's slices added along dim at index (one index or a list), in order, repeats accumulating "
        "(torch.index_add, a new tensor): source has x's shape but len(index) along dim; float32 or bfloat16 "
        "(summed in float32). A sum per segment: kiln.index_add(kiln.zeros([segments, d]), 0, segment_of_row, rows).");
  m.def("scatter_add", &kiln::scatter_add, arg("x"), arg("dim"), arg("index"), arg("src"), Release(),
        "x with src's entries added along dim, an index per entry (torch.scatter_add, a new tensor): index of x's "
        "rank, each extent but dim's at most x's (x's corner it covers is written), src at least index's extents (its "
        "corner read); float32 or bfloat16.");
  m.def("concat", &kiln::concat, arg("tensors"), arg("dim") = 0, Release(),
        "The tensors joined along dim, in order (torch.cat); gradients to each.");
  m.def("stack", &kiln::stack, arg("tensors"), arg("dim") = 0, Release(),
        "Tensors of one shape joined along a new dimension dim (torch.stack).");
  m.def("argmax", [](const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
    return arg_extreme_over(true, x, dim, keepdim);
  }, arg("x"), arg("dim") = nb::none(), arg("keepdim") = false, Release(),
        "Position of the first maximum along dimension dim, dropped unless keepdim (int64, no gradient); a NaN "
        "beats every number. dim None: the position in the flattened x, 0-d (torch.argmax); "
        "argmax(logits, 1) is each row's class.");
  m.def("argmin", [](const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
    return arg_extreme_over(false, x, dim, keepdim);
  }, arg("x"), arg("dim") = nb::none(), arg("keepdim") = false, Release(),
        "Position of the first minimum along dimension dim, dropped unless keepdim (int64, no gradient); a NaN "
        "beats every number. dim None: the position in the flattened x, 0-d (torch.argmin).");
  m.def("cumsum", &kiln::cumsum, arg("x"), arg("dim"), Release(),
        "Running sums along dimension dim (torch.cumsum), with gradient: float32 summed in double, bfloat16 in "
        "float, each output rounded once, the same bits on every device.");
  bind_sorting(m);
  m.def("transpose", [](const Tensor& x, int64_t d0, int64_t d1) { return transposed_view(x, d0, d1); }, arg("x"),
        arg("dim0") = -2, arg("dim1") = -1, Release(),
        "x with dimensions dim0 and dim1 swapped, the last two by default (a copy; torch.transpose), with gradient.");
  m.def("matmul", &kiln::matmul, arg("a"), arg("b"), Release(),
        "a @ b, float32 or bfloat16, gradients to both: a [..., M, K] by b [K, N] or by b [..., K, N], leading "
        "dimensions broadcast as torch.matmul's.");
  m.def("reshape", [](const Tensor& x, const std::vector<int64_t>& s) {
          return own_where_torch_copies(x, reshape(x, to_shape(s)));
        },
        arg("x"), arg("shape"), Release(), "Same memory, new shape (one extent may be -1).");
}

}  // namespace

void bind_tensor(nb::module_& m) {
  bind_tensor_class(m);
  bind_tensor_methods(m);
  bind_in_place(m.attr("Tensor"));
  bind_factories(m);
  bind_nn_ops(m);
  bind_arithmetic_ops(m);
  bind_math_ops(m);
  bind_elementwise_ops(m);
  bind_layout_ops(m);
  bind_cut_ops(m);
  bind_grad_modes(m);
}

}  // namespace kiln::python
