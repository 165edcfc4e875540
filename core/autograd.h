// Reverse-mode autograd over a dynamic graph. An op whose inputs need no gradient records
// nothing and keeps nothing ("frozen means free"); the counters below let tests prove it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace kiln {

// Where a node sends the gradient for one of its inputs: the node that produced the
// input, or the leaf that accumulates it, or nowhere (input needs no gradient).
struct Edge {
  std::shared_ptr<Node> fn;
  std::shared_ptr<TensorImpl> leaf;
  // False when the input needs no gradient: backward sends nothing there.
  bool needed() const { return fn || leaf; }
};

// A tensor kept for backward. Its bytes count in autograd_stats().saved_bytes until released.
class SavedTensor {
 public:
  // Holds nothing until assigned.
  SavedTensor() = default;
  // Saves `t` now, as operator= does.
  explicit SavedTensor(const Tensor& t);
  // Releases it, so saved_bytes falls as graphs are freed.
  ~SavedTensor() { reset(); }
  SavedTensor(const SavedTensor&) = delete;
  SavedTensor& operator=(const SavedTensor&) = delete;
  // Saves `t` in place of what it held: its bytes counted, its version noted for get()'s check.
  SavedTensor& operator=(const Tensor& t);
  // The saved tensor; throws if a backward pass released it, or if it was changed in place
  // since it was saved (its version moved).
  const Tensor& get() const;
  // Releases the tensor and takes its bytes off saved_bytes; get() then throws.
  void reset();
  // False when nothing is held (never saved, or released).
  bool defined() const { return t_.defined(); }

 private:
  Tensor t_;
  size_t bytes_ = 0;
  uint64_t version_ = 0;  // t_.version() when saved
};

// One recorded op. apply() maps dL/d(output) to dL/d(each input), in input order
// (undefined where an input needs no gradient).
class Node {
 public:
  // Counted in autograd_stats().nodes_alive until destroyed; `name` is the op's, for messages.
  explicit Node(std::string name);
  // Takes it off nodes_alive; virtual, as graphs hold each op's node through Node pointers.
  virtual ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Runs with recording off (backward holds a NoGradGuard); returns one gradient per edge in `next`.
  virtual std::vector<Tensor> apply(const Tensor& grad_output) = 0;
  // Drops saved tensors; called after backward unless the graph is retained. True when it
  // dropped what its backward needs: the node is then marked released, and a later backward
  // through it is refused. A node that saves nothing keeps false, and may run again, as torch's
  // (a second backward through sums and views, a backward per piece of a split).
  virtual bool release_saved() { return false; }

  // The op's name, for backward's error messages.
  const std::string& name() const { return name_; }
  // The layer whose forward recorded it ("vgg16/fc6", LayerScope), for the same; "" outside one.
  const std::string& layer() const;
  std::vector<Edge> next;  // one per op input
  bool released = false;   // its saved tensors were dropped (release_saved)

 private:
  std::string name_;
  std::shared_ptr<const std::string> layer_;  // shared by the layer's nodes; null outside a layer
};

// Resets each of `saved`; true when any held a tensor: what a release_saved override returns
// (an op saves some tensors only when an input needs them, mul's only for the other's gradient).
template <typename... Saved>
bool release_all(Saved&... saved) {
  const bool held = (saved.defined() || ...);
  (saved.reset(), ...);
  return held;
}

// How an error inside a model's layer begins, forward (layers/layers.cpp) and backward:
// "in layer 'vgg16/fc6': ...".
inline constexpr const char* kInLayer = "in layer '";
// How an error in an op's backward names the op after that: "backward of linear: ...".
inline constexpr const char* kBackwardOf = "backward of ";

// Marks a layer's forward on this thread: the nodes it records carry the path of the scopes
// open around them, joined by '/' ("vgg16/fc6"), so that an error in their backward names the
// layer as a forward error does. Sequential opens one for itself and for each child that is not
// a Sequential (which opens its own). `name` must outlive the scope (a Module's name does).
class LayerScope {
 public:
  // Opens `name` inside the scopes already open on this thread.
  explicit LayerScope(const std::string& name);
  // Closes it, however the forward ends.
  ~LayerScope();
  LayerScope(const LayerScope&) = delete;
  LayerScope& operator=(const LayerScope&) = delete;
};

// Live graph nodes and bytes held for backward, process-wide.
struct AutogradStats {
  int64_t nodes_alive = 0;
  int64_t saved_bytes = 0;
};
// The counters now; atomics, so any thread may read them.
AutogradStats autograd_stats();

// Whether ops record graph nodes on this thread (true by default).
bool grad_enabled();

// Sets recording on or off for its lifetime: GradModeGuard(true) records again inside a
// no-grad region (kiln.enable_grad: a trained part of an otherwise frozen forward).
class GradModeGuard {
 public:
  // Sets recording on this thread to `enabled`, remembering what it was.
  explicit GradModeGuard(bool enabled);
  // Restores what it found, so guards nest.
  ~GradModeGuard();
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool previous_;
};

// Disables recording for its lifetime (inference, optimizer updates).
class NoGradGuard : public GradModeGuard {
 public:
  NoGradGuard() : GradModeGuard(false) {}
};

namespace autograd {

// True when grad mode is on and some input requires grad: only then is a node recorded.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
// Builds the edge for one input.
Edge edge_for(const Tensor& input);
// Makes `out` the output of `node` (sets grad_fn and requires_grad).
void set_history(Tensor& out, std::shared_ptr<Node> node);
// Runs backward from `root` with seed gradient `seed`. Backward passes run one at a time in a
// process (a lock held for the pass): two threads' passes into shared leaves then sum exactly,
// where unlocked they lost updates and corrupted the heap (found from Python threads).
void run_backward(const Tensor& root, const Tensor& seed, bool retain_graph);
// The serial number of the backward pass running now (0 before the first): a gradient gathered
// across several nodes of one pass (a cut's pieces) tells its pass's buffer from one an earlier,
// failed pass left half-filled.
uint64_t backward_pass();

// A leaf's gradient slot, read and replaced under a lock held for nothing else: a .grad read
// (or zero_grad) on one thread while backward stores on another must not tear the pointer.
std::shared_ptr<TensorImpl> load_grad(const TensorImpl& leaf);
// Replaces the slot; the gradient it held is released after the lock (its memory may belong
// to NumPy or torch, whose release may need the GIL).
void store_grad(TensorImpl& leaf, std::shared_ptr<TensorImpl> grad);

// Called during backward when a leaf's gradient is final (every edge into it was walked):
// data-parallel training starts a bucket's all-reduce from it while backward runs on.
using GradReadyHook = std::function<void(const TensorImpl& leaf)>;
// Installs a hook on this thread for the scope's lifetime (the previous one is restored).
class GradReadyScope {
 public:
  // Installs `hook`, keeping the previous one.
  explicit GradReadyScope(GradReadyHook hook);
  // Puts the previous hook back.
  ~GradReadyScope();
  GradReadyScope(const GradReadyScope&) = delete;
  GradReadyScope& operator=(const GradReadyScope&) = delete;

 private:
  GradReadyHook previous_;
};

}  // namespace autograd
}  // namespace kiln
