// Batch normalisation on the host: OpenMP loops over kernels/common/batch_norm.h. NHWC keeps
// the channel innermost, so every loop walks rows of C contiguous floats (vectorised), and
// each reduction gives each fixed block or chunk of rows its own double partial sums,
// combined in order afterwards: the result depends on the input only, not on thread counts.
// x, y, dy and dx are float32 or bfloat16 (read to fp32, rounded once on store); the
// statistics, gamma, beta and their gradients are float32 either way.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "kernels/common/batch_norm.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_elements.h"

namespace kiln::cpu {
namespace {

// Row chunks for the reductions: a function of the row count only (at most 64, at least 32
// rows each), so the order of additions is fixed.
int64_t chunk_count(int64_t rows) { return std::clamp<int64_t>(rows / 32, 1, 64); }

// Per-channel sums over all rows: `add_row(r, acc)` adds row r's terms into acc[0, width);
// width is C or 2C (two sums per channel). Returns the totals in double.
template <typename AddRow>
KILN_CPU_CLONES std::vector<double> channel_sums(int64_t rows, int64_t width, AddRow add_row) {
  const int64_t chunks = chunk_count(rows);
  std::vector<double> once;
  double* const partial = reduction_scratch<struct ChannelSumsSite>(static_cast<size_t>(chunks * width), once);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t k = 0; k < chunks; ++k) {
    double* acc = partial + k * width;
    std::fill_n(acc, width, 0.0);
    const int64_t begin = rows * k / chunks, end = rows * (k + 1) / chunks;
    for (int64_t r = begin; r < end; ++r) add_row(r, acc);
  }
  std::vector<double> total(static_cast<size_t>(width), 0.0);
  for (int64_t k = 0; k < chunks; ++k)
    for (int64_t j = 0; j < width; ++j) total[static_cast<size_t>(j)] += partial[k * width + j];
  return total;
}

// gamma and beta as arrays (1 and 0 when undefined), and invstd from var.
struct ChannelCoeffs {
  std::vector<float> gamma, beta, invstd;
};

ChannelCoeffs coeffs(const Tensor& var, const Tensor& gamma, const Tensor& beta, float eps) {
  const int64_t c = var.dim(0);
  ChannelCoeffs k{std::vector<float>(static_cast<size_t>(c), 1.0f), std::vector<float>(static_cast<size_t>(c), 0.0f),
                  std::vector<float>(static_cast<size_t>(c))};
  if (gamma.defined()) std::copy_n(gamma.data<float>(), c, k.gamma.begin());
  if (beta.defined()) std::copy_n(beta.data<float>(), c, k.beta.begin());
  const float* v = var.data<float>();
  for (int64_t j = 0; j < c; ++j) k.invstd[static_cast<size_t>(j)] = common::bn_invstd(v[j], eps);
  return k;
}


// One block's per-channel mean and centred sum of squares: each channel's sum from 0 through
// the rows in order, in double, as a loop of rows over all channels would give; but a slice of
// kLanes channels at a time, held in registers through the block's rows. Row by row, every
// row's pass loaded and stored the 2C running sums: the stores bound both passes. 16 lanes
// are two AVX-512 registers, whose add latency now bounds the loop; 32 and 64 measured
// slower (GCC kept the wider sums in memory).
template <typename R>
KILN_CPU_CLONES void block_moments(const R* x, int64_t n, int64_t c, double inv_n, double* mean, double* m2) {
  constexpr int64_t kLanes = 16;
  const auto slice = [&](int64_t j0, auto width) {
    constexpr int64_t w0 = decltype(width)::value;  // kLanes, or 0: the last, narrower slice
    const int64_t w = w0 > 0 ? w0 : c - j0;
    double acc[kLanes] = {}, mu[kLanes], sq[kLanes] = {};
    for (int64_t r = 0; r < n; ++r)
      for (int64_t l = 0; l < w; ++l) acc[l] += static_cast<double>(to_f32(x[r * c + j0 + l]));
    for (int64_t l = 0; l < w; ++l) mu[l] = acc[l] * inv_n;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t l = 0; l < w; ++l) {
        const double d = static_cast<double>(to_f32(x[r * c + j0 + l])) - mu[l];
        sq[l] += d * d;
      }
    for (int64_t l = 0; l < w; ++l) mean[j0 + l] = mu[l], m2[j0 + l] = sq[l];
  };
  int64_t j0 = 0;
  for (; j0 + kLanes <= c; j0 += kLanes) slice(j0, std::integral_constant<int64_t, kLanes>{});
  if (j0 < c) slice(j0, std::integral_constant<int64_t, 0>{});
}

