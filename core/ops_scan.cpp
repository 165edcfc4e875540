// cumsum: running sums along a dimension (Backend::cumsum over [outer, n, inner], summed as
// kernels/common/scan.h says), whose gradient is the same sum run from the other end.
#include "core/op_checks.h"
#include "core/ops.h"

namespace kiln {
namespace {

// x's running sums along the middle of [outer, n, inner], from the end when reverse.
Tensor scan(const Tensor& x, const Shape& lines, bool reverse) {
  Tensor y = Tensor::empty(x.shape(), like(x));
  if (y.numel() == 0) return y;
  Tensor y3 = y.reshape(lines);
  backend_for(x.device()).cumsum(x.detach().reshape(lines), reverse, y3);
  return y;
}

// cumsum's gradient: g's sums from each position to the end of its line.
struct CumsumNode final : Node {
  CumsumNode() : Node("cumsum") {}
  Shape lines;  // [outer, n, inner]
  std::vector<Tensor> apply(const Tensor& g) override { return {scan(g.detach(), lines, true)}; }
};

}  // namespace

Tensor cumsum(const Tensor& x, int64_t dim) {
  const char* op = "cumsum";
  checks::float32_or_bf16(op, "x", x);
  const Tensor x1 = x.rank() == 0 ? reshape(x, Shape{1}) : x;  // torch takes dim 0 or -1 there
  const int64_t d = checks::resolve_dim(op, dim, x1.rank(), x.description());
  const Shape lines{x1.shape().numel_before(d), x1.dim(d), x1.shape().numel_after(d)};
  Tensor y = scan(x1, lines, false);
  if (autograd::needs_grad({&x1})) {
    auto node = std::make_shared<CumsumNode>();
    node->lines = lines;
    node->next = {autograd::edge_for(x1)};
    autograd::set_history(y, node);
  }
  return x.rank() == 0 ? reshape(y, Shape{}) : y;
}

}  // namespace kiln
