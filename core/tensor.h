// Tensor: a typed, shaped view of a Storage on one device, plus its autograd state.
// Tensors are cheap handles (shared ownership); views share memory with their base.
// Layout is row-major and, for now, always contiguous: views are reshapes and slices
// along the first dimension.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/generator.h"
#include "core/shape.h"
#include "core/storage.h"

namespace kiln {

class Node;

// The shared state behind a Tensor handle.
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  size_t offset_bytes = 0;
  Shape shape;
  std::vector<int64_t> strides;
  DType dtype = DType::f32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;  // accumulated by backward(); null until then
  std::shared_ptr<Node> grad_fn;     // the op that made this tensor; null for leaves
};

// Options for creating a tensor.
struct TensorOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  bool pinned = false;  // host tensors only: page-locked memory when a CUDA backend exists
};

// Where an undefined tensor comes from, for each error that meets one.
inline constexpr const char* kUndefinedTensorOrigin =
    "a default-made Tensor, or grad() of a tensor that backward() has not reached";

// A handle to a tensor. Default-constructed handles are "undefined" (like an empty optional).
class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories ----
  // Uninitialised memory.
  static Tensor empty(const Shape& shape, TensorOptions opt = {});
  static Tensor zeros(const Shape& shape, TensorOptions opt = {});
  static Tensor ones(const Shape& shape, TensorOptions opt = {});
  static Tensor full(const Shape& shape, double value, TensorOptions opt = {});
  // 1-d [start, start+step, ...) with n elements.
  static Tensor arange(int64_t n, double start = 0, double step = 1, TensorOptions opt = {});
  // Uniform [lo, hi) from the generator's Philox stream (float32 only).
  static Tensor uniform(const Shape& shape, float lo, float hi, Generator& gen = default_generator(),
                        TensorOptions opt = {});
  // Normal(mean, std) from the generator's Philox stream (float32 only).
  static Tensor normal(const Shape& shape, float mean, float std, Generator& gen = default_generator(),
                       TensorOptions opt = {});
  // A host float32 tensor holding `values` (sizes must agree).
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape);
  // A host int64 tensor holding `values`, e.g. labels.
  static Tensor from_vector(const std::vector<int64_t>& values, const Shape& shape);
  // A contiguous tensor over memory kiln did not allocate (zero-copy sharing, e.g. DLPack
  // in python/): `release` runs once the last view is gone. `data` must hold
  // shape.numel() elements of `dtype` on `device` and stay valid until then.
  static Tensor from_external(void* data, const Shape& shape, DType dtype, Device device,
                              std::function<void()> release);

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  int64_t rank() const { return impl().shape.rank(); }
  int64_t dim(int64_t d) const { return impl().shape[d]; }
  int64_t numel() const { return impl().shape.numel(); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  const std::vector<int64_t>& strides() const { return impl().strides; }
  bool is_contiguous() const { return impl().strides == impl().shape.contiguous_strides(); }
  bool is_pinned() const { return impl().storage->pinned(); }
  // "float32[8, 224, 224, 3] on cpu".
  std::string description() const;

  // Raw pointer to the first element. For a CUDA tensor this is device memory: only a
  // backend may dereference it.
  void* raw_data() const { return static_cast<char*>(impl().storage->data()) + impl().offset_bytes; }
  // Typed raw pointer; throws if T does not match the dtype.
  template <typename T>
  T* data() const {
    KILN_CHECK(dtype_of<T>::value == dtype(), "data<", dtype_name(dtype_of<T>::value), ">() on a ",
               dtype_name(dtype()), " tensor");
    return static_cast<T*>(raw_data());
  }

  // ---- views and copies ----
  // Same memory, new shape (one extent may be -1). Recorded by autograd.
  Tensor reshape(const Shape& shape) const;
  // Rows [begin, end) along dimension 0, sharing memory. Recorded by autograd.
  Tensor slice(int64_t begin, int64_t end) const;
  // A copy on `device` (this tensor itself when it is already there); differentiable, as in
  // PyTorch: the gradient goes back to this tensor's device.
  Tensor to(Device device) const;
  // A copy converted to `dtype` (this tensor itself when it already has it); kiln's one
  // cast. Between float32 and bfloat16 it is differentiable: when this tensor requires grad
  // (and grad mode is on) it records a node whose backward converts the gradient back to
  // this tensor's dtype, so fp32 master weights cast to bf16 for compute get fp32 grads.
  Tensor to(DType dtype) const;
  // Shorthand for to(Device::cpu()).
  Tensor cpu() const { return to(Device::cpu()); }
  // A fresh copy on the same device, detached from the graph.
  Tensor clone() const;
  // Copies src's values into this tensor (same numel; devices and dtypes may differ).
  // non_blocking: see Backend::copy (host memory must be pinned to overlap).
  void copy_from(const Tensor& src, bool non_blocking = false);
  // Records an in-place write into this tensor's memory (views share the count). kiln's own
  // in-place writers call it (copy_from, the optimizer updates, batch norm's running
  // statistics); code writing through data<T>() itself should too, so that a backward that
  // saved these values refuses to use the new ones (PyTorch's version counter).
  void mark_modified() const { impl().storage->bump_version(); }
  // The count mark_modified advances (0 for a fresh tensor).
  uint64_t version() const { return impl().storage->version(); }
  // Whether other libraries may write this memory unseen by version() (Storage::shared_outside).
  bool shared_outside() const { return impl().storage->shared_outside(); }
  // Records that this memory was handed to another library that may write it (DLPack export).
  void mark_shared_outside() const { impl().storage->mark_shared_outside(); }
  // Same memory, no autograd history, requires_grad false.
  Tensor detach() const;

  // ---- element access (for tests and printing; host tensors, or a host copy) ----
  // The element at a multi-index of a CPU tensor, converted to double.
  double at(std::initializer_list<int64_t> index) const;
  // The single element of a one-element tensor (copied to the host if needed).
  double item() const;
  // All elements, copied to the host and converted to T.
  template <typename T>
  std::vector<T> to_vector() const;

  // ---- autograd ----
  bool requires_grad() const { return impl().requires_grad; }
  // Marks a leaf as needing a gradient; returns *this.
  Tensor& set_requires_grad(bool r);
  // The accumulated gradient (undefined until backward reached this leaf). Safe to call while
  // another thread runs backward (autograd::load_grad).
  Tensor grad() const;
  // Forgets the accumulated gradient.
  void zero_grad();
  // Makes `g` (same shape and dtype, or undefined) the accumulated gradient: a data-parallel
  // sum, a gradient replayed by a CUDA graph.
  void set_grad(const Tensor& g);
  // True when the tensor was not produced by a recorded op.
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  // Backpropagates from this tensor. A non-scalar needs `seed` (dL/dthis). The graph is
  // freed afterwards unless retain_graph is true.
  void backward(const Tensor& seed = Tensor(), bool retain_graph = false) const;

  // Readable printout: description, then values (a dimension longer than 2 * edge_items shows
  // edge_items at each end; edge_items >= 1).
  std::string str(int64_t edge_items = 3) const;

  TensorImpl& impl() const {
    KILN_CHECK(impl_ != nullptr, "use of an undefined tensor (", kUndefinedTensorOrigin, ": check defined() first)");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Which values a tensor held when stamped: its memory (a weak reference, so that a new block
// at a freed one's address is not taken for it), where in it, as what, and its write count.
// What caches a tensor's values (a frozen weight's bf16 copy, a checkpoint's frozen copy)
// keeps one and asks `unchanged` before reusing them.
class TensorStamp {
 public:
  TensorStamp() = default;
  explicit TensorStamp(const Tensor& t);
  // True when t is the same memory, view and dtype at the same version (Tensor::version),
  // and not shared with a library that may write it unseen (Tensor::shared_outside).
  bool unchanged(const Tensor& t) const;

 private:
  std::weak_ptr<Storage> storage_;
  const void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::f32;
  uint64_t version_ = 0;
};

extern template std::vector<float> Tensor::to_vector<float>() const;
extern template std::vector<double> Tensor::to_vector<double>() const;
extern template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
extern template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
extern template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

}  // namespace kiln
