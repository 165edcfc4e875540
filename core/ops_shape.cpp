// Ops that cut and join tensors along any dimension: narrow, concat, stack (kiln's tensors are
// contiguous, so each is a block copy, Backend::copy_block, and each one's gradient the other's);
// index_select, embedding and gather, entries gathered by index (Backend::gather_rows, and back by
// scatter_add_rows), and their reverses index_add and scatter_add; and permute, a copy in the new
// order (Backend::permute), whose gradient is the inverse one, with the ops it brings to a
// dimension other than the last (transpose of any two, softmax, log_softmax, argmax and argmin
// along one).
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/op_checks.h"
#include "core/ops.h"

namespace kiln {
namespace {

// g, a block of gx along dimension d, copied into gx at [start, start + g's extent) of d.
void place_block(const Tensor& g, Tensor& gx, int64_t d, int64_t start) {
  const int64_t inner = gx.shape().numel_after(d), width = g.shape()[d] * inner;
  if (width > 0) backend_for(g.device()).copy_block(g, 0, gx, start * inner, gx.shape().numel_before(d), width);
}

// The gradient of narrow: g placed back at [start, start + length) of dimension d, zeros around.
struct NarrowNode final : Node {
  NarrowNode() : Node("narrow") {}
  Shape x_shape;
  int64_t d = 0, start = 0;
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor gx = Tensor::zeros(x_shape, like(g));
    place_block(g, gx, d, start);
    return {gx};
  }
};

// The gradient of concat: each input's block of g, cut back out.
struct ConcatNode final : Node {
  ConcatNode() : Node("concat") {}
  std::vector<Shape> shapes;
  int64_t d = 0;
  std::vector<Tensor> apply(const Tensor& g) override {
    std::vector<Tensor> grads(shapes.size());
    const int64_t rows = g.shape().numel_before(d), inner = g.shape().numel_after(d);
    int64_t offset = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const int64_t width = shapes[i][d] * inner;
      if (next[i].needed()) {
        grads[i] = Tensor::empty(shapes[i], like(g));
        backend_for(g.device()).copy_block(g, offset, grads[i], 0, rows, width);
      }
      offset += width;
    }
    return grads;
  }
};

// The gradient of permute: g permuted back by the inverse permutation.
struct PermuteNode final : Node {
  PermuteNode() : Node("permute") {}
  std::vector<int64_t> inverse;
  std::vector<Tensor> apply(const Tensor& g) override { return {permute(g.detach(), inverse)}; }
};

// Every input beside the first has its dtype, device, rank and extents, dimension d's apart.
void check_joinable(const char* op, const std::vector<Tensor>& xs, int64_t d) {
  const Tensor& first = xs[0];
  for (size_t i = 1; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    const std::string what = "tensor " + std::to_string(i);
    checks::defined(op, what.c_str(), x);
    checks::same_dtype(op, "tensor 0", first, what.c_str(), x);
    checks::same_device(op, "tensor 0", first, what.c_str(), x);
    bool fits = x.rank() == first.rank();
    for (int64_t k = 0; fits && k < x.rank(); ++k) fits = k == d || x.dim(k) == first.dim(k);
    KILN_CHECK(fits, op, ": ", what, " is ", x.description(), " and tensor 0 is ", first.description(),
               "; every extent but dimension ", d, "'s must match");
  }
}

// The position of the first of p's n indices outside [0, extent), or -1.
template <typename I>
int64_t first_outside(const I* p, int64_t n, int64_t extent) {
  for (int64_t i = 0; i < n; ++i)
    if (p[i] < 0 || p[i] >= extent) return i;
  return -1;
}

// The position of the first of indices (int32 or int64, any device: a GPU's copied to the host,
// with a wait) outside [0, extent), or -1: the check where no kernel runs (an empty result from
// indices that are not), which the kernels do in the pass that reads them otherwise.
int64_t first_outside(const Tensor& indices, int64_t extent) {
  const Tensor host = indices.device().is_cuda() ? indices.cpu() : indices;
  if (host.dtype() == DType::i64) return first_outside(host.data<int64_t>(), host.numel(), extent);
  return first_outside(host.data<int32_t>(), host.numel(), extent);
}

// The value of indices' entry at flattened position `at` (a GPU's copied to the host).
int64_t index_at(const Tensor& indices, int64_t at) {
  const Tensor one = narrow(indices.detach().reshape(Shape{indices.numel()}), 0, at, 1).cpu().to(DType::i64);
  return one.data<int64_t>()[0];
}

// indices int32 or int64 on x's device (x named x_name); their range is checked where they are
// read (report_outside).
void check_index_tensor(const char* op, const char* x_name, const Tensor& x, const Tensor& indices) {
  KILN_CHECK(indices.dtype() == DType::i32 || indices.dtype() == DType::i64, op,
             ": indices must be int32 or int64, got ", indices.description());
  checks::same_device(op, x_name, x, "indices", indices);
}

