#include "core/kiln.h"
#include "layers/layers.h"  // Sequential, Conv2d, ReLU, MaxPool2d, Flatten, Linear
#include "layers/loss.h"    // classification_loss
#include "layers/optim.h"   // SGD, Adam, AdamW, clip_grad_norm
using namespace kiln;

int main() {
  Generator gen(1);      // the weights' random stream: the same seed, the same weights
  Sequential net("net");  // parameters are named by path: net/conv/weight, net/fc/bias, ...
  net.add(std::make_shared<Conv2d>("conv", 3, 8, 3, Conv2dParams{.pad_h = 1, .pad_w = 1}, true, gen));
  net.add(std::make_shared<ReLU>("relu"));
  net.add(std::make_shared<MaxPool2d>("pool", Pool2dParams{}));  // 2x2, stride 2
  net.add(std::make_shared<Flatten>("flatten"));
  net.add(std::make_shared<Linear>("fc", 8 * 8 * 8, 4, true, gen));
  net.freeze("net/conv/");               // by name pattern: train fc alone
  Adam opt(net, AdamOptions{.lr = 1e-2f});  // over the parameters that train now

  Tensor x = Tensor::uniform({8, 16, 16, 3}, -1.0f, 1.0f);
  Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2, 3}, {8});
  double first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    Tensor loss = classification_loss(net(x), y, net, /*weight_decay=*/0.0f);
    opt.zero_grad();
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item();
  }
  return last < first ? 0 : 1;  // it learned
}
