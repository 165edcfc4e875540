#include "core/autograd.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "core/ops.h"

namespace kiln {
namespace {
std::atomic<int64_t> g_nodes_alive{0};
std::atomic<int64_t> g_saved_bytes{0};
thread_local bool t_grad_enabled = true;
// The op whose backward this thread runs (its name), for SavedTensor's messages.
thread_local const char* t_backward_op = nullptr;

// The layers open on this thread (LayerScope), innermost last, and their path, joined when a
// node first asks for it and dropped when the scopes change: a forward without grad builds none.
thread_local std::vector<const std::string*> t_layers;
thread_local std::shared_ptr<const std::string> t_layer_path;

std::shared_ptr<const std::string> current_layer_path() {
  if (t_layers.empty()) return nullptr;
  if (!t_layer_path) {
    std::string path = *t_layers.front();
    for (size_t i = 1; i < t_layers.size(); ++i) path += "/" + *t_layers[i];
    t_layer_path = std::make_shared<const std::string>(std::move(path));
  }
  return t_layer_path;
}

// Sets t_backward_op for one apply(), however it ends.
struct BackwardOpScope {
  explicit BackwardOpScope(const std::string& name) { t_backward_op = name.c_str(); }
  ~BackwardOpScope() { t_backward_op = nullptr; }
  BackwardOpScope(const BackwardOpScope&) = delete;
  BackwardOpScope& operator=(const BackwardOpScope&) = delete;
};
}  // namespace

SavedTensor::SavedTensor(const Tensor& t) { *this = t; }

SavedTensor& SavedTensor::operator=(const Tensor& t) {
  reset();
  t_ = t;
  bytes_ = t.defined() ? t.nbytes() : 0;
  version_ = t.defined() ? t.version() : 0;
  g_saved_bytes += static_cast<int64_t>(bytes_);
  return *this;
}

const Tensor& SavedTensor::get() const {
  KILN_CHECK(t_.defined(), "a tensor saved for backward was already freed: backward ran through this graph "
             "before; call backward(seed, /*retain_graph=*/true) the first time to go through it twice");
  KILN_CHECK(t_.version() == version_, kBackwardOf, t_backward_op ? t_backward_op : "an op", ": a tensor it saved, ",
             t_.description(), ", was changed in place after the forward (", t_.version() - version_,
             " write(s): copy_from, an optimizer step, batch norm's running statistics, ...), so its gradient would "
             "use the new values; run backward before changing it, or give the op a clone()");
  return t_;
}

void SavedTensor::reset() {
  g_saved_bytes -= static_cast<int64_t>(bytes_);
  bytes_ = 0;
  t_ = Tensor();
}

Node::Node(std::string name) : name_(std::move(name)), layer_(current_layer_path()) { ++g_nodes_alive; }
Node::~Node() { --g_nodes_alive; }

const std::string& Node::layer() const {
  static const std::string none;
  return layer_ ? *layer_ : none;
}

LayerScope::LayerScope(const std::string& name) {
  t_layers.push_back(&name);
  t_layer_path.reset();
}

LayerScope::~LayerScope() {
  t_layers.pop_back();
  t_layer_path.reset();
}

AutogradStats autograd_stats() { return AutogradStats{g_nodes_alive.load(), g_saved_bytes.load()}; }

bool grad_enabled() { return t_grad_enabled; }

GradModeGuard::GradModeGuard(bool enabled) : previous_(t_grad_enabled) { t_grad_enabled = enabled; }
GradModeGuard::~GradModeGuard() { t_grad_enabled = previous_; }

namespace autograd {

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t != nullptr && t->defined() && t->requires_grad()) return true;
  return false;
}

Edge edge_for(const Tensor& input) {
  Edge e;
  if (!input.defined() || !input.requires_grad()) return e;
  if (input.grad_fn()) e.fn = input.grad_fn();
  else e.leaf = input.impl_ptr();
  return e;
}

void set_history(Tensor& out, std::shared_ptr<Node> node) {
  out.impl().grad_fn = std::move(node);
  out.impl().requires_grad = true;
}

