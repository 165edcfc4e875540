#include "layers/module.h"

#include <functional>
#include <set>
#include <sstream>

namespace kiln {

namespace {

// What is wrong with a module, parameter or buffer name, or "" if nothing. A name is one
// component of the tensors' HDF5 paths and of the patterns freeze() takes: '/' would split it,
// HDF5 has no group "." or ".." (an export failed naming its temporary file), and '*' or '?'
// would make a recipe's exact name a glob.
std::string name_problem(const std::string& name) {
  if (name.empty()) return "is empty";
  if (name == "." || name == "..") return "is '" + name + "', which no HDF5 path can hold";
  const size_t bad = name.find_first_of("/*?");
  if (bad != std::string::npos) return std::string("contains '") + name[bad] + "'";
  return "";
}

constexpr const char* kNameRule = "names are parts of checkpoint paths and freeze patterns: non-empty, "
                                  "without '/', '*' or '?', and not '.' or '..'";

}  // namespace

Module::Module(std::string name) : name_(std::move(name)) {
  const std::string problem = name_problem(name_);
  KILN_CHECK(problem.empty(), "module name '", name_, "' ", problem, " (", kNameRule, ")");
}

// Checked when registered, not at the first checkpoint: the names are the tensors' HDF5 paths,
// so a parameter, a buffer and a child of one module must each have a name of their own.
void Module::check_new_name(const std::string& name, const char* what) const {
  const std::string problem = name_problem(name);
  KILN_CHECK(problem.empty(), "module ", name_, ": ", what, " name '", name, "' ", problem, " (", kNameRule, ")");
  // Names are unique within a module: a parameter, a buffer and a child may not share one.
  for (const Slot& s : params_)
    KILN_CHECK(s.name != name, "module ", name_, " already has a parameter named '", name, "' (adding a ", what, ")");
  for (const auto& [n, t] : buffers_)
    KILN_CHECK(n != name, "module ", name_, " already has a buffer named '", name, "' (adding a ", what, ")");
  for (const auto& c : children_)
    KILN_CHECK(c->name() != name, "module ", name_, " already has a child named '", name, "' (adding a ", what, ")");
}

namespace {

// The trainable flag is what freezes (module.h); a tensor's requires_grad set by hand (torch's
// way to freeze, `p.requires_grad = False`) disagreed with it silently: the parameter got no
// gradient, yet optimizers, summaries and the trainer counted it as training.
void check_flags_agree(const ParameterRef& p) {
  KILN_CHECK(p.trainable == p.tensor->requires_grad(), "parameter '", p.name, "': its tensor's requires_grad is ",
             p.tensor->requires_grad() ? "on" : "off", " but its module has it ", p.trainable ? "trainable" : "frozen",
             " (requires_grad set on the tensor by hand?); freeze and unfreeze through the module ",
             "(model.freeze(\"", p.name, "\") / model.unfreeze(...)), which keeps both in step");
}

}  // namespace

Tensor& Module::register_parameter(const std::string& name, Tensor t, bool decay) {
  check_new_name(name, "parameter");
  t = t.detach();
  t.set_requires_grad(true);
  params_.push_back(Slot{name, t, decay, true});
  return params_.back().tensor;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t) {
  check_new_name(name, "buffer");
  buffers_.emplace_back(name, t.detach());
  return buffers_.back().second;
}

// A module reached twice (one Module in two containers: tied weights) is listed once, under
// its first path, as PyTorch's named_parameters() does: an optimizer would update it twice.
void Module::collect(const std::string& prefix, std::vector<ParameterRef>& out, std::set<const Module*>& seen) {
  if (!seen.insert(this).second) return;
  const std::string scope = prefix + name_ + "/";
  for (Slot& s : params_) out.push_back(ParameterRef{scope + s.name, &s.tensor, s.decay, s.trainable});
  for (auto& c : children_) c->collect(scope, out, seen);
}

void Module::collect_buffers(const std::string& prefix, std::vector<BufferRef>& out, std::set<const Module*>& seen) {
  if (!seen.insert(this).second) return;
  const std::string scope = prefix + name_ + "/";
  for (auto& [n, t] : buffers_) out.push_back(BufferRef{scope + n, &t});
  for (auto& c : children_) c->collect_buffers(scope, out, seen);
}

bool Module::contains(const Module& m) const {
  if (this == &m) return true;
  for (const auto& c : children_)
    if (c->contains(m)) return true;
  return false;
}

std::vector<ParameterRef> Module::parameters() {
  std::vector<ParameterRef> out;
  std::set<const Module*> seen;
  collect("", out, seen);
  return out;
}

std::vector<BufferRef> Module::buffers() {
  std::vector<BufferRef> out;
  std::set<const Module*> seen;
  collect_buffers("", out, seen);
  return out;
}

ParameterRef Module::find(const std::string& full_name) {
  for (const ParameterRef& p : parameters())
    if (p.name == full_name) return p;
  return ParameterRef{full_name, nullptr, false, false};
}

std::vector<ParameterRef> Module::trainable_parameters() {
  std::vector<ParameterRef> out;
  for (const ParameterRef& p : parameters()) {
    check_flags_agree(p);
    if (p.trainable) out.push_back(p);
  }
  return out;
}

std::vector<std::string> Module::parameter_scopes() {
  std::vector<std::string> out;
  for (const ParameterRef& p : parameters()) {
    const std::string scope = p.name.substr(0, p.name.rfind('/') + 1);
    if (out.empty() || out.back() != scope) out.push_back(scope);
  }
  return out;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& c : children_) c->train(on);
}

