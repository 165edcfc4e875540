// The profiler's forwarding backends (core/profiler.h): one per device type, made once and
// kept for the process, so a thread still inside one when a Profiler ends is safe; they
// time only while a Profiler is active and forward everything else unchanged.
#include "core/profiler.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "core/backend.h"
#include "core/error.h"

namespace kiln {

struct Profiler::State {
  explicit State(bool by_shape) : by_shape(by_shape), owner(std::this_thread::get_id()) {}
  const bool by_shape;
  const std::thread::id owner;
  mutable std::mutex mu;
  std::map<std::pair<std::string, std::string>, ProfileRow> rows;
  int64_t untimed = 0;
};

namespace {

std::mutex g_mu;                           // guards g_active and installing
std::shared_ptr<Profiler::State> g_active;  // the running profiler's tallies, null when none
thread_local int t_depth = 0;              // > 0 inside a timed call: nested calls are the outer's
thread_local bool t_capturing = false;     // this thread records a CUDA graph: no host waits

std::shared_ptr<Profiler::State> active_state() {
  const std::lock_guard<std::mutex> lock(g_mu);
  return g_active;
}

std::string describe(const Tensor& t) {
  return t.defined() ? std::string(dtype_name(t.dtype())) + t.shape().str() : std::string();
}

// Forwards every call to `inner`, timing the primitives while a Profiler is active.
class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(DeviceType type) : type_(type) {}
  // What it forwards to; atomic because a thread may still call through this front while
  // a later Profiler installs it again.
  std::atomic<Backend*> inner{nullptr};
  Backend* in() const { return inner.load(std::memory_order_acquire); }

  const char* name() const override { return in()->name(); }
  Allocator& allocator(int index) override { return in()->allocator(index); }
  int device_count() override { return in()->device_count(); }
  void synchronize(int index) override { in()->synchronize(index); }
  MemoryStats memory_stats(int index) override { return in()->memory_stats(index); }
  void reset_peak_memory(int index) override { in()->reset_peak_memory(index); }
  std::string device_name(int index) override { return in()->device_name(index); }
  bool native_bf16(int index) override { return in()->native_bf16(index); }
  double time_ms(int index, const std::function<void()>& fn) override { return in()->time_ms(index, fn); }