// Where indices are used: in the forward pass, named by what they index; in a backward one
// (what empty), where memory shared with NumPy or torch (np.asarray of a tensor) may have changed
// them after the forward pass read them.
struct IndexUse {
  std::string op, what;
};

// Throws op's error for the first index outside [0, extent), at flattened position `at` of
// indices (-1: none, no error), naming its value and where the indices were used.
void report_outside(const IndexUse& use, int64_t at, const Tensor& indices, int64_t extent) {
  if (at < 0) return;
  const int64_t value = index_at(indices, at);
  KILN_CHECK(!use.what.empty(), use.op, " backward: index ", value, " at position ", at,
             " of the indices the forward pass used is outside [0, ", extent,
             "): they were changed after it (through memory shared with NumPy or torch?)");
  KILN_FAIL(use.op, ": index ", value, " at position ", at, " (flattened) of ", indices.description(),
            " is outside ", use.what, " [0, ", extent, ")");
}

// What indices along dimension d of x index, for their errors.
std::string dimension_of(int64_t d, const Tensor& x) {
  return "dimension " + std::to_string(d) + " of " + x.description();
}

// indices as Backend::gather_rows and scatter_add_rows take them: [n], a row each, or per_element
// [blocks, n, inner], an element each.
Tensor as_row_indices(const Tensor& indices, bool per_element, int64_t blocks, int64_t n, int64_t inner) {
  return per_element ? indices.reshape(Shape{blocks, n, inner}) : indices.reshape(Shape{n});
}

// The gradient of a gather along dimension d (index_select, embedding, gather): g's entries added
// into a zeroed [blocks, v, inner] at their indices, in order, in float32 (a bfloat16 x's gradient
// is rounded once, at the end).
struct GatherRowsNode final : Node {
  explicit GatherRowsNode(const char* name) : Node(name) {}
  SavedTensor idx;  // [n] (a row each) or [blocks, n, inner] (an element each), as gather_rows takes it
  Shape x_shape;
  int64_t blocks = 1, v = 0, n = 0, inner = 1;  // x as [blocks, v, inner], g as [blocks, n, inner]
  std::vector<Tensor> apply(const Tensor& g) override {
    const Tensor& i = idx.get();
    Tensor grad = Tensor::zeros(Shape{blocks, v, inner}, like(g, DType::f32));
    const Tensor g32 = g.detach().to(DType::f32);  // g itself when float32
    const int64_t at = g.numel() > 0 ? backend_for(g.device()).scatter_add_rows(g32.reshape(Shape{blocks, n, inner}),
                                                                                i, grad)
                                     : first_outside(i, v);
    report_outside({name(), ""}, at, i, v);
    return {grad.reshape(x_shape).to(g.dtype())};
  }
  bool release_saved() override { return release_all(idx); }
};

// x's entries along dimension d at indices (checked as read, errors as `use` says): rows, every
// other dimension whole, for indices [n] (x as [blocks, v, inner] gathered to [blocks, n, inner]);
// or, per_element, one entry per element of indices, which has x's rank and extents but d's
// (torch.gather; its shape is the result's). The backward node is named use.op.
Tensor gather_along(const IndexUse& use, const Tensor& x, int64_t d, const Tensor& indices, bool per_element) {
  const int64_t blocks = x.shape().numel_before(d), v = x.dim(d), inner = x.shape().numel_after(d);
  const int64_t n = per_element ? indices.dim(d) : indices.numel();
  std::vector<int64_t> dims = x.shape().dims();
  dims[static_cast<size_t>(d)] = n;
  const Tensor idx = as_row_indices(indices, per_element, blocks, n, inner);
  Tensor y = Tensor::empty(Shape(dims), like(x));
  Tensor y3 = y.reshape(Shape{blocks, n, inner});
  const int64_t at = y.numel() > 0 ? backend_for(x.device()).gather_rows(x.detach().reshape(Shape{blocks, v, inner}),
                                                                          idx, y3)
                                    : first_outside(idx, v);
  report_outside(use, at, indices, v);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<GatherRowsNode>(use.op.c_str());
    node->idx = idx;
    node->x_shape = x.shape();
    node->blocks = blocks;
    node->v = v;
    node->n = n;
    node->inner = inner;
    node->next = {autograd::edge_for(x)};
    autograd::set_history(y, node);
  }
  return y;
}

