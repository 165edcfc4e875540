// The in-place methods, torch's: x.add_(y, alpha=), x.mul_(0.9), x.zero_(), x.copy_(src), x.clamp_(),
// x.uniform_(), x += y. Core writes the memory (core/ops.h, binary_in_place and its kin); this file
// keeps them honest about what kiln copies where torch views (bindings.h, view_copy).
#include <algorithm>
#include <climits>
#include <cstring>
#include <cmath>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include "python/src/bindings.h"

namespace kiln::python {
namespace {

using nb::arg;

// A view of some memory as it was when a copy was made of it, held weakly (the table keeps no
// memory alive); made again on demand.
struct ViewRef {
  std::weak_ptr<Storage> storage;
  size_t offset = 0;
  Shape shape;
  DType dtype = DType::f32;

  static ViewRef of(const Tensor& t) { return {t.impl().storage, t.impl().offset_bytes, t.shape(), t.dtype()}; }
  // The view again, or an undefined tensor where its memory is gone. No autograd history.
  Tensor lock() const {
    std::shared_ptr<Storage> s = storage.lock();
    if (!s) return {};
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = std::move(s);
    impl->offset_bytes = offset;
    impl->shape = shape;
    impl->strides = shape.contiguous_strides();
    impl->dtype = dtype;
    return Tensor(std::move(impl));
  }
};

// Makes copy's memory keep base's alive, as a torch view keeps its base's: copy's Storage is
// swapped for one over the same bytes whose release holds both. Done before anything else holds
// the copy's Storage.
void hold_base(const Tensor& copy, const Tensor& base) {
  std::shared_ptr<Storage> own = copy.impl().storage;
  std::shared_ptr<Storage> kept = base.impl().storage;
  void* data = own->data();
  const size_t bytes = own->bytes();
  const Device device = own->device();
  copy.impl().storage =
      std::make_shared<Storage>(data, bytes, device, [own = std::move(own), kept = std::move(kept)] {});
}

// Whether two bands of one view of memory are disjoint (never, where either is not a band).
bool disjoint(const CopyRecipe& a, const CopyRecipe& b) {
  return a.band_dim >= 0 && a.band_dim == b.band_dim &&
         (a.band_start + a.band_length <= b.band_start || b.band_start + b.band_length <= a.band_start);
}

// What the table knows of one block of memory (a Storage): for a copy kiln made where torch views,
// the view it was made of and its recipe; for any block, the copies made of it.
struct MemoryEntry {
  ViewRef self;  // a copy: itself as made; any: its memory, to tell it from a later block at its address
  bool is_copy = false;
  ViewRef base;
  CopyRecipe recipe;
  std::vector<std::weak_ptr<Storage>> copies;
};

// The view-copy table, keyed by memory: views of a tensor (reshape, detach, a slice) share its
// entry, as they share torch's. One lock, never held while kiln computes.
class ViewCopyTable {
 public:
  void record(const Tensor& base, const Tensor& copy, CopyRecipe recipe) {
    if (base.impl().storage == copy.impl().storage) return;  // a true view: it sees every write, as torch's
    hold_base(copy, base);
    const std::shared_ptr<Storage>& from = base.impl().storage;
    const std::shared_ptr<Storage>& made = copy.impl().storage;
    const std::lock_guard<std::mutex> lock(mu_);
    entries_[made.get()] = MemoryEntry{ViewRef::of(copy), true, ViewRef::of(base), std::move(recipe), {}};
    MemoryEntry* b = live(from);
    if (b == nullptr) b = &(entries_[from.get()] = MemoryEntry{ViewRef::of(base), false, {}, {}, {}});
    b->copies.push_back(made);
    if (entries_.size() >= sweep_at_) sweep();
  }

  // Refuses a write into t that torch refuses too: into a copy of an expanded view (one element
  // would be several).
  void check_write(const std::string& name, const Tensor& t) {
    const std::lock_guard<std::mutex> lock(mu_);
    const MemoryEntry* e = live(t.impl().storage);
    KILN_CHECK(e == nullptr || !e->is_copy || e->recipe.put || e->base.storage.expired(), name, ": ",
               t.description(), " is x.expand(...) of a tensor still alive: torch refuses writes into an expanded "
               "view (several of its elements are one element of x); clone() it first for a tensor of its own");
  }

