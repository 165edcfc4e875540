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

// cumsum's gradient: g's sums from each position to the end of its line; g itself for lines of
// one (torch's: a -0 in g stays -0, where a sum from +0 would give +0).
struct CumsumNode final : Node {
  CumsumNode() : Node("cumsum") {}
  Shape lines;  // [outer, n, inner]
  std::vector<Tensor> apply(const Tensor& g) override {
    return {lines[1] == 1 ? g.detach() : scan(g.detach(), lines, true)};
  }
};

}  // namespace

Tensor cumsum(const Tensor& x, int64_t dim) {
  const char* op = "cumsum";
  checks::float32_or_bf16(op, "x", x);
  if (x.rank() == 0) {  // torch's: a copy of x (a -0 kept) for dim 0 or -1
    checks::resolve_dim(op, dim, 1, x.description());
    return mul(x, 1.0f);
  }
  const Shape lines = x.shape().around(checks::resolve_dim(op, dim, x.rank(), x.description()));
  Tensor y = scan(x, lines, false);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<CumsumNode>();
    node->lines = lines;
    node->next = {autograd::edge_for(x)};
    autograd::set_history(y, node);
  }
  return y;
}

}  // namespace kiln