// The gradient of x + (src scattered along d by idx): g itself to x, and to src the entries of g
// it was added to, gathered back (idx as scatter_add_along took it).
struct ScatterAddNode final : Node {
  explicit ScatterAddNode(const char* name) : Node(name) {}
  SavedTensor idx;  // as the op was given it: [n], or src's shape
  int64_t d = 0;
  bool per_element = false;
  Shape src_shape;
  std::vector<Tensor> apply(const Tensor& g) override {
    std::vector<Tensor> grads(2);
    if (next[0].needed()) grads[0] = g.detach();
    if (next[1].needed()) {
      grads[1] = gather_along({name(), ""}, g.detach(), d, idx.get(), per_element).reshape(src_shape);
    }
    return grads;
  }
  bool release_saved() override { return release_all(idx); }
};

// x + src's entries added along dimension d at idx's indices (checked as read, errors as `use`
// says), in order: idx [n] adds src's rows (src x's shape but d's extent, n), per_element idx of
// src's shape one entry each. Float32, or bfloat16 summed in float32 and rounded once. The
// backward node is named use.op.
Tensor scatter_add_along(const IndexUse& use, const Tensor& x, int64_t d, const Tensor& idx, const Tensor& src,
                         bool per_element) {
  const int64_t blocks = x.shape().numel_before(d), v = x.dim(d), inner = x.shape().numel_after(d);
  const int64_t n = src.dim(d);
  const Tensor idx_flat = as_row_indices(idx, per_element, blocks, n, inner);
  Tensor acc = x.dtype() == DType::f32 ? x.detach().clone() : x.detach().to(DType::f32);  // a new tensor either way
  const Tensor src32 = src.detach().to(DType::f32);
  Tensor acc3 = acc.reshape(Shape{blocks, v, inner});
  const int64_t at = src.numel() > 0 ? backend_for(x.device()).scatter_add_rows(src32.reshape(Shape{blocks, n, inner}),
                                                                                idx_flat, acc3)
                                      : first_outside(idx_flat, v);
  report_outside(use, at, idx, v);
  Tensor y = acc.to(x.dtype());
  if (autograd::needs_grad({&x, &src})) {
    auto node = std::make_shared<ScatterAddNode>(use.op.c_str());
    if (autograd::needs_grad({&src})) node->idx = idx;  // x's gradient passes g through
    node->d = d;
    node->per_element = per_element;
    node->src_shape = src.shape();
    node->next = {autograd::edge_for(x), autograd::edge_for(src)};
    autograd::set_history(y, node);
  }
  return y;
}

// x and src float32 or bfloat16 alike, on one device, of one rank; d resolved against x.
int64_t scatter_operands(const char* op, const Tensor& x, int64_t dim, const Tensor& indices, const Tensor& src) {
  checks::defined(op, "x", x);
  checks::defined(op, "indices", indices);
  checks::defined(op, "src", src);
  checks::float32_or_bf16(op, "x", x);
  checks::same_dtype(op, "x", x, "src", src);
  checks::same_device(op, "x", x, "src", src);
  KILN_CHECK(x.rank() >= 1 && src.rank() == x.rank(), op, ": x and src must have the same rank, 1 or more, got x ",
             x.description(), " and src ", src.description());
  return checks::resolve_dim(op, dim, x.rank(), x.description());
}

// torch's rule for an index per element (gather, scatter_add): indices no longer than x in every
// dimension but d, and of any length along d.
void check_within_x(const char* op, const Tensor& x, const Tensor& indices, int64_t d) {
  for (int64_t k = 0; k < x.rank(); ++k)
    KILN_CHECK(k == d || indices.dim(k) <= x.dim(k), op, ": indices ", indices.description(), " are longer than x ",
               x.description(), " along dimension ", k, "; they may be shorter there, and of any length along ",
               "dimension ", d);
}

// t narrowed to indices' extents where they are shorter, in every dimension but skip (-1: every
// one): the corner torch's gather and scatter_add read and write, from 0 in each dimension.
Tensor corner_of(const Tensor& t, const Tensor& indices, int64_t skip) {
  Tensor c = t;
  for (int64_t k = 0; k < t.rank(); ++k)
    if (k != skip && indices.dim(k) < t.dim(k)) c = narrow(c, k, 0, indices.dim(k));
  return c;
}

