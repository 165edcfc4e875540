#include "core/tensor.h"

#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>
#include <type_traits>

#include "core/autograd.h"
#include "core/backend.h"
#include "core/ops.h"

namespace kiln {
namespace {

// The bytes a tensor of `shape` and `dtype` takes; a negative extent, more than 2^63 - 1
// elements (Shape::numel) or more than 2^64 bytes is refused, never wrapped.
size_t storage_bytes(const Shape& shape, DType dtype) {
  for (int64_t d : shape.dims()) KILN_CHECK(d >= 0, "tensor shape ", shape, " has a negative extent");
  size_t bytes = 0;
  KILN_CHECK(!__builtin_mul_overflow(static_cast<size_t>(shape.numel()), dtype_size(dtype), &bytes), "a ",
             dtype_name(dtype), " tensor of shape ", shape, " would take more than 2^64 bytes");
  return bytes;
}

std::shared_ptr<TensorImpl> make_impl(const Shape& shape, const TensorOptions& opt) {
  const size_t bytes = storage_bytes(shape, opt.dtype);
  auto impl = std::make_shared<TensorImpl>();
  Allocator* alloc = nullptr;
  if (opt.device.is_cpu()) {
    alloc = opt.pinned ? &pinned_host_allocator() : &host_allocator();
  } else {
    KILN_CHECK(!opt.pinned, "pinned memory is a host-tensor option; asked for it on ", opt.device.str());
    alloc = &backend_for(opt.device).allocator(opt.device.index);
  }
  impl->storage = std::make_shared<Storage>(bytes, opt.device, *alloc);
  impl->shape = shape;
  impl->strides = shape.contiguous_strides();
  impl->dtype = opt.dtype;
  return impl;
}

double load_as_double(const void* p, DType t) {
  switch (t) {
    case DType::f32: return *static_cast<const float*>(p);
    case DType::bf16: return BFloat16::to_float(*static_cast<const uint16_t*>(p));
    case DType::i32: return *static_cast<const int32_t*>(p);
    case DType::i64: return static_cast<double>(*static_cast<const int64_t*>(p));
    case DType::u8: return *static_cast<const uint8_t*>(p);
  }
  return 0;
}

// An integer element, exactly (an int64 beyond 2^53 would round through a double).
int64_t load_as_int64(const void* p, DType t) {
  switch (t) {
    case DType::i32: return *static_cast<const int32_t*>(p);
    case DType::i64: return *static_cast<const int64_t*>(p);
    case DType::u8: return *static_cast<const uint8_t*>(p);
    default: return 0;
  }
}

}  // namespace

Tensor Tensor::empty(const Shape& shape, TensorOptions opt) { return Tensor(make_impl(shape, opt)); }

namespace {

// An integer type must hold `value` (truncated toward zero, as the conversion does): a fill
// would wrap or saturate it without a word.
void check_fits(const char* op, double value, DType dtype) {
  const double whole = std::trunc(value);
  const auto range = [&](int64_t lo, int64_t hi) {
    KILN_CHECK(whole >= static_cast<double>(lo) && whole <= static_cast<double>(hi), op, ": ", value,
               " does not fit ", dtype_name(dtype), " (", lo, "..", hi, ")");
  };
  if (dtype == DType::u8) range(0, 255);
  if (dtype == DType::i32) range(INT32_MIN, INT32_MAX);
  if (dtype == DType::i64) range(INT64_MIN, int64_t{9223372036854774784});  // the largest double below 2^63
}

}  // namespace

Tensor Tensor::full(const Shape& shape, double value, TensorOptions opt) {
  check_fits("full", value, opt.dtype);
  Tensor t = empty(shape, opt);
  backend_for(opt.device).fill(t, value);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, TensorOptions opt) { return full(shape, 0.0, opt); }
Tensor Tensor::ones(const Shape& shape, TensorOptions opt) { return full(shape, 1.0, opt); }

Tensor Tensor::arange(int64_t n, double start, double step, TensorOptions opt) {
  if (n > 0) {  // the first and last values bound the rest
    check_fits("arange", start, opt.dtype);
    check_fits("arange", start + static_cast<double>(n - 1) * step, opt.dtype);
  }
  Tensor t = empty(Shape{n}, opt);
  backend_for(opt.device).arange(t, start, step);
  return t;
}

Tensor Tensor::uniform(const Shape& shape, float lo, float hi, Generator& gen, TensorOptions opt) {
  KILN_CHECK(opt.dtype == DType::f32, "uniform: only float32 is supported, asked for ", dtype_name(opt.dtype));
  KILN_CHECK(lo <= hi, "uniform: lo ", lo, " > hi ", hi);
  Tensor t = empty(shape, opt);
  backend_for(opt.device).fill_uniform(t, gen.reserve(static_cast<uint64_t>(t.numel())), lo, hi);
  return t;
}

Tensor Tensor::normal(const Shape& shape, float mean, float std, Generator& gen, TensorOptions opt) {
  KILN_CHECK(opt.dtype == DType::f32, "normal: only float32 is supported, asked for ", dtype_name(opt.dtype));
  KILN_CHECK(std >= 0, "normal: std must be >= 0, got ", std);
  Tensor t = empty(shape, opt);
  backend_for(opt.device).fill_normal(t, gen.reserve(static_cast<uint64_t>(t.numel())), mean, std);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape) {
  KILN_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "from_vector: ", values.size(),
             " values for shape ", shape, " (", shape.numel(), " elements)");
  Tensor t = empty(shape);
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::from_vector(const std::vector<int64_t>& values, const Shape& shape) {
  KILN_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "from_vector: ", values.size(),
             " values for shape ", shape, " (", shape.numel(), " elements)");
  Tensor t = empty(shape, TensorOptions{DType::i64});
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(int64_t));
  return t;
}