  void copy(const Tensor& src, Tensor& dst, bool non_blocking) override {
    const Tensor& here = dst.device().type == type_ ? dst : src;
    timed("copy", at(here), [&] { return describe(src) + " to " + dst.device().str(); },
          [&] { in()->copy(src, dst, non_blocking); });
  }
  void fill(Tensor& t, double value) override { op("fill", t, [&] { in()->fill(t, value); }); }
  void arange(Tensor& t, double start, double step) override {
    op("arange", t, [&] { in()->arange(t, start, step); });
  }
  void broadcast_scalar(const Tensor& s, float scale, Tensor& t) override {
    op("broadcast_scalar", t, [&] { in()->broadcast_scalar(s, scale, t); });
  }
  void fill_uniform(Tensor& t, PhiloxState s, float lo, float hi) override {
    op("fill_uniform", t, [&] { in()->fill_uniform(t, s, lo, hi); });
  }
  void fill_normal(Tensor& t, PhiloxState s, float mean, float std) override {
    op("fill_normal", t, [&] { in()->fill_normal(t, s, mean, std); });
  }
  void binary(BinaryOp o, const Tensor& a, const Tensor& b, Tensor& out) override {
    op("binary", a, [&] { in()->binary(o, a, b, out); });
  }
  void binary_scalar(BinaryOp o, const Tensor& a, float s, Tensor& out) override {
    op("binary_scalar", a, [&] { in()->binary_scalar(o, a, s, out); });
  }
  void sum_to(const Tensor& x, Tensor& out) override {
    op("sum_to", x, [&] { in()->sum_to(x, out); });
  }
  void broadcast_to(const Tensor& x, Tensor& out) override {
    op("broadcast_to", out, [&] { in()->broadcast_to(x, out); });
  }
  void transpose(const Tensor& x, Tensor& y) override {
    op("transpose", y, [&] { in()->transpose(x, y); });
  }
  void argsort_rows(const Tensor& x, int64_t k, bool descending, Tensor& idx) override {
    op("argsort_rows", x, [&] { in()->argsort_rows(x, k, descending, idx); });
  }
  void cumsum(const Tensor& x, bool reverse, Tensor& y) override {
    op("cumsum", x, [&] { in()->cumsum(x, reverse, y); });
  }
  int64_t gather_rows(const Tensor& table, const Tensor& idx, Tensor& out) override {
    int64_t first = -1;
    op("gather_rows", out, [&] { first = in()->gather_rows(table, idx, out); });
    return first;
  }
  int64_t scatter_add_rows(const Tensor& g, const Tensor& idx, Tensor& grad) override {
    int64_t first = -1;
    op("scatter_add_rows", g, [&] { first = in()->scatter_add_rows(g, idx, grad); });
    return first;
  }
  bool has_layer_norm() const override { return in()->has_layer_norm(); }
  bool has_softmax_inner() const override { return in()->has_softmax_inner(); }
  void softmax_inner(const Tensor& x, int64_t n, int64_t inner, bool log, Tensor& y) override {
    op("softmax_inner", x, [&] { in()->softmax_inner(x, n, inner, log, y); });
  }
  void softmax_inner_backward(const Tensor& y, const Tensor& dy, int64_t n, int64_t inner, bool log,
                              Tensor& dx) override {
    op("softmax_inner_backward", y, [&] { in()->softmax_inner_backward(y, dy, n, inner, log, dx); });
  }
  void layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, Tensor& y, Tensor& mean,
                          Tensor& rstd) override {
    op("layer_norm_forward", x, [&] { in()->layer_norm_forward(x, gamma, beta, eps, y, mean, rstd); });
  }
  void layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                           const Tensor& rstd, Tensor& dx, Tensor& dy_xhat) override {
    op("layer_norm_backward", dy, [&] { in()->layer_norm_backward(dy, x, gamma, mean, rstd, dx, dy_xhat); });
  }
  void permute(const Tensor& x, const std::vector<int64_t>& dims, Tensor& y) override {
    op("permute", y, [&] { in()->permute(x, dims, y); });
  }
  void where(const Tensor& c, const Tensor& a, const Tensor& b, Tensor& out) override {
    op("where", out, [&] { in()->where(c, a, b, out); });
  }
  void reduce_extreme(BinaryOp o, const Tensor& x, int64_t rows, int64_t n, int64_t inner, Tensor& out) override {
    op("reduce_extreme", x, [&] { in()->reduce_extreme(o, x, rows, n, inner, out); });
  }
  void copy_block(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t rows,
                  int64_t width) override {
    op("copy_block", dst, [&] { in()->copy_block(src, src_col, dst, dst_col, rows, width); });
  }
  void unary(UnaryOp o, const Tensor& x, Tensor& y) override { op("unary", x, [&] { in()->unary(o, x, y); }); }
  void unary_backward(UnaryOp o, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx) override {
    op("unary_backward", dy, [&] { in()->unary_backward(o, x, y, dy, dx); });
  }
  void relu(const Tensor& x, Tensor& y) override { op("relu", x, [&] { in()->relu(x, y); }); }
  void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) override {
    op("relu_backward", dy, [&] { in()->relu_backward(y, dy, dx); });
  }
  void dropout(const Tensor& x, float keep, PhiloxState s, Tensor& y) override {
    op("dropout", x, [&] { in()->dropout(x, keep, s, y); });
  }
  void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y) override {
    op("conv2d_forward", x, [&] { in()->conv2d_forward(x, w, b, p, y); });
  }
  bool conv2d_forward_relu(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                           Tensor& y) override {
    bool fused = false;
    op("conv2d_forward_relu", x, [&] { fused = in()->conv2d_forward_relu(x, w, b, p, y); });
    return fused;
  }
  bool conv2d_forward_relu_trains() const override { return in()->conv2d_forward_relu_trains(); }
  void conv2d_backward_data(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx) override {
    op("conv2d_backward_data", dy, [&] { in()->conv2d_backward_data(dy, w, p, dx); });
  }
  void conv2d_backward_filter(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                              Tensor& db) override {
    op("conv2d_backward_filter", x, [&] { in()->conv2d_backward_filter(x, dy, p, dw, db); });
  }
  void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) override {
    op("max_pool2d_forward", x, [&] { in()->max_pool2d_forward(x, p, y, argmax); });
  }
  void max_pool2d_backward(const Tensor& dy, const Tensor& argmax, const Pool2dParams& p, Tensor& dx) override {
    op("max_pool2d_backward", dy, [&] { in()->max_pool2d_backward(dy, argmax, p, dx); });
  }
  void adaptive_avg_pool2d_forward(const Tensor& x, Tensor& y) override {
    op("adaptive_avg_pool2d_forward", x, [&] { in()->adaptive_avg_pool2d_forward(x, y); });
  }
  void adaptive_avg_pool2d_backward(const Tensor& dy, Tensor& dx) override {
    op("adaptive_avg_pool2d_backward", dy, [&] { in()->adaptive_avg_pool2d_backward(dy, dx); });
  }
  void batch_norm_stats(const Tensor& x, float momentum, Tensor& mean, Tensor& var, Tensor& rm, Tensor& rv) override {
    op("batch_norm_stats", x, [&] { in()->batch_norm_stats(x, momentum, mean, var, rm, rv); });
  }
  void batch_norm_forward(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor& gamma,
                          const Tensor& beta, float eps, Tensor& y) override {
    op("batch_norm_forward", x, [&] { in()->batch_norm_forward(x, mean, var, gamma, beta, eps, y); });
  }
  void batch_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& var,
                           const Tensor& gamma, float eps, bool training, Tensor& dx, Tensor& dgamma,
                           Tensor& dbeta) override {
    op("batch_norm_backward", dy,
       [&] { in()->batch_norm_backward(dy, x, mean, var, gamma, eps, training, dx, dgamma, dbeta); });
  }
  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override {
    op("linear_forward", x, [&] { in()->linear_forward(x, w, b, y); });
  }
  void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor& dx, Tensor& dw,
                       Tensor& db) override {
    op("linear_backward", x, [&] { in()->linear_backward(dy, x, w, dx, dw, db); });
  }
  void softmax(const Tensor& x, bool log, Tensor& y) override { op("softmax", x, [&] { in()->softmax(x, log, y); }); }
  void softmax_backward(const Tensor& y, const Tensor& dy, bool log, Tensor& dx) override {
    op("softmax_backward", y, [&] { in()->softmax_backward(y, dy, log, dx); });
  }
  void softmax_cross_entropy(const Tensor& logits, const Tensor& labels, Tensor& loss) override {
    op("softmax_cross_entropy", logits, [&] { in()->softmax_cross_entropy(logits, labels, loss); });
  }
  void softmax_cross_entropy_backward(const Tensor& logits, const Tensor& labels, const Tensor& dloss,
                                      Tensor& dlogits) override {
    op("softmax_cross_entropy_backward", logits,
       [&] { in()->softmax_cross_entropy_backward(logits, labels, dloss, dlogits); });
  }
  void sum(const Tensor& x, Tensor& out) override { op("sum", x, [&] { in()->sum(x, out); }); }
  void sum_squares(const Tensor& x, Tensor& out) override { op("sum_squares", x, [&] { in()->sum_squares(x, out); }); }
  void arg_extreme(BinaryOp o, const Tensor& x, Tensor& out) override {
    op("arg_extreme", x, [&] { in()->arg_extreme(o, x, out); });
  }
  void sgd_update(std::span<SgdParamRef> params, const SgdOptions& o) override {
    updates("sgd_update", params, [&] { in()->sgd_update(params, o); });
  }
  void lut_u8(const Tensor& u8, const Tensor& lut, Tensor& out) override {
    op("lut_u8", u8, [&] { in()->lut_u8(u8, lut, out); });
  }
  void crop_flip_lut_u8(const Tensor& atlas, const Tensor& desc, const Tensor& lut, Tensor& out) override {
    op("crop_flip_lut_u8", out, [&] { in()->crop_flip_lut_u8(atlas, desc, lut, out); });
  }
  void adam_update(std::span<AdamParamRef> params, const AdamOptions& o, int64_t step) override {
    updates("adam_update", params, [&] { in()->adam_update(params, o, step); });
  }

  std::string begin_graph_capture(int index, const PhiloxState* rng) override {
    std::string why = in()->begin_graph_capture(index, rng);
    if (why.empty()) t_capturing = true;
    return why;
  }
  GraphCapture end_graph_capture(int index) override {
    t_capturing = false;
    return in()->end_graph_capture(index);
  }
  std::string replay_graph(DeviceGraph& graph, PhiloxState rng) override {
    std::string why;
    // The graph's device is the one it was recorded on; device 0 unless a program records
    // on another (the replay is then timed on device 0's stream: near zero, not wrong).
    timed("cuda_graph_replay", 0, [] { return std::string(); }, [&] { why = in()->replay_graph(graph, rng); });
    return why;
  }
  void stream_waits_for_kiln(int index, std::uintptr_t stream) override { in()->stream_waits_for_kiln(index, stream); }
  void kiln_waits_for_stream(int index, std::uintptr_t stream) override { in()->kiln_waits_for_stream(index, stream); }
  std::uintptr_t stream_handle(int index) override { return in()->stream_handle(index); }

 private:
  DeviceType type_;

  int at(const Tensor& t) const { return t.defined() && t.device().type == type_ ? t.device().index : 0; }

  template <class Fn>
  void op(const char* name, const Tensor& first, Fn&& fn) {
    timed(name, at(first), [&] { return describe(first); }, std::forward<Fn>(fn));
  }
  template <class Ref, class Fn>
  void updates(const char* name, std::span<Ref> params, Fn&& fn) {
    const int index = params.empty() ? 0 : at(params.front().param);
    timed(name, index, [&] { return std::to_string(params.size()) + " tensors"; }, std::forward<Fn>(fn));
  }
  // Runs fn, timed alone when this thread's profiler is active and no outer call is timed.
  template <class Shape, class Fn>
  void timed(const char* name, int index, Shape&& shape, Fn&& fn) {
    const std::shared_ptr<Profiler::State> s = t_depth == 0 ? active_state() : nullptr;
    if (s == nullptr) return fn();
    if (t_capturing || std::this_thread::get_id() != s->owner) {
      {
        const std::lock_guard<std::mutex> lock(s->mu);
        ++s->untimed;
      }
      return fn();
    }
    ++t_depth;
    double ms = 0;
    try {
      ms = in()->time_ms(index, fn);
    } catch (...) {
      --t_depth;
      throw;
    }
    --t_depth;
    std::pair<std::string, std::string> key{name, s->by_shape ? shape() : std::string()};
    const std::lock_guard<std::mutex> lock(s->mu);
    ProfileRow& r = s->rows[key];
    if (r.calls == 0) r.op = key.first, r.shape = key.second;
    ++r.calls;
    r.total_ms += ms;
  }
};

