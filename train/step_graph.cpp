// A training step recorded once and replayed per batch (see step_graph.h).
#include "train/step_graph.h"

#include <exception>
#include <utility>

#include "core/error.h"

namespace kiln {

const char* cuda_graph_mode_name(CudaGraphMode m) {
  switch (m) {
    case CudaGraphMode::off: return "off";
    case CudaGraphMode::on: return "on";
    case CudaGraphMode::automatic: return "auto";
  }
  return "?";
}

CudaGraphMode parse_cuda_graph_mode(const std::string& name) {
  for (CudaGraphMode m : {CudaGraphMode::off, CudaGraphMode::on, CudaGraphMode::automatic})
    if (name == cuda_graph_mode_name(m)) return m;
  KILN_FAIL("unknown CUDA graph mode '", name, "' (the choices: off, on, auto)");
}

StepGraphChoice choose_step_graph(CudaGraphMode mode, Device device, bool distributed, bool head_only, bool cached) {
  if (mode == CudaGraphMode::off) return {false, "eager (CUDA graphs off)"};
  if (!device.is_cuda()) return {false, "eager (CUDA graphs need a CUDA device; training runs on " + device.str() + ")"};
  if (distributed) return {false, "eager (CUDA graphs are for one process; here gradients are all-reduced)"};
  if (!head_only) return {false, "eager (CUDA graphs record head-only phases; this phase trains more layers)"};
  if (mode == CudaGraphMode::automatic && !cached)
    return {false, "eager (under auto CUDA graphs record head-only steps served from cached features; this phase "
                   "runs the full forward each step, which on records too)"};
  return {true, "recorded as a CUDA graph after one eager warm-up step and replayed for every full-size batch "
                "(a partial batch runs eagerly)"};
}

Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), TensorOptions{t.dtype(), t.device()}); }

StepGraph::StepGraph(std::vector<Tensor> inputs, std::vector<Tensor> outputs, std::vector<Tensor> params,
                     Generator* rng)
    : inputs_(std::move(inputs)), outputs_(std::move(outputs)), params_(std::move(params)), rng_(rng) {
  KILN_CHECK(!inputs_.empty() && inputs_[0].defined(), "StepGraph: no static input");
  device_ = inputs_[0].device();
  for (const std::vector<Tensor>* list : {&inputs_, &outputs_, &params_})
    for (const Tensor& t : *list)
      KILN_CHECK(t.defined() && t.device() == device_, "StepGraph: ", t.defined() ? t.description() : "undefined",
                 " is not on ", device_.str(), " with the first static input (one graph runs on one device)");
  grads_.reserve(params_.size());
  for (const Tensor& p : params_) grads_.push_back(empty_like(p));
}

StepGraph::~StepGraph() = default;

std::string StepGraph::capture(const StepFn& fn) {
  Backend& be = backend_for(device_);
  graph_.reset();
  // Gradients start from nothing inside the recording (a defined .grad would be read and
  // added to), and nothing made before it may be freed inside it.
  for (Tensor& p : params_) p.zero_grad();
  const PhiloxState start = rng_ ? rng_->state() : PhiloxState{};
  std::string error;
  try {
    error = be.begin_graph_capture(device_.index, rng_ ? &start : nullptr);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty()) return error;
  try {
    std::vector<Tensor> out = fn(inputs_);
    KILN_CHECK(out.size() == outputs_.size(), "StepGraph: the step returned ", out.size(), " outputs, ",
               outputs_.size(), " static outputs were given");
    for (size_t i = 0; i < out.size(); ++i) {
      KILN_CHECK(out[i].defined() && out[i].shape() == outputs_[i].shape() && out[i].dtype() == outputs_[i].dtype(),
                 "StepGraph: output ", i, " of the step is ", out[i].defined() ? out[i].description() : "undefined",
                 ", its static output ", outputs_[i].description());
      outputs_[i].copy_from(out[i]);
    }
    for (size_t i = 0; i < params_.size(); ++i) {
      const Tensor g = params_[i].grad();
      KILN_CHECK(g.defined(), "StepGraph: parameter ", i, " (", params_[i].description(),
                 ") got no gradient from the step");
      grads_[i].copy_from(g);
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  // Everything the step made is freed inside the recording, so the graph owns no memory
  // that outlives a replay.
  for (Tensor& p : params_) p.zero_grad();
  const uint64_t end = rng_ ? rng_->state().offset : 0;
  if (rng_) rng_->set_state(start);  // recording ran nothing: no mask was drawn
  GraphCapture made = be.end_graph_capture(device_.index);
  if (!error.empty()) return error;
  if (!made.graph) return made.error;
  graph_ = std::move(made.graph);
  draws_ = end - start.offset;
  return "";
}

void StepGraph::load_inputs(const std::vector<Tensor>& inputs) {
  KILN_CHECK(inputs.size() == inputs_.size(), "StepGraph: ", inputs.size(), " inputs given, the step was recorded with ",
             inputs_.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    KILN_CHECK(inputs[i].defined() && inputs[i].shape() == inputs_[i].shape() && inputs[i].dtype() == inputs_[i].dtype(),
               "StepGraph: input ", i, " is ", inputs[i].defined() ? inputs[i].description() : "undefined",
               ", the step was recorded for ", inputs_[i].description(), " (a batch of another size runs eagerly)");
    if (inputs[i].raw_data() != inputs_[i].raw_data()) inputs_[i].copy_from(inputs[i]);
  }
}

const std::vector<Tensor>* StepGraph::try_replay(const std::vector<Tensor>& inputs, std::string& why) {
  load_inputs(inputs);
  return launch(why);
}

const std::vector<Tensor>& StepGraph::replay(const std::vector<Tensor>& inputs) {
  load_inputs(inputs);
  return replay();
}

const std::vector<Tensor>& StepGraph::replay() {
  std::string why;
  const std::vector<Tensor>* out = launch(why);
  KILN_CHECK(out != nullptr, "StepGraph: ", why);
  return *out;
}

const std::vector<Tensor>* StepGraph::launch(std::string& why) {
  KILN_CHECK(graph_ != nullptr, "StepGraph: replay before a successful capture");
  const PhiloxState at = rng_ ? rng_->state() : PhiloxState{};
  why = backend_for(device_).replay_graph(*graph_, at);
  if (!why.empty()) return nullptr;
  if (rng_) rng_->set_state(PhiloxState{at.seed, at.offset + draws_});
  for (size_t i = 0; i < params_.size(); ++i) params_[i].set_grad(grads_[i]);
  return &outputs_;
}

}  // namespace kiln
