// The training loss of a classifier: softmax cross-entropy plus weight decay written into
// the loss as an L2 term, as TF-slim's VGG does (5e-4 on weights, none on biases).
#pragma once

#include "core/kiln.h"
#include "layers/module.h"

namespace kiln {

// mean_n -log softmax(logits[n])[labels[n]] + weight_decay * sum_w sum(w^2) / 2, the sum over
// the model's parameters with decay set (weights, not biases) that are trainable: a frozen
// weight only adds a constant, so it is left out and costs nothing (no graph node, no read).
// logits: [N, K] float32, labels: [N] int32/int64 in [0, K) -> scalar [].
// weight_decay 0 (or no decayed trainable weight) gives the cross-entropy alone.
// data_loss, when given, receives the cross-entropy term alone (what to report next to a
// validation loss: the penalty depends on which layers train, not on the data).
Tensor classification_loss(const Tensor& logits, const Tensor& labels, Module& model, float weight_decay,
                           Tensor* data_loss = nullptr);

// The weights classification_loss decays: decay && trainable, in registration order.
std::vector<Tensor> decayed_weights(Module& model);

}  // namespace kiln
