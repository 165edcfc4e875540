// Convolution on the CPU through oneDNN, in kiln's layouts: activations NHWC, filters
// OHWI. oneDNN picks its preferred filter layout (format_tag::any); kiln reorders to and
// from OHWI around the call. Primitives are built once per shape and dtype and cached.
// bfloat16, forward and backward: x, w, bias, y and their gradients in bf16, oneDNN
// accumulating in fp32 (brgconv/jit avx512_core_bf16 kernels where the CPU has them).
#include <algorithm>
#include <cstring>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <sstream>
#include <string_view>
#include <tuple>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/onednn.h"

namespace kiln::cpu {
namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

struct ConvKey {
  int64_t n, h, w, c, o, kh, kw, sh, sw, ph, pw, oh, ow;
  bool bias;
  bool bf16 = false;
  auto tie() const { return std::tie(n, h, w, c, o, kh, kw, sh, sw, ph, pw, oh, ow, bias, bf16); }
  bool operator<(const ConvKey& k) const { return tie() < k.tie(); }
  std::string str() const {
    std::ostringstream os;
    os << "x [" << n << ", " << h << ", " << w << ", " << c << "], w [" << o << ", " << kh << ", " << kw << ", " << c
       << "], stride " << sh << "x" << sw << ", padding " << ph << "x" << pw << (bf16 ? ", bfloat16" : "");
    return os.str();
  }
};

// A reorder between the filter's OHWI and the layout a primitive chose, built when first
// run and kept: building one per call went through oneDNN's global primitive cache on
// every call, from every thread.
class Reorder {
 public:
  // to = from in to's layout; every call with the layouts of the first (each Reorder of a
  // plan serves one fixed pair). Waits for it: the next primitive may regrow the scratchpad.
  void run(const memory& from, const memory& to) {
    {
      const auto lock = onednn_build_lock();
      if (!prim_) {
        pd_ = std::make_unique<dnnl::reorder::primitive_desc>(from, to, user_scratchpad());
        prim_ = std::make_unique<dnnl::reorder>(*pd_);
      }
    }
    KILN_CHECK(from.get_desc() == pd_->src_desc() && to.get_desc() == pd_->dst_desc(),
               "conv2d: a cached filter reorder was asked for other layouts than it was built for");
    std::unordered_map<int, memory> args{{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    add_scratchpad(pd_->scratchpad_desc(), args);
    prim_->execute(onednn_stream(), args);
    onednn_stream().wait();
  }

 private:
  std::unique_ptr<dnnl::reorder::primitive_desc> pd_;
  std::unique_ptr<dnnl::reorder> prim_;
};

// A forward convolution: its descriptor, its primitive and its filter reorder.
struct Forward {
  std::unique_ptr<dnnl::convolution_forward::primitive_desc> pd;
  std::unique_ptr<dnnl::convolution_forward> prim;
  Reorder weights;
};

// Everything oneDNN needs for one convolution shape, built lazily per direction under
// onednn_build_lock (two threads running one new shape build each once). Running a built
// primitive needs no lock.
struct ConvPlan {
  memory::desc x_md, w_user_md, b_md, y_md;
  memory::dims strides, pad;
  Forward fwd;
  // bf16 only: the forward_training descriptor the backward primitives take as their hint
  // (fwd is built for inference there).
  std::unique_ptr<dnnl::convolution_forward::primitive_desc> train_hint_pd;
  // conv2d_forward_relu: inference with ReLU as oneDNN's post-op (built when first asked).
  Forward fwd_relu;
  std::unique_ptr<dnnl::convolution_backward_data::primitive_desc> bwd_data_pd;
  std::unique_ptr<dnnl::convolution_backward_data> bwd_data;
  Reorder bwd_data_weights;
  std::unique_ptr<dnnl::convolution_backward_weights::primitive_desc> bwd_w_pd;
  std::unique_ptr<dnnl::convolution_backward_weights> bwd_w;
  Reorder bwd_w_out;
};

ConvKey make_key(const Tensor& x, const Shape& wshape, const Shape& yshape, const Conv2dParams& p, bool bias) {
  return ConvKey{x.dim(0),       x.dim(1),  x.dim(2),  x.dim(3), wshape[0], wshape[1], wshape[2],
                 p.stride_h,     p.stride_w, p.pad_h,  p.pad_w,  yshape[1], yshape[2], bias, x.dtype() == DType::bf16};
}

dt data_type(const ConvKey& k) { return k.bf16 ? dt::bf16 : dt::f32; }

// Debian's oneDNN 2.6.3, bf16 forward: its brgconv kernels (brgconv:avx512_core_amx_bf16, and
// brgconv:avx512_core_bf16 where AMX is off) gave garbage (1e35, NaN) in some outputs and
// overran their scratchpad (heap corruption, "free(): invalid next size") when a stride
// passes its kernel, or the width stride is 3 or more with one or a few output columns. A
// likely cause, read in v2.6.3's source and not confirmed: their input-copy buffer is sized
// for a stride of at most the kernel (get_inp_size clamps it); the width case is empirical. Over
// ~8,000 random bf16 shapes on a Xeon with AMX (2026-12) every wrong forward met this test and
// none with width stride <= 2 and both strides within the kernel did; those keep brgconv
// (kiln's fast path: 3x3 stride 1 or 2, 7x7 stride 2; strided 1x1 is brgconv_1x1, unaffected).
// Where it holds, the next implementation oneDNN offers runs instead (jit:avx512_core_amx_bf16).
bool brgconv_bf16_unsafe(const ConvKey& k) { return k.sh > k.kh || k.sw > k.kw || k.sw >= 3; }

std::unique_ptr<dnnl::convolution_forward::primitive_desc> forward_pd(const ConvPlan& plan, const ConvKey& k,
                                                                     dnnl::prop_kind prop, bool relu = false) {
  memory::desc w_any({k.o, k.c, k.kh, k.kw}, data_type(k), tag::any);
  dnnl::convolution_forward::desc d(prop, dnnl::algorithm::convolution_direct, plan.x_md, w_any, plan.b_md,
                                    plan.y_md, plan.strides, plan.pad, plan.pad);
  dnnl::primitive_attr attr;
  if (relu) {
    // max(acc, 0) on the fp32 accumulator before the store: the same values as relu after
    // (rounding to bf16 keeps signs, so it commutes with relu), one pass over y fewer.
    dnnl::post_ops po;
    po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(po);
  }
  auto pd = std::make_unique<dnnl::convolution_forward::primitive_desc>(d, user_scratchpad(attr), onednn_engine());
  if (k.bf16 && brgconv_bf16_unsafe(k)) {
    while (std::string_view(pd->impl_info_str()).starts_with("brgconv:"))
      KILN_CHECK(pd->next_impl(), "conv2d: oneDNN offers no bf16 convolution but brgconv for ", k.str());
  }
  return pd;
}

ConvPlan& plan_for(const ConvKey& k) {
  // Never destroyed: a thread still running at exit (a Python daemon thread in kiln.train) may
  // use a plan while static destructors run; the process's end reclaims it.
  static auto& cache = *new std::map<ConvKey, std::unique_ptr<ConvPlan>>;
  const auto lock = onednn_build_lock();
  auto& slot = cache[k];
  if (slot) return *slot;
  auto plan = std::make_unique<ConvPlan>();
  const dt t = data_type(k);
  plan->x_md = memory::desc({k.n, k.c, k.h, k.w}, t, tag::nhwc);
  plan->y_md = memory::desc({k.n, k.o, k.oh, k.ow}, t, tag::nhwc);
  plan->w_user_md = memory::desc({k.o, k.c, k.kh, k.kw}, t, tag::ohwi);
  plan->b_md = k.bias ? memory::desc({k.o}, t, tag::x) : memory::desc();
  plan->strides = {k.sh, k.sw};
  plan->pad = {k.ph, k.pw};
  // bf16's forward is built for inference (the frozen backbone's case, which oneDNN may run
  // faster); its backward gets a training descriptor of its own (backward_hint).
  const auto prop = k.bf16 ? dnnl::prop_kind::forward_inference : dnnl::prop_kind::forward_training;
  onednn_guarded("conv2d", [&] { return k.str(); }, [&] { plan->fwd.pd = forward_pd(*plan, k, prop); });
  slot = std::move(plan);
  return *slot;
}

// The forward descriptor the backward primitives of plan are built against (called with
// onednn_build_lock held).
const dnnl::convolution_forward::primitive_desc& backward_hint(ConvPlan& plan, const ConvKey& k) {
  if (!k.bf16) return *plan.fwd.pd;
  if (!plan.train_hint_pd) plan.train_hint_pd = forward_pd(plan, k, dnnl::prop_kind::forward_training);
  return *plan.train_hint_pd;
}


// A oneDNN memory in layout `want` for the user's buffer in `user_md`: the buffer itself
// when the layouts agree, else a scratch buffer (for an output, reordered back after).
memory in_layout(const memory::desc& want, const memory::desc& user_md, void* user) {
  if (want == user_md) return memory(user_md, onednn_engine(), user);
  return memory(want, onednn_engine());
}

// An input in layout `want`: the user's buffer, or a scratch copy made by `reorder`.
memory adopt(Reorder& reorder, const memory::desc& want, const memory::desc& user_md, void* user) {
  memory m = in_layout(want, user_md, user);
  if (want != user_md) reorder.run(memory(user_md, onednn_engine(), user), m);
  return m;
}

}  // namespace

namespace {

// y = conv(x, w) + b through one of plan's forward convolutions (its primitive made from
// its descriptor when first used).
void run_forward(const ConvPlan& plan, Forward& f, const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  {
    const auto lock = onednn_build_lock();
    if (!f.prim) f.prim = std::make_unique<dnnl::convolution_forward>(*f.pd);
  }
  const dnnl::convolution_forward::primitive_desc& pd = *f.pd;
  memory xm(plan.x_md, onednn_engine(), x.raw_data());
  memory ym(plan.y_md, onednn_engine(), y.raw_data());
  memory wm = adopt(f.weights, pd.weights_desc(), plan.w_user_md, w.raw_data());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym}};
  if (b.defined()) args.emplace(DNNL_ARG_BIAS, memory(plan.b_md, onednn_engine(), b.raw_data()));
  add_scratchpad(pd.scratchpad_desc(), args);
  f.prim->execute(onednn_stream(), args);
  onednn_stream().wait();
}

// oneDNN 2.6's fp32 backward-data for stride 1 is its older direct JIT kernel: on VGG16's
// 3x3 layers at 28x28 and larger, 0.65-0.9x the speed of its brgemm forward on the same
// FLOPs (docs/performance.md, 2026-12-03). For stride 1 the input gradient is itself a
// forward convolution: dx = conv(dy, w'), w' the filter with its taps flipped and its two
// channel axes swapped, padded k-1-p. Where that did not pay it is not used: at 14x14 the
// direct kernel is as fast and flipping the filter (~1 ms for 512x512x3x3) costs more;
// 1x1 filters gained nothing on ResNet-50; under 16 input channels is a first layer, whose dx
// training never asks for.
bool backward_data_as_forward(const ConvKey& k) {
  return !k.bf16 && k.sh == 1 && k.sw == 1 && k.kh * k.kw > 1 && k.ph <= k.kh - 1 && k.pw <= k.kw - 1 &&
         k.c >= 16 && k.h * k.w >= 28 * 28;
}

// Whether some filter tap of k meets only padding at every output position (its gradient is
// exactly 0): a tap t along an axis of input size n, output size on, stride st, padding pad
// reads input o * st - pad + t for o in [0, on).
bool has_padding_only_taps(const ConvKey& k) {
  const auto any_dead = [](int64_t taps, int64_t n, int64_t on, int64_t st, int64_t pad) {
    for (int64_t t = 0; t < taps; ++t) {
      bool live = false;
      for (int64_t o = 0; o < on && !live; ++o) live = o * st - pad + t >= 0 && o * st - pad + t < n;
      if (!live) return true;
    }
    return false;
  };
  return any_dead(k.kh, k.h, k.oh, k.sh, k.ph) || any_dead(k.kw, k.w, k.ow, k.sw, k.pw);
}

// The forward convolution that computes k's input gradient (dy in, dx out).
ConvKey transposed_key(const ConvKey& k) {
  return ConvKey{k.n, k.oh, k.ow, k.o, k.c, k.kh, k.kw, 1, 1, k.kh - 1 - k.ph, k.kw - 1 - k.pw, k.h, k.w, false, false};
}

// w' [c, kh, kw, o] from w [o, kh, kw, c] (OHWI both): w'[c][i][j][o] = w[o][kh-1-i][kw-1-j][c].
// A 16x16 tile of (o, c) per tap goes through a local array, so that reads and writes both
// run along cache lines (1.1 ms for 512x512x3x3 on 2 threads, 1.7 ms element by element).
void flip_swap_channels(const float* w, int64_t o, int64_t kh, int64_t kw, int64_t c, float* out) {
  constexpr int64_t T = 16;
  const int64_t taps = kh * kw, ob = (o + T - 1) / T, cb = (c + T - 1) / T;
#pragma omp parallel for schedule(static) if (o * c * taps > 65536)
  for (int64_t job = 0; job < taps * ob * cb; ++job) {
    const int64_t tap = job / (ob * cb), o0 = (job / cb) % ob * T, c0 = job % cb * T;
    const int64_t flipped = (kh - 1 - tap / kw) * kw + (kw - 1 - tap % kw);
    const int64_t on = std::min(o - o0, T), cn = std::min(c - c0, T);
    float tile[T][T];
    for (int64_t i = 0; i < on; ++i)
      for (int64_t j = 0; j < cn; ++j) tile[i][j] = w[((o0 + i) * taps + tap) * c + c0 + j];
    for (int64_t j = 0; j < cn; ++j)
      for (int64_t i = 0; i < on; ++i) out[((c0 + j) * taps + flipped) * o + o0 + i] = tile[i][j];
  }
}

}  // namespace