// x with its corner of part's extents replaced by part (differentiable: narrows and concats).
Tensor with_corner(const Tensor& x, const Tensor& part) {
  for (int64_t k = 0; k < x.rank(); ++k) {
    const int64_t m = part.dim(k);
    if (m < x.dim(k)) return concat({with_corner(narrow(x, k, 0, m), part), narrow(x, k, m, x.dim(k) - m)}, k);
  }
  return part;
}

}  // namespace

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  checks::defined("narrow", "input x", x);
  KILN_CHECK(x.rank() >= 1, "narrow: needs a tensor of rank >= 1, got ", x.description());
  const int64_t d = checks::resolve_dim("narrow", dim, x.rank(), x.description());
  KILN_CHECK(start >= 0 && length >= 0 && start <= x.dim(d) - length, "narrow: [", start, ", ", start, " + ", length,
             ") is outside dimension ", d, " of ", x.description(), " (0 to ", x.dim(d), ")");
  std::vector<int64_t> dims = x.shape().dims();
  dims[static_cast<size_t>(d)] = length;
  Tensor y = Tensor::empty(Shape(dims), like(x));
  const int64_t inner = x.shape().numel_after(d);
  backend_for(x.device()).copy_block(x, start * inner, y, 0, x.shape().numel_before(d), length * inner);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<NarrowNode>();
    node->x_shape = x.shape();
    node->d = d;
    node->start = start;
    node->next = {autograd::edge_for(x)};
    autograd::set_history(y, node);
  }
  return y;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  KILN_CHECK(!xs.empty(), "concat: no tensor given");
  checks::defined("concat", "tensor 0", xs[0]);
  KILN_CHECK(xs[0].rank() >= 1, "concat: needs tensors of rank >= 1, got ", xs[0].description(),
             "; stack joins scalars");
  const int64_t d = checks::resolve_dim("concat", dim, xs[0].rank(), xs[0].description());
  check_joinable("concat", xs, d);
  std::vector<int64_t> dims = xs[0].shape().dims();
  dims[static_cast<size_t>(d)] = 0;
  for (const Tensor& x : xs) dims[static_cast<size_t>(d)] += x.dim(d);
  Tensor y = Tensor::empty(Shape(dims), like(xs[0]));
  const int64_t rows = y.shape().numel_before(d), inner = y.shape().numel_after(d);
  Backend& be = backend_for(y.device());
  int64_t offset = 0;
  for (const Tensor& x : xs) {
    be.copy_block(x, 0, y, offset, rows, x.dim(d) * inner);
    offset += x.dim(d) * inner;
  }
  bool record = false;
  for (const Tensor& x : xs) record = record || autograd::needs_grad({&x});
  if (record) {
    auto node = std::make_shared<ConcatNode>();
    node->d = d;
    for (const Tensor& x : xs) {
      node->shapes.push_back(x.shape());
      node->next.push_back(autograd::edge_for(x));
    }
    autograd::set_history(y, node);
  }
  return y;
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  KILN_CHECK(!xs.empty(), "stack: no tensor given");
  checks::defined("stack", "tensor 0", xs[0]);
  const int64_t d = checks::resolve_dim("stack", dim, xs[0].rank() + 1, "the stacked " + xs[0].description());
  for (size_t i = 1; i < xs.size(); ++i) {
    const std::string what = "tensor " + std::to_string(i);
    checks::defined("stack", what.c_str(), xs[i]);
    checks::same_dtype("stack", "tensor 0", xs[0], what.c_str(), xs[i]);
    checks::same_device("stack", "tensor 0", xs[0], what.c_str(), xs[i]);
    KILN_CHECK(xs[i].shape() == xs[0].shape(), "stack: tensor ", i, " is ", xs[i].description(),
               " and tensor 0 is ", xs[0].description(), "; stacked tensors have one shape");
  }
  std::vector<Tensor> parts;
  for (const Tensor& x : xs) parts.push_back(unsqueeze(x, d));
  return concat(parts, d);
}

Tensor squeeze(const Tensor& x) {
  checks::defined("squeeze", "x", x);
  std::vector<int64_t> dims;
  for (int64_t e : x.shape().dims())
    if (e != 1) dims.push_back(e);
  return reshape(x, Shape(dims));
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  checks::defined("squeeze", "x", x);
  const int64_t d = checks::resolve_dim_of("squeeze", dim, x);  // a 0-d x is its own result
  std::vector<int64_t> dims = x.shape().dims();
  if (x.rank() > 0 && dims[static_cast<size_t>(d)] == 1) dims.erase(dims.begin() + d);
  return reshape(x, Shape(dims));
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  checks::defined("unsqueeze", "x", x);
  const int64_t d = checks::resolve_dim("unsqueeze", dim, x.rank() + 1, x.description() + " with one dimension more");
  std::vector<int64_t> dims = x.shape().dims();
  dims.insert(dims.begin() + d, 1);
  return reshape(x, Shape(dims));
}

Tensor flip(const Tensor& x, const std::vector<int64_t>& dims) {
  checks::defined("flip", "x", x);
  const Tensor x1 = x.rank() == 0 ? reshape(x, Shape{1}) : x;
  std::vector<bool> named(static_cast<size_t>(x1.rank()), false);
  Tensor y = x1;
  for (int64_t dim : dims) {
    const int64_t d = checks::resolve_dim_of("flip", dim, x);
    KILN_CHECK(!named[static_cast<size_t>(d)], "flip: dimension ", d, " is named twice in the dimensions given");
    named[static_cast<size_t>(d)] = true;
    const int64_t n = y.dim(d);
    y = index_select(y, d, Tensor::arange(n, static_cast<double>(n - 1), -1.0, like(x, DType::i64)));
  }
  if (dims.empty()) return copy_of(x);  // still a copy, as torch's
  return reshape(y, x.shape());
}

