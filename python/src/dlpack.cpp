// DLPack both ways, through nanobind's ndarray (which speaks legacy "dltensor" and
// versioned "dltensor_versioned" capsules, DLPack 1.0):
// - import (kiln.from_dlpack): the producer's memory becomes a kiln Storage whose release
//   drops the producer's handle (with the GIL), so the NumPy array or PyTorch tensor lives
//   as long as any kiln view of it. kiln tensors are contiguous: a strided producer is an
//   error unless the caller asks for the copy (copy_to_contiguous, nchw_to_nhwc).
// - export (Tensor.__dlpack__): a capsule that owns a kiln handle to the storage.
// On CUDA both ways follow the stream protocol (kiln's compute stream is not the default
// stream): the consumer's `stream` waits for kiln's queued work, and kiln's frees wait for
// the consumer's work once it drops the capsule; an imported tensor is asked for with
// kiln's stream, and kiln waits for its own work to finish before handing it back.
#include <atomic>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "python/src/bindings.h"

namespace kiln::python {
namespace {

// Set by Py_AtExit's callback, the last thing Py_FinalizeEx runs: Python is gone for good.
std::atomic<bool> g_python_gone{false};

// Whether a release may hand a reference back to Python now. Py_IsInitialized() alone turns
// false before the modules' globals are cleared, so a kiln tensor still holding a producer's
// array at exit (kiln.from_dlpack(t) of a kiln tensor t) skipped its release and nanobind
// reported the producer, and every kiln type with it, as leaked. While finalizing, the
// thread that holds the GIL (the one clearing the modules) may still release; other threads,
// and anything after Py_AtExit, may not.
bool python_usable() {
  if (g_python_gone.load()) return false;
  return Py_IsInitialized() || PyGILState_Check() != 0;
}

using nb::arg;
using Array = nb::ndarray<>;  // any dtype, shape, order and device

constexpr int kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3;

// Templates over nanobind's writable and read-only arrays (nchw_to_nhwc only reads).
template <class A>
DType dtype_of_array(const A& a, const char* op = "from_dlpack") {
  const nb::dlpack::dtype t = a.dtype();
  using C = nb::dlpack::dtype_code;
  const auto code = static_cast<C>(t.code);
  if (t.lanes == 1) {
    if (code == C::Float && t.bits == 32) return DType::f32;
    if (code == C::Bfloat && t.bits == 16) return DType::bf16;
    if (code == C::Int && t.bits == 32) return DType::i32;
    if (code == C::Int && t.bits == 64) return DType::i64;
    if (code == C::UInt && t.bits == 8) return DType::u8;
  }
  const char* kind = code == C::Float ? "float" : code == C::Int ? "int" : code == C::UInt ? "uint"
                     : code == C::Bfloat ? "bfloat" : code == C::Complex ? "complex" : code == C::Bool ? "bool" : "";
  const std::string name = *kind == '\0' ? "DLPack type code " + std::to_string(int(t.code))
                           : code == C::Bool ? std::string(kind) : kind + std::to_string(int(t.bits));
  KILN_FAIL(op, ": kiln has no ", name, t.lanes != 1 ? " x" + std::to_string(int(t.lanes)) + " lanes" : "",
            " (it has float32, bfloat16, int32, int64, uint8); convert first, e.g. x.astype(numpy.float32) or "
            "x.float()");
}

nb::dlpack::dtype dlpack_dtype(DType t) {
  switch (t) {
    case DType::f32: return nb::dtype<float>();
    case DType::bf16: return nb::dlpack::dtype{static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat), 16, 1};
    case DType::i32: return nb::dtype<int32_t>();
    case DType::i64: return nb::dtype<int64_t>();
    case DType::u8: return nb::dtype<uint8_t>();
  }
  KILN_FAIL("no DLPack type for ", dtype_name(t));
}

template <class A>
Device device_of_array(const A& a) {
  if (a.device_type() == kDLCPU || a.device_type() == kDLCUDAHost) return Device::cpu();
  if (a.device_type() == kDLCUDA) {
#if defined(KILN_HAS_CUDA)
    return Device::cuda(a.device_id());
#else
    KILN_FAIL("from_dlpack: the tensor is on cuda:", a.device_id(), " but this kiln was built without CUDA; "
              "move it to the host first (x.cpu())");
#endif
  }
  KILN_FAIL("from_dlpack: kiln has no device for DLPack device type ", a.device_type(),
            " (kiln knows the CPU and CUDA); copy the tensor to the host first");
}

bool is_row_major(const Array& a) {
  // An empty array has no element to misplace (torch gives [0, 3] strides (1, 1)).
  for (size_t i = 0; i < a.ndim(); ++i)
    if (a.shape(i) == 0) return true;
  int64_t expect = 1;
  for (size_t i = a.ndim(); i-- > 0;) {
    if (a.shape(i) != 1 && a.stride(i) != expect) return false;
    expect *= static_cast<int64_t>(a.shape(i));
  }
  return true;
}

// Copies a host array with arbitrary element strides (in `order` of its dimensions) into
// the contiguous dst; dims[k] = a.shape(order[k]).
template <class A>
void copy_strided(const A& a, const std::vector<size_t>& order, char* dst) {
  const size_t esize = (a.dtype().bits / 8u) * a.dtype().lanes, n = order.size();
  const char* base = static_cast<const char*>(a.data()) ;
  std::vector<int64_t> idx(n, 0);
  int64_t total = 1;
  for (size_t k = 0; k < n; ++k) total *= static_cast<int64_t>(a.shape(order[k]));
  for (int64_t e = 0; e < total; ++e) {
    int64_t off = 0;
    for (size_t k = 0; k < n; ++k) off += idx[k] * a.stride(order[k]);
    std::memcpy(dst + e * esize, base + off * static_cast<int64_t>(esize), esize);
    for (size_t k = n; k-- > 0;) {
      if (++idx[k] < static_cast<int64_t>(a.shape(order[k]))) break;
      idx[k] = 0;
    }
  }
}

// A contiguous kiln copy of a host array, its dimensions taken in `order`.
template <class A>
Tensor copy_to_kiln(const A& a, const std::vector<size_t>& order, const char* why) {
  KILN_CHECK(device_of_array(a).is_cpu(), why, ": the layout-converting copy runs on the host; the tensor is on "
             "a GPU: make it contiguous there first (x.contiguous()) and call from_dlpack without the copy");
  std::vector<int64_t> dims;
  for (size_t k : order) dims.push_back(static_cast<int64_t>(a.shape(k)));
  Tensor t = Tensor::empty(Shape(dims), TensorOptions{dtype_of_array(a, why)});
  {
    nb::gil_scoped_release release;
    copy_strided(a, order, static_cast<char*>(t.raw_data()));
  }
  return t;
}

Tensor from_array(const Array& a, bool copy_to_contiguous) {
  const DType dtype = dtype_of_array(a);
  const Device device = device_of_array(a);
  std::vector<size_t> order(a.ndim());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (!is_row_major(a)) {
    KILN_CHECK(copy_to_contiguous, "from_dlpack: the array is not contiguous (strides are not row-major), and "
               "kiln tensors are; pass copy_to_contiguous=True for an explicit copy, or use kiln.nchw_to_nhwc "
               "for an NCHW image batch");
    return copy_to_kiln(a, order, "from_dlpack(copy_to_contiguous=True)");
  }
  // Kernels read elements aligned (a misaligned float* is undefined, and vector loads may
  // fault): a NumPy view at an odd byte offset is copied on request, else refused.
  const size_t esize = dtype_size(dtype);
  if (reinterpret_cast<uintptr_t>(a.data()) % esize != 0) {
    KILN_CHECK(copy_to_contiguous, "from_dlpack: the array's data is not aligned to its ", esize, "-byte elements ",
               "(a view at an odd byte offset), and kiln's kernels need them aligned; pass copy_to_contiguous=True ",
               "for an aligned copy");
    return copy_to_kiln(a, order, "from_dlpack(copy_to_contiguous=True)");
  }
  std::vector<int64_t> dims;
  for (size_t i = 0; i < a.ndim(); ++i) dims.push_back(static_cast<int64_t>(a.shape(i)));
  // The producer's handle, dropped with the GIL when kiln's last view goes. On a GPU kiln's
  // queued work may still read the memory, and the producer may reuse it on a stream kiln
  // cannot name: finish kiln's work first.
  auto* keep = new Array(a);
  return Tensor::from_external(a.data(), Shape(dims), dtype, device, [keep, device] {
    if (!python_usable()) return;  // interpreter gone: nothing left to hand back
    if (!device.is_cpu()) {
      try {
        synchronize(device);
      } catch (...) {  // a release must not throw; the device is gone or failed already
      }
    }
    nb::gil_scoped_acquire gil;
    delete keep;
  });
}

// Refuses a torch view with a lazy negation or conjugation (torch._neg_view, x.conj().imag):
// its DLPack export hands out the un-negated memory (torch 1.13 does), so kiln would read, or
// copy, other values than the tensor's. `op` names the caller.
void refuse_lazy_views(nb::handle x, const char* op) {
  if (nb::isinstance<Tensor>(x) || !nb::hasattr(x, "resolve_neg")) return;
  for (const char* lazy : {"is_neg", "is_conj"})
    if (nb::hasattr(x, lazy))
      KILN_CHECK(!nb::cast<bool>(x.attr(lazy)()), op, ": this ", nb::type_name(x.type()).c_str(), " is a view ",
                 "whose ", std::string(lazy) == "is_neg" ? "negation" : "conjugation", " is not applied to its memory ",
                 "yet, so its values are not what the memory holds: pass x.resolve_neg().resolve_conj()");
}

// The producer's (device type, index) from __dlpack_device__, said in kiln's words when it
// is not a pair of ints (torch's meta tensors raise "Unknown device type meta").
std::pair<int, int> dlpack_device(nb::handle x, const char* op) {
  nb::object where;
  try {
    where = x.attr("__dlpack_device__")();
  } catch (const nb::python_error& e) {
    KILN_FAIL(op, ": this ", nb::type_name(x.type()).c_str(), " cannot say where its memory is (its __dlpack_device__ ",
              "says: ", nb::str(e.value()).c_str(), "); kiln takes tensors in host or CUDA memory");
  }
  const bool pair = nb::isinstance<nb::tuple>(where) && nb::len(where) == 2 && nb::isinstance<nb::int_>(where[0]) &&
                    nb::isinstance<nb::int_>(where[1]);
  KILN_CHECK(pair, op, ": this ", nb::type_name(x.type()).c_str(), "'s __dlpack_device__() returned ",
             nb::repr(where).c_str(), ", not the (device type, index) pair of ints the DLPack protocol asks for");
  return {nb::cast<int>(where[0]), nb::cast<int>(where[1])};
}

// from_dlpack: a CUDA producer is asked for its capsule with kiln's stream, so that kiln's
// work on the memory waits for the producer's (the DLPack stream protocol; nanobind would
// ask without one). Everything else goes through nanobind's ndarray caster.
Tensor from_dlpack(nb::handle x, bool copy_to_contiguous) {
  nb::object source = nb::borrow(x);
  // PyTorch will not hand out a leaf's memory while it requires grad (writes would bypass its
  // autograd's version counter and give wrong gradients); nanobind's caster reaches a CPU
  // tensor's memory another way, so the refusal is made here, as for CUDA below.
  if (!nb::isinstance<Tensor>(x) && nb::hasattr(x, "requires_grad") && nb::hasattr(x, "detach")) {
    const nb::object rg = x.attr("requires_grad");
    KILN_CHECK(!(nb::isinstance<nb::bool_>(rg) && nb::cast<bool>(rg)), "from_dlpack: this ",
               nb::type_name(x.type()).c_str(), " requires grad, and its producer keeps such memory to itself (a "
               "write through kiln would not be seen by its autograd): pass x.detach()");
  }
  refuse_lazy_views(x, "from_dlpack");
  if (nb::hasattr(x, "__dlpack__") && nb::hasattr(x, "__dlpack_device__")) {
    const auto [type, index] = dlpack_device(x, "from_dlpack");
    if (type == kDLCUDA) {
      const int have = device_count(DeviceType::cuda);
      KILN_CHECK(index >= 0 && index < have, "from_dlpack: the tensor is on cuda:", index, " but kiln sees ", have,
                 " CUDA device(s) here", have == 0 ? " (no GPU, or this kiln was built without CUDA)" : "",
                 "; move it to the host first (x.cpu())");
      try {
        source = x.attr("__dlpack__")(nb::arg("stream") = stream_handle(Device::cuda(index)));
      } catch (const nb::python_error& e) {  // e.g. torch: "Can't export tensors that require gradient"
        KILN_FAIL("from_dlpack: the producer refused to share its CUDA memory: ", e.what(),
                  " (a PyTorch tensor that requires grad: pass x.detach())");
      }
    }
  }
  Array a;
  if (nb::try_cast(source, a, /*convert=*/false)) return from_array(a, copy_to_contiguous);
  nb::ndarray<nb::ro> read_only;
  if (nb::try_cast(nb::borrow(x), read_only, false)) {
    // A copy was asked for: a read-only source is as good as any (np.broadcast_to's view).
    if (copy_to_contiguous && device_of_array(read_only).is_cpu()) {
      std::vector<size_t> order(read_only.ndim());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      return copy_to_kiln(read_only, order, "from_dlpack(copy_to_contiguous=True)");
    }
    KILN_FAIL("from_dlpack: the array is read-only (np.broadcast_to, or a NumPy view of another library's tensor), ",
              "and kiln tensors share memory writably: pass copy_to_contiguous=True for a copy, or a writable one, ",
              "e.g. x.copy()");
  }
  // What the producer itself says (torch 1.13: "Bool type is not supported by dlpack"), and its dtype.
  std::string producer;
  if (nb::hasattr(x, "__dlpack__")) {
    try {
      (void)x.attr("__dlpack__")();
    } catch (const nb::python_error& e) {
      producer = std::string(" (its __dlpack__ says: ") + nb::str(e.value()).c_str() + ")";
    }
  }
  if (nb::hasattr(x, "dtype")) {
    const nb::object dtype = x.attr("dtype");
    const nb::str spelled(static_cast<nb::handle>(dtype));  // str(dtype); an accessor would pick str(const char*)
    producer = std::string(" of dtype ") + spelled.c_str() + producer;
  }
  KILN_FAIL("from_dlpack: kiln cannot share this ", nb::type_name(x.type()).c_str(), producer, ": kiln shares arrays that "
            "speak DLPack or the buffer protocol (NumPy, PyTorch, ...), of a dtype kiln has (float32, bfloat16, "
            "int32, int64, uint8), in native byte order; convert it first, e.g. "
            "numpy.ascontiguousarray(x, dtype=numpy.float32)");
}

Tensor nchw_to_nhwc(nb::handle x) {  // read-only input too: it is copied
  refuse_lazy_views(x, "nchw_to_nhwc");
  if (nb::hasattr(x, "__dlpack__") && nb::hasattr(x, "__dlpack_device__")) (void)dlpack_device(x, "nchw_to_nhwc");
  nb::ndarray<nb::ro> a;
  KILN_CHECK(nb::try_cast(nb::borrow(x), a, /*convert=*/false), "nchw_to_nhwc: kiln cannot read this ",
             nb::type_name(x.type()).c_str(), ": it copies arrays that speak DLPack or the buffer protocol (NumPy, ",
             "PyTorch, ...), dense, of a dtype kiln has (float32, bfloat16, int32, int64, uint8), in native byte ",
             "order; convert it first, e.g. numpy.ascontiguousarray(x, dtype=numpy.float32)");
  KILN_CHECK(a.ndim() == 4, "nchw_to_nhwc: expected an image batch [N, C, H, W], got ", a.ndim(), " dimensions");
  return copy_to_kiln(a, {0, 2, 3, 1}, "nchw_to_nhwc");
}

// What an exported capsule keeps: kiln's handle to the memory and, on a GPU, the consumer's
// stream, which kiln waits for before the memory can be freed (0: none was given).
struct Exported {
  Tensor tensor;
  std::uintptr_t consumer_stream = 0;
};

// The tensor as a nanobind ndarray whose owner (a capsule) holds a kiln handle to it.
Array to_array(const Tensor& t, std::uintptr_t consumer_stream = 0) {
  KILN_CHECK(t.is_contiguous(), "__dlpack__: tensor ", t.description(), " is not contiguous");
  t.mark_shared_outside();  // the consumer may write it without kiln counting the write
  auto* keep = new Exported{t.detach(), consumer_stream};
  nb::capsule owner(keep, [](void* p) noexcept {
    auto* e = static_cast<Exported*>(p);
    if (e->consumer_stream != 0) {
      try {
        kiln_waits_for_stream(e->tensor.device(), e->consumer_stream);
      } catch (...) {  // a release must not throw; the device is gone or failed already
      }
    }
    delete e;
  });
  std::vector<size_t> shape;
  for (int64_t d : t.shape().dims()) shape.push_back(static_cast<size_t>(d));
  const int device_type = t.device().is_cpu() ? kDLCPU : kDLCUDA;
  return Array(t.raw_data(), shape.size(), shape.data(), owner, t.strides().data(), dlpack_dtype(t.dtype()),
               device_type, t.device().index);
}

}  // namespace

