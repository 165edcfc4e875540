// kiln_bench's CUDA suites: VGG16's conv layers (forward, backward-data, backward-filter)
// and whole VGG16 steps (inference, fc8-only training, full training) on one GPU, timed
// with CUDA events after a correctness check against the CPU backend.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::bench {

// One timed row.
struct CudaRow {
  std::string name;          // "conv3_1/fwd", "vgg16/step_fc8"
  double median_ms = 0, min_ms = 0, max_ms = 0;
  double flops = 0;          // useful arithmetic per run
  double img_per_s = 0;      // for whole-network rows
  int64_t peak_bytes = 0;    // device memory high-water mark during the row
  std::string note;          // e.g. the check that passed
};

// Measured ceilings of this GPU: fp32 and TF32 GEMM through cuBLAS, copy bandwidth.
struct CudaCeilings {
  std::string gpu;
  double fp32_gflops = 0, tf32_gflops = 0, copy_gbps = 0;
};

CudaCeilings measure_cuda_ceilings();
std::vector<CudaRow> run_conv_cuda(int64_t batch, int warmup, int repeat);
std::vector<CudaRow> run_step_cuda(int64_t batch, int warmup, int repeat);

}  // namespace kiln::bench

namespace kiln::bench {

// kiln_bench --device cuda: runs the named CUDA suites ("conv_cuda", "step_cuda"), prints
// a table with the GPU's measured ceilings and, with compare, PyTorch's times on the same
// GPU (benchmarks/torch_cuda_peer.py). Returns the process exit code.
int cuda_main(const std::vector<std::string>& suites, int64_t batch, int warmup, int repeat, bool compare,
              const std::string& json_path);

}  // namespace kiln::bench