Tensor Tensor::from_external(void* data, const Shape& shape, DType dtype, Device device,
                             std::function<void()> release) {
  const size_t bytes = storage_bytes(shape, dtype);
  KILN_CHECK(data != nullptr || bytes == 0, "from_external: null data for shape ", shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(data, bytes, device, std::move(release));
  impl->shape = shape;
  impl->strides = shape.contiguous_strides();
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

std::string Tensor::description() const {
  return std::string(dtype_name(dtype())) + shape().str() + " on " + device().str();
}

Tensor Tensor::reshape(const Shape& shape) const { return kiln::reshape(*this, shape); }
Tensor Tensor::slice(int64_t begin, int64_t end) const { return kiln::slice(*this, begin, end); }

namespace {
// A copy to another device, differentiable as in PyTorch: the gradient goes back to the
// input's device. It keeps nothing.
struct DeviceCopyNode final : Node {
  explicit DeviceCopyNode(Device from) : Node("to_device"), from(from) {}
  Device from;
  std::vector<Tensor> apply(const Tensor& g) override { return {g.to(from)}; }
};
}  // namespace

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor out = empty(shape(), TensorOptions{dtype(), device});
  out.copy_from(*this);
  if (autograd::needs_grad({this})) {
    auto node = std::make_shared<DeviceCopyNode>(this->device());
    node->next = {autograd::edge_for(*this)};
    autograd::set_history(out, node);
  }
  return out;
}

namespace {
// The cast's backward: the incoming gradient converted back to the input's dtype (a bf16
// compute copy's gradient lands on its fp32 master weight as fp32). It keeps nothing.
struct CastNode final : Node {
  explicit CastNode(DType from) : Node("cast"), from(from) {}
  DType from;
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor gx = Tensor::empty(g.shape(), TensorOptions{from, g.device()});
    gx.copy_from(g);
    return {gx};
  }
};
}  // namespace

Tensor Tensor::to(DType dtype) const {
  if (dtype == this->dtype()) return *this;
  Tensor out = empty(shape(), TensorOptions{dtype, device()});
  out.copy_from(*this);
  // Differentiable between the floating dtypes; a cast to integers ends the graph.
  if (is_floating(dtype) && is_floating(this->dtype()) && autograd::needs_grad({this})) {
    auto node = std::make_shared<CastNode>(this->dtype());
    node->next = {autograd::edge_for(*this)};
    autograd::set_history(out, node);
  }
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), TensorOptions{dtype(), device()});
  out.copy_from(*this);
  return out;
}

void Tensor::copy_from(const Tensor& src, bool non_blocking) {
  KILN_CHECK(defined() && src.defined(), "copy_from: the ", defined() ? "source" : "destination",
             " is an undefined tensor (", kUndefinedTensorOrigin, ")");
  KILN_CHECK(src.numel() == numel(), "copy_from: source ", src.description(), " has ", src.numel(),
             " elements, destination ", description(), " has ", numel());
  Device d = !device().is_cpu() ? device() : src.device();
  backend_for(d).copy(src, *this, non_blocking);
  mark_modified();
}

TensorStamp::TensorStamp(const Tensor& t)
    : storage_(t.impl().storage), data_(t.raw_data()), shape_(t.shape()), dtype_(t.dtype()), version_(t.version()) {}

bool TensorStamp::unchanged(const Tensor& t) const {
  return t.defined() && storage_.lock() == t.impl().storage && data_ == t.raw_data() && shape_ == t.shape() &&
         dtype_ == t.dtype() && version_ == t.version() && !t.shared_outside();
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset_bytes = impl_->offset_bytes;
  impl->shape = impl_->shape;
  impl->strides = impl_->strides;
  impl->dtype = impl_->dtype;
  return Tensor(impl);
}

