// A training step recorded once as a device graph (a CUDA graph, Backend::begin_graph_capture)
// and replayed per batch: the batch is copied into static inputs, one launch runs forward,
// loss and backward, and the recorded step leaves its outputs and the parameters' gradients
// in static tensors; dropout draws fresh masks on every replay, the same the eager step would
// draw at the generator's position. The trainer uses it for head-only phases
// (TrainerOptions::cuda_graph); any program may record its own step function with it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/generator.h"
#include "core/tensor.h"

namespace kiln {

// Whether the trainer records steps as CUDA graphs: never, in every phase that can use one,
// or only where it is expected to pay (a head-only phase served from cached features, whose
// short step is bound by kernel launches rather than by arithmetic).
enum class CudaGraphMode { off, on, automatic };

// "off", "on", "auto".
const char* cuda_graph_mode_name(CudaGraphMode m);
// The mode named `name`; an unknown name is an error listing the three.
CudaGraphMode parse_cuda_graph_mode(const std::string& name);

// Whether a phase's full-size steps are recorded, and why (for the one line a phase reports).
struct StepGraphChoice {
  bool use = false;
  std::string why;
};
// The rule, in one place: mode not off, a CUDA device, one process, a phase that trains only
// the model's head; under `automatic` also a phase served from cached features.
StepGraphChoice choose_step_graph(CudaGraphMode mode, Device device, bool distributed, bool head_only, bool cached);

// One recorded step with its static inputs, outputs and gradients.
class StepGraph {
 public:
  // The step to record: reads the static inputs, returns tensors of the shapes and dtypes of
  // the static outputs, and leaves each parameter's gradient in its .grad (backward). It must
  // not wait for the host (no item(), no copy to the host): such a call fails the capture.
  using StepFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs)>;

  // inputs, outputs: tensors on one device that become the static inputs and outputs (made by
  // the caller before the capture, e.g. with empty_like); params: the parameters whose
  // gradients the step makes (static gradients of their shapes are made here); rng: the
  // generator every dropout in the step draws from (null: a dropout fails the capture).
  StepGraph(std::vector<Tensor> inputs, std::vector<Tensor> outputs, std::vector<Tensor> params, Generator* rng);
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // Records fn once; run the step eagerly once before, so that what it makes lazily (conv
  // plans, library handles, workspaces, bf16 weight copies) exists before recording. Returns
  // "" or why nothing was recorded (the error of the step or of CUDA/cuDNN); either way the
  // device is usable, the parameters' .grad are cleared and the generator is where it was.
  std::string capture(const StepFn& fn);
  // True once capture succeeded.
  bool captured() const { return graph_ != nullptr; }
  // Copies `inputs` into the static inputs (same shapes and dtypes), then replay().
  const std::vector<Tensor>& replay(const std::vector<Tensor>& inputs);
  // Runs the recorded step on the static inputs as they are, advances the generator by what
  // the step draws and points each parameter's .grad at its static gradient (the optimizer
  // then steps as usual). Returns the static outputs, overwritten by the next replay. A
  // launch the device refuses (Backend::replay_graph's reason) is an error here.
  const std::vector<Tensor>& replay();
  // As replay(inputs), but a launch the device refused while nothing ran (out of memory for
  // the graph's allocations) gives null and the reason in `why`, with nothing changed, so the
  // caller can run the step eagerly; other failures throw.
  const std::vector<Tensor>* try_replay(const std::vector<Tensor>& inputs, std::string& why);
  // The static inputs, for a caller that writes them itself.
  const std::vector<Tensor>& inputs() const { return inputs_; }
  // Where the graph runs.
  Device device() const { return device_; }

 private:
  // Copies `inputs` into the static inputs, after checking their shapes and dtypes.
  void load_inputs(const std::vector<Tensor>& inputs);
  // One launch: the outputs, or null and `why` when the device refused it (nothing changed).
  const std::vector<Tensor>* launch(std::string& why);
  Device device_;
  std::vector<Tensor> inputs_, outputs_, params_, grads_;
  Generator* rng_;
  uint64_t draws_ = 0;  // Philox blocks the step reserves (the generator's advance per step)
  std::unique_ptr<DeviceGraph> graph_;
};

// An uninitialised tensor of t's shape, dtype and device: a static input or output.
Tensor empty_like(const Tensor& t);

}  // namespace kiln
