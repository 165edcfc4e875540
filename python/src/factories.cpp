// The factories, torch's names: zeros, ones, full, the *_like forms, arange, uniform, normal, and
// kiln.tensor (a copy of nested lists of numbers, or of any array). Each takes requires_grad, as
// torch's do, and makes the tensor with the GIL released.
#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include "python/src/bindings.h"

namespace kiln::python {
namespace {

using nb::arg;

TensorOptions options(const std::string& dtype, const std::string& device) {
  return TensorOptions{dtype_from_name(dtype), device_from_name(device)};
}

// t made a leaf that requires grad when asked (a floating dtype only: set_requires_grad says so).
Tensor requiring(Tensor t, bool requires_grad) {
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

// A fill value as Python gives it: an int (exact for int64 tensors) or a float.
using FillValue = std::variant<int64_t, double>;

// kiln.full's tensor. The fill goes through a double, but for an int64 tensor and an int a double
// cannot hold (past 2^53), which is broadcast from a 0-d int64 tensor, exact.
Tensor filled(const Shape& shape, const FillValue& value, const TensorOptions& opt) {
  if (const int64_t* i = std::get_if<int64_t>(&value)) {
    const auto v = static_cast<double>(*i);
    if (opt.dtype == DType::i64 && !(v < 0x1p63 && static_cast<int64_t>(v) == *i))
      return kiln::broadcast_to(Tensor::from_vector(std::vector<int64_t>{*i}, Shape{}).to(opt.device), shape);
    return Tensor::full(shape, v, opt);
  }
  return Tensor::full(shape, std::get<double>(value), opt);
}

// One of arange's numbers as an integer dtype takes it, as torch's: truncated toward zero.
int64_t arange_integer(const FillValue& v) {
  if (const int64_t* i = std::get_if<int64_t>(&v)) return *i;
  const double d = std::get<double>(v);
  KILN_CHECK(std::isfinite(d) && std::abs(d) < 0x1p63, "arange: ", d, " is no integer an integer dtype holds");
  return static_cast<int64_t>(d);
}

// torch's checks of a range's step: nonzero, and pointing from start towards end.
template <typename T>
void check_range_step(T s, T e, T d) {
  KILN_CHECK(d != 0, "arange: step must be nonzero");
  KILN_CHECK(d > 0 ? e >= s : e <= s, "arange: end ", e, " lies ", d > 0 ? "below" : "above", " start ", s,
             ", against the sign of step ", d, "; for a descending range give a negative step");
}

// The count of an integer range, exact (128 bits), after torch's checks.
int64_t integer_range_count(int64_t s, int64_t e, int64_t d) {
  check_range_step(s, e, d);
  const __int128 span = static_cast<__int128>(e) - s;
  const __int128 count = (span + d - (d > 0 ? 1 : -1)) / d;
  KILN_CHECK(count < (__int128{1} << 40), "arange: [", s, ", ", e, ") by ", d, " holds ",
             static_cast<double>(count), " values, more than kiln allocates");
  return static_cast<int64_t>(count);
}

// torch.arange's values: [start, end) by step, from its numbers. All ints: int64 by default and the
// count exact; any float: float32, the count ceil((end - start) / step) in double, as torch's. An
// integer dtype takes the numbers as integers first (truncated, as torch's); values past 2^53,
// where doubles would repeat and skip integers, are made on the host, exact.
Tensor range_of(const FillValue& first, const std::optional<FillValue>& last, const FillValue& step,
                const std::optional<std::string>& dtype, const std::string& device) {
  const FillValue start = last ? first : FillValue{int64_t{0}}, end = last ? *last : first;
  const bool ints = std::holds_alternative<int64_t>(start) && std::holds_alternative<int64_t>(end) &&
                    std::holds_alternative<int64_t>(step);
  const TensorOptions opt{dtype ? dtype_from_name(*dtype) : ints ? DType::i64 : DType::f32, device_from_name(device)};
  if (ints || !is_floating(opt.dtype)) {
    const int64_t s = arange_integer(start), e = arange_integer(end), d = arange_integer(step);
    const int64_t n = integer_range_count(s, e, d);
    const __int128 final_value = static_cast<__int128>(s) + static_cast<__int128>(d) * (n > 0 ? n - 1 : 0);
    const auto beyond = [](__int128 v) { return v > (__int128{1} << 53) || v < -(__int128{1} << 53); };
    if (opt.dtype != DType::i64 || !(beyond(s) || beyond(final_value)))  // others: Tensor::arange checks the fit
      return Tensor::arange(n, static_cast<double>(s), static_cast<double>(d), opt);
    std::vector<int64_t> values(static_cast<size_t>(n));  // past 2^53 doubles skip integers: made here, exact
    for (size_t i = 0; i < values.size(); ++i)  // unsigned: d * i alone may pass int64 where the sum does not
      values[i] = static_cast<int64_t>(static_cast<uint64_t>(s) + static_cast<uint64_t>(d) * i);
    return Tensor::from_vector(values, Shape{n}).to(opt.device);
  }
  const auto as_double = [](const FillValue& v) {
    return std::visit([](auto x) { return static_cast<double>(x); }, v);
  };
  const double s = as_double(start), e = as_double(end), d = as_double(step);
  KILN_CHECK(std::isfinite(s) && std::isfinite(e) && std::isfinite(d), "arange: start ", s, ", end ", e,
             " and step ", d, " must be finite");
  check_range_step(s, e, d);
  const double count = std::ceil((e - s) / d);
  KILN_CHECK(count < 0x1p62, "arange: [", s, ", ", e, ") by ", d, " holds ", count,
             " values, more than kiln allocates");
  return Tensor::arange(static_cast<int64_t>(count), s, d, opt);
}

// x's dtype and device, each replaced where named.
TensorOptions options_like(const Tensor& x, const std::optional<std::string>& dtype,
                           const std::optional<std::string>& device) {
  return TensorOptions{dtype ? dtype_from_name(*dtype) : x.dtype(), device ? device_from_name(*device) : x.device()};
}

// kiln.tensor's data: nested lists or tuples of numbers, read into one flat list by torch's
// rules (the first element at each depth gives the shape; every other list must match it).
struct NestedNumbers {
  std::optional<DType> want;  // the dtype asked for
  std::vector<int64_t> shape;
  std::vector<double> values;     // every value, as a double
  std::vector<int64_t> ints;      // the same, exact, for the ints given (truncated floats later)
  std::vector<uint8_t> integral;  // whether value i was given as an int
};

// "an int", "a numpy.ndarray": h's Python type with its article, for the errors.
std::string a_type(nb::handle h) {
  const std::string t = python_type(h);
  return (std::string("aeiou").find(t[0]) == std::string::npos ? "a " : "an ") + t;
}

// What kiln.tensor descends into: lists, tuples, ranges and arrays of one or more dimensions.
bool is_sequence(nb::handle h) {
  if (nb::isinstance<nb::list>(h) || nb::isinstance<nb::tuple>(h) || PyRange_Check(h.ptr())) return true;
  return !nb::isinstance<Tensor>(h) && nb::hasattr(h, "shape") && nb::hasattr(h, "__len__") &&
         nb::len(nb::object(h.attr("shape"))) > 0;
}

// Data taken whole through DLPack (a NumPy array or scalar, a torch tensor), not read number by
// number (arrays inside lists are read as lists, as torch reads them).
bool is_array(nb::handle h) {
  if (nb::isinstance<nb::list>(h) || nb::isinstance<nb::tuple>(h)) return false;
  return nb::hasattr(h, "__dlpack__") || (nb::hasattr(h, "dtype") && nb::hasattr(h, "__array__"));
}

// The shape the first elements give, for the errors: "(2, 3)".
std::string shape_text(const NestedNumbers& n) {
  std::string s = "(";
  for (size_t i = 0; i < n.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(n.shape[i]);
  return s + (n.shape.size() == 1 ? ",)" : ")");
}

// One number of the data: an int kept exact, anything else through float(), as torch reads them.
// `fail(what, overflow)` raises: a TypeError, or a ValueError for a value that does not fit.
void read_number(nb::handle h, size_t depth, const std::function<void(const std::string&, bool)>& fail,
                 NestedNumbers& n) {
  if (PyBool_Check(h.ptr()))
    fail("is a bool; kiln has no bool tensors (masks are 0/1 numbers: int(b), then dtype=\"float32\")", false);
  int64_t v = 0;
  const bool floating_wanted = n.want && is_floating(*n.want);
  if (is_index_integer(h) && (nb::try_cast(h, v) || !floating_wanted)) {
    if (!nb::try_cast(h, v)) fail("is " + nb::cast<std::string>(nb::str(h)) + ", which does not fit in int64", true);
    n.ints.push_back(v);
    n.values.push_back(static_cast<double>(v));
    n.integral.push_back(1);
    return;
  }
  PyObject* f = nb::isinstance<nb::str>(h) || nb::isinstance<nb::bytes>(h) ? nullptr : PyNumber_Float(h.ptr());
  if (f == nullptr) {
    if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_TypeError)) throw nb::python_error();  // __float__'s own
    PyErr_Clear();
    fail("is " + a_type(h) + (depth == 0 ? "; give a number, nested lists or tuples of numbers, or an array"
                                         : ", not a number"), false);
  }
  n.values.push_back(PyFloat_AsDouble(f));
  Py_DECREF(f);
  n.ints.push_back(0);
  n.integral.push_back(0);
}

// Reads h, found at data<path>, at nesting depth `depth`.
void read_numbers(nb::handle h, size_t depth, const std::string& path, NestedNumbers& n) {
  const auto ragged = [&](const std::string& what) {
    throw nb::value_error(("kiln.tensor: data" + path + " " + what + ", where the first elements give the shape " +
                           shape_text(n) + ": the data must be rectangular").c_str());
  };
  if (depth < n.shape.size()) {
    if (!is_sequence(h)) ragged("is " + a_type(h) + ", not a list of " + std::to_string(n.shape[depth]));
    const auto len = static_cast<int64_t>(nb::len(h));
    if (len != n.shape[depth])
      ragged("has " + std::to_string(len) + " element(s), not " + std::to_string(n.shape[depth]));
    for (int64_t i = 0; i < len; ++i) {  // by index, as the shape was read (and torch reads)
      const nb::object item = h[i];
      read_numbers(item, depth + 1, path + "[" + std::to_string(i) + "]", n);
    }
    return;
  }
  if (is_sequence(h)) ragged("is " + a_type(h) + ", not a number");
  read_number(h, depth, [&](const std::string& what, bool overflow) {
    const std::string text = "kiln.tensor: data" + path + " " + what;
    if (overflow) throw nb::value_error(text.c_str());
    throw nb::type_error(text.c_str());
  }, n);
}

// The numbers as integers of `want`, each in its range, as torch refuses a Python number that
// overflows (NumPy and torch arrays wrap instead: astype's rules).
std::vector<int64_t> integers_of(const NestedNumbers& n, DType want) {
  const double lo = want == DType::u8 ? 0 : want == DType::i32 ? -0x1p31 : -0x1p63;
  const double hi = want == DType::u8 ? 256 : want == DType::i32 ? 0x1p31 : 0x1p63;  // exclusive
  std::vector<int64_t> out(n.values.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const double v = n.integral[i] ? static_cast<double>(n.ints[i]) : std::trunc(n.values[i]);
    const bool fits = n.integral[i] ? (n.ints[i] >= lo && (want == DType::i64 || n.ints[i] < hi)) : v >= lo && v < hi;
    if (!fits)
      throw nb::value_error(("kiln.tensor: " +
                             (n.integral[i] ? std::to_string(n.ints[i]) : std::to_string(n.values[i])) +
                             " does not fit in " + dtype_name(want)).c_str());
    out[i] = n.integral[i] ? n.ints[i] : static_cast<int64_t>(v);
  }
  return out;
}

// An array's kiln copy: a torch tensor detached, a NumPy scalar made an array, float64 (which
// kiln lacks) made int64 for an integer dtype and float32 otherwise, by its producer.
// The array as a kiln tensor, and whether its memory is already kiln's own copy (strides made
// contiguous): then kiln.tensor need not copy again.
std::pair<Tensor, bool> array_copy(nb::handle data, std::optional<DType> want) {
  nb::object a = nb::borrow(data);
  if (nb::hasattr(a, "requires_grad") && nb::hasattr(a, "detach")) a = a.attr("detach")();
  if (!nb::hasattr(a, "__dlpack__")) a = nb::module_::import_("numpy").attr("asarray")(a);
  PyObject* kind_str = PyObject_Str(nb::object(a.attr("dtype")).ptr());
  if (kind_str == nullptr) throw nb::python_error();
  const std::string kind = nb::steal<nb::str>(kind_str).c_str();
  const bool to_int = want && !is_floating(*want);
  if (kind == "float64") a = a.attr("astype")(to_int ? "int64" : "float32");  // NumPy
  if (kind == "torch.float64") a = to_int ? a.attr("long")() : a.attr("float")();  // PyTorch
  const Tensor t = nb::cast<Tensor>(nb::module_::import_("kiln").attr("from_dlpack")(a, true));  // any strides
  // Not shared outside: from_dlpack copied the strides into kiln's memory. A converted array stays
  // NumPy's or torch's memory (shared outside for good, which a checkpoint's reuse of memory
  // avoids), so kiln.tensor still copies that one.
  return {t, !t.shared_outside()};
}

// kiln.tensor(data): a copy. Numbers and nested lists are read here (int64 when every value is
// an int, else float32, as torch's default dtype); an array (NumPy, torch, kiln) is copied whole
// and keeps its dtype unless one is given.
Tensor tensor_of(nb::handle data, const std::optional<std::string>& dtype, const std::string& device) {
  const Device dev = device_from_name(device);
  NestedNumbers n;
  if (dtype) n.want = dtype_from_name(*dtype);
  if (nb::isinstance<Tensor>(data) || is_array(data)) {
    const auto [src, fresh] = nb::isinstance<Tensor>(data) ? std::pair{nb::cast<Tensor>(data), false}
                                                           : array_copy(data, n.want);
    const nb::gil_scoped_release release;
    Tensor t = src.detach();
    if (n.want) t = t.to(*n.want);
    t = t.to(dev);
    // kiln's own memory, not the producer's, copied once: by a conversion here or before, else a clone
    return !fresh && t.impl().storage == src.impl().storage ? t.clone() : t;
  }
  for (nb::object h = nb::borrow(data); is_sequence(h);) {  // the shape, from the first element at each depth
    n.shape.push_back(static_cast<int64_t>(nb::len(h)));
    if (nb::len(h) == 0) break;
    h = h[0];  // held: a container's __getitem__ may make a new object
  }
  read_numbers(data, 0, "", n);
  const bool all_ints = std::all_of(n.integral.begin(), n.integral.end(), [](uint8_t i) { return i != 0; });
  const DType want = n.want ? *n.want : (all_ints && !n.values.empty() ? DType::i64 : DType::f32);
  const std::vector<int64_t> ints = is_floating(want) ? std::vector<int64_t>{} : integers_of(n, want);
  const nb::gil_scoped_release release;
  const Shape shape(n.shape);
  if (!is_floating(want)) return Tensor::from_vector(ints, shape).to(want).to(dev);
  const std::vector<float> f(n.values.begin(), n.values.end());  // each double rounded once to float32
  return Tensor::from_vector(f, shape).to(want).to(dev);
}

// What a shape factory is given beside the shape: torch's dtype, device and requires_grad keywords.
struct FactoryKeywords {
  std::optional<std::string> dtype;  // None: the factory's own default
  std::optional<std::string> device;  // None: "cpu", or the tensor's for x.new_zeros
  bool requires_grad = false;
};

// kiln.zeros(2, 3), kiln.zeros((2, 3)) or kiln.zeros(size=(2, 3)), as torch takes a shape (shape=
// is the keyword kiln took before), and the keywords beside it.
std::pair<Shape, FactoryKeywords> shape_and_keywords(nb::args args, nb::kwargs kwargs, const std::string& call) {
  FactoryKeywords k;
  nb::dict rest;
  for (const auto& [key, value] : kwargs) {
    const std::string name = nb::cast<std::string>(key);
    const auto wrong = [&](const char* want) {
      return nb::type_error((call + ": " + name + " must be " + want + ", not " + python_type(value)).c_str());
    };
    if (name == "dtype") {
      if (!value.is_none() && !nb::try_cast(value, k.dtype.emplace())) throw wrong("a dtype's name, \"float32\"");
    } else if (name == "device") {
      if (!value.is_none() && !nb::try_cast(value, k.device.emplace()))
        throw wrong("a device's name, \"cpu\" or \"cuda\"");
    } else if (name == "requires_grad") {
      if (!PyBool_Check(value.ptr())) throw wrong("a bool");
      k.requires_grad = value.ptr() == Py_True;
    } else if (name == "size" || name == "shape") {
      if (rest.contains("size"))
        throw nb::type_error((call + ": give the shape once, as size= (shape= is its old name)").c_str());
      rest["size"] = value;
    } else {
      throw nb::type_error((call + "() got an unexpected keyword argument '" + name + "'").c_str());
    }
  }
  return {Shape(ints_given(args, rest, call, "size", "the shape", "2, 3")), k};
}

// A fill value as a number, or a TypeError naming `call`. Without a dtype to hold it, a bool is
// refused (kiln has no bool tensors), before the cast: NumPy's bool scalars warn in __index__.
FillValue fill_number(nb::handle given, bool dtype_given, const char* call) {
  KILN_CHECK(dtype_given || !is_bool_number(given), call,
             ": the fill value is a bool; kiln has no bool tensors: give dtype=\"float32\" for a 0/1 mask ",
             "(torch.full(..., True) is a bool tensor)");
  FillValue v;
  if (!nb::try_cast(given, v))
    throw nb::type_error((std::string(call) + ": the fill value must be a number, not " + python_type(given)).c_str());
  return v;
}

// kiln.full's dtype when none is given: torch's, int64 for an int and float32 for a float.
DType fill_dtype(nb::handle given, const FillValue& value) {
  if (std::holds_alternative<int64_t>(value)) return DType::i64;
  KILN_CHECK(!is_index_integer(given), "full: the int ", nb::cast<std::string>(nb::str(nb::int_(given))),
             " is past int64's range, the dtype of an int fill (torch's): give dtype=\"float32\" for a float");
  return DType::f32;
}

// x.new_zeros(*size), x.new_ones(*size), x.new_full(size, fill_value): torch's factories of x's dtype
// and device unless dtype= or device= say otherwise, with requires_grad=, as kiln.zeros and kiln.full.
void bind_new_factories(nb::handle cls) {
  const auto bind = [cls](const char* name, const char* doc, auto&& fn) {
    cls.attr(name) = nb::cpp_function(std::forward<decltype(fn)>(fn), nb::is_method(), nb::name(name), nb::scope(cls),
                                      doc);
  };
  const auto like_x = [](const Tensor& x, const FactoryKeywords& k) {
    return TensorOptions{k.dtype ? dtype_from_name(*k.dtype) : x.dtype(),
                         k.device ? device_from_name(*k.device) : x.device()};
  };
  for (const auto& [name, value] : {std::pair{"new_zeros", 0.0}, std::pair{"new_ones", 1.0}}) {
    const std::string call = std::string("Tensor.") + name;
    bind(name, "A tensor of that shape (ints or one list) of x's dtype and device, as torch's.",
         [call, value, like_x](const Tensor& x, nb::args args, nb::kwargs kwargs) {
      const auto [shape, k] = shape_and_keywords(args, kwargs, call);
      const TensorOptions opt = like_x(x, k);
      nb::gil_scoped_release release;
      return requiring(Tensor::full(shape, value, opt), k.requires_grad);
    });
  }
  bind("new_full", "A tensor of shape `size` filled with fill_value, of x's dtype and device unless dtype= or device= "
       "are given (torch's); an int64 fill exact.", [like_x](const Tensor& x, nb::args args, nb::kwargs kwargs) {
    const bool fill_kw = kwargs.contains("fill_value"), size_kw = kwargs.contains("size");
    if (args.size() + fill_kw + size_kw != 2 || (args.size() == 1 && size_kw && !fill_kw))
      throw nb::type_error("Tensor.new_full takes (size, fill_value), as torch's: x.new_full([2, 3], 1.5)");
    nb::kwargs rest;
    const nb::object fill = fill_kw ? nb::borrow(kwargs["fill_value"]) : nb::borrow(args[args.size() - 1]);
    for (const auto& [key, v] : kwargs)
      if (nb::cast<std::string>(key) != "fill_value") rest[key] = v;
    const nb::args size = nb::borrow<nb::args>(size_kw ? nb::make_tuple() : nb::make_tuple(args[0]));
    const auto [shape, k] = shape_and_keywords(size, rest, "Tensor.new_full");
    const FillValue v = fill_number(fill, true, "new_full");  // x's dtype holds a bool
    const TensorOptions opt = like_x(x, k);
    nb::gil_scoped_release release;
    return requiring(filled(shape, v, opt), k.requires_grad);
  });
}

}  // namespace

void bind_factories(nb::module_& m) {
  using Name = std::optional<std::string>;
  m.def("tensor", [](nb::handle data, const Name& dt, const std::string& dev, bool rg) {
          return requiring(tensor_of(data, dt, dev), rg);
        }, arg("data").none(), arg("dtype") = nb::none(), arg("device") = "cpu", arg("requires_grad") = false,
        "torch.tensor: a copy of `data`, a number or nested lists or tuples of numbers (int64 when all are ints, "
        "else float32; bfloat16 through float32), or an array (NumPy, torch, kiln: its dtype kept unless given, "
        "float64 made float32).");
  // torch's zeros and ones: the shape as ints one by one or as one list (kiln.zeros(2, 3), kiln.zeros([2, 3])).
  for (const auto& [name, value] : {std::pair{"zeros", 0.0}, std::pair{"ones", 1.0}}) {
    const std::string call = std::string("kiln.") + name;
    m.def(name, [call, value](nb::args args, nb::kwargs kwargs) {
          const auto [shape, k] = shape_and_keywords(args, kwargs, call);
          const TensorOptions opt = options(k.dtype.value_or("float32"), k.device.value_or("cpu"));
          nb::gil_scoped_release release;
          return requiring(Tensor::full(shape, value, opt), k.requires_grad);
        }, nb::sig(("def " + std::string(name) + "(*size: int | Sequence[int], dtype: str = 'float32', device: str = "
                    "'cpu', requires_grad: bool = False) -> Tensor").c_str()),
        value == 0.0 ? "A tensor of zeros (torch.zeros): kiln.zeros(2, 3) or kiln.zeros([2, 3])."
                     : "A tensor of ones (torch.ones): kiln.ones(2, 3) or kiln.ones([2, 3]).");
  }
  m.def("full", [](const std::vector<int64_t>& s, nb::handle value, const std::optional<std::string>& dt,
                   const std::optional<std::string>& dev, bool rg) {
          const FillValue v = fill_number(value, dt.has_value(), "full");
          const TensorOptions opt{dt ? dtype_from_name(*dt) : fill_dtype(value, v),
                                  device_from_name(dev.value_or("cpu"))};
          nb::gil_scoped_release release;
          return requiring(filled(to_shape(s), v, opt), rg);
        },
        arg("shape"), arg("value"), arg("dtype") = nb::none(), arg("device") = nb::none(), arg("requires_grad") = false,
        nb::sig("def full(shape: Sequence[int], value: int | float, dtype: str | None = None, device: str | None = "
                "None, requires_grad: bool = False) -> Tensor"),
        "A tensor filled with `value` (torch.full): int64 for an int, float32 for a float, unless dtype is given.");
  bind_new_factories(m.attr("Tensor"));
  // torch's *_like: x's shape, and its dtype and device unless given.
  m.def("zeros_like", [](const Tensor& x, const Name& dt, const Name& dev, bool rg) {
    return requiring(Tensor::zeros(x.shape(), options_like(x, dt, dev)), rg);
  }, arg("x"), arg("dtype") = nb::none(), arg("device") = nb::none(), arg("requires_grad") = false, Release(),
        "Zeros of x's shape, dtype and device (either may be given), as torch.zeros_like.");
  m.def("ones_like", [](const Tensor& x, const Name& dt, const Name& dev, bool rg) {
    return requiring(Tensor::ones(x.shape(), options_like(x, dt, dev)), rg);
  }, arg("x"), arg("dtype") = nb::none(), arg("device") = nb::none(), arg("requires_grad") = false, Release(),
        "Ones, as zeros_like.");
  m.def("full_like", [](const Tensor& x, const FillValue& value, const Name& dt, const Name& dev, bool rg) {
    return requiring(filled(x.shape(), value, options_like(x, dt, dev)), rg);
  }, arg("x"), arg("fill_value"), arg("dtype") = nb::none(), arg("device") = nb::none(), arg("requires_grad") = false,
        Release(), "fill_value everywhere, as zeros_like and kiln.full (torch.full_like).");
  m.def("arange", [](const FillValue& start, const std::optional<FillValue>& end, const FillValue& step,
                     const std::optional<std::string>& dt, const std::string& dev, bool rg) {
          return requiring(range_of(start, end, step, dt, dev), rg);
        }, arg("start"), arg("end") = nb::none(), arg("step") = 1, nb::kw_only(), arg("dtype") = nb::none(),
        arg("device") = "cpu", arg("requires_grad") = false, Release(),
        "torch.arange: arange(end) or arange(start, end, step=1), 1-d [start, start + step, ...) up to but "
        "not including end; int64 when every number is an int, else float32 (dtype= chooses).");
  m.def("uniform", [](const std::vector<int64_t>& s, float lo, float hi, const std::string& dev, bool rg) {
          return requiring(Tensor::uniform(to_shape(s), lo, hi, default_generator(), options("float32", dev)), rg);
        }, arg("shape"), arg("low") = 0.0f, arg("high") = 1.0f, arg("device") = "cpu", arg("requires_grad") = false,
        Release(), "Uniform [low, high) float32 from the default generator (kiln.manual_seed).");
  m.def("normal", [](const std::vector<int64_t>& s, float mean, float std, const std::string& dev, bool rg) {
          return requiring(Tensor::normal(to_shape(s), mean, std, default_generator(), options("float32", dev)), rg);
        }, arg("shape"), arg("mean") = 0.0f, arg("std") = 1.0f, arg("device") = "cpu", arg("requires_grad") = false,
        Release(), "Normal(mean, std) float32 from the default generator (kiln.manual_seed).");
  m.def("manual_seed", &kiln::manual_seed, arg("seed"), "Reseeds the default generator.");
}

}  // namespace kiln::python
