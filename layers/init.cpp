#include "layers/init.h"

#include <cmath>

namespace kiln::init {
namespace {

thread_local bool t_skip_draws = false;

// Zeros where SkipDraws is in force, the generator advanced as a draw of that size would.
bool skipped(const Shape& shape, Generator& gen, Tensor& out) {
  if (!t_skip_draws) return false;
  gen.reserve(static_cast<uint64_t>(shape.numel()));
  out = Tensor::zeros(shape);
  return true;
}

}  // namespace

SkipDraws::SkipDraws() : previous_(t_skip_draws) { t_skip_draws = true; }
SkipDraws::~SkipDraws() { t_skip_draws = previous_; }

Fans fans(const Shape& s) {
  KILN_CHECK(s.rank() == 2 || s.rank() == 4, "init: expected a linear [out, in] or conv [O, KH, KW, C] weight, got ",
             s);
  if (s.rank() == 2) return Fans{static_cast<double>(s[1]), static_cast<double>(s[0])};
  const double receptive = static_cast<double>(s[1] * s[2]);
  return Fans{receptive * static_cast<double>(s[3]), receptive * static_cast<double>(s[0])};
}

Tensor xavier_uniform(const Shape& shape, Generator& gen) {
  const Fans f = fans(shape);
  const float a = static_cast<float>(std::sqrt(6.0 / (f.in + f.out)));
  Tensor t;
  return skipped(shape, gen, t) ? t : Tensor::uniform(shape, -a, a, gen);
}

Tensor kaiming_normal(const Shape& shape, Generator& gen) {
  return normal(shape, static_cast<float>(std::sqrt(2.0 / fans(shape).in)), gen);
}

Tensor kaiming_normal_fan_out(const Shape& shape, Generator& gen) {
  return normal(shape, static_cast<float>(std::sqrt(2.0 / fans(shape).out)), gen);
}

Tensor normal(const Shape& shape, float std, Generator& gen) {
  Tensor t;
  return skipped(shape, gen, t) ? t : Tensor::normal(shape, 0.0f, std, gen);
}

Tensor zeros(const Shape& shape) { return Tensor::zeros(shape); }

}  // namespace kiln::init