namespace {

// copy_of's gradient: g itself.
struct CopyNode final : Node {
  CopyNode() : Node("clone") {}
  std::vector<Tensor> apply(const Tensor& g) override { return {g.detach()}; }
};

}  // namespace

Tensor copy_of(const Tensor& x) {
  checks::defined("clone", "x", x);
  Tensor y = x.clone();  // the detached copy, given a node
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<CopyNode>();
    node->next = {autograd::edge_for(x)};
    autograd::set_history(y, node);
  }
  return y;
}

namespace {

// The gradient of a cut into pieces (split, chunk, unbind), gathered in one buffer of x's shape:
// each piece's node copies its gradient into its block (the rest stays 0), and the cut's node,
// which every piece's node leads to, hands the buffer to x after the last of them. A piece's node
// passes the cut's node a 0-d zero, not a gradient (the engine sums those; the buffer holds the
// sum). With a narrow's node per piece, each would give x a zero-filled gradient of x's size: n
// pieces, n times x's size, quadratic for unbind's rows.
struct CutGradient {
  Shape x_shape;
  int64_t d = 0;
  Tensor gx;          // this pass's buffer, made by its first piece's node, handed on by CutNode
  uint64_t pass = 0;  // the backward pass gx belongs to: one that failed midway leaves it stale
  Tensor token;       // the 0-d zero the pieces' nodes pass on, made once
};

struct CutNode final : Node {
  CutNode(const char* op, std::shared_ptr<CutGradient> cut) : Node(op), cut(std::move(cut)) {}
  std::shared_ptr<CutGradient> cut;
  std::vector<Tensor> apply(const Tensor&) override {
    Tensor gx = std::move(cut->gx);
    cut->gx = Tensor();
    return {gx};
  }
};

struct PieceNode final : Node {
  PieceNode(const char* op, std::shared_ptr<CutGradient> cut, int64_t start)
      : Node(op), cut(std::move(cut)), start(start) {}
  std::shared_ptr<CutGradient> cut;
  int64_t start;
  std::vector<Tensor> apply(const Tensor& g) override {
    CutGradient& c = *cut;
    if (!c.gx.defined() || c.pass != autograd::backward_pass()) {
      c.gx = Tensor::zeros(c.x_shape, like(g));
      c.pass = autograd::backward_pass();
    }
    place_block(g, c.gx, c.d, start);
    if (!c.token.defined() || c.token.device() != g.device()) c.token = Tensor::zeros(Shape{}, like(g));
    return {c.token};
  }
};

// x cut along dimension d (resolved) into consecutive pieces of the given lengths: narrows,
// with one CutNode behind them all when x needs a gradient.
std::vector<Tensor> pieces(const char* op, const Tensor& x, int64_t d, const std::vector<int64_t>& lengths) {
  const bool record = autograd::needs_grad({&x});
  std::shared_ptr<CutNode> cut_node;
  if (record) {
    auto cut = std::make_shared<CutGradient>();
    cut->x_shape = x.shape();
    cut->d = d;
    cut_node = std::make_shared<CutNode>(op, std::move(cut));
    cut_node->next = {autograd::edge_for(x)};
  }
  std::vector<Tensor> out;
  int64_t start = 0;
  for (int64_t n : lengths) {
    {
      const NoGradGuard no_grad;  // the piece's history is set below, not narrow's
      out.push_back(narrow(x, d, start, n));
    }
    if (record) {
      auto node = std::make_shared<PieceNode>(op, cut_node->cut, start);
      node->next = {Edge{cut_node, nullptr}};
      autograd::set_history(out.back(), node);
    }
    start += n;
  }
  return out;
}

// Dimension dim of x, which has rank >= 1, resolved for op (a cut along it).
int64_t cut_dim(const char* op, const Tensor& x, int64_t dim) {
  checks::defined(op, "x", x);
  KILN_CHECK(x.rank() >= 1, op, ": needs a tensor of rank >= 1 to cut, got ", x.description());
  return checks::resolve_dim(op, dim, x.rank(), x.description());
}

// The lengths of pieces of `size` along an extent n (size > 0, or 0 for n 0): the last shorter
// where size does not divide n, one empty piece for n 0, as torch's split.
std::vector<int64_t> lengths_of(int64_t size, int64_t n) {
  std::vector<int64_t> lengths;
  for (int64_t start = 0; start < n; start += size) lengths.push_back(std::min(size, n - start));
  if (n == 0) lengths.push_back(0);
  return lengths;
}

}  // namespace

