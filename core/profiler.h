// Where a program's device time goes, op by op: while a Profiler lives, every call the
// thread that made it sends to a backend (forward and backward kernels, optimizer updates,
// copies, casts, CUDA graph replays) is timed alone and tallied by op, or by op and input
// shape. The GPU issue's misses need this answer ("measured cause"), and so does anyone
// tuning a model: kiln_bench --profile prints it per row, research code calls it directly.
//
// How: the profiler installs a forwarding backend in front of each registered one
// (core/backend.h register_backend) and times each call with Backend::time_ms, which on a
// GPU records events around the call and waits for the second. So each op's time is its
// own, but the device drains after every op: the profiled run is slower than a free-running
// one, and the table's total is the sum of the ops, not the step's wall time. Calls made
// while this thread records a CUDA graph pass through untimed (no host wait is allowed
// then), as do other threads' calls (a loader's copies): the table counts those apart.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln {

// One line of a profile: an op (the backend primitive's name), the first input's dtype and
// shape when grouped by shape (else ""), how often it ran and its summed time.
struct ProfileRow {
  std::string op;
  std::string shape;
  int64_t calls = 0;
  double total_ms = 0;
};

// Times every backend call of the constructing thread until destroyed or stop()ped; one at
// a time per process (a second throws kiln::Error).
class Profiler {
 public:
  // by_shape: one row per op and input shape (its dtype and shape, as "float32[N, H, W, C]"), else per op.
  explicit Profiler(bool by_shape = false);
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  // Stops timing (the backends are served directly again); the rows stay readable.
  void stop();
  // Forgets what was tallied so far (a warm-up's calls, say) and goes on timing.
  void reset();
  // The rows, most total time first.
  std::vector<ProfileRow> rows() const;
  // Calls that passed through untimed: made while recording a CUDA graph, or by other threads.
  int64_t untimed_calls() const;
  // The rows as a table: the top `top` rows (0: all), each with its share of the total, and
  // a first line saying what the times are (each op alone, the device drained around it).
  std::string table(size_t top = 25) const;
  // Whether rows are per op and input shape (the constructor's by_shape).
  bool by_shape() const;
  // Whether it is timing now: made, and neither stopped nor destroyed.
  bool timing() const;

  struct State;  // shared with the forwarding backends (core/profiler.cpp)

 private:
  std::shared_ptr<State> state_;
};

}  // namespace kiln
