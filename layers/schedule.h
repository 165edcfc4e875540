// Learning-rate schedules: the rate as a function of the step (counted from 0, the step about
// to be taken). Use: opt.set_lr(schedule.lr(opt.steps())); opt.step();
#pragma once

#include <cstdint>
#include <memory>

namespace kiln {

// Base of the schedules below; the rate depends on the step alone, so one schedule can be shared and wrapped.
class Schedule {
 public:
  // Virtual: schedules are held through pointers to the base (WarmupLR's `after`).
  virtual ~Schedule() = default;
  // The rate for `step` (>= 0), the step about to be taken.
  virtual float lr(int64_t step) const = 0;
};

// lr(step) = base.
class ConstantLR final : public Schedule {
 public:
  // base >= 0, else a kiln::Error.
  explicit ConstantLR(float base);
  // The formula above; a negative step is a kiln::Error.
  float lr(int64_t step) const override;
  float base() const { return base_; }

 private:
  float base_;
};

// lr(step) = base * gamma^floor(step / every): drops by gamma every `every` steps.
class StepLR final : public Schedule {
 public:
  // Needs base >= 0, every > 0 and gamma > 0 (a kiln::Error otherwise).
  StepLR(float base, int64_t every, float gamma);
  // The formula above; a negative step is a kiln::Error.
  float lr(int64_t step) const override;
  float base() const { return base_; }
  int64_t every() const { return every_; }
  float gamma() const { return gamma_; }

 private:
  float base_;
  int64_t every_;
  float gamma_;
};

// Cosine decay from base at step 0 to floor at step `steps`, then floor:
// lr(step) = floor + (base - floor) * (1 + cos(pi * step / steps)) / 2.
class CosineLR final : public Schedule {
 public:
  // Needs steps > 0 and 0 <= floor <= base (a kiln::Error otherwise).
  CosineLR(float base, int64_t steps, float floor = 0.0f);
  // The formula above; a negative step is a kiln::Error.
  float lr(int64_t step) const override;
  float base() const { return base_; }
  int64_t steps() const { return steps_; }
  float floor() const { return floor_; }

 private:
  float base_;
  int64_t steps_;
  float floor_;
};

// Linear warm-up in front of another schedule: for step < warmup, lr = after.lr(0) * (step +
// 1) / warmup (so the last warm-up step reaches it); from then on after.lr(step - warmup), i.e.
// the wrapped schedule's clock starts when the warm-up ends.
class WarmupLR final : public Schedule {
 public:
  // Needs a schedule to wrap and warmup >= 0 (0: `after` unchanged).
  WarmupLR(std::shared_ptr<const Schedule> after, int64_t warmup);
  // The formula above; a negative step is a kiln::Error.
  float lr(int64_t step) const override;
  const std::shared_ptr<const Schedule>& after() const { return after_; }
  int64_t warmup() const { return warmup_; }

 private:
  std::shared_ptr<const Schedule> after_;
  int64_t warmup_;
};

}  // namespace kiln