std::vector<Tensor> split(const Tensor& x, int64_t size, int64_t dim) {
  const int64_t d = cut_dim("split", x, dim), n = x.dim(d);
  KILN_CHECK(size > 0 || (size == 0 && n == 0), "split: pieces of ", size, " entries cannot cut dimension ", d,
             " of ", x.description(), "; give a size of 1 or more");
  return pieces("split", x, d, lengths_of(size, n));
}

std::vector<Tensor> split_with_sizes(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  const int64_t d = cut_dim("split", x, dim), n = x.dim(d);
  int64_t total = 0;
  for (int64_t k : sizes) {
    KILN_CHECK(k >= 0, "split: a piece of ", k, " entries; sizes are 0 or more");
    total += k;
  }
  KILN_CHECK(total == n, "split: the sizes given sum to ", total, ", not to ", n, ", the extent of dimension ", d,
             " of ", x.description());
  return pieces("split", x, d, sizes);
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  const int64_t d = cut_dim("chunk", x, dim), n = x.dim(d);
  KILN_CHECK(chunks > 0, "chunk: ", chunks, " chunks; give 1 or more");
  if (n == 0) return pieces("chunk", x, d, std::vector<int64_t>(static_cast<size_t>(chunks), 0));
  return pieces("chunk", x, d, lengths_of((n + chunks - 1) / chunks, n));
}

std::vector<Tensor> unbind(const Tensor& x, int64_t dim) {
  const int64_t d = cut_dim("unbind", x, dim);
  std::vector<Tensor> out = pieces("unbind", x, d, std::vector<int64_t>(static_cast<size_t>(x.dim(d)), 1));
  for (Tensor& t : out) t = squeeze(t, d);
  return out;
}

namespace {

// Whether order keeps x's first k dimensions in place and swaps the two groups after them, [k, m)
// and [m, rank): then the permutation is a transpose of x seen as [batch, rows, cols] (the
// products of the three groups), which transpose's tiled kernel and node do (NCHW to NHWC and
// back, a dimension moved last and back, the last two swapped). A permutation that moves x's
// innermost dimension otherwise gathers a strided column per output row, 8x slower.
bool as_batched_transpose(const Tensor& x, const std::vector<int64_t>& order, int64_t& batch, int64_t& rows,
                          int64_t& cols) {
  const auto rank = static_cast<int64_t>(order.size());
  int64_t k = 0;
  while (k < rank && order[static_cast<size_t>(k)] == k) ++k;
  if (k == rank) return false;
  const int64_t m = order[static_cast<size_t>(k)], tail = rank - m;
  for (int64_t i = 0; i < rank - k; ++i)
    if (order[static_cast<size_t>(k + i)] != (i < tail ? m + i : k + i - tail)) return false;
  batch = rows = cols = 1;
  for (int64_t d = 0; d < rank; ++d) (d < k ? batch : d < m ? rows : cols) *= x.dim(d);
  return true;
}

}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& indices) {
  const char* op = "index_select";
  checks::defined(op, "x", x);
  checks::defined(op, "indices", indices);
  KILN_CHECK(x.rank() >= 1, "index_select: needs a tensor of rank >= 1, got ", x.description());
  KILN_CHECK(indices.rank() <= 1, "index_select: indices must be one index or a list of them (rank 0 or 1), got ",
             indices.description(), "; reshape them to [n] and the result back");
  const int64_t d = checks::resolve_dim(op, dim, x.rank(), x.description());
  check_index_tensor(op, "x", x, indices);
  return gather_along({op, dimension_of(d, x)}, x, d, indices, false);
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& indices) {
  const char* op = "gather";
  checks::defined(op, "x", x);
  checks::defined(op, "indices", indices);
  KILN_CHECK(x.rank() >= 1, "gather: needs a tensor of rank >= 1, got ", x.description());
  KILN_CHECK(indices.rank() == x.rank(), "gather: indices must have x's rank (", x.rank(), "), got ",
             indices.description(), " for x ", x.description(), "; index_select takes one list for a whole dimension");
  const int64_t d = checks::resolve_dim(op, dim, x.rank(), x.description());
  check_within_x(op, x, indices, d);
  check_index_tensor(op, "x", x, indices);
  return gather_along({op, dimension_of(d, x)}, corner_of(x, indices, d), d, indices, true);
}