std::array<ProfilingBackend*, 2> g_fronts{};  // made on first use, never freed (see the top)
std::array<Backend*, 2> g_wrapped{};           // what each front forwards to while installed

constexpr std::array<DeviceType, 2> kTypes{DeviceType::cpu, DeviceType::cuda};

}  // namespace

Profiler::Profiler(bool by_shape) : state_(std::make_shared<State>(by_shape)) {
  const std::lock_guard<std::mutex> lock(g_mu);
  KILN_CHECK(g_active == nullptr, "Profiler: another profiler is running; one at a time per process");
  for (const DeviceType type : kTypes) {
    const size_t i = static_cast<size_t>(type);
    if (!has_backend(type)) continue;
    if (g_fronts[i] == nullptr) g_fronts[i] = new ProfilingBackend(type);
    g_fronts[i]->inner.store(&backend_for(Device{type, 0}), std::memory_order_release);
    g_wrapped[i] = register_backend(type, g_fronts[i]);
  }
  g_active = state_;
}

Profiler::~Profiler() { stop(); }

void Profiler::stop() {
  const std::lock_guard<std::mutex> lock(g_mu);
  if (g_active != state_) return;
  for (const DeviceType type : kTypes) {
    const size_t i = static_cast<size_t>(type);
    if (g_wrapped[i] != nullptr) register_backend(type, g_wrapped[i]);
    g_wrapped[i] = nullptr;
  }
  g_active = nullptr;
}

