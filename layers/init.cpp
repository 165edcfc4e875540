#include "layers/init.h"

#include <cmath>

namespace kiln::init {

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
  return Tensor::uniform(shape, -a, a, gen);
}

Tensor kaiming_normal(const Shape& shape, Generator& gen) {
  return Tensor::normal(shape, 0.0f, static_cast<float>(std::sqrt(2.0 / fans(shape).in)), gen);
}

Tensor kaiming_normal_fan_out(const Shape& shape, Generator& gen) {
  return Tensor::normal(shape, 0.0f, static_cast<float>(std::sqrt(2.0 / fans(shape).out)), gen);
}

Tensor normal(const Shape& shape, float std, Generator& gen) { return Tensor::normal(shape, 0.0f, std, gen); }

Tensor zeros(const Shape& shape) { return Tensor::zeros(shape); }

}  // namespace kiln::init