namespace {
bool glob(const char* p, const char* s) {
  for (; *p; ++p, ++s) {
    if (*p == '*') {
      for (const char* t = s;; ++t) {
        if (glob(p + 1, t)) return true;
        if (!*t) return false;
      }
    }
    if (!*s || (*p != '?' && *p != *s)) return false;
  }
  return *s == '\0';
}
}  // namespace

bool name_matches(const std::string& pattern, const std::string& name) {
  if (pattern.find_first_of("*?") != std::string::npos) return glob(pattern.c_str(), name.c_str());
  if (!pattern.empty() && pattern.back() == '/') return name.compare(0, pattern.size(), pattern) == 0;
  return pattern == name;
}

int Module::set_trainable(const std::string& pattern, bool trainable, const char* verb) {
  int matched = 0;
  std::function<void(Module&, const std::string&)> walk = [&](Module& m, const std::string& prefix) {
    const std::string scope = prefix + m.name_ + "/";
    for (Slot& s : m.params_) {
      if (!name_matches(pattern, scope + s.name)) continue;
      s.trainable = trainable;
      s.tensor.zero_grad();
      s.tensor.set_requires_grad(trainable);
      ++matched;
    }
    for (auto& c : m.children_) walk(*c, scope);
  };
  walk(*this, "");
  const std::vector<ParameterRef> all = parameters();
  KILN_CHECK(matched > 0, verb, "('", pattern, "'): no parameter of ", name_, " matches (",
             all.empty() ? std::string("it has no parameters") : "names look like '" + all.front().name + "'",
             "; a scope ends in '/', a glob uses * and ?)");
  return matched;
}

int Module::freeze(const std::string& pattern) { return set_trainable(pattern, false, "freeze"); }
int Module::unfreeze(const std::string& pattern) { return set_trainable(pattern, true, "unfreeze"); }

namespace {

// t's memory moved to `device` in place, its gradient with it: every handle to t (an optimizer's
// over NamedTensors, Python's) follows, as torch's module.to moves its parameters. Replacing the
// slot's tensor left such handles on the old device, where an optimizer updated them unseen.
void move_in_place(Tensor& t, Device device) {
  if (t.device() == device) return;
  const Tensor moved = t.detach().to(device);
  TensorImpl& impl = t.impl();
  impl.storage = moved.impl().storage;
  impl.offset_bytes = moved.impl().offset_bytes;
  impl.strides = moved.impl().strides;
  const Tensor g = t.grad();
  if (g.defined()) t.set_grad(g.to(device));
}

}  // namespace

void Module::to(Device device) {
  for (Slot& s : params_) move_in_place(s.tensor, device);
  for (auto& [n, t] : buffers_) move_in_place(t, device);
  for (auto& c : children_) c->to(device);
}

std::string Module::summary() {
  std::ostringstream os;
  int64_t total = 0, trainable = 0;
  for (const ParameterRef& p : parameters()) {
    check_flags_agree(p);
    os << (p.trainable ? "  train  " : "  frozen ") << p.name << " " << p.tensor->shape() << "\n";
    total += p.tensor->numel();
    if (p.trainable) trainable += p.tensor->numel();
  }
  os << total << " parameters, " << trainable << " trainable\n";
  return os.str();
}

}  // namespace kiln