bool Profiler::by_shape() const { return state_->by_shape; }

bool Profiler::timing() const {
  const std::lock_guard<std::mutex> lock(g_mu);
  return g_active == state_;
}

void Profiler::reset() {
  const std::lock_guard<std::mutex> lock(state_->mu);
  state_->rows.clear();
  state_->untimed = 0;
}

std::vector<ProfileRow> Profiler::rows() const {
  std::vector<ProfileRow> out;
  {
    const std::lock_guard<std::mutex> lock(state_->mu);
    for (const auto& [key, row] : state_->rows) out.push_back(row);
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const ProfileRow& a, const ProfileRow& b) { return a.total_ms > b.total_ms; });
  return out;
}

int64_t Profiler::untimed_calls() const {
  const std::lock_guard<std::mutex> lock(state_->mu);
  return state_->untimed;
}

namespace {

// Rows grouped by shape, summed per op ("by op: conv2d_forward 8.1 ms 34%, ..."), a few per
// line: a step's families at a glance, comparable with a peer's profile by kernel family.
std::string op_totals(const std::vector<ProfileRow>& rows, double total) {
  std::map<std::string, double> ms;
  for (const ProfileRow& r : rows) ms[r.op] += r.total_ms;
  std::vector<std::pair<std::string, double>> sorted(ms.begin(), ms.end());
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string out = "by op:", line;
  char item[160];
  for (const auto& [op, t] : sorted) {
    std::snprintf(item, sizeof item, " %s %.3f ms %.1f%%,", op.c_str(), t, total > 0 ? 100.0 * t / total : 0.0);
    if (line.size() + std::strlen(item) > 110) out += line + "\n      ", line.clear();
    line += item;
  }
  out += line;
  out.back() = '\n';  // the last comma
  return out;
}

}  // namespace