void bind_dlpack(nb::module_& m) {
  Py_AtExit([] { g_python_gone.store(true); });
  nb::class_<Tensor> cls = nb::borrow<nb::class_<Tensor>>(m.attr("Tensor"));
  cls.def("__dlpack__",
          [](const Tensor& t, nb::kwargs kwargs) {
            // On a GPU: stream None means the legacy default stream, -1 no ordering (the
            // array API's rules); the consumer's stream waits for kiln's queued work.
            std::uintptr_t consumer = 0;
            if (kwargs.contains("stream")) {
              nb::object s = kwargs["stream"];
              nb::del(kwargs["stream"]);
              if (!t.device().is_cpu()) {
                const int64_t v = s.is_none() ? 1 : nb::cast<int64_t>(s);
                KILN_CHECK(v != 0, "__dlpack__: stream 0 is ambiguous on CUDA; pass 1 for the legacy default "
                           "stream, or -1 for no ordering");
                if (v != -1) consumer = static_cast<std::uintptr_t>(v);
              }
            } else if (!t.device().is_cpu()) {
              consumer = 1;
            }
            if (consumer != 0) stream_waits_for_kiln(t.device(), consumer);
            nb::object arr = nb::cast(nb::ndarray<nb::array_api>(to_array(t, consumer)));
            return arr.attr("__dlpack__")(**kwargs);
          },
          "A DLPack capsule sharing this tensor's memory (versioned when max_version >= (1, 0) is asked for); "
          "the capsule keeps the memory alive. On a GPU, `stream` (the consumer's; None: the legacy default "
          "stream, -1: no ordering) waits for kiln's queued work, and kiln's later frees wait for that stream.");
  cls.def("__dlpack_device__", [](const Tensor& t) {
    return nb::make_tuple(t.device().is_cpu() ? kDLCPU : kDLCUDA, t.device().index);
  }, "(device type, index) as DLPack numbers them: (1, 0) for the CPU, (2, i) for cuda:i.");
  // np.asarray(t), np.array(t) and NumPy's operators see the array, not an object holding a
  // Tensor; the checks are numpy()'s.
  // NumPy on the left of an operator (np.float32(2) * t, array + t) defers to the Tensor's
  // own operators instead of turning t into an array and silently dropping autograd.
  cls.attr("__array_ufunc__") = nb::none();
  cls.def("__array__", [](nb::handle self, nb::object dtype, nb::object copy) {
    nb::object a = self.attr("numpy")();
    if (!dtype.is_none()) a = a.attr("astype")(dtype, nb::arg("copy") = false);
    if (!copy.is_none() && nb::cast<bool>(copy)) a = a.attr("copy")();
    return a;
  }, nb::arg("dtype") = nb::none(), nb::arg("copy") = nb::none(), "The NumPy view numpy() gives (NumPy's protocol).");
  cls.def("numpy", [](const Tensor& t) {
    KILN_CHECK(t.device().is_cpu(), "numpy(): the tensor is on ", t.device().str(), "; move it with .to(\"cpu\") first");
    // NumPy has no bfloat16 (it would make an array of objects).
    KILN_CHECK(t.dtype() != DType::bf16, "numpy(): NumPy has no bfloat16; take t.astype(\"float32\").numpy() (a "
               "copy), or torch.from_dlpack(t), which shares the memory");
    return nb::ndarray<nb::numpy>(to_array(t));
  }, "A NumPy array sharing this tensor's memory (no copy).");
  m.def("from_dlpack", &from_dlpack, arg("x"), arg("copy_to_contiguous") = false,
        "A kiln tensor sharing x's memory (NumPy array, PyTorch tensor, anything with __dlpack__). "
        "Non-contiguous x is an error unless copy_to_contiguous=True, which makes a contiguous copy.");
  m.def("nchw_to_nhwc", &nchw_to_nhwc, arg("x"),
        "A contiguous NHWC kiln copy of an NCHW image batch (e.g. a PyTorch tensor): kiln's layout.");
}

}  // namespace kiln::python