namespace {

// g is taken by value, so that a gradient nothing else holds is stored as it is. One that
// is shared (an add's or reshape's backward hands the same gradient to both inputs, the
// seed is the caller's) is copied: .grad is the caller's to change in place (clipping it
// through numpy or torch), and must not change another leaf's gradient or the seed.
void accumulate_leaf(TensorImpl& leaf, Tensor g) {
  KILN_CHECK(g.shape() == leaf.shape, "backward: gradient of shape ", g.shape(), " for a leaf of shape ", leaf.shape);
  KILN_CHECK(g.dtype() == leaf.dtype, "backward: a ", dtype_name(g.dtype()), " gradient for a ", dtype_name(leaf.dtype),
             " leaf ", leaf.shape, "; a gradient has its tensor's dtype (cast with .to(DType), which converts it back)");
  const std::shared_ptr<TensorImpl> have = load_grad(leaf);
  if (!have) {
    const bool alone = g.impl_ptr().use_count() == 1 && g.impl().storage.use_count() == 1 && !g.requires_grad();
    store_grad(leaf, alone ? g.impl_ptr() : g.detach().clone().impl_ptr());
  } else {
    store_grad(leaf, add(Tensor(have), g).impl_ptr());
  }
}

std::mutex& grad_slot_mutex() {
  static std::mutex m;
  return m;
}

// An error in `node`'s backward, saying which op and, inside a model, which layer:
// "in layer 'vgg16/fc6': backward of linear: ...". SavedTensor's messages name the op already.
[[noreturn]] void rethrow_in_backward(const Node& node, const Error& e) {
  const std::string op = kBackwardOf + node.name() + ":";
  std::string m = e.message().compare(0, op.size(), op) == 0 ? e.message() : op + " " + e.message();
  if (!node.layer().empty()) m = kInLayer + node.layer() + "': " + m;
  throw Error(m, e.location());
}

// Held for a whole backward pass (run_backward).
std::mutex& backward_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

namespace {
thread_local GradReadyHook grad_ready_hook;
}  // namespace

std::shared_ptr<TensorImpl> load_grad(const TensorImpl& leaf) {
  const std::lock_guard<std::mutex> lock(grad_slot_mutex());
  return leaf.grad;
}

void store_grad(TensorImpl& leaf, std::shared_ptr<TensorImpl> grad) {
  {
    const std::lock_guard<std::mutex> lock(grad_slot_mutex());
    leaf.grad.swap(grad);
  }
  grad.reset();  // the old gradient, outside the lock
}

GradReadyScope::GradReadyScope(GradReadyHook hook) : previous_(std::move(grad_ready_hook)) {
  grad_ready_hook = std::move(hook);
}

GradReadyScope::~GradReadyScope() { grad_ready_hook = std::move(previous_); }

namespace {
std::atomic<uint64_t> g_backward_pass{0};  // bumped under backward's lock
}  // namespace

uint64_t backward_pass() { return g_backward_pass.load(); }

void run_backward(const Tensor& root, const Tensor& seed_in, bool retain_graph) {
  KILN_CHECK(root.defined(), "backward() on an undefined tensor (", kUndefinedTensorOrigin, ")");
  KILN_CHECK(root.requires_grad(), "backward() on ", root.description(),
             " which does not require grad (no input of the ops that made it requires grad)");
  Tensor seed = seed_in;
  if (!seed.defined()) {
    KILN_CHECK(root.numel() == 1, "backward() without a seed gradient needs a scalar, got ", root.description(),
               "; pass dL/d(output) as the seed");
    seed = Tensor::ones(root.shape(), TensorOptions{root.dtype(), root.device()});
  }
  KILN_CHECK(seed.shape() == root.shape() && seed.dtype() == root.dtype() && seed.device() == root.device(),
             "backward(): seed gradient ", seed.description(), " does not match ", root.description(),
             " (shape, dtype and device must agree)");
  NoGradGuard no_grad;
  const std::lock_guard<std::mutex> one_pass_at_a_time(backward_mutex());
  ++g_backward_pass;
  if (root.is_leaf()) {
    accumulate_leaf(root.impl(), seed);
    return;
  }

  // Topological order by iterative depth-first search (post-order, then reversed).
  std::vector<Node*> order;
  std::unordered_set<Node*> visited;
  std::vector<std::pair<Node*, size_t>> stack{{root.grad_fn().get(), 0}};
  visited.insert(root.grad_fn().get());
  while (!stack.empty()) {
    auto& [node, i] = stack.back();
    if (i < node->next.size()) {
      Node* child = node->next[i++].fn.get();
      if (child && visited.insert(child).second) stack.emplace_back(child, 0);
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }
  std::reverse(order.begin(), order.end());

  // With a grad-ready hook: how many edges still lead to each leaf.
  std::unordered_map<TensorImpl*, int64_t> leaf_edges;
  if (grad_ready_hook)
    for (Node* node : order)
      for (const Edge& e : node->next)
        if (!e.fn && e.leaf) ++leaf_edges[e.leaf.get()];
  std::unordered_map<Node*, Tensor> pending;
  pending[root.grad_fn().get()] = seed;
  // Keep the nodes alive while we walk them even if a release drops the last owner.
  std::vector<std::shared_ptr<Node>> keep_alive;
  // Every node checked before any runs: the ones that kept nothing (a second pass may run them)
  // must not add into the leaves ahead of one that refuses.
  for (Node* node : order)
    KILN_CHECK(!node->released, "backward through a graph that was already freed (op ", node->name(),
               node->layer().empty() ? "" : " " + (kInLayer + node->layer()) + "'",
               "); call backward(seed, /*retain_graph=*/true) the first time to go through it twice");
  for (Node* node : order) {
    auto it = pending.find(node);
    if (it == pending.end()) continue;  // no gradient flowed here
    Tensor grad = std::move(it->second);
    pending.erase(it);
    std::vector<Tensor> grads;
    try {
      const BackwardOpScope op(node->name());
      grads = node->apply(grad);
    } catch (const Error& e) {
      rethrow_in_backward(*node, e);
    }
    KILN_CHECK(grads.size() == node->next.size(), "op ", node->name(), " returned ", grads.size(),
               " gradients for ", node->next.size(), " inputs");
    for (size_t i = 0; i < grads.size(); ++i) {
      const Edge& e = node->next[i];
      if (!e.fn && e.leaf && grad_ready_hook) {
        if (grads[i].defined()) accumulate_leaf(*e.leaf, std::move(grads[i]));
        if (--leaf_edges[e.leaf.get()] == 0) grad_ready_hook(*e.leaf);
        continue;
      }
      if (!grads[i].defined() || !e.needed()) continue;
      if (e.fn) {
        auto p = pending.find(e.fn.get());
        if (p == pending.end()) pending.emplace(e.fn.get(), grads[i]);
        else p->second = add(p->second, grads[i]);
      } else {
        accumulate_leaf(*e.leaf, std::move(grads[i]));
      }
    }
    if (!retain_graph && node->release_saved()) node->released = true;
  }
}

}  // namespace autograd
}  // namespace kiln