Tensor index_add(const Tensor& x, int64_t dim, const Tensor& indices, const Tensor& src) {
  const char* op = "index_add";
  const int64_t d = scatter_operands(op, x, dim, indices, src);
  KILN_CHECK(indices.rank() <= 1, "index_add: indices must be one index or a list of them (rank 0 or 1), got ",
             indices.description());
  bool fits = src.dim(d) == indices.numel();
  for (int64_t k = 0; k < x.rank(); ++k) fits = fits && (k == d || src.dim(k) == x.dim(k));
  KILN_CHECK(fits, "index_add: src ", src.description(), " must have x's shape ", x.shape(), " but ",
             indices.numel(), " (one per index) along dimension ", d);
  check_index_tensor(op, "x", x, indices);
  return scatter_add_along({op, dimension_of(d, x)}, x, d, indices, src, false);
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& indices, const Tensor& src) {
  const char* op = "scatter_add";
  const int64_t d = scatter_operands(op, x, dim, indices, src);
  KILN_CHECK(indices.rank() == x.rank(), "scatter_add: indices must have x's rank (", x.rank(), "), got ",
             indices.description(), "; index_add takes one list for a whole dimension");
  check_within_x(op, x, indices, d);
  for (int64_t k = 0; k < x.rank(); ++k)
    KILN_CHECK(indices.dim(k) <= src.dim(k), "scatter_add: indices ", indices.description(), " are longer than src ",
               src.description(), " along dimension ", k);
  check_index_tensor(op, "x", x, indices);
  // Shorter indices add into x's corner (torch's rule) from src's corner of their extents.
  const Tensor part = scatter_add_along({op, dimension_of(d, x)}, corner_of(x, indices, d), d, indices,
                                        corner_of(src, indices, -1), true);
  return with_corner(x, part);
}

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  const char* op = "embedding";
  checks::defined(op, "weight", weight);
  checks::defined(op, "indices", indices);
  KILN_CHECK(!(is_floating(indices.dtype()) && !is_floating(weight.dtype())), op, ": weight is ",
             weight.description(), " and indices ", indices.description(),
             ": the arguments look swapped; kiln takes (weight, indices), torch's F.embedding (indices, weight)");
  checks::float32(op, "weight", weight);
  checks::rank(op, "weight", weight, 2, "[rows, features]");
  check_index_tensor(op, "weight", weight, indices);
  std::vector<int64_t> dims = indices.shape().dims();
  dims.push_back(weight.dim(1));
  const IndexUse use{op, "the table's " + std::to_string(weight.dim(0)) + " rows"};
  return reshape(gather_along(use, weight, 0, indices, false), Shape(dims));
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  checks::defined("permute", "x", x);
  const int64_t rank = x.rank();
  KILN_CHECK(static_cast<int64_t>(dims.size()) == rank, "permute: ", dims.size(), " dimension(s) given for ",
             x.description(), "; name each of its ", rank, " once, in the new order");
  std::vector<int64_t> order(dims.size()), inverse(dims.size(), -1);
  std::vector<int64_t> extents(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = checks::resolve_dim("permute", dims[i], rank, x.description());
    KILN_CHECK(inverse[static_cast<size_t>(d)] < 0, "permute: dimension ", d, " is named twice (positions ",
               inverse[static_cast<size_t>(d)], " and ", i, " of dims); a permutation names each of the ", rank,
               " once");
    order[i] = d;
    inverse[static_cast<size_t>(d)] = static_cast<int64_t>(i);
    extents[i] = x.dim(d);
  }
  int64_t batch = 0, rows = 0, cols = 0;
  if ((x.dtype() == DType::f32 || x.dtype() == DType::bf16) && as_batched_transpose(x, order, batch, rows, cols))
    return reshape(transpose(reshape(x, Shape{batch, rows, cols})), Shape(extents));
  KILN_CHECK(rank <= kMaxBroadcastRank, "permute: ", x.description(), " has more than ", kMaxBroadcastRank,
             " dimensions, more than kiln permutes other than by swapping two groups of dimensions; "
             "reshape it first");
  Tensor y = Tensor::empty(Shape(extents), like(x));
  backend_for(x.device()).permute(x, order, y);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<PermuteNode>();
    node->inverse = std::move(inverse);
    node->next = {autograd::edge_for(x)};
    autograd::set_history(y, node);
  }
  return y;
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  checks::defined("transpose", "x", x);
  std::vector<int64_t> order(static_cast<size_t>(x.rank()));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::swap(order[static_cast<size_t>(checks::resolve_dim("transpose", d0, x.rank(), x.description()))],
            order[static_cast<size_t>(checks::resolve_dim("transpose", d1, x.rank(), x.description()))]);
  return permute(x, order);
}

