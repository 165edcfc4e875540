// Shared declarations of the nanobind module kiln._kiln (docs/python.md): each source file
// binds one part of the engine's surface; module.cpp calls them in order.
#pragma once

#include <nanobind/nanobind.h>

#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/kiln.h"
#include "train/model_spec.h"

namespace kiln::python {

namespace nb = nanobind;

// What every call that computes holds while it runs: the GIL released, so other Python threads
// go on (kiln's oneDNN calls hold signals themselves: kernels/cpu/onednn.h).
using Release = nb::call_guard<nb::gil_scoped_release>;

// kiln.Tensor (metadata, autograd, views), the factories and the ops (python/src/tensor.cpp).
void bind_tensor(nb::module_& m);
// The factories and kiln.tensor (python/src/factories.cpp).
void bind_factories(nb::module_& m);
// DLPack both ways: Tensor.__dlpack__/__dlpack_device__, kiln.from_dlpack, nchw_to_nhwc
// (python/src/dlpack.cpp).
void bind_dlpack(nb::module_& m);
// Modules, model specs, weights import/export (python/src/engine.cpp).
void bind_engine(nb::module_& m);
// Optimizers, learning-rate schedules, gradient clipping (python/src/optim.cpp).
void bind_optim(nb::module_& m);
// The trainer over folder data sets: kiln.Phase, kiln.train (python/src/train.cpp).
void bind_train(nb::module_& m);
// The image pipeline as an iterable: kiln.Loader (python/src/data.cpp).
void bind_data(nb::module_& m);
// Devices (count, name, synchronize, memory) and the GPU math switches (python/src/device.cpp).
void bind_device(nb::module_& m);

// What kiln.build_model made a model with: the seed and options, and the generators it keeps
// (init from seed, dropout from seed + 1, as vgg_finetune's), which kiln.train records in
// checkpoints and restores on a resume.
struct BuiltModelInfo {
  uint64_t seed = 0;
  ModelOptions options;
  Generator* init = nullptr;
  Generator* dropout = nullptr;
};
// The BuiltModelInfo of `model` while it lives; null for a model not made by kiln.build_model.
const BuiltModelInfo* built_model_of(const Module& model);

// A Python UserWarning (the GIL held); an exception when the warnings filter turns it into one.
void warn(const std::string& text);

// Whether the interpreter is finalizing or gone: a kiln thread (kiln.train in a daemon
// thread at exit) must not take the GIL then, which crashed in PyThreadState_New.
bool python_exiting();
// Called by a kiln thread before it takes the GIL for a callback: when python_exiting(), it
// never returns (the process's exit ends the thread), as CPython parks daemon threads.
void park_if_python_exiting();

// h's Python type as an error names it: "float", "numpy.ndarray", "kiln.Tensor".
std::string python_type(nb::handle h);
// A float as the double its shortest decimal names (0.01f: 0.01, not 0.009999999776...), so
// that Python shows a float32 setting as the user typed it.
double as_decimal(float v);
// Whether h is an integer as Python's operator.index takes it: an int or anything whose __index__
// gives one (NumPy's integers, bools), not a float nor a NumPy array of several values.
bool is_index_integer(nb::handle h);
// h's integer through __index__ as is_index_integer takes it, or nullopt (the error cleared).
std::optional<nb::object> index_of(nb::handle h);
// Whether h is a bool: Python's, or NumPy's (np.True_, a 0-d bool array). __index__ reads it as an
// int, but it is no extent, dimension, index or fill value.
bool is_bool_number(nb::handle h);

// Ints given one by one, x.permute(0, 2, 1), or as one list or tuple, x.permute([0, 2, 1]), or by
// keyword, x.permute(dims=[0, 2, 1]), as torch takes them (at least one; no bools). call names the
// callee in the TypeError ("Tensor.permute", "kiln.zeros"); kwargs holds `keyword` alone or nothing.
std::vector<int64_t> ints_given(nb::args args, nb::dict kwargs, const std::string& call, const char* keyword,
                                const char* what, const char* example);

// A dimension argument as torch takes it: an int, or a list or tuple of ints.
using Dims = std::variant<int64_t, std::vector<int64_t>>;
// Its dimensions as a list.
std::vector<int64_t> dims_of(const Dims& d);
// dim as dims_of, or every dimension of x when it is None (a scalar: dimension 0, itself).
std::vector<int64_t> dims_or_all(const Tensor& x, const std::optional<Dims>& dim);
// kiln.sum and kiln.mean: over dim (None: every element, a scalar tensor), keeping the summed
// extents as 1 with keepdim. Module functions and Tensor methods alike.
Tensor sum_over(const Tensor& x, std::optional<Dims> dim, bool keepdim);
Tensor mean_over(const Tensor& x, std::optional<Dims> dim, bool keepdim);
// kiln.amax and kiln.amin over dim (None: every element).
Tensor amax_over(const Tensor& x, std::optional<Dims> dim, bool keepdim);
Tensor amin_over(const Tensor& x, std::optional<Dims> dim, bool keepdim);
// kiln.norm over dim (None: every element): p a number or "fro".
Tensor norm_over(const Tensor& x, const std::variant<double, std::string>& p, std::optional<Dims> dim, bool keepdim);
// kiln.all (every true) and kiln.any over dim (None: every element), 0/1 masks.
Tensor truth_over(bool every, const Tensor& x, std::optional<Dims> dim, bool keepdim);
// kiln.var and kiln.std over dim (None: every element), with torch's correction (default 1:
// unbiased) or torch 1.13's unbiased keyword, not both.
// dim is read with the GIL held (None, an int or a list; a bool refused), the rest without.
Tensor var_over(const Tensor& x, nb::handle dim, std::optional<int64_t> correction, bool keepdim,
                std::optional<bool> unbiased);
Tensor std_over(const Tensor& x, nb::handle dim, std::optional<int64_t> correction, bool keepdim,
                std::optional<bool> unbiased);
// kiln.logsumexp over dim (torch's takes no None).
Tensor logsumexp_over(const Tensor& x, const Dims& dim, bool keepdim);
// argmax (largest) or argmin along dim, or of the flattened x for dim None (torch's).
Tensor arg_extreme_over(bool largest, const Tensor& x, std::optional<int64_t> dim, bool keepdim);
// kiln.max (largest) and kiln.min along dim: ValuesIndices, as torch.max(x, dim); or, dim None, the
// extreme element as a 0-d tensor (amax's).
nb::object extreme_of(bool largest, const Tensor& x, std::optional<int64_t> dim, bool keepdim);
// kiln.squeeze: every extent of 1 (dim None) or dim's.
Tensor squeeze_dim(const Tensor& x, std::optional<int64_t> dim);
// A tuple of tensors, as torch's split, chunk and unbind return (typed for the stubs).
using Pieces = nb::typed<nb::tuple, Tensor, nb::ellipsis>;
// kiln.split: pieces of one size or of the sizes listed, as a tuple (torch's).
Pieces split_into(const Tensor& x, const std::variant<int64_t, std::vector<int64_t>>& size, int64_t dim);
// kiln.chunk and kiln.unbind, as tuples (torch's).
Pieces chunk_into(const Tensor& x, int64_t chunks, int64_t dim);
Pieces unbind_into(const Tensor& x, int64_t dim);
// kiln.clamp with either bound None (open); neither is refused.
Tensor clamp_between(const Tensor& x, std::optional<float> lo, std::optional<float> hi);
// An arithmetic operator's non-tensor operand as a number (a float), nullopt where Python should
// try the other operand, or a TypeError for an array (kiln converts arrays only when asked).
std::optional<double> scalar_operand(nb::handle other, const char* symbol, bool reflected);
// An int beside an int32/int64 tensor as a 0-d tensor of its dtype (exact); nullopt for other pairs.
std::optional<Tensor> integer_number(const Tensor& a, nb::handle other, const char* symbol);
// A number as float32, rounded once (an int from the integer itself, not through a double).
float as_float(nb::handle number, double s);
// Whether h is an int32/int64 tensor or an integer number.
bool integral_operand(nb::handle h);
// b times alpha (kiln.add's alpha=, Tensor.add_'s): b itself where alpha is None or not given.
nb::object scaled_operand(const char* name, nb::handle a, nb::handle b, nb::handle alpha);

// kiln copies where torch returns a view (t.T, permute, expand, narrow, t[:, 0], t[::2], split and
// the like): its tensors are contiguous. in_place.cpp keeps a table of these copies so that the
// in-place methods keep each in step with the view it was made of, as torch's views share memory:
// a write into the copy is written back into the view, and a write into the view makes its copies
// again. How: a recipe per copy.
struct CopyRecipe {
  std::function<Tensor(const Tensor& base)> get;                      // the copy made again from base
  std::function<void(const Tensor& base, const Tensor& copy)> put;  // copy written back; null: refused
  // Where the copy lies in its base, where it is one band along one dimension (narrow, split pieces,
  // x[:, i]): a write through one band leaves copies in disjoint bands as they are. -1: anywhere.
  int64_t band_dim = -1, band_start = 0, band_length = 0;
};
// Records `copy` as made from `base` where torch would view (nothing where it is base's memory,
// which needs no recipe); returns copy.
Tensor view_copy(const Tensor& base, Tensor copy, CopyRecipe recipe);
// `made`, x permuted by dims (T, mT, t(), transpose, permute), as view_copy records it.
Tensor permuted_view(const Tensor& x, const std::vector<int64_t>& dims, Tensor made);
// Whether x is (a view of) a copy kiln made where torch views, its source alive.
bool is_view_copy(const Tensor& x);
// y, a reshape of x (reshape, flatten), or a copy of it where torch's would copy: x is
// a copy standing for a strided torch view and y's shape is not x's with extents of 1 added or
// dropped (x.T.reshape(-1) is a tensor of its own in torch).
Tensor own_where_torch_copies(const Tensor& x, Tensor y);
// x with dimensions d0 and d1 swapped (kiln.transpose), recorded as permuted_view.
Tensor transposed_view(const Tensor& x, int64_t d0, int64_t d1);
// part written over base's [start, start + part's extent) along d in one pass over part (a band:
// Backend::copy_block); part holds that band's elements in order, any shape.
void write_band(const Tensor& base, int64_t d, int64_t start, const Tensor& part);
// `made`, x's [start, start + length) along dim in made's shape (narrow, split, chunk, unbind), recorded.
Tensor narrowed_view(const Tensor& x, int64_t dim, int64_t start, int64_t length, Tensor made);
// `made`, x broadcast (expand), recorded: written into, it is refused, as torch's expanded views.
Tensor expanded_view(const Tensor& x, Tensor made);
// t[key], torch's indexing (tensor_methods.cpp): a view of t's memory where the result is one block
// of it, else a copy (view_copy's).
Tensor index_tensor(const Tensor& t, nb::handle key);
// t[key] = value, torch's indexed assignment: value (any dtype and device, converted as astype)
// broadcast to t[key]'s shape and written into t, through a view where t[key] is one block of t,
// else by rebuilding t (byte moves: index_select and concat) and copying it over; `name` in errors.
void assign_index(const Tensor& t, nb::handle key, const Tensor& value, const std::string& name);
// The in-place methods: add_, mul_, copy_, zero_, clamp_, += ..., and t[key] = value; after
// bind_tensor's class.
void bind_in_place(nb::handle cls);

// The methods torch users call on a tensor (x.sum(-1), x.permute(0, 2, 1, 3)), each the module
// function of the same name (python/src/tensor_methods.cpp); after bind_tensor's class.
void bind_tensor_methods(nb::module_& m);

// A tensor shape from a Python sequence of ints.
Shape to_shape(const std::vector<int64_t>& dims);
// The DType called `name` ("float32", "int64", ...); an unknown name is a kiln::Error.
DType dtype_from_name(const std::string& name);
// The Device called `name` ("cpu", "cuda", "cuda:1"); anything else is a kiln::Error.
Device device_from_name(const std::string& name);

}  // namespace kiln::python