template <typename T>
KILN_CPU_CLONES
void bn_stats(const Tensor& x, float momentum, Tensor& mean, Tensor& var, Tensor& running_mean, Tensor& running_var) {
  const int64_t c = x.dim(3), rows = x.numel() / c;
  const raw_t<T>* px = raw(x.data<T>());
  // Blocks of about 128 KiB of x: each takes its mean, then its centred squares while the
  // block is still in cache; the blocks merge in order afterwards (bn_merge_with).
  const int64_t block_rows = std::max<int64_t>(1, (int64_t{32} << 10) / c), blocks = (rows + block_rows - 1) / block_rows;
  std::vector<double> once;
  double* const bmean = reduction_scratch<struct BnStatsSite>(static_cast<size_t>(2 * blocks * c), once);
  double* const bm2 = bmean + blocks * c;
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * block_rows, end = std::min(rows, begin + block_rows);
    const raw_t<T>* xb = px + begin * c;
    const double inv_n = 1.0 / static_cast<double>(end - begin);
    block_moments(xb, end - begin, c, inv_n, bmean + b * c, bm2 + b * c);
  }
  // Each channel merges its blocks in block order, as before; the channels run side by side
  // (vectorised, in slices across the threads). Merged channel by channel on one thread, this
  // loop's divisions were most of the statistics' time at ResNet-50's deep layers (759 µs
  // there at [8, 7, 7, 2048], 564 with this loop alone changed; docs/performance.md). Every
  // channel has merged the same rows before block b (b * block_rows): one count for all.
  std::vector<double> mu(static_cast<size_t>(c), 0.0), m2(static_cast<size_t>(c), 0.0);
  constexpr int64_t kSlice = 64;  // channels a thread merges at once
#pragma omp parallel for schedule(static) if (c * blocks > 16384)
  for (int64_t j0 = 0; j0 < c; j0 += kSlice) {
    const int64_t j1 = std::min(c, j0 + kSlice);
    double *pmu = mu.data(), *pm2 = m2.data();
    for (int64_t b = 0; b < blocks; ++b) {
      const double before = static_cast<double>(b * block_rows);
      const double count = static_cast<double>(std::min(rows, (b + 1) * block_rows) - b * block_rows);
      const common::BnMergeWeights w = common::bn_merge_weights(before, count);  // its divisions once a block
      const double *bm = bmean + b * c, *bv = bm2 + b * c;
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) common::bn_merge_with(pmu[j], pm2[j], w, bm[j], bv[j]);
    }
  }
  float* rm = running_mean.defined() ? running_mean.data<float>() : nullptr;
  float* rv = running_var.defined() ? running_var.data<float>() : nullptr;
  for (int64_t j = 0; j < c; ++j) {
    const size_t at = static_cast<size_t>(j);
    common::bn_finish_stats(mu[at], m2[at], rows, momentum, mean.data<float>() + j, var.data<float>() + j,
                            rm ? rm + j : nullptr, rv ? rv + j : nullptr);
  }
}

template <typename T>
KILN_CPU_CLONES
void bn_forward(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor& gamma, const Tensor& beta, float eps,
                Tensor& y) {
  const int64_t c = x.dim(3), rows = x.numel() / c;
  const ChannelCoeffs k = coeffs(var, gamma, beta, eps);
  const raw_t<T>* px = raw(x.data<T>());
  const float *pm = mean.data<float>(), *pi = k.invstd.data(), *pg = k.gamma.data(),
              *pb = k.beta.data();
  raw_t<T>* py = raw(y.data<T>());
#pragma omp parallel for schedule(static) if (rows * c > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const raw_t<T>* in = px + r * c;
    raw_t<T>* out = py + r * c;
    for (int64_t j = 0; j < c; ++j)
      out[j] = from_f32<raw_t<T>>(common::bn_forward(to_f32(in[j]), pm[j], pi[j], pg[j], pb[j]));
  }
}

