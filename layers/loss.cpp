#include "layers/loss.h"

namespace kiln {

std::vector<Tensor> decayed_weights(Module& model) {
  std::vector<Tensor> out;
  for (const ParameterRef& p : model.parameters())
    if (p.decay && p.trainable) out.push_back(*p.tensor);
  return out;
}

Tensor classification_loss(const Tensor& logits, const Tensor& labels, Module& model, float weight_decay,
                           Tensor* data_loss) {
  KILN_CHECK(weight_decay >= 0, "classification_loss: weight_decay must be >= 0, got ", weight_decay);
  Tensor loss = softmax_cross_entropy(logits, labels);
  if (data_loss) *data_loss = loss;
  if (weight_decay == 0) return loss;
  const std::vector<Tensor> weights = decayed_weights(model);
  if (weights.empty()) return loss;
  return add(loss, l2_penalty(weights, weight_decay));
}

}  // namespace kiln