  // Whether t is (a view of) a copy kiln made where torch views, whose source is alive.
  bool is_copy(const Tensor& t) {
    const std::lock_guard<std::mutex> lock(mu_);
    const MemoryEntry* e = live(t.impl().storage);
    return e != nullptr && e->is_copy && !e->base.storage.expired();
  }

  // Whether a write into t must reach other tensors (t part of a larger block of memory, a copy of a
  // live view, or the source of live copies): what x += y cannot do by making a new tensor.
  bool shares_writes(const Tensor& t) {
    if (t.impl().offset_bytes != 0 || t.nbytes() != t.impl().storage->bytes()) return true;  // t[i] of x
    const std::lock_guard<std::mutex> lock(mu_);
    MemoryEntry* e = live(t.impl().storage);
    if (e == nullptr) return false;
    std::erase_if(e->copies, [](const std::weak_ptr<Storage>& c) { return c.expired(); });
    return (e->is_copy && !e->base.storage.expired()) || !e->copies.empty();
  }

  // After a write into `written`: the view it is a copy of gets it (recipe.put), then that view's
  // memory is propagated in turn, and every copy made of `written` is made again (recipe.get), but
  // the one the write came from (`from`) and those in bands disjoint from its band.
  void propagate(const std::shared_ptr<Storage>& written, const MemoryEntry* from = nullptr) {
    Tensor self, base;
    MemoryEntry up;
    std::vector<std::shared_ptr<Storage>> copies;
    {
      const std::lock_guard<std::mutex> lock(mu_);
      MemoryEntry* e = live(written);
      if (e == nullptr) return;
      if (e->is_copy) {
        self = e->self.lock();
        base = e->base.lock();
        up = *e;
        up.copies.clear();
      }
      for (std::shared_ptr<Storage>& c : live_copies(*e)) {
        const MemoryEntry* ce = live(c);
        if (from != nullptr && ce != nullptr &&
            (ce->self.storage.lock() == from->self.storage.lock() ||
             (same_view(ce->base, from->base) && disjoint(ce->recipe, from->recipe))))
          continue;
        copies.push_back(std::move(c));
      }
    }
    if (base.defined() && up.recipe.put) {
      up.recipe.put(base, self);
      propagate(base.impl().storage, &up);
    }
    for (const std::shared_ptr<Storage>& c : copies) refresh(c);
  }

 private:
  // The copies of e still alive, locked (the lock held).
  static std::vector<std::shared_ptr<Storage>> live_copies(MemoryEntry& e) {
    std::vector<std::shared_ptr<Storage>> out;
    std::erase_if(e.copies, [](const std::weak_ptr<Storage>& c) { return c.expired(); });
    for (const std::weak_ptr<Storage>& w : e.copies)
      if (std::shared_ptr<Storage> c = w.lock()) out.push_back(std::move(c));
    return out;
  }

  // Whether two copies were made of the same view of memory (their bands comparable).
  static bool same_view(const ViewRef& a, const ViewRef& b) {
    return a.storage.lock() == b.storage.lock() && a.offset == b.offset && a.shape == b.shape && a.dtype == b.dtype;
  }

  // Makes the copy in `copy` again from its view (its memory written, its version advanced), then
  // the copies made of it.
  void refresh(const std::shared_ptr<Storage>& copy) {
    Tensor self, base;
    CopyRecipe recipe;
    std::vector<std::shared_ptr<Storage>> copies;
    {
      const std::lock_guard<std::mutex> lock(mu_);
      MemoryEntry* e = live(copy);
      if (e == nullptr || !e->is_copy) return;
      self = e->self.lock();
      base = e->base.lock();
      recipe = e->recipe;
      copies = live_copies(*e);
    }
    if (!base.defined() || !self.defined()) return;
    self.copy_from(recipe.get(base));
    for (const std::shared_ptr<Storage>& c : copies) refresh(c);
  }