std::string Profiler::table(size_t top) const {
  const std::vector<ProfileRow> rs = rows();
  double total = 0;
  int64_t calls = 0;
  size_t op_width = 2, shape_width = 5;
  for (const ProfileRow& r : rs) {
    total += r.total_ms, calls += r.calls;
    op_width = std::max(op_width, r.op.size());
    shape_width = std::max(shape_width, r.shape.size());
  }
  char line[512];
  std::string out;
  std::snprintf(line, sizeof line,
                "profile: %lld calls, %.3f ms in all, each op timed alone (the device drained around it, so the sum "
                "exceeds a free-running step's time); %lld calls untimed (recording a CUDA graph, or other threads)\n",
                static_cast<long long>(calls), total, static_cast<long long>(untimed_calls()));
  out += line;
  const bool shapes = !rs.empty() && !rs.front().shape.empty();
  if (shapes) out += op_totals(rs, total);
  const int ow = static_cast<int>(op_width), sw = shapes ? static_cast<int>(shape_width) : 0;
  std::snprintf(line, sizeof line, "%-*s %-*s %8s %11s %10s %6s\n", ow, "op", sw, shapes ? "input" : "", "calls",
                "total ms", "mean ms", "share");
  out += line;
  const size_t n = top == 0 ? rs.size() : std::min(top, rs.size());
  for (size_t i = 0; i < n; ++i) {
    const ProfileRow& r = rs[i];
    std::snprintf(line, sizeof line, "%-*s %-*s %8lld %11.3f %10.4f %5.1f%%\n", ow, r.op.c_str(), sw, r.shape.c_str(),
                  static_cast<long long>(r.calls), r.total_ms, r.total_ms / static_cast<double>(r.calls),
                  total > 0 ? 100.0 * r.total_ms / total : 0.0);
    out += line;
  }
  if (n < rs.size()) out += "(" + std::to_string(rs.size() - n) + " more rows)\n";
  return out;
}

}  // namespace kiln
