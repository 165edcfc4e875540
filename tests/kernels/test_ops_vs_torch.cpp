// Every op's forward and backward against PyTorch (float64) on the same random inputs.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "check/op_cases.h"
#include "tests/support/npy.h"
#include "tests/support/reference.h"
#include "tests/support/require_close.h"

using namespace kiln;
using namespace kiln::test;
using namespace kiln::check;

TEST_CASE("op forward and backward match PyTorch on random inputs", "[torch][ops]") {
  const std::vector<OpCase> cases = all_op_cases();
  const std::string dir = make_temp_dir("ops_vs_torch");
  struct Result {
    Tensor out;
    std::vector<Tensor> grads;
    std::vector<Tensor> updated;  // c.updated_inputs after the forward
  };
  std::vector<Result> results;
  std::ofstream manifest(dir + "/manifest.json");
  manifest << "[\n";
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const OpCase& c = cases[ci];
    const std::string id = "c" + std::to_string(ci);
    std::vector<Tensor> inputs = prepare_inputs(c, Device::cpu(), true);
    Result res;
    res.out = c.forward(inputs);
    for (size_t i : c.updated_inputs) res.updated.push_back(inputs[i].detach().clone());
    Generator rg(ci + 1);
    // In the output's dtype (a bf16 case's upstream gradient is bf16; the reference gets
    // the same rounded values); float32 beside an integer concat's. The comparisons and that
    // concat have no gradient, so no backward.
    Tensor up = Tensor::normal(res.out.shape(), 0.0f, 1.0f, rg).to(is_floating(res.out.dtype()) ? res.out.dtype()
                                                                                                  : DType::f32);
    if (has_gradient(c)) res.out.backward(up);
    for (const Tensor& t : inputs) res.grads.push_back(t.requires_grad() ? t.grad() : Tensor());
    results.push_back(res);

    manifest << (ci ? ",\n" : "") << "{\"id\": \"" << id << "\", \"name\": \"" << c.name << "\", \"op\": \"" << c.op
             << "\", \"params\": {";
    size_t k = 0;
    for (const auto& [key, v] : c.params) manifest << (k++ ? ", " : "") << '"' << key << "\": " << v;
    manifest << "}, \"inputs\": [";
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      const std::string f = id + "_in" + std::to_string(i) + ".npy";
      write_npy(dir + "/" + f, c.inputs[i]);
      manifest << (i ? ", " : "") << '"' << f << '"';
    }
    manifest << "], \"differentiable\": [";
    for (size_t i = 0; i < c.inputs.size(); ++i) manifest << (i ? ", " : "") << (c.differentiable[i] ? "true" : "false");
    manifest << "], \"extras\": [";
    for (size_t i = 0; i < c.reference_extras.size(); ++i) {
      const std::string f = id + "_extra" + std::to_string(i) + ".npy";
      write_npy(dir + "/" + f, c.reference_extras[i]);
      manifest << (i ? ", " : "") << '"' << f << '"';
    }
    manifest << "], \"updated\": [";
    for (size_t i = 0; i < c.updated_inputs.size(); ++i) manifest << (i ? ", " : "") << c.updated_inputs[i];
    write_npy(dir + "/" + id + "_up.npy", up.to(DType::f32));
    manifest << "], \"upstream\": \"" << id << "_up.npy\"}";
  }
  manifest << "\n]\n";
  manifest.close();

  run_reference_script("ops_reference.py", dir);

  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const OpCase& c = cases[ci];
    const std::string id = "c" + std::to_string(ci);
    DYNAMIC_SECTION(c.name) {
      std::vector<int64_t> ref_shape;
      const std::vector<double> ref = read_npy(dir + "/" + id + "_out.npy", &ref_shape);
      REQUIRE(Shape(ref_shape) == results[ci].out.shape());
      INFO("forward");
      KILN_REQUIRE_CLOSE(results[ci].out.to_vector<double>(), ref, c.rtol * mean_abs(ref), c.rtol);
      for (size_t i = 0; i < c.inputs.size(); ++i) {
        if (!c.differentiable[i]) continue;
        INFO("gradient of input " << i);
        const std::vector<double> gref = read_npy(dir + "/" + id + "_grad" + std::to_string(i) + ".npy");
        KILN_REQUIRE_CLOSE(results[ci].grads[i].to_vector<double>(), gref, c.rtol * mean_abs(gref), c.rtol);
      }
      for (size_t u = 0; u < c.updated_inputs.size(); ++u) {
        INFO("input " << c.updated_inputs[u] << " as the op left it (updated in place)");
        const std::vector<double> uref = read_npy(dir + "/" + id + "_updated" + std::to_string(c.updated_inputs[u]) + ".npy");
        KILN_REQUIRE_CLOSE(results[ci].updated[u].to_vector<double>(), uref, c.rtol * mean_abs(uref), c.rtol);
      }
    }
  }
  std::filesystem::remove_all(dir);
}
