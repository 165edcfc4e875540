#include "layers/init.h"

#include <cmath>

namespace kiln::init {
namespace {

thread_local bool t_skip_draws = false;
thread_local std::vector<detail::DeferredDraw>* t_deferred = nullptr;  // a recording DeferredDraws'

// Every random initialiser's draw (normal: N(a, b), else U(a, b)), described once for both
// ways: drawn now, or, where SkipDraws or a recording DeferredDraws is in force, zeros with the
// generator advanced as the draw would (what is drawn later is unchanged), the latter also
// noting the draw for draw_untouched.
Tensor draw(const Shape& shape, Generator& gen, bool normal, float a, float b) {
  if (!t_skip_draws && t_deferred == nullptr)
    return normal ? Tensor::normal(shape, a, b, gen) : Tensor::uniform(shape, a, b, gen);
  const PhiloxState at = gen.reserve(static_cast<uint64_t>(shape.numel()));
  Tensor out = Tensor::zeros(shape);
  if (!t_skip_draws) t_deferred->push_back(detail::DeferredDraw{out, at, normal, a, b, out.version()});
  return out;
}

}  // namespace

SkipDraws::SkipDraws() : previous_(t_skip_draws) { t_skip_draws = true; }
SkipDraws::~SkipDraws() { t_skip_draws = previous_; }

DeferredDraws::DeferredDraws() {
  KILN_CHECK(t_deferred == nullptr, "init::DeferredDraws: another one is already recording on this thread");
  KILN_CHECK(!t_skip_draws, "init::DeferredDraws inside init::SkipDraws would record nothing: one or the other");
  t_deferred = &draws_;
}

DeferredDraws::~DeferredDraws() { stop(); }

void DeferredDraws::stop() {
  if (recording_) t_deferred = nullptr;
  recording_ = false;
}

int64_t DeferredDraws::draw_untouched() {
  stop();
  int64_t drawn = 0;
  for (detail::DeferredDraw& d : draws_) {
    if (d.tensor.version() != d.version) continue;  // written since: loaded
    Backend& be = backend_for(d.tensor.device());
    if (d.normal) be.fill_normal(d.tensor, d.at, d.a, d.b);
    else be.fill_uniform(d.tensor, d.at, d.a, d.b);
    d.tensor.mark_modified();
    drawn += d.tensor.numel();
  }
  draws_.clear();
  return drawn;
}

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
  return draw(shape, gen, false, -a, a);
}

Tensor kaiming_normal(const Shape& shape, Generator& gen) {
  return normal(shape, static_cast<float>(std::sqrt(2.0 / fans(shape).in)), gen);
}

Tensor kaiming_normal_fan_out(const Shape& shape, Generator& gen) {
  return normal(shape, static_cast<float>(std::sqrt(2.0 / fans(shape).out)), gen);
}

Tensor normal(const Shape& shape, float std, Generator& gen) {
  return draw(shape, gen, true, 0.0f, std);
}

Tensor zeros(const Shape& shape) { return Tensor::zeros(shape); }

}  // namespace kiln::init
