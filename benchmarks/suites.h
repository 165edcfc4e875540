// kiln_bench's suites, one file each (suite_*.cpp); the table is in kiln_bench.cpp.
#pragma once

#include <string>
#include <vector>

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
// The names of the step suite's rows for `spec` (what --only may pick), the device's or not.
std::vector<std::string> step_row_names(const kiln::ModelSpec& spec);
SuiteResult run_pipeline(const Options& opt, const MachineLimits& m);
// --data DIR, before any timing: a new or empty folder, or one kiln_bench made (its marker);
// else a bad argument, so the generated JPEGs never land among someone's files.
void check_data_dir(const std::string& dir);
// Every case of the op table (check/op_cases.h), forward, on the CPU or the GPU.
SuiteResult run_ops(const Options& opt, const MachineLimits& m);

}  // namespace kiln::bench
