// kiln_bench --suite ops: one row per case of the op table (check/op_cases.h), named
// "op/<case name>", on the device asked for. Each case's forward is run once on that
// device and checked against the same forward on the CPU with the table's tolerance and
// the tests' comparison helper (check/compare.h), then timed (warm-up and repeats, as
// every CPU suite). FLOPs and bytes come from the case, so a new op case is a new row
// with no edit here. The shapes are the table's (small, odd); --batch does not apply.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "check/op_cases.h"
#include "core/autograd.h"

namespace kiln::bench {
namespace {

// "[2,5,6,3] [4,3,3,3] -> [2,5,6,4]": the case's input shapes and its output's.
std::string case_shape(const kiln::check::OpCase& c, const Tensor& out) {
  std::string s;
  for (const Tensor& t : c.inputs) s += (s.empty() ? "" : " ") + shape_str(t.shape());
  return s + " -> " + shape_str(out.shape());
}

// The op family ("conv2d" of "conv2d/k3_s1_p1_bias"), the row's kind.
std::string family(const kiln::check::OpCase& c) { return c.name.substr(0, c.name.find('/')); }

}  // namespace

SuiteResult run_ops(const Options& opt, const MachineLimits& m) {
  SuiteResult res;
  const kiln::NoGradGuard no_grad;  // the forward alone: no graph is recorded
  const std::vector<kiln::check::OpCase> cases = kiln::check::all_op_cases();
  // Each case once on the device (and once on the CPU, the reference) before any timing:
  // the table is small, and the column widths need every row's shape.
  struct Prepared {
    std::vector<Tensor> inputs;  // on the bench device
    Row row;
  };
  std::vector<Prepared> prepared;
  size_t name_w = 0, shape_w = 0;
  for (const kiln::check::OpCase& c : cases) {
    Prepared p;
    const std::vector<double> ref = c.forward(kiln::check::prepare_inputs(c, kiln::Device::cpu(), false)).to_vector<double>();
    p.inputs = kiln::check::prepare_inputs(c, bench_device(opt), false);
    const Tensor out = c.forward(p.inputs);
    p.row.name = "op/" + c.name;
    p.row.kind = family(c);
    p.row.shape = case_shape(c, out);
    p.row.flops = c.flops;
    p.row.bytes = c.bytes;
    check_row(p.row, out.to(kiln::Device::cpu()).to_vector<double>(), ref, c.rtol);
    name_w = std::max(name_w, p.row.name.size());
    shape_w = std::max(shape_w, p.row.shape.size());
    prepared.push_back(std::move(p));
  }
  set_table_widths(static_cast<int>(name_w), static_cast<int>(shape_w));
  print_table_header();
  for (size_t i = 0; i < cases.size(); ++i) {
    const kiln::check::OpCase& c = cases[i];
    const std::vector<Tensor>& in = prepared[i].inputs;
    time_checked_row(std::move(prepared[i].row), opt, m, res, [&] { (void)c.forward(in); });
  }
  return res;
}

}  // namespace kiln::bench