template <typename T>
KILN_CPU_CLONES
void bn_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor& gamma, float eps,
                 bool training, Tensor& dx, Tensor& dgamma, Tensor& dbeta) {
  const int64_t c = dy.dim(3), rows = dy.numel() / c;
  const ChannelCoeffs k = coeffs(var, gamma, Tensor(), eps);
  const raw_t<T>* pdy = raw(dy.data<T>());
  const float *pm = mean.data<float>(), *pi = k.invstd.data();
  const raw_t<T>* px = x.defined() ? raw(x.data<T>()) : nullptr;
  const bool train_dx = training && dx.defined();
  std::vector<double> sums;  // [sum dy | sum dy * x_hat]
  if (dgamma.defined() || dbeta.defined() || train_dx) {
    sums = channel_sums(rows, 2 * c, [&](int64_t r, double* acc) {
      const raw_t<T>* g = pdy + r * c;
      for (int64_t j = 0; j < c; ++j) acc[j] += static_cast<double>(to_f32(g[j]));
      if (!px) return;
      const raw_t<T>* in = px + r * c;
      for (int64_t j = 0; j < c; ++j)
        acc[c + j] += static_cast<double>(to_f32(g[j])) * static_cast<double>(common::bn_xhat(to_f32(in[j]), pm[j], pi[j]));
    });
    for (int64_t j = 0; j < c; ++j) {
      if (dbeta.defined()) dbeta.data<float>()[j] = static_cast<float>(sums[static_cast<size_t>(j)]);
      if (dgamma.defined()) dgamma.data<float>()[j] = static_cast<float>(sums[static_cast<size_t>(c + j)]);
    }
  }
  if (!dx.defined()) return;
  std::vector<float> scale(static_cast<size_t>(c)), mean_dy(static_cast<size_t>(c), 0.0f),
      mean_dy_xhat(static_cast<size_t>(c), 0.0f);
  for (int64_t j = 0; j < c; ++j) {
    const size_t u = static_cast<size_t>(j);
    scale[u] = k.gamma[u] * k.invstd[u];
    if (train_dx) {
      mean_dy[u] = static_cast<float>(sums[u] / static_cast<double>(rows));
      mean_dy_xhat[u] = static_cast<float>(sums[static_cast<size_t>(c) + u] / static_cast<double>(rows));
    }
  }
  const float *ps = scale.data(), *pmd = mean_dy.data(), *pmx = mean_dy_xhat.data();
  raw_t<T>* pdx = raw(dx.data<T>());
  using R = raw_t<T>;
#pragma omp parallel for schedule(static) if (rows * c > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const R* g = pdy + r * c;
    R* out = pdx + r * c;
    if (train_dx) {
      const R* in = px + r * c;
      for (int64_t j = 0; j < c; ++j)
        out[j] = from_f32<R>(common::bn_backward_train(to_f32(g[j]), common::bn_xhat(to_f32(in[j]), pm[j], pi[j]), ps[j],
                                                       pmd[j], pmx[j]));
    } else {
      for (int64_t j = 0; j < c; ++j) out[j] = from_f32<R>(common::bn_backward_eval(to_f32(g[j]), ps[j]));
    }
  }
}

}  // namespace

// Each entry dispatches on x's (or dy's) dtype: float32 or bfloat16 (the op checks which).
void CpuBackend::batch_norm_stats(const Tensor& x, float momentum, Tensor& mean, Tensor& var, Tensor& running_mean,
                                  Tensor& running_var) {
  if (x.dtype() == DType::bf16) bn_stats<BFloat16>(x, momentum, mean, var, running_mean, running_var);
  else bn_stats<float>(x, momentum, mean, var, running_mean, running_var);
}

void CpuBackend::batch_norm_forward(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor& gamma,
                                    const Tensor& beta, float eps, Tensor& y) {
  if (x.dtype() == DType::bf16) bn_forward<BFloat16>(x, mean, var, gamma, beta, eps, y);
  else bn_forward<float>(x, mean, var, gamma, beta, eps, y);
}

void CpuBackend::batch_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& var,
                                     const Tensor& gamma, float eps, bool training, Tensor& dx, Tensor& dgamma,
                                     Tensor& dbeta) {
  if (dy.dtype() == DType::bf16) bn_backward<BFloat16>(dy, x, mean, var, gamma, eps, training, dx, dgamma, dbeta);
  else bn_backward<float>(dy, x, mean, var, gamma, eps, training, dx, dgamma, dbeta);
}

}  // namespace kiln::cpu
