// kiln_bench --suite copy: host-to-host tensor copies through the backend (Backend::copy,
// what Tensor::copy_from uses) at 1 MiB (cache-resident), 16 MiB and 256 MiB. Bytes are
// read + written, as the bandwidth limit is measured. (On CUDA: H2D from pinned and
// pageable memory and D2D, in the CUDA suites.)
#include <cstdint>
#include <string>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "core/backend.h"

namespace kiln::cpubench {

SuiteResult run_copy(const Options& opt, const MachineLimits& m) {
  SuiteResult res;
  set_table_widths(12, 34);
  print_table_header();
  kiln::Backend& be = kiln::backend_for(kiln::Device::cpu());
  kiln::Generator gen(5);
  for (const int64_t mib : {1, 16, 256}) {
    const int64_t ne = mib * (int64_t{1} << 20) / 4;
    const Tensor src = Tensor::uniform(Shape{ne}, -1.0f, 1.0f, gen);
    Tensor dst = Tensor::zeros(Shape{ne});
    be.copy(src, dst);
    Checker ck(1e-12, 0);  // a copy is exact
    const float* s = src.data<float>();
    const float* d = dst.data<float>();
    for (int64_t i = 0; i < ne; ++i) ck.compare(d[i], s[i], 0, "dst", i);
    Row r;
    r.name = "copy/" + std::to_string(mib) + "MiB";
    r.kind = "copy";
    r.shape = shape_str(Shape{ne}) + " f32";
    r.flops = 0;
    r.bytes = 2.0 * 4.0 * static_cast<double>(ne);
    ck.finish(r);
    time_checked_row(std::move(r), opt, m, res, [&] { be.copy(src, dst); });
  }
  return res;
}

}  // namespace kiln::cpubench
