// The digests that tests/kernels/test_clones_agree.sh compares across CPUs: kiln's own loops
// are compiled once per ISA (KILN_CPU_CLONES, core/hd.h) and must give the same bits on each,
// but a machine runs only the copy its CPU picks. The script runs this hidden case natively
// and under an emulator posing as CPUs that pick the other copies, and compares its lines.
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "check/op_cases.h"
#include "io/crc32c.h"

using namespace kiln;
using namespace kiln::check;

namespace {

// CRC32C of a tensor's shape, dtype and bytes, every NaN as one pattern (qemu's NaNs are its
// default NaN, whatever the hardware's would be); "-" for an undefined tensor (no gradient).
std::string digest(const Tensor& t) {
  if (!t.defined()) return "-";
  std::vector<uint8_t> bytes(static_cast<const uint8_t*>(t.raw_data()),  // kiln's tensors are contiguous
                             static_cast<const uint8_t*>(t.raw_data()) + t.nbytes());
  if (t.dtype() == DType::f32 || t.dtype() == DType::bf16) {
    const size_t size = t.dtype() == DType::f32 ? 4 : 2;
    const uint32_t exponent = size == 4 ? 0x7f800000u : 0x7f80u, mantissa = size == 4 ? 0x007fffffu : 0x007fu;
    const uint32_t nan = size == 4 ? 0x7fc00000u : 0x7fc0u;
    for (size_t at = 0; at < bytes.size(); at += size) {
      uint32_t v = 0;  // little-endian: the low bytes of v
      std::memcpy(&v, &bytes[at], size);
      if ((v & exponent) == exponent && (v & mantissa) != 0) std::memcpy(&bytes[at], &nan, size);
    }
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%s:%08x", dtype_name(t.dtype()), t.shape().str().c_str(),
                io::crc32c(bytes.data(), bytes.size()));
  return buf;
}

// Which copy of the cloned loops this CPU runs (GCC's dispatcher asks the same questions).
const char* isa_level() {
#if defined(KILN_HAS_CPU_CLONES)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4";
  if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3";
  return "default";
#else
  return "none";  // one copy, compiled for the build's target
#endif
}

}  // namespace

TEST_CASE("every op case's output and gradients as digests, for comparing CPUs", "[.clone_digests]") {
  std::printf("clones %s\n", isa_level());
  const std::vector<OpCase> cases = all_op_cases();
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const OpCase& c = cases[ci];
    try {
      std::vector<Tensor> inputs = prepare_inputs(c, Device::cpu(), true);
      const Tensor out = c.forward(inputs);
      std::string line = c.name + " " + digest(out);
      if (has_gradient(c)) {
        Generator g(ci + 1);
        const DType up_dtype = is_floating(out.dtype()) ? out.dtype() : DType::f32;
        out.backward(Tensor::normal(out.shape(), 0.0f, 1.0f, g).to(up_dtype));
      }
      for (const Tensor& t : inputs) line += " " + digest(t.requires_grad() ? t.grad() : Tensor());
      for (size_t i : c.updated_inputs) line += " " + digest(inputs[i]);
      std::printf("digest %s\n", line.c_str());
    } catch (const Error& e) {  // oneDNN's bf16 convolutions need AVX-512: the script lists these
      std::printf("refused %s: %s\n", c.name.c_str(), e.message().c_str());
    }
  }
}
