// Registration, memory, copies and fills of the CPU backend.
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_elements.h"

#include <omp.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cstring>

#include "kernels/common/convert.h"

namespace kiln::cpu {
namespace {

// Registers the CPU backend when the library loads; kiln is a shared library, so this
// static object always runs.
struct Registrar {
  Registrar() {
    static CpuBackend backend;
    register_backend(DeviceType::cpu, &backend);
  }
} g_registrar;

template <typename Fn>
void for_each_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: fn(float{}); break;
    case DType::bf16: fn(BFloat16{}); break;
    case DType::i32: fn(int32_t{}); break;
    case DType::i64: fn(int64_t{}); break;
    case DType::u8: fn(uint8_t{}); break;
  }
}

using common::from_double;

// d[i] = s[i] converted (kernels/common/convert.h); bf16 <-> fp32 are the precision policy's casts.
template <typename S, typename D>
KILN_CPU_CLONES
void convert_loop(const S* s, D* d, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) d[i] = common::convert<S, D>(s[i]);
}

// Copies of at least this many bytes split across the threads: one core's memmove moved a
// cold 1 MiB in 0.055 ms and 16 MiB in 1.16, two threads in 0.03 and 0.45-0.8 (scratch
// program, 2026-12-05, docs/performance.md session 26).
constexpr size_t kParallelCopyBytes = size_t{256} << 10;
// From this size the destination is written with non-temporal stores: it cannot stay in the
// last-level cache anyway, and a plain store first reads the line it overwrites (256 MiB:
// 10.5 -> 6.9 ms in the same program).
constexpr size_t kStreamCopyBytes = size_t{32} << 20;

// memcpy whose destination bypasses the cache (16-byte non-temporal stores; x86-64 has them
// in its baseline, so no ISA clone is needed). Elsewhere, memcpy.
void stream_copy(char* d, const char* s, size_t n) {
#if defined(__x86_64__)
  const size_t head = std::min(n, (16 - reinterpret_cast<uintptr_t>(d) % 16) % 16);
  std::memcpy(d, s, head);
  size_t i = head;
  for (; i + 64 <= n; i += 64)
    for (size_t k = 0; k < 64; k += 16)
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + k),
                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + k)));
  _mm_sfence();  // the streamed lines are visible before the copy counts as done
  std::memcpy(d + i, s + i, n - i);
#else
  std::memcpy(d, s, n);
#endif
}

}  // namespace

Allocator& CpuBackend::allocator(int) { return host_allocator(); }

void CpuBackend::copy(const Tensor& src, Tensor& dst, bool) {
  KILN_CHECK(src.device().is_cpu() && dst.device().is_cpu(), "cpu copy: got ", src.description(), " -> ",
             dst.description());
  const int64_t n = src.numel();
  if (src.dtype() == dst.dtype()) {
    const char* s = static_cast<const char*>(src.raw_data());
    char* d = static_cast<char*>(dst.raw_data());
    const size_t bytes = src.nbytes();
    if (s == d) return;
    const bool disjoint = s + bytes <= d || d + bytes <= s;
    if (!disjoint || bytes < kParallelCopyBytes) {
      std::memmove(d, s, bytes);
      return;
    }
    const bool stream = bytes >= kStreamCopyBytes;
#pragma omp parallel
    {
      const size_t t = static_cast<size_t>(omp_get_thread_num()), nt = static_cast<size_t>(omp_get_num_threads());
      const size_t begin = bytes * t / nt / 64 * 64, end = t + 1 == nt ? bytes : bytes * (t + 1) / nt / 64 * 64;
      if (stream) stream_copy(d + begin, s + begin, end - begin);
      else std::memcpy(d + begin, s + begin, end - begin);
    }
    return;
  }
  for_each_dtype(src.dtype(), [&](auto s_tag) {
    using S = decltype(s_tag);
    for_each_dtype(dst.dtype(), [&](auto d_tag) {
      using D = decltype(d_tag);
      convert_loop(static_cast<const S*>(src.raw_data()), static_cast<D*>(dst.raw_data()), n);
    });
  });
}

void CpuBackend::fill(Tensor& t, double value) {
  const int64_t n = t.numel();
  for_each_dtype(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = static_cast<T*>(t.raw_data());
    const T v = from_double<T>(value);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) p[i] = v;
  });
}

void CpuBackend::arange(Tensor& t, double start, double step) {
  const int64_t n = t.numel();
  for_each_dtype(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = static_cast<T*>(t.raw_data());
    for (int64_t i = 0; i < n; ++i) p[i] = from_double<T>(start + step * static_cast<double>(i));
  });
}

void CpuBackend::broadcast_scalar(const Tensor& scalar, float scale, Tensor& t) {
  const float v = *scalar.data<float>() * scale;
  float* p = t.data<float>();
  const int64_t n = t.numel();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) p[i] = v;
}

}  // namespace kiln::cpu
