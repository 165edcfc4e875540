#include "layers/schedule.h"

#include <cmath>
#include <numbers>

#include "core/error.h"

namespace kiln {
namespace {
void check_step(const char* who, int64_t step) { KILN_CHECK(step >= 0, who, ": step must be >= 0, got ", step); }
}  // namespace

ConstantLR::ConstantLR(float base) : base_(base) {
  KILN_CHECK(base >= 0 && std::isfinite(base), "ConstantLR: lr must be finite and >= 0 (as float32), got ", base);
}

float ConstantLR::lr(int64_t step) const {
  check_step("ConstantLR", step);
  return base_;
}

StepLR::StepLR(float base, int64_t every, float gamma) : base_(base), every_(every), gamma_(gamma) {
  KILN_CHECK(base >= 0 && std::isfinite(base) && every > 0 && gamma > 0 && std::isfinite(gamma),
             "StepLR: need a finite lr >= 0, every > 0 and a finite gamma > 0 (as float32); got ", base, ", ", every,
             ", ", gamma);
}

float StepLR::lr(int64_t step) const {
  check_step("StepLR", step);
  const double drops = static_cast<double>(step / every_);
  return static_cast<float>(base_ * std::pow(static_cast<double>(gamma_), drops));
}

CosineLR::CosineLR(float base, int64_t steps, float floor) : base_(base), steps_(steps), floor_(floor) {
  KILN_CHECK(steps > 0 && floor >= 0 && floor <= base && std::isfinite(base),
             "CosineLR: need steps > 0 and 0 <= floor <= lr, lr finite (as float32); got ", steps, ", ", floor, ", ",
             base);
}

float CosineLR::lr(int64_t step) const {
  check_step("CosineLR", step);
  if (step >= steps_) return floor_;
  const double t = static_cast<double>(step) / static_cast<double>(steps_);
  return static_cast<float>(floor_ + (base_ - floor_) * 0.5 * (1.0 + std::cos(std::numbers::pi * t)));
}

WarmupLR::WarmupLR(std::shared_ptr<const Schedule> after, int64_t warmup) : after_(std::move(after)), warmup_(warmup) {
  KILN_CHECK(after_ != nullptr, "WarmupLR: no schedule to warm up into");
  KILN_CHECK(warmup >= 0, "WarmupLR: warmup must be >= 0, got ", warmup);
}

float WarmupLR::lr(int64_t step) const {
  check_step("WarmupLR", step);
  if (step >= warmup_) return after_->lr(step - warmup_);
  return static_cast<float>(static_cast<double>(after_->lr(0)) * static_cast<double>(step + 1) /
                            static_cast<double>(warmup_));
}

}  // namespace kiln
