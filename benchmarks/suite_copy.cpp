// kiln_bench --suite copy: tensor copies through the backend (Backend::copy, what
// Tensor::copy_from uses within a device) at 1 MiB (cache-resident on a CPU), 16 MiB and
// 256 MiB; on a GPU also host-to-device and device-to-host at 256 MiB from pinned and
// from pageable host memory (Tensor::copy_from, blocking). Bytes are read + written within
// a device, as the bandwidth limit is measured, and once across the bus.
#include <cstdint>
#include <string>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "core/backend.h"

namespace kiln::bench {

namespace {

// dst must equal src bit for bit.
void check_copy(const Tensor& src_host, const Tensor& dst, Row& r) {
  Tensor keep;
  const float* d = host_floats(dst, keep);
  const float* s = src_host.data<float>();
  check_row(
      r, static_cast<size_t>(src_host.numel()), [&](size_t i) { return d[i]; }, [&](size_t i) { return s[i]; }, 0);
}

}  // namespace

SuiteResult run_copy(const Options& opt, const MachineLimits& m) {
  SuiteResult res;
  set_table_widths(20, 34);
  print_table_header();
  const kiln::Device dev = bench_device(opt);
  kiln::Backend& be = kiln::backend_for(dev);
  kiln::Generator gen(5);
  for (const int64_t mib : {1, 16, 256}) {
    const int64_t ne = mib * (int64_t{1} << 20) / 4;
    const Tensor src_host = Tensor::uniform(Shape{ne}, -1.0f, 1.0f, gen);
    const Tensor src = to_bench_device(src_host, opt);
    Tensor dst = to_bench_device(Tensor::zeros(Shape{ne}), opt);
    be.copy(src, dst);
    Row r;
    r.name = "copy/" + std::to_string(mib) + "MiB";
    r.kind = "copy";
    r.shape = shape_str(Shape{ne}) + " f32";
    r.flops = 0;
    r.bytes = 2.0 * 4.0 * static_cast<double>(ne);
    check_copy(src_host, dst, r);
    time_checked_row(std::move(r), opt, m, res, [&] { be.copy(src, dst); });
  }
  if (dev.is_cpu()) return res;

  // Across the bus: the loader's batches take this path (pinned), a user's tensors may not.
  const int64_t ne = (int64_t{256} << 20) / 4;
  for (const bool pinned : {true, false}) {
    const Tensor host = Tensor::uniform(Shape{ne}, -1.0f, 1.0f, gen, kiln::TensorOptions{kiln::DType::f32, kiln::Device::cpu(), pinned});
    Tensor host_back = Tensor::zeros(Shape{ne}, kiln::TensorOptions{kiln::DType::f32, kiln::Device::cpu(), pinned});
    Tensor on_dev = empty_on_bench_device(Shape{ne}, opt);
    const std::string kind = pinned ? "pinned" : "pageable";
    for (const bool to_device : {true, false}) {
      Row r;
      r.name = std::string(to_device ? "h2d_" : "d2h_") + kind + "/256MiB";
      r.kind = "copy";
      r.shape = shape_str(Shape{ne}) + " f32 " + kind;
      r.bytes = 4.0 * static_cast<double>(ne);
      Tensor& dst = to_device ? on_dev : host_back;
      const Tensor& src = to_device ? host : on_dev;
      dst.copy_from(src);
      check_copy(host, dst, r);
      time_checked_row(std::move(r), opt, m, res, [&] { dst.copy_from(src); });
    }
  }
  return res;
}

}  // namespace kiln::bench