void CpuBackend::conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y) {
  const ConvKey k = make_key(x, w.shape(), y.shape(), p, b.defined());
  ConvPlan& plan = plan_for(k);
  onednn_guarded("conv2d", [&] { return k.str(); }, [&] { run_forward(plan, plan.fwd, x, w, b, y); });
}

bool CpuBackend::conv2d_forward_relu(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                                     Tensor& y) {
  const ConvKey k = make_key(x, w.shape(), y.shape(), p, b.defined());
  ConvPlan& plan = plan_for(k);
  onednn_guarded("conv2d+relu", [&] { return k.str(); }, [&] {
    {
      const auto lock = onednn_build_lock();
      if (!plan.fwd_relu.pd) plan.fwd_relu.pd = forward_pd(plan, k, dnnl::prop_kind::forward_inference, true);
    }
    run_forward(plan, plan.fwd_relu, x, w, b, y);
  });
  return true;
}

void CpuBackend::conv2d_backward_data(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx) {
  const ConvKey k = make_key(dx, w.shape(), dy.shape(), p, false);
  if (backward_data_as_forward(k)) {
    const ConvKey kt = transposed_key(k);
    ConvPlan& plan = plan_for(kt);
    Tensor wt = Tensor::empty({k.c, k.kh, k.kw, k.o});
    flip_swap_channels(w.data<float>(), k.o, k.kh, k.kw, k.c, wt.data<float>());
    onednn_guarded("conv2d backward-data (as a forward convolution)", [&] { return k.str(); },
                   [&] { run_forward(plan, plan.fwd, dy, wt, Tensor(), dx); });
    return;
  }
  ConvPlan& plan = plan_for(k);
  onednn_guarded("conv2d backward-data", [&] { return k.str(); }, [&] {
    auto lock = onednn_build_lock();
    if (!plan.bwd_data) {
      memory::desc w_any({k.o, k.c, k.kh, k.kw}, data_type(k), tag::any);
      dnnl::convolution_backward_data::desc d(dnnl::algorithm::convolution_direct, plan.x_md, w_any, plan.y_md,
                                              plan.strides, plan.pad, plan.pad);
      plan.bwd_data_pd = std::make_unique<dnnl::convolution_backward_data::primitive_desc>(
          d, user_scratchpad(), onednn_engine(), backward_hint(plan, k));
      plan.bwd_data = std::make_unique<dnnl::convolution_backward_data>(*plan.bwd_data_pd);
    }
    lock.unlock();
    memory dym(plan.y_md, onednn_engine(), dy.raw_data());
    memory dxm(plan.x_md, onednn_engine(), dx.raw_data());
    memory wm = adopt(plan.bwd_data_weights, plan.bwd_data_pd->weights_desc(), plan.w_user_md, w.raw_data());
    std::unordered_map<int, memory> args{{DNNL_ARG_DIFF_DST, dym}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DIFF_SRC, dxm}};
    add_scratchpad(plan.bwd_data_pd->scratchpad_desc(), args);
    plan.bwd_data->execute(onednn_stream(), args);
    onednn_stream().wait();
  });
}