double Tensor::at(std::initializer_list<int64_t> index) const {
  KILN_CHECK(device().is_cpu(), "at(): element access needs a host tensor, this is ", description(),
             "; call .cpu() first");
  KILN_CHECK(static_cast<int64_t>(index.size()) == rank(), "at(): ", index.size(), " indices for ", description());
  int64_t flat = 0, d = 0;
  for (int64_t i : index) {
    KILN_CHECK(i >= 0 && i < dim(d), "at(): index ", i, " out of range for dimension ", d, " of ", description());
    flat += i * strides()[static_cast<size_t>(d)];
    ++d;
  }
  return load_as_double(static_cast<const char*>(raw_data()) + flat * dtype_size(dtype()), dtype());
}

double Tensor::item() const {
  KILN_CHECK(numel() == 1, "item(): needs a one-element tensor, got ", description());
  Tensor h = cpu();
  return load_as_double(h.raw_data(), h.dtype());
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor h = cpu();
  std::vector<T> out(static_cast<size_t>(numel()));
  const char* p = static_cast<const char*>(h.raw_data());
  const size_t es = dtype_size(dtype());
  if (std::is_integral_v<T> && !is_floating(dtype())) {  // integer to integer: exact, wrapping as C++20's casts
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<T>(load_as_int64(p + i * es, dtype()));
    return out;
  }
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<T>(load_as_double(p + i * es, dtype()));
  return out;
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

Tensor& Tensor::set_requires_grad(bool r) {
  KILN_CHECK(!r || is_floating(dtype()), "set_requires_grad: only floating tensors can require grad, this is ",
             description());
  KILN_CHECK(is_leaf(), "set_requires_grad: only leaves can change requires_grad; this tensor was made by ",
             grad_fn()->name(), " (detach() gives its values without the history, sharing memory)");
  impl().requires_grad = r;
  return *this;
}

Tensor Tensor::grad() const { return Tensor(autograd::load_grad(impl())); }

void Tensor::zero_grad() { autograd::store_grad(impl(), nullptr); }

void Tensor::set_grad(const Tensor& g) {
  KILN_CHECK(!g.defined() || (g.shape() == shape() && g.dtype() == dtype()), "set_grad: a gradient ", g.description(),
             " for ", description(), " (shape and dtype must agree)");
  autograd::store_grad(impl(), g.defined() ? g.impl_ptr() : nullptr);
}

void Tensor::backward(const Tensor& seed, bool retain_graph) const {
  autograd::run_backward(*this, seed, retain_graph);
}

namespace {
// One element as printed: floats always look like floats ("2." as torch and NumPy print
// them, not "2"), integers as integers.
void print_value(std::ostringstream& os, double v, DType dt) {
  if (!is_floating(dt)) {
    os << static_cast<int64_t>(v);
    return;
  }
  std::ostringstream one;
  one << std::setprecision(6) << v;
  const std::string s = one.str();
  os << s << (s.find_first_of(".eEnN") == std::string::npos ? "." : "");  // "inf" and "nan" hold an n
}

void print_rec(std::ostringstream& os, const char* base, const Tensor& t, int64_t d, int64_t offset,
               int64_t edge, int indent) {
  const int64_t n = t.dim(d);
  const int64_t stride = t.strides()[static_cast<size_t>(d)];
  const size_t es = dtype_size(t.dtype());
  os << '[';
  for (int64_t i = 0; i < n; ++i) {
    if (n > 2 * edge && i == edge) {
      os << (d + 1 == t.rank() ? "..., " : "...,\n" + std::string(static_cast<size_t>(indent + 1), ' '));
      i = n - edge - 1;
      continue;
    }
    if (d + 1 == t.rank()) {
      print_value(os, load_as_double(base + (offset + i * stride) * static_cast<int64_t>(es), t.dtype()), t.dtype());
    } else {
      print_rec(os, base, t, d + 1, offset + i * stride, edge, indent + 1);
    }
    if (i + 1 < n) os << (d + 1 == t.rank() ? ", " : ",\n" + std::string(static_cast<size_t>(indent + 1), ' '));
  }
  os << ']';
}
}  // namespace

std::string Tensor::str(int64_t edge_items) const {
  // 0 printed "[..., ]": nothing at either end of every dimension longer than 0.
  KILN_CHECK(edge_items >= 1, "Tensor::str: edge_items (the values shown at each end of a long dimension) ",
             "must be at least 1, got ", edge_items);
  std::ostringstream os;
  os << "Tensor(" << description();
  if (requires_grad()) os << ", requires_grad";
  if (grad_fn()) os << ", grad_fn=" << grad_fn()->name();
  os << ")\n";
  Tensor h = cpu();
  if (rank() == 0) {
    print_value(os, load_as_double(h.raw_data(), dtype()), dtype());
  } else if (numel() == 0) {
    os << "[]";
  } else {
    print_rec(os, static_cast<const char*>(h.raw_data()), h, 0, 0, edge_items, 0);
  }
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace kiln
