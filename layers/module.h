// Module: a named node of a model with parameters, buffers and child modules. Names are
// hierarchical and stable ("vgg16/conv1_1/weight"): weight import, export, freezing and
// checkpoints all address parameters by them.
//
// "Frozen" has one representation: a parameter's `trainable` flag here, set by freeze() and
// unfreeze(). Everything else derives from it: the tensor's requires_grad (autograd's view,
// kept equal to the flag, so a frozen prefix records no graph), an optimizer's parameter
// list (Module::trainable_parameters(); the multi-tensor updates in core/ops.h update every
// parameter they are given), the trainer's feature-cache cut and what a checkpoint stores
// once per phase. A requires_grad set on such a tensor by hand is refused where the flag is
// read (trainable_parameters, summary), naming freeze and unfreeze.
#pragma once

#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/kiln.h"

namespace kiln {

// One parameter as seen from a model: its full name, the tensor (replaceable, e.g. by a
// weight import or a move to the GPU), whether weight decay applies (weights yes, biases
// no, as TF-slim's VGG), and whether it trains.
struct ParameterRef {
  std::string name;
  Tensor* tensor;
  bool decay;
  bool trainable;
};

// A buffer: state that is saved and moved with the model but not trained.
struct BufferRef {
  std::string name;
  Tensor* tensor;
};

// Base of layers and models. Children are owned; names are relative to the parent.
class Module {
 public:
  explicit Module(std::string name);
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // y = f(x); layers define it, containers chain their children.
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }

  const std::string& name() const { return name_; }
  // Parameters of this module and all below, full names, in registration order; a module
  // reached twice (shared by two containers: tied weights) is listed once, under its first path.
  std::vector<ParameterRef> parameters();
  std::vector<BufferRef> buffers();
  // The parameter with this full name; its tensor is nullptr when there is none.
  ParameterRef find(const std::string& full_name);
  // Tensors that train (trainable flag set), for an optimizer.
  std::vector<ParameterRef> trainable_parameters();
  // The scopes of the modules that own parameters ("vgg16/conv1_1/", "resnet50/layer1/0/bn1/"),
  // in parameter order: the layers a recipe names (train from, freeze, report), read off the
  // model itself so that no model has to list them twice.
  std::vector<std::string> parameter_scopes();

  // Training mode (dropout active) or evaluation mode, recursively.
  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }

  // Freezes parameters matching `pattern`: an exact full name ("vgg16/fc8/bias"), a scope
  // ending in '/' ("vgg16/conv1_1/"), or a glob with * and ? ("vgg16/conv*"). Frozen
  // parameters stop requiring grad, so the ops before the first trainable one record
  // nothing. Returns how many matched; matching none is an error (a typo must not
  // silently train everything).
  int freeze(const std::string& pattern);
  int unfreeze(const std::string& pattern);

  // Moves every parameter and buffer to `device` in place, gradients too (trainable flags kept):
  // every handle to them follows, an optimizer's included, as torch's module.to.
  void to(Device device);

  // The children, for containers and printing.
  const std::vector<std::shared_ptr<Module>>& children() const { return children_; }
  // Whether `m` is this module or one below it (what a container may not take as a child).
  bool contains(const Module& m) const;
  // A summary: one line per parameter with shape and trainable flag.
  std::string summary();

 protected:
  // Registers a parameter under this module; it is made a leaf that requires grad.
  Tensor& register_parameter(const std::string& name, Tensor t, bool decay);
  Tensor& register_buffer(const std::string& name, Tensor t);
  template <typename M>
  std::shared_ptr<M> register_module(std::shared_ptr<M> m) {
    KILN_CHECK(m != nullptr, "module ", name_, ": register_module of a null module");
    check_new_name(m->name(), "child");
    children_.push_back(m);
    return m;
  }

 private:
  struct Slot {
    std::string name;
    Tensor tensor;
    bool decay = true;
    bool trainable = true;
  };
  // Refuses a name (of a parameter, buffer or child: `what`) that is empty, holds '/', or is
  // taken by another parameter, buffer or child of this module.
  void check_new_name(const std::string& name, const char* what) const;
  void collect(const std::string& prefix, std::vector<ParameterRef>& out, std::set<const Module*>& seen);
  void collect_buffers(const std::string& prefix, std::vector<BufferRef>& out, std::set<const Module*>& seen);
  int set_trainable(const std::string& pattern, bool trainable, const char* verb);

  std::string name_;
  bool training_ = true;
  std::deque<Slot> params_;  // deque: references handed out stay valid as more are added
  std::deque<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::shared_ptr<Module>> children_;
};

// True when `name` matches `pattern` as freeze() defines it (exact, scope/ or glob).
bool name_matches(const std::string& pattern, const std::string& name);

// Calls f(T&) on `m` and on every module below it that is a T, parents first: the one walk
// over a model's tree for what its layers are (batch norm per phase and its calibration,
// whether a model has dropout).
template <typename T, typename F>
void for_each_module(Module& m, F&& f) {
  if (auto* t = dynamic_cast<T*>(&m)) f(*t);
  for (const std::shared_ptr<Module>& c : m.children()) for_each_module<T>(*c, f);
}

// True when `m` or a module below it is a T (a model with Dropout, BatchNorm2d, ...).
template <typename T>
bool holds(Module& m) {
  bool found = false;
  for_each_module<T>(m, [&found](T&) { found = true; });
  return found;
}

}  // namespace kiln
