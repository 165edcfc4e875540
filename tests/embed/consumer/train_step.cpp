#include "core/kiln.h"
using namespace kiln;

int main() {
  Tensor x = Tensor::uniform({8, 16, 16, 3}, -1.0f, 1.0f);             // a batch of images
  Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2, 3}, {8});
  Tensor w1 = Tensor::uniform({8, 3, 3, 3}, -0.3f, 0.3f).set_requires_grad(true);
  Tensor w2 = Tensor::uniform({4, 8 * 8 * 8}, -0.1f, 0.1f).set_requires_grad(true);

  Tensor h = max_pool2d(relu(conv2d(x, w1, Tensor(), Conv2dParams{1, 1, 1, 1})));  // [8, 8, 8, 8]
  Tensor loss = softmax_cross_entropy(linear(flatten(h), w2), y);
  loss.backward();

  // {parameter, gradient, momentum buffer (none: momentum is 0)}
  std::vector<SgdParamRef> params = {{w1, w1.grad(), Tensor()}, {w2, w2.grad(), Tensor()}};
  sgd_update(params, SgdOptions{.lr = 0.1f});
  return loss.item() > 0 ? 0 : 1;
}
