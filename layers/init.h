// Initialisers drawing from the engine's seeded Philox generator, so a model built with
// the same seed has the same weights on any machine. Shapes: conv OHWI, linear [out, in].
#pragma once

#include <vector>

#include "core/kiln.h"

namespace kiln::init {

// fan_in and fan_out of a conv (OHWI: in*kh*kw, out*kh*kw) or linear ([out, in]) weight.
struct Fans {
  double in, out;
};
Fans fans(const Shape& weight_shape);

// Glorot/Xavier uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Keras's default).
Tensor xavier_uniform(const Shape& shape, Generator& gen);
// Kaiming/He normal for ReLU: N(0, sqrt(2 / fan_in)).
Tensor kaiming_normal(const Shape& shape, Generator& gen);
// Kaiming/He normal for ReLU preserving the backward pass's variance: N(0, sqrt(2 / fan_out))
// (torch.nn.init.kaiming_normal_(mode="fan_out"), torchvision's VGG and ResNet convs).
Tensor kaiming_normal_fan_out(const Shape& shape, Generator& gen);
// N(0, std): torchvision's VGG linear layers use std 0.01.
Tensor normal(const Shape& shape, float std, Generator& gen);
Tensor zeros(const Shape& shape);

// While one lives on this thread, the random initialisers above draw nothing: they advance
// the generator by the numbers they would have drawn (what is drawn later is unchanged) and
// return zeros. For a model whose every weight is loaded next (a checkpoint): VGG16's 138M
// normal draws took about half of `vgg_finetune predict`'s 2 s on 2 cores.
class SkipDraws {
 public:
  SkipDraws();
  ~SkipDraws();
  SkipDraws(const SkipDraws&) = delete;
  SkipDraws& operator=(const SkipDraws&) = delete;

 private:
  bool previous_;
};

namespace detail {
// One draw put off: the tensor (zeros until drawn), where in its generator's stream its
// values start, how they are drawn (normal: N(a, b), else U(a, b)), and its version then.
struct DeferredDraw {
  Tensor tensor;
  PhiloxState at;
  bool normal;
  float a, b;
  uint64_t version;
};
}  // namespace detail

// SkipDraws that remembers: while it records on this thread (from construction to stop()),
// the random initialisers return zeros and advance the generator, and draw_untouched() later
// draws, into each such tensor nothing has written since (Tensor::version), the values the
// build would have drawn, from the same generator offsets: bit for bit the eager model. For
// a model whose weights mostly come from a file: `vgg_finetune train --weights` draws what
// the file lacks (VGG16's fc8), not the 138M values the import then replaces.
class DeferredDraws {
 public:
  DeferredDraws();
  // Stops recording; tensors not drawn by then stay zero.
  ~DeferredDraws();
  DeferredDraws(const DeferredDraws&) = delete;
  DeferredDraws& operator=(const DeferredDraws&) = delete;
  // Ends the recording: initialisers draw again (e.g. once the model is built).
  void stop();
  // Stops, then draws every recorded tensor still unwritten; returns how many values it drew.
  // Before the model moves to another device: the draws go into the memory recorded (the
  // CPU's, whose bits the eager build has), which a move leaves behind.
  int64_t draw_untouched();

 private:
  std::vector<detail::DeferredDraw> draws_;
  bool recording_ = true;
};

}  // namespace kiln::init
