// The precision policy: which layers compute in bf16 and which in fp32, decided per phase
// from what the phase freezes. Parameters, their gradients, optimizer state and checkpoints
// stay fp32 whatever the policy (docs/precision.md).
#pragma once

#include <cstdint>
#include <string>

#include "core/kiln.h"
#include "io/loader.h"
#include "layers/layers.h"

namespace kiln {

// fp32: every layer in fp32. bf16_frozen: frozen weight layers compute in bf16 (fp32
// accumulation), trained ones in fp32, so the boundary moves with each phase's freezing.
// bf16: every weight layer computes in bf16, trained ones cast their fp32 master weights
// each step (autocast's recipe).
enum class Precision { fp32, bf16_frozen, bf16 };

// "fp32", "bf16-frozen", "bf16": the names on command lines and in checkpoints.
const char* precision_name(Precision p);
// The policy named `name`; an unknown name is an error listing the three.
Precision parse_precision(const std::string& name);

// True when `device` computes bf16 natively (CPU: AVX-512 BF16, which AMX CPUs have too;
// CUDA: compute capability 8.0 and newer, bf16 tensor cores), so bf16 pays off there;
// elsewhere it would be emulated, and slower. Asks the device's backend.
bool native_bf16(Device device);

// What apply_precision did, for the run's output.
struct PrecisionUse {
  Precision policy = Precision::fp32;
  int64_t layers = 0;       // weight layers (Conv2d, Linear) in the model
  int64_t bf16 = 0;         // of them, computing in bf16
  int64_t frozen = 0;       // of them, frozen in this phase
  std::string first_fp32;   // the first weight layer in fp32 ("": none)
  // One line for people: "bf16-frozen: 15 of 16 weight layers in bf16, fp32 from fc8".
  std::string describe() const;
};

// Sets every weight layer's compute dtype from `p` and its freezing now applied; the last
// weight layer hands fp32 on. Frozen bf16 weights are converted here, so call it once per
// phase (and again after weights are loaded), not per step.
PrecisionUse apply_precision(Module& model, Precision p);

// The same trained weights run two ways (a reference, e.g. fp32, against a test, e.g.
// bf16-frozen) over one data set: how far the test's activations and outputs move. Measured
// on the same weights so the comparison is not training noise.
struct PrecisionComparison {
  // Per top-level child of the model, in order: its name and the relative error
  // ||test - ref|| / ||ref|| of its output over the whole data set.
  std::vector<std::string> layers;
  std::vector<double> rel_error;
  int64_t images = 0;
  double kl = 0;              // mean KL(p_ref || p_test) of the softmax outputs, in nats
  double margin = 0.05;       // "clear": the reference's top-1 probability beats its top-2 by this
  int64_t clear = 0;          // images with a clear reference top-1
  int64_t agree_clear = 0;    // of them, the test's top-1 is the same
  int64_t agree_all = 0;      // top-1 agreement over every image
  int64_t correct_ref = 0, correct_test = 0;  // top-1 right against the labels
};

// Runs `ref` and `test` (the same architecture; Sequential, compared child by child) on every
// batch of `loader` in evaluation mode, no graph.
PrecisionComparison compare_precision(Sequential& ref, Sequential& test, io::Loader& loader);

}  // namespace kiln