void CpuBackend::conv2d_backward_filter(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                                        Tensor& db) {
  const ConvKey kb = make_key(x, dw.shape(), dy.shape(), p, db.defined());
  ConvPlan& plan = plan_for(kb);
  onednn_guarded("conv2d backward-filter", [&] { return kb.str(); }, [&] {
    auto lock = onednn_build_lock();
    if (!plan.bwd_w) {
      memory::desc w_any({kb.o, kb.c, kb.kh, kb.kw}, data_type(kb), tag::any);
      dnnl::convolution_backward_weights::desc d(dnnl::algorithm::convolution_direct, plan.x_md, w_any, plan.b_md,
                                                 plan.y_md, plan.strides, plan.pad, plan.pad);
      plan.bwd_w_pd = std::make_unique<dnnl::convolution_backward_weights::primitive_desc>(
          d, user_scratchpad(), onednn_engine(), backward_hint(plan, kb));
      plan.bwd_w = std::make_unique<dnnl::convolution_backward_weights>(*plan.bwd_w_pd);
    }
    lock.unlock();
    memory xm(plan.x_md, onednn_engine(), x.raw_data());
    memory dym(plan.y_md, onednn_engine(), dy.raw_data());
    memory dwm = in_layout(plan.bwd_w_pd->diff_weights_desc(), plan.w_user_md, dw.raw_data());
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_DST, dym}, {DNNL_ARG_DIFF_WEIGHTS, dwm}};
    if (db.defined()) args.emplace(DNNL_ARG_DIFF_BIAS, memory(plan.b_md, onednn_engine(), db.raw_data()));
    add_scratchpad(plan.bwd_w_pd->scratchpad_desc(), args);
    // oneDNN 2.6.3's bf16 backward-weights (jit:avx512_core_amx_bf16, jit_bf16:avx512_core_bf16)
    // sums into an fp32 buffer in the scratchpad and never initialises it for taps that only
    // meet padding: their gradient came back as whatever the scratchpad held (1e33, NaN, once
    // an earlier convolution left it dirty; zeroing dw instead did not help). Zeroed only for
    // such shapes: elsewhere it would cost a pass over the buffer for nothing.
    if (kb.bf16 && has_padding_only_taps(kb) && args.count(DNNL_ARG_SCRATCHPAD))
      std::memset(args.at(DNNL_ARG_SCRATCHPAD).get_data_handle(), 0, plan.bwd_w_pd->scratchpad_desc().get_size());
    plan.bwd_w->execute(onednn_stream(), args);
    if (plan.bwd_w_pd->diff_weights_desc() != plan.w_user_md) {
      memory user(plan.w_user_md, onednn_engine(), dw.raw_data());
      plan.bwd_w_out.run(dwm, user);
    }
    onednn_stream().wait();
  });
}

}  // namespace kiln::cpu
