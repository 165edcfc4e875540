// kiln_bench's suites, one file each (suite_*.cpp); the table is in kiln_bench.cpp.
#pragma once

#include "benchmarks/bench_common.h"

namespace kiln::bench {

SuiteResult run_vgg16_forward(const Options& opt, const MachineLimits& m);
SuiteResult run_gemm(const Options& opt, const MachineLimits& m);
SuiteResult run_pool(const Options& opt, const MachineLimits& m);
SuiteResult run_norm(const Options& opt, const MachineLimits& m);
SuiteResult run_softmax_ce(const Options& opt, const MachineLimits& m);
SuiteResult run_elementwise(const Options& opt, const MachineLimits& m);
SuiteResult run_sgd(const Options& opt, const MachineLimits& m);
SuiteResult run_copy(const Options& opt, const MachineLimits& m);
SuiteResult run_conv(const Options& opt, const MachineLimits& m);
SuiteResult run_step(const Options& opt, const MachineLimits& m);
SuiteResult run_pipeline(const Options& opt, const MachineLimits& m);
// Every case of the op table (check/op_cases.h), forward, on the CPU or the GPU.
SuiteResult run_ops(const Options& opt, const MachineLimits& m);

}  // namespace kiln::bench
