// Learning-rate schedules: the rate as a function of the step (counted from 0, the step about
// to be taken). Use: opt.set_lr(schedule.lr(opt.steps())); opt.step();
#pragma once

#include <cstdint>
#include <memory>

namespace kiln {

class Schedule {
 public:
  virtual ~Schedule() = default;
  virtual float lr(int64_t step) const = 0;
};

// lr(step) = base.
class ConstantLR final : public Schedule {
 public:
  explicit ConstantLR(float base);
  float lr(int64_t step) const override;

 private:
  float base_;
};

// lr(step) = base * gamma^floor(step / every): drops by gamma every `every` steps.
class StepLR final : public Schedule {
 public:
  StepLR(float base, int64_t every, float gamma);
  float lr(int64_t step) const override;

 private:
  float base_;
  int64_t every_;
  float gamma_;
};

// Cosine decay from base at step 0 to floor at step `steps`, then floor:
// lr(step) = floor + (base - floor) * (1 + cos(pi * step / steps)) / 2.
class CosineLR final : public Schedule {
 public:
  CosineLR(float base, int64_t steps, float floor = 0.0f);
  float lr(int64_t step) const override;

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
  WarmupLR(std::shared_ptr<const Schedule> after, int64_t warmup);
  float lr(int64_t step) const override;

 private:
  std::shared_ptr<const Schedule> after_;
  int64_t warmup_;
};

}  // namespace kiln