namespace {

// x in its [outer, n, inner] view around a dimension (Shape::around) with n moved last, one
// batched transpose at any rank: how a last-dimension kernel runs along another.
Tensor moved_last(const Tensor& x, const Shape& around) { return permute(reshape(x, around), {0, 2, 1}); }

// The backward of softmax (log_softmax) over a dimension other than the last, run in place.
struct SoftmaxInnerNode final : Node {
  SoftmaxInnerNode(bool log, int64_t n, int64_t inner)
      : Node(log ? "log_softmax" : "softmax"), log(log), n(n), inner(inner) {}
  bool log;
  int64_t n, inner;  // x as [outer, n, inner]
  SavedTensor y;
  std::vector<Tensor> apply(const Tensor& dy) override {
    const Tensor& ys = y.get();
    Tensor dx = Tensor::empty(ys.shape(), like(dy));
    backend_for(dy.device()).softmax_inner_backward(ys, dy, n, inner, log, dx);
    return {dx};
  }
  bool release_saved() override { return release_all(y); }
};

// op (softmax or log_softmax) over dimension dim: the last-dimension op; for another, the
// backend's kernel along it where it has one (the CPU), else the last-dimension op with dim moved
// last and back (a GPU).
Tensor softmax_along(bool log, const Tensor& x, int64_t dim) {
  const char* name = log ? "log_softmax" : "softmax";
  using LastDim = Tensor (*)(const Tensor&);
  const LastDim op = log ? static_cast<LastDim>(&log_softmax) : static_cast<LastDim>(&softmax);
  checks::float32(name, "x", x);
  KILN_CHECK(x.rank() >= 1, name, ": x must have a dimension to normalise over, got ", x.description());
  const int64_t d = checks::resolve_dim(name, dim, x.rank(), x.description());
  if (d == x.rank() - 1) return op(x);
  // What the last-dimension op would refuse, named for x as given, before a permuted copy is made.
  KILN_CHECK(x.dim(d) > 0, name, ": dimension ", dim, " of ", x.description(), " is empty: nothing to normalise");
  const Shape around = x.shape().around(d);  // [outer, n, inner]
  const int64_t inner = around[2];
  if (inner == 1) return reshape(op(reshape(x, Shape{around[0], around[1]})), x.shape());  // [N, C, 1, 1]
  Backend& be = backend_for(x.device());
  if (be.has_softmax_inner()) {
    Tensor y = Tensor::empty(x.shape(), like(x));
    if (inner > 0) be.softmax_inner(x, x.dim(d), inner, log, y);
    if (autograd::needs_grad({&x})) {
      auto node = std::make_shared<SoftmaxInnerNode>(log, x.dim(d), inner);
      node->y = y.detach();
      node->next = {autograd::edge_for(x)};
      autograd::set_history(y, node);
    }
    return y;
  }
  return reshape(permute(op(moved_last(x, around)), {0, 2, 1}), x.shape());
}

// The position along dimension dim of the first maximum (op maximum) or minimum, a NaN first
// (torch.argmax, argmin): Backend::arg_extreme along the last dimension, or along n moved last.
Tensor arg_extreme(const char* name, BinaryOp op, const Tensor& x, int64_t dim, bool keepdim) {
  checks::float_or_integer(name, "x", x);
  if (x.rank() == 0) {  // torch's: 0-d 0 for dim 0 or -1, keepdim or not
    checks::resolve_dim_of(name, dim, x);
    return reshape(arg_extreme(name, op, reshape(x, Shape{1}), dim, false), Shape{});
  }
  const int64_t d = checks::resolve_dim(name, dim, x.rank(), x.description());
  checks::extreme_exists(name, x, d, op == BinaryOp::maximum);
  checks::positions_fit(name, x, d);
  if (!is_floating(x.dtype())) {  // exactly, where fp32 would blur past 2^24: the first entry equal to the extreme
    const Tensor extreme = op == BinaryOp::maximum ? amax(x, d, true) : amin(x, d, true);
    return arg_extreme(name, BinaryOp::maximum, eq(x, extreme), d, keepdim);
  }
  std::vector<int64_t> kept = x.shape().dims();
  if (keepdim) kept[static_cast<size_t>(d)] = 1;
  else kept.erase(kept.begin() + d);
  Tensor out = Tensor::empty(Shape(kept), like(x, DType::i64));
  if (out.numel() == 0) return out;
  const Tensor x32 = x.detach().to(DType::f32);  // bf16 widens exactly
  backend_for(x.device()).arg_extreme(op, d == x.rank() - 1 ? x32 : moved_last(x32, x.shape().around(d)), out);
  return out;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) {
  return softmax_along(false, x, dim);
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
  return softmax_along(true, x, dim);
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  return arg_extreme("argmax", BinaryOp::maximum, x, dim, keepdim);
}

Tensor argmin(const Tensor& x, int64_t dim, bool keepdim) {
  return arg_extreme("argmin", BinaryOp::minimum, x, dim, keepdim);
}

}  // namespace kiln