  // The entry of s, or null: one left by a block now freed (a new one may have its address) is erased.
  MemoryEntry* live(const std::shared_ptr<Storage>& s) {
    const auto it = entries_.find(s.get());
    if (it == entries_.end()) return nullptr;
    if (it->second.self.storage.lock() == s) return &it->second;
    entries_.erase(it);
    return nullptr;
  }

  // Drops the entries of freed memory and the freed copies; next time at twice what is left.
  void sweep() {
    for (auto& [key, e] : entries_)
      std::erase_if(e.copies, [](const std::weak_ptr<Storage>& c) { return c.expired(); });
    std::erase_if(entries_, [](const auto& kv) {
      return kv.second.self.storage.expired() || (!kv.second.is_copy && kv.second.copies.empty());
    });
    sweep_at_ = std::max<size_t>(1024, 2 * entries_.size());
  }

  std::mutex mu_;
  std::unordered_map<const Storage*, MemoryEntry> entries_;
  size_t sweep_at_ = 1024;
};

// Never destroyed: tensors may be freed while the interpreter exits.
ViewCopyTable& view_copy_table() {
  static auto* table = new ViewCopyTable;
  return *table;
}

// After an in-place write into t: what the table links it to sees it (ViewCopyTable::propagate),
// without the GIL. Returns self, as torch's in-place methods return the tensor.
nb::object written(nb::handle self) {
  const Tensor& t = nb::cast<const Tensor&>(self);
  {
    nb::gil_scoped_release release;
    const NoGradGuard no_grad;
    view_copy_table().propagate(t.impl().storage, nullptr);
  }
  return nb::borrow(self);
}

// The checks every in-place method makes first: autograd's (core) and the view-copy table's.
const Tensor& writable(const char* name, nb::handle self, const Tensor* operand = nullptr) {
  const Tensor& t = nb::cast<const Tensor&>(self);
  check_in_place(name, t, operand);
  view_copy_table().check_write(name, t);
  return t;
}

// self.op_(other): other a tensor, or a number as the operator takes it (an int beside an integer
// tensor exact, a float as float32), scaled first by alpha (add_ and sub_) as kiln.add's. self.
nb::object binary_method(const char* name, const char* symbol, BinaryOp op, nb::handle self, nb::handle other,
                         nb::handle alpha) {
  const Tensor* given = nb::isinstance<Tensor>(other) ? &nb::cast<const Tensor&>(other) : nullptr;
  const Tensor& t = writable(name, self, given);
  const nb::object b = scaled_operand(name, self, other, alpha);
  if (nb::isinstance<Tensor>(b)) {
    const Tensor& o = nb::cast<const Tensor&>(b);
    nb::gil_scoped_release release;
    binary_in_place(op, t, o);
  } else if (const std::optional<Tensor> i = integer_number(t, b, symbol)) {
    nb::gil_scoped_release release;
    binary_in_place(op, t, *i);
  } else {
    const std::optional<double> s = scalar_operand(b, symbol, false);
    if (!s) throw nb::type_error(("Tensor." + std::string(name) + ": other must be a kiln.Tensor or a number, not " +
                                  python_type(b)).c_str());
    const float f = as_float(b, *s);
    nb::gil_scoped_release release;
    binary_in_place(op, t, f);
  }
  return written(self);
}

// self.name_(...) for an op kiln computes out of place: r, stored over self (core's checks). self.
nb::object stored(const char* name, nb::handle self, const Tensor& r) {
  const Tensor& t = nb::cast<const Tensor&>(self);
  {
    nb::gil_scoped_release release;
    store_in_place(name, t, r);
  }
  return written(self);
}

// A number as fill_ writes it into t: a 0-d tensor of t's dtype. An int into an integer tensor
// exactly; a float into one truncated toward zero, as torch's (a non-finite or out-of-range one
// refused); a bool is 1 or 0; a float into a float tensor rounded once to float32 (then to bfloat16,
// as torch's). `name` in the errors.
Tensor fill_value(const char* name, const Tensor& t, nb::handle value) {
  const TensorOptions options{t.dtype()};
  if (!is_floating(t.dtype()) && is_index_integer(value)) {
    const std::optional<nb::object> index = index_of(value);
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(index->ptr(), &overflow);
    if (v == -1 && PyErr_Occurred()) throw nb::python_error();
    const bool fits = overflow == 0 && (t.dtype() == DType::i64 ||
                                        (t.dtype() == DType::i32 && v >= INT32_MIN && v <= INT32_MAX) ||
                                        (t.dtype() == DType::u8 && v >= 0 && v <= 255));
    KILN_CHECK(fits, name, ": ", nb::str(value).c_str(), " does not fit ", t.description());
    return Tensor::from_vector(std::vector<int64_t>{v}, Shape{}).to(t.dtype());
  }
  const std::optional<double> s = scalar_operand(value, name, false);
  if (!s) throw nb::type_error((std::string(name) + ": the value must be a number or a kiln.Tensor, not " +
                                python_type(value)).c_str());
  if (is_floating(t.dtype())) {  // torch's overflow check: a finite number past float's range is refused
    const float f = as_float(value, *s);
    KILN_CHECK(std::isfinite(f) || !std::isfinite(*s), name, ": ", *s, " does not fit ", t.description());
    return Tensor::full(Shape{}, f, options);
  }
  // torch's: the number itself within the type's range (-0.1 does not fit uint8), then truncated
  const double past = t.dtype() == DType::i64 ? 9223372036854775808.0 : t.dtype() == DType::i32 ? 2147483648.0 : 256.0;
  const double lowest = t.dtype() == DType::u8 ? 0.0 : -past;
  KILN_CHECK(std::isfinite(*s) && *s >= lowest && std::trunc(*s) < past, name, ": ", *s, " does not fit ",
             t.description());
  return Tensor::full(Shape{}, std::trunc(*s), options);
}

// x.fill_(value): a number (fill_value's rules) or a 0-d tensor (torch's). One pass over a float x.
nb::object fill_method(nb::handle self, nb::handle value) {
  const Tensor* given = nb::isinstance<Tensor>(value) ? &nb::cast<const Tensor&>(value) : nullptr;
  const Tensor& t = writable("fill_", self, given);
  KILN_CHECK(given == nullptr || given->rank() == 0, "fill_: a tensor value must be 0-d (one number), got ",
             given->description(), "; copy_ writes a tensor's values");
  const Tensor v = given != nullptr ? *given : fill_value("fill_", t, value);
  {
    nb::gil_scoped_release release;
    if (given == nullptr && is_floating(t.dtype())) fill_in_place(t, v.item(), "fill_");  // exact: v holds it
    else copy_in_place(t, v, false, "fill_");
  }
  return written(self);
}

// The largest value of the float dtype below b.
float below_in(DType dtype, float b) {
  const auto previous = [dtype](float v) {
    if (dtype != DType::bf16) return std::nextafter(v, -std::numeric_limits<float>::infinity());
    uint32_t bits = 0;
    std::memcpy(&bits, &v, sizeof bits);
    bits = v > 0 ? bits - 0x10000u : v == 0 ? 0x80010000u : bits + 0x10000u;  // one bfloat16 step down
    std::memcpy(&v, &bits, sizeof v);
    return v;
  };
  float v = dtype == DType::bf16 ? BFloat16::to_float(BFloat16::from_float(b)) : b;
  while (v >= b) v = previous(v);
  return v;
}

// x.uniform_(from, to) and x.normal_(mean, std): values from kiln's default generator (kiln.manual_seed),
// drawn as float32 and stored in a float32 or bfloat16 x.
nb::object random_method(const char* name, nb::handle self, float a, float b, nb::handle generator, bool normal) {
  if (!generator.is_none())
    throw nb::type_error(("Tensor." + std::string(name) + ": kiln draws from its one default generator (seed it with "
                          "kiln.manual_seed); generator= takes None only").c_str());
  const Tensor& t = writable(name, self);
  KILN_CHECK(is_floating(t.dtype()), name, ": ", t.description(), " is not a float tensor (torch's ", name,
             " takes floats only)");
  {
    nb::gil_scoped_release release;
    const TensorOptions f32{DType::f32, t.device()};
    const Tensor r = normal ? Tensor::normal(t.shape(), a, b, default_generator(), f32)
                            : Tensor::uniform(t.shape(), a, b, default_generator(), f32);
    copy_in_place(t, r, false, name);
    // [from, to): a float32 draw just below `to` may round to it in x's dtype (bfloat16 often)
    if (!normal && a < b) binary_in_place(BinaryOp::minimum, t, below_in(t.dtype(), b));
  }
  return written(self);
}

// x.addcmul_(t1, t2, value=v) and x.addcdiv_: x + v * t1 * t2 (or / t2), torch's order ((v * t1) then
// t2), each step as the operators take it; v = 1 skips its product (exact).
nb::object add_combined(const char* name, binaryfunc combine, nb::handle self, nb::handle t1, nb::handle t2,
                        nb::handle value) {
  for (nb::handle h : {t1, t2})
    if (!nb::isinstance<Tensor>(h))
      throw nb::type_error(("Tensor." + std::string(name) + ": tensor1 and tensor2 must be kiln tensors, not " +
                            python_type(h)).c_str());
  writable(name, self, &nb::cast<const Tensor&>(t1));
  writable(name, self, &nb::cast<const Tensor&>(t2));
  nb::object first = nb::borrow(t1);
  double v = 1;
  if (!nb::try_cast(value, v) || v != 1) first = nb::steal(PyNumber_Multiply(t1.ptr(), value.ptr()));
  if (!first.is_valid()) throw nb::python_error();
  const nb::object term = nb::steal(combine(first.ptr(), t2.ptr()));
  if (!term.is_valid()) throw nb::python_error();
  return binary_method(name, "+", BinaryOp::add, self, term, nb::handle());
}

// x += y and the like: in place, as torch's, where no gradient is wanted. Where one is (grad mode on,
// x or y requiring grad) kiln records no in-place op, so x += y is x = x + y, a new tensor: the
// same values, gradients right (torchvision's `out += identity`), but other names for x's tensor
// keep its old values. A leaf that requires grad is refused (as torch's), and so is an x whose
// view-copies would differ from torch's views either way.
nb::object in_place_operator(const char* name, const char* symbol, BinaryOp op, binaryfunc out_of_place,
                             nb::handle self, nb::handle other) {
  const Tensor& t = nb::cast<const Tensor&>(self);
  const bool other_grad = nb::isinstance<Tensor>(other) && nb::cast<const Tensor&>(other).requires_grad();
  if (grad_enabled() && (t.requires_grad() || other_grad)) {
    if (t.requires_grad() && t.is_leaf()) check_in_place(symbol, t);  // torch's refusal: raises
    KILN_CHECK(!view_copy_table().shares_writes(t), symbol, ": ", t.description(), " is part of another tensor "
               "(x[i], x[:, i], x.T, ...) or has such parts alive, and needs a gradient here: torch writes it in place "
               "through the view, and kiln records no in-place op; write the out-of-place form (y = y + other) and "
               "build the tensor it came from anew (kiln.concat, kiln.where)");
    // another tensor over this memory (a reshape or detach of it, or a tensor autograd saved) would see
    // torch's write and not x = x + y: refused too (torch's backward refuses a saved one's change)
    KILN_CHECK(t.impl().storage.use_count() == 1, symbol, ": ", t.description(), " needs a gradient here and "
               "shares its memory with another tensor (a reshape or detach() of it, or one autograd saved for the "
               "backward), which torch's in-place write would change too; kiln records no in-place op: write the "
               "out-of-place form, y = y + other");
    nb::object out = nb::steal(out_of_place(self.ptr(), other.ptr()));
    if (!out.is_valid()) throw nb::python_error();
    Tensor r = nb::cast<Tensor>(out);  // what the in-place op would store, as its checks take it
    KILN_CHECK(r.shape() == t.shape(), symbol, ": the result has shape ", r.shape(), ", which ", t.description(),
               " cannot hold in place (torch refuses it too); write y = y ", symbol[0], " other for the larger tensor");
    KILN_CHECK(is_floating(t.dtype()) || !is_floating(r.dtype()), symbol, ": the result is ", dtype_name(r.dtype()),
               ", which ", t.description(), " cannot store in place (torch refuses it too)");
    return r.dtype() == t.dtype() ? out : nb::cast(r.to(t.dtype()));  // in x's dtype, as torch's
  }
  return binary_method(name, symbol, op, self, other, nb::handle());
}

// t[key] = value, torch's: value a tensor or a number (fill_'s rules), assign_index's writes.
void set_item(nb::handle self, nb::handle key, nb::handle value) {
  constexpr const char* name = "t[key] = value";
  const Tensor* given = nb::isinstance<Tensor>(value) ? &nb::cast<const Tensor&>(value) : nullptr;
  const Tensor& t = writable(name, self, given);
  if (given == nullptr && !is_index_integer(value) && !PyFloat_Check(value.ptr()) &&
      !nb::hasattr(value, "__float__"))
    throw nb::type_error((std::string(name) + " takes a number or a kiln.Tensor, not " + python_type(value) +
                          " (kiln.tensor(value) makes one of a list or an array)").c_str());
  assign_index(t, key, given != nullptr ? *given : fill_value(name, t, value), name);
  (void)written(self);
}

}  // namespace

bool is_view_copy(const Tensor& x) { return view_copy_table().is_copy(x); }

Tensor own_where_torch_copies(const Tensor& x, Tensor y) {
  if (y.impl().storage != x.impl().storage || !is_view_copy(x)) return y;
  const auto without_ones = [](const Shape& s) {
    std::vector<int64_t> d;
    for (int64_t e : s.dims())
      if (e != 1) d.push_back(e);
    return d;
  };
  return without_ones(x.shape()) == without_ones(y.shape()) ? y : kiln::copy_of(y);
}

Tensor view_copy(const Tensor& base, Tensor copy, CopyRecipe recipe) {
  if (base.defined() && copy.defined()) view_copy_table().record(base, copy, std::move(recipe));
  return copy;
}

Tensor permuted_view(const Tensor& x, const std::vector<int64_t>& dims, Tensor made) {
  std::vector<int64_t> order(dims.size()), inverse(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) order[i] = dims[i] < 0 ? dims[i] + x.rank() : dims[i];
  for (size_t i = 0; i < order.size(); ++i) inverse[static_cast<size_t>(order[i])] = static_cast<int64_t>(i);
  return view_copy(x, std::move(made), CopyRecipe{[order](const Tensor& base) { return kiln::permute(base, order); },
                                                  [inverse](const Tensor& base, const Tensor& copy) {
                                                    Tensor b = base;
                                                    b.copy_from(kiln::permute(copy, inverse));
                                                  }});
}

Tensor transposed_view(const Tensor& x, int64_t d0, int64_t d1) {
  Tensor made = kiln::transpose(x, d0, d1);  // its checks first
  std::vector<int64_t> order(static_cast<size_t>(x.rank()));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::swap(order[static_cast<size_t>(d0 < 0 ? d0 + x.rank() : d0)],
            order[static_cast<size_t>(d1 < 0 ? d1 + x.rank() : d1)]);
  return permuted_view(x, order, std::move(made));
}

void write_band(const Tensor& base, int64_t d, int64_t start, const Tensor& part) {
  const int64_t inner = base.shape().numel_after(d), rows = base.shape().numel_before(d);
  const int64_t length = part.numel() / std::max<int64_t>(1, rows * inner);
  Tensor b = base;
  backend_for(base.device()).copy_block(part, 0, b, start * inner, rows, length * inner);
  b.mark_modified();
}

Tensor narrowed_view(const Tensor& x, int64_t dim, int64_t start, int64_t length, Tensor made) {
  const int64_t d = dim < 0 ? dim + x.rank() : dim;
  const Shape shape = made.shape();
  CopyRecipe recipe{[d, start, length, shape](const Tensor& base) {
                      return kiln::reshape(kiln::narrow(base, d, start, length), shape);
                    },
                    [d, start](const Tensor& base, const Tensor& copy) { write_band(base, d, start, copy); }, d, start,
                    length};
  return view_copy(x, std::move(made), std::move(recipe));
}

Tensor expanded_view(const Tensor& x, Tensor made) {
  const Shape shape = made.shape();
  return view_copy(x, std::move(made),
                   CopyRecipe{[shape](const Tensor& base) { return kiln::broadcast_to(base, shape); }, nullptr});
}

void bind_in_place(nb::handle cls) {
  const auto def = [&cls](const char* name, auto&& fn, const char* doc, const auto&... extra) {
    cls.attr(name) = nb::cpp_function(fn, nb::is_method(), nb::name(name), nb::scope(cls), extra..., doc);
  };
  def("add_", [](nb::handle self, nb::handle other, nb::handle alpha) {
        return binary_method("add_", "+", BinaryOp::add, self, other, alpha);
      }, "x += alpha * other in place (torch's add_): other a tensor broadcasting to x's shape, or a number; x.",
      arg("other"), nb::kw_only(), arg("alpha") = nb::none());
  def("sub_", [](nb::handle self, nb::handle other, nb::handle alpha) {
        return binary_method("sub_", "-", BinaryOp::sub, self, other, alpha);
      }, "x -= alpha * other in place (torch's sub_); x.", arg("other"), nb::kw_only(), arg("alpha") = nb::none());
  def("mul_", [](nb::handle self, nb::handle other) {
        return binary_method("mul_", "*", BinaryOp::mul, self, other, nb::handle());
      }, "x *= other in place (torch's mul_); x.", arg("other"));
  def("div_", [](nb::handle self, nb::handle other, const std::optional<std::string>& rounding_mode) {
        KILN_CHECK(!rounding_mode, "div_: rounding_mode=\"", rounding_mode.value_or(""), "\" is not in kiln (it has "
                   "no floor or trunc op yet)");
        return binary_method("div_", "/", BinaryOp::div, self, other, nb::handle());
      }, "x /= other in place (torch's div_; an integer x is refused: the quotient is float32); x.", arg("other"),
      nb::kw_only(), arg("rounding_mode") = nb::none());
  def("pow_", [](nb::handle self, nb::handle exponent) {
        writable("pow_", self, nb::isinstance<Tensor>(exponent) ? &nb::cast<const Tensor&>(exponent) : nullptr);
        nb::object r = nb::steal(PyNumber_Power(self.ptr(), exponent.ptr(), Py_None));
        if (!r.is_valid()) throw nb::python_error();
        return stored("pow_", self, nb::cast<const Tensor&>(r));
      }, "x = x ** exponent in place (torch's pow_; the operator's values); x.", arg("exponent"));
  def("clamp_", [](nb::handle self, std::optional<float> lo, std::optional<float> hi) {
        KILN_CHECK(lo || hi, "clamp_: give min, max or both (with neither it would change nothing)");
        const Tensor& t = writable("clamp_", self);
        constexpr float inf = std::numeric_limits<float>::infinity();
        {
          nb::gil_scoped_release release;
          clamp_in_place(t, lo.value_or(-inf), hi.value_or(inf));
        }
        return written(self);
      }, "x clamped into [min, max] in place (torch's clamp_; kiln.clamp's bits, two passes over x); x.",
      arg("min") = nb::none(), arg("max") = nb::none());
  const std::pair<const char*, UnaryOp> one_pass[] = {{"exp_", UnaryOp::exp},   {"log_", UnaryOp::log},
                                                      {"sqrt_", UnaryOp::sqrt}, {"tanh_", UnaryOp::tanh},
                                                      {"sigmoid_", UnaryOp::sigmoid}, {"abs_", UnaryOp::abs}};
  for (const auto& [name, op] : one_pass)
    def(name, [name, op](nb::handle self) {
          const Tensor& t = writable(name, self);
          {
            nb::gil_scoped_release release;
            unary_in_place(op, t);
          }
          return written(self);
        }, "The op of the same name without the _, in one pass over x (its bits); x.");
  using Unary = Tensor (*)(const Tensor&);
  const std::pair<const char*, Unary> composed[] = {{"neg_", &kiln::neg},       {"relu_", &kiln::relu},
                                                    {"square_", &kiln::square}, {"reciprocal_", &kiln::reciprocal},
                                                    {"rsqrt_", &kiln::rsqrt}};
  for (const auto& [name, fn] : composed)
    def(name, [name, fn](nb::handle self) { return stored(name, self, fn(writable(name, self))); },
        "The op of the same name without the _, computed out of place and written over x; x.");
  def("zero_", [](nb::handle self) {
        const Tensor& t = writable("zero_", self);
        {
          nb::gil_scoped_release release;
          fill_in_place(t, 0.0, "zero_");
        }
        return written(self);
      }, "Every element 0, in place (torch's zero_); x.");
  def("fill_", &fill_method, "Every element `value` in place (torch's fill_): a number or a 0-d tensor; x.",
      arg("value"));
  def("copy_", [](nb::handle self, nb::handle src, bool non_blocking) {
        if (!nb::isinstance<Tensor>(src))
          throw nb::type_error(("Tensor.copy_: src must be a kiln.Tensor, not " + python_type(src) +
                                " (kiln.from_dlpack(array) shares an array's memory as one)").c_str());
        const Tensor& s = nb::cast<const Tensor&>(src);
        const Tensor& t = writable("copy_", self, &s);
        {
          nb::gil_scoped_release release;
          copy_in_place(t, s, non_blocking);
        }
        return written(self);
      }, "x's values become src's, broadcast to x's shape, converted to x's dtype (astype's rules), from any device "
         "(torch's copy_); x.", arg("src"), arg("non_blocking") = false);
  def("uniform_", [](nb::handle self, float a, float b, nb::handle generator) {
        return random_method("uniform_", self, a, b, generator, false);
      }, "Uniform values in [from, to) in place, from kiln's default generator (torch's uniform_); x.",
      arg("from") = 0.0f, arg("to") = 1.0f, nb::kw_only(), arg("generator") = nb::none());
  def("normal_", [](nb::handle self, float mean, float std, nb::handle generator) {
        return random_method("normal_", self, mean, std, generator, true);
      }, "Normal(mean, std) values in place, from kiln's default generator (torch's normal_); x.",
      arg("mean") = 0.0f, arg("std") = 1.0f, nb::kw_only(), arg("generator") = nb::none());
  def("addcmul_", [](nb::handle self, nb::handle t1, nb::handle t2, nb::handle value) {
        return add_combined("addcmul_", PyNumber_Multiply, self, t1, t2, value);
      }, "x += value * tensor1 * tensor2 in place (torch's addcmul_); x.", arg("tensor1"), arg("tensor2"),
      nb::kw_only(), arg("value") = 1);
  def("addcdiv_", [](nb::handle self, nb::handle t1, nb::handle t2, nb::handle value) {
        return add_combined("addcdiv_", PyNumber_TrueDivide, self, t1, t2, value);
      }, "x += value * tensor1 / tensor2 in place (torch's addcdiv_); x.", arg("tensor1"), arg("tensor2"),
      nb::kw_only(), arg("value") = 1);
  def("__setitem__", &set_item,
      "t[key] = value, torch's (under kiln.no_grad() where t requires grad): value a number (as fill_) or a tensor "
      "broadcasting to t[key]'s shape (as copy_), written into t: through a view where t[key] is one block of it "
      "(t[i], t[a:b]), else by rebuilding t with byte moves (t[:, 0], t[::2], t[idx]; a few passes over t).",
      arg("key").none(), arg("value").none());
  const std::tuple<const char*, const char*, const char*, BinaryOp, binaryfunc> operators[] = {
      {"__iadd__", "add_", "+=", BinaryOp::add, PyNumber_Add},
      {"__isub__", "sub_", "-=", BinaryOp::sub, PyNumber_Subtract},
      {"__imul__", "mul_", "*=", BinaryOp::mul, PyNumber_Multiply},
      {"__itruediv__", "div_", "/=", BinaryOp::div, PyNumber_TrueDivide}};
  for (const auto& [dunder, name, symbol, op, out_of_place] : operators) {
    const char* n = name;
    const char* s = symbol;
    const BinaryOp o = op;
    const binaryfunc f = out_of_place;
    def(dunder, [n, s, o, f](nb::handle self, nb::handle other) { return in_place_operator(n, s, o, f, self, other); },
        "In place where no gradient is wanted (as the method without __, x.add_); x = x op other where one is.",
        arg("other").none());
  }
}

}  // namespace kiln::python
