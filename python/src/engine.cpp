// The engine above the ops, thinly: modules (freezing by name pattern), the model specs
// and building by name, weights import/export, one image's input tensor.
// Calls that run a model or file I/O release the GIL.
#include <charconv>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "io/convention.h"
#include "io/weights.h"
#include "layers/layers.h"
#include "layers/module.h"
#include "python/src/bindings.h"
#include "train/api.h"
#include "train/format.h"
#include "train/model_spec.h"

namespace kiln::python {
namespace {

using nb::arg;

// A model built from its spec with the generators it keeps using (dropout draws its masks
// from `dropout` for as long as the model lives); handed out as an aliasing shared_ptr to
// `model`, so Python holds the generators exactly as long as the model. Registered while it
// lives, so kiln.train finds its generators (built_model_of).
struct BuiltModel : BuiltModelInfo {
  Generator init_gen, dropout_gen;
  std::shared_ptr<Sequential> model;
  BuiltModel(uint64_t seed, ModelOptions options) : init_gen(seed), dropout_gen(seed + 1) {
    this->seed = seed;
    this->options = std::move(options);
    init = &init_gen;
    dropout = &dropout_gen;
  }
  ~BuiltModel();
};

std::mutex built_mutex;
std::map<const Module*, BuiltModel*>& built_models() {
  static std::map<const Module*, BuiltModel*> m;
  return m;
}

BuiltModel::~BuiltModel() {
  const std::lock_guard<std::mutex> lock(built_mutex);
  built_models().erase(model.get());
}

// With `weights`, started from the file as train/model_spec.h's build_from_weights does, the
// head kept when it fits (the same classes); what the file lacks, and a head of other classes
// when num_classes was left out, is said in a warning.
std::shared_ptr<Sequential> build_model(const std::string& name, std::optional<int64_t> num_classes,
                                        int64_t image_size, float keep_prob, const std::string& head,
                                        bool adaptive_pool, uint64_t seed,
                                        const std::optional<std::filesystem::path>& weights) {
  const ModelSpec& spec = find_model_spec(name);
  auto built = std::make_shared<BuiltModel>(
      seed, ModelOptions(num_classes.value_or(spec.default_num_classes), image_size, keep_prob, head, adaptive_pool));
  std::vector<std::string> said;
  if (!weights) {
    nb::gil_scoped_release release;
    built->model = spec.build(built->options, built->init_gen, built->dropout_gen);
  } else {
    PretrainedModel p;
    {
      nb::gil_scoped_release release;
      p = build_from_weights(spec, built->options, weights->string(), built->init_gen, built->dropout_gen, true);
    }
    built->model = p.model;
    built->options = p.options;
    const io::ImportReport& r = p.report;
    if (!r.missing.empty())
      said.push_back("the weights file lacks " + std::to_string(r.missing.size()) + " parameter(s) of " + spec.name +
                     " (" + join_names(r.missing, 4) + "): they keep their draws from seed " + std::to_string(seed));
    if (!num_classes && !r.mismatched.empty())
      said.push_back("the weights file's head is shaped for other classes than " + spec.name + "'s default " +
                     std::to_string(spec.default_num_classes) + " (" + join_names(r.mismatched, 2) +
                     "): it was not loaded; pass num_classes to size the head, or give a file with it");
  }
  for (const std::string& s : said) warn("kiln.build_model: " + s);
  const std::lock_guard<std::mutex> lock(built_mutex);
  built_models()[built->model.get()] = built.get();
  return std::shared_ptr<Sequential>(built, built->model.get());
}

// A Sequential's child by position (negative: from the end), as Python indexes lists.
size_t child_index(const Sequential& s, int64_t i) {
  const auto n = static_cast<int64_t>(s.children().size());
  const int64_t j = i < 0 ? i + n : i;
  if (j < 0 || j >= n)
    throw nb::index_error(("Sequential '" + s.name() + "' has " + std::to_string(n) + " layers; index " +
                           std::to_string(i) + " is out of range").c_str());
  return static_cast<size_t>(j);
}

// A Sequential's child by name; a KeyError lists the names there are.
size_t child_index(const Sequential& s, const std::string& name) {
  std::string names;
  for (size_t i = 0; i < s.children().size(); ++i) {
    if (s.children()[i]->name() == name) return i;
    names += (i ? ", " : "") + s.children()[i]->name();
  }
  throw nb::key_error(("Sequential '" + s.name() + "' has no layer '" + name + "'; its layers: " + names).c_str());
}

// s[start:stop]: a new Sequential of s's name over the same layers. It keeps s (and so a
// built model's generators, which its dropout layers draw from) alive while it lives.
std::shared_ptr<Sequential> sequential_slice(std::shared_ptr<Sequential> s, const nb::slice& range) {
  const auto [start, stop, step, length] = range.compute(s->children().size());
  if (step != 1)
    throw nb::value_error(("Sequential '" + s->name() + "': a slice runs consecutive layers; step " +
                           std::to_string(step) + " is not 1").c_str());
  std::shared_ptr<Sequential> out(new Sequential(s->name()), [keep = s](Sequential* p) { delete p; });
  // The slice's own flag follows the parent's, set while it has no children: train() recurses, and the
  // shared layers must keep the modes they have (a backbone put in eval() through an earlier slice
  // would get its dropout and batch norm switched back to training, as torch's slicing never does).
  out->train(s->training());
  for (size_t i = 0; i < length; ++i) out->add(s->children()[start + i]);
  return out;
}

// Sequential.add from Python. A Sequential whose layers this one holds already (a slice of it:
// model.add(model[:1])) is refused: the slice keeps its parent alive, so the two held each other
// for good (nanobind reported them leaked at exit), and those layers would run twice.
void sequential_add(Sequential& s, std::shared_ptr<Module> child) {
  const auto* seq = dynamic_cast<const Sequential*>(child.get());
  if (seq != nullptr && !seq->contains(s))  // one that contains s: Sequential::add says so
    for (const auto& c : seq->children())
      KILN_CHECK(!s.contains(*c), "Sequential ", s.name(), ": cannot add '", child->name(), "': its layer '",
                 c->name(), "' is in ", s.name(), " already (a slice of a model shares its layers; adding it back ",
                 "would run them twice and keep both alive for good)");
  s.add(std::move(child));
}

}  // namespace

const BuiltModelInfo* built_model_of(const Module& model) {
  const std::lock_guard<std::mutex> lock(built_mutex);
  const auto it = built_models().find(&model);
  return it == built_models().end() ? nullptr : it->second;
}

double as_decimal(float v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::strtod(std::string(buf, r.ptr).c_str(), nullptr);
}

namespace {

// Python's view of a module: its class, name and shape ("kiln.Conv2d('conv1_1', 3 -> 64,
// kernel 3, stride 1, padding 1)"), so a slice, a layer and a model are told apart.
std::string module_repr(nb::handle self) {
  Module& mod = nb::cast<Module&>(self);
  const std::string head = "kiln." + nb::cast<std::string>(self.type().attr("__name__")) + "('" + mod.name() + "'";
  const auto n = [](int64_t v) { return std::to_string(v); };
  if (auto* s = dynamic_cast<Sequential*>(&mod))
    return head + ", " + n(static_cast<int64_t>(s->children().size())) + " layers)";
  if (auto* c = dynamic_cast<Conv2d*>(&mod)) {
    const Tensor& w = c->weight();  // [out, k, k, in]
    const Conv2dParams& p = c->params();
    const std::string pair = p.stride_h == p.stride_w && p.pad_h == p.pad_w
                                 ? ", stride " + n(p.stride_h) + ", padding " + n(p.pad_h)
                                 : ", stride " + n(p.stride_h) + "x" + n(p.stride_w) + ", padding " + n(p.pad_h) + "x" +
                                       n(p.pad_w);
    const std::string kernel = w.dim(1) == w.dim(2) ? n(w.dim(1)) : n(w.dim(1)) + "x" + n(w.dim(2));
    return head + ", " + n(w.dim(3)) + " -> " + n(w.dim(0)) + ", kernel " + kernel + pair +
           (c->has_bias() ? "" : ", no bias") + ")";
  }
  if (auto* l = dynamic_cast<Linear*>(&mod))
    return head + ", " + n(l->weight().dim(1)) + " -> " + n(l->weight().dim(0)) + (l->has_bias() ? "" : ", no bias") +
           ")";
  if (auto* l = dynamic_cast<LayerNorm*>(&mod)) return head + ", " + n(l->weight().dim(0)) + ")";
  if (auto* e = dynamic_cast<Embedding*>(&mod))
    return head + ", " + n(e->weight().dim(0)) + " x " + n(e->weight().dim(1)) + ")";
  if (auto* p = dynamic_cast<MaxPool2d*>(&mod))
    return head + ", kernel " + n(p->params().kernel_h) + ", stride " + n(p->params().stride_h) + ")";
  return head + ")";
}

// An import's counts on one line, "kiln.ImportReport('vgg16.h5', keras, 32 loaded, 0 skipped, 0 unmapped,
// 0 missing)"; str() is the full report with the names.
std::string import_report_repr(const io::ImportReport& r) {
  const auto n = [](const std::vector<std::string>& v) { return std::to_string(v.size()); };
  return "kiln.ImportReport(" + nb::cast<std::string>(nb::repr(nb::str(r.path.c_str()))) + ", " +
         io::format_name(r.format) + ", " + n(r.loaded) + " loaded, " + n(r.skipped) + " skipped" +
         (r.mismatched.empty() ? "" : " (" + n(r.mismatched) + " shaped unlike the model's)") + ", " + n(r.unmapped) +
         " unmapped, " + n(r.missing) + " missing)";
}

nb::dict named_tensors(Module& m, bool trainable_only) {
  nb::dict d;
  for (const ParameterRef& p : trainable_only ? m.trainable_parameters() : m.parameters())
    d[nb::str(p.name.c_str())] = nb::cast(*p.tensor);
  return d;
}

void bind_modules(nb::module_& m) {
  nb::class_<Module>(m, "Module", "A named model part with parameters, buffers and children; names are hierarchical "
                                  "(\"vgg16/conv1_1/weight\") and freezing goes by name pattern.")
      .def("__call__", &Module::forward, arg("x"), Release(), "y = forward(x).")
      .def("forward", &Module::forward, arg("x"), Release(), "y = forward(x).")
      .def_prop_ro("name", &Module::name, "The name relative to its parent (parameter names join them with /).")
      .def("parameters", [](Module& mod) { return named_tensors(mod, false); },
           "Every parameter, {full name: Tensor} in registration order; the tensors share the model's memory.")
      .def("trainable_parameters", [](Module& mod) { return named_tensors(mod, true); },
           "The parameters that train (not frozen), {full name: Tensor}.")
      .def("buffers", [](Module& mod) {
             nb::dict d;
             for (const BufferRef& b : mod.buffers()) d[nb::str(b.name.c_str())] = nb::cast(*b.tensor);
             return d;
           }, "State saved with the model but not trained (e.g. batch-norm statistics), {full name: Tensor}.")
      .def("freeze", &Module::freeze, arg("pattern"),
           "Freezes parameters matching an exact name, a scope ending in '/', or a glob with * and ?; "
           "returns how many matched (none is an error).")
      .def("unfreeze", &Module::unfreeze, arg("pattern"), "The inverse of freeze.")
      // train, eval and to return the module itself, as torch's do: model = build(...).eval().
      .def("train", [](nb::handle self, bool on) {
             nb::cast<Module&>(self).train(on);
             return nb::borrow(self);
           }, arg("on") = true, "Training mode (dropout active) or not, recursively; returns the module.")
      .def("eval", [](nb::handle self) {
             nb::cast<Module&>(self).eval();
             return nb::borrow(self);
           }, "Evaluation mode, recursively; returns the module.")
      .def_prop_ro("training", &Module::training, "Training mode (dropout active) or evaluation mode.")
      .def("to", [](nb::handle self, const std::string& device) {
             Module& mod = nb::cast<Module&>(self);
             const Device d = device_from_name(device);
             {
               const nb::gil_scoped_release release;
               mod.to(d);
             }
             return nb::borrow(self);
           }, arg("device"), "Moves every parameter and buffer to \"cpu\" or \"cuda:N\"; returns the module.")
      .def("parameter_scopes", &Module::parameter_scopes, "The scopes of the layers that own parameters, in order.")
      .def("summary", &Module::summary, "One line per parameter: shape and trainable flag.")
      .def("__repr__", &module_repr);

  // The layers are final in Python: their forward runs in C++, so a Python subclass's
  // forward would be skipped whenever the model runs (wrap them in a class of your own instead).
  nb::class_<Sequential, Module>(m, "Sequential", nb::is_final(),
                                 "Runs its children in order. Not subclassable (its forward runs in C++): hold one "
                                 "in a class of your own and call it from there.")
      .def(nb::init<std::string>(), arg("name"))
      .def("add", &sequential_add, arg("module"),
           "Appends a layer (its name must be new in this Sequential, and it may not contain this Sequential or "
           "share its layers, as a slice of it does).")
      .def("__len__", [](const Sequential& s) { return s.children().size(); }, "How many layers it runs.")
      .def("__getitem__",
           [](std::shared_ptr<Sequential> s, int64_t i) {
             return std::shared_ptr<Module>(s, s->children()[child_index(*s, i)].get());
           },
           arg("index"), "The layer at this position (negative: from the end); it shares the model's memory.")
      .def("__getitem__",
           [](std::shared_ptr<Sequential> s, const std::string& name) {
             return std::shared_ptr<Module>(s, s->children()[child_index(*s, name)].get());
           },
           arg("name"), "The layer of this name (e.g. \"fc7\").")
      .def("__getitem__", &sequential_slice, arg("slice"),
           "A Sequential of the same name running these layers (step 1), sharing them: model[:-1] is the model "
           "without its last layer, whose output is then the features the head saw. Its parameters keep their "
           "names; freezing, training mode and moves act on the shared layers.")
      .def("index", [](const Sequential& s, const std::string& name) { return child_index(s, name); }, arg("name"),
           "The position of the layer of this name: model[:model.index(\"fc8\")] runs every layer before fc8.");
  nb::class_<Linear, Module>(m, "Linear", nb::is_final(), "x: [N, in] -> [N, out]; parameters weight [out, in], bias [out].")
      .def("__init__", [](Linear* self, std::string name, int64_t in, int64_t out, bool bias, uint64_t seed) {
             Generator gen(seed);
             new (self) Linear(std::move(name), in, out, bias, gen);
           }, arg("name"), arg("in_features"), arg("out_features"), arg("bias") = true, arg("seed") = 0);
  nb::class_<Conv2d, Module>(m, "Conv2d", nb::is_final(), "NHWC convolution; parameters weight [out, k, k, in] (OHWI), bias [out].")
      .def("__init__", [](Conv2d* self, std::string name, int64_t in, int64_t out, int64_t kernel, int64_t stride,
                          int64_t padding, bool bias, uint64_t seed) {
             Generator gen(seed);
             new (self) Conv2d(std::move(name), in, out, kernel, Conv2dParams{stride, stride, padding, padding}, bias, gen);
           }, arg("name"), arg("in_channels"), arg("out_channels"), arg("kernel"), arg("stride") = 1,
           arg("padding") = 0, arg("bias") = true, arg("seed") = 0);
  nb::class_<Embedding, Module>(m, "Embedding", nb::is_final(),
                                "A table of learned rows (kiln.embedding): int indices [...] -> [..., features]; "
                                "parameter weight [count, features], N(0, 1) at first (torch.nn.Embedding).")
      .def("__init__", [](Embedding* self, std::string name, int64_t count, int64_t features, uint64_t seed) {
             Generator gen(seed);
             new (self) Embedding(std::move(name), count, features, gen);
           }, arg("name"), arg("count"), arg("features"), arg("seed") = 0);
  nb::class_<LayerNorm, Module>(m, "LayerNorm", nb::is_final(),
                                "Normalises over the last dimension (kiln.layer_norm); parameters weight and bias "
                                "[features], ones and zeros at first (torch.nn.LayerNorm(features)).")
      .def(nb::init<std::string, int64_t, float>(), arg("name"), arg("features"), arg("eps") = 1e-5f);
  nb::class_<ReLU, Module>(m, "ReLU", nb::is_final(), "max(x, 0), elementwise; no parameters.")
      .def(nb::init<std::string>(), arg("name"));
  nb::class_<Flatten, Module>(m, "Flatten", nb::is_final(), "[N, ...] -> [N, product of the rest]; no parameters.")
      .def(nb::init<std::string>(), arg("name"));
  nb::class_<MaxPool2d, Module>(m, "MaxPool2d", nb::is_final(),
                                "NHWC max pooling over kernel x kernel windows at `stride` (default: the kernel, "
                                "as in torch), no padding; no parameters.")
      .def("__init__", [](MaxPool2d* self, std::string name, int64_t kernel, std::optional<int64_t> stride) {
             const int64_t s = stride.value_or(kernel);
             new (self) MaxPool2d(std::move(name), Pool2dParams{kernel, kernel, s, s, 0, 0});
           }, arg("name"), arg("kernel") = 2, arg("stride") = nb::none());
}

void bind_specs(nb::module_& m) {
  nb::class_<ModelSpec>(m, "ModelSpec", "A registered model: how it is built, scoped and named.")
      .def_ro("name", &ModelSpec::name, "The registry name and the root scope of its parameters (\"vgg16\").")
      .def_ro("description", &ModelSpec::description, "One line for people.")
      .def_ro("default_image_size", &ModelSpec::default_image_size, "The input side build_model uses by default.")
      .def_ro("default_num_classes", &ModelSpec::default_num_classes, "The published head's outputs (1000).")
      .def_ro("backbone_scopes", &ModelSpec::backbone_scopes,
              "Scopes of every weight layer before the head (what a head-only phase freezes).")
      .def_ro("head_scope", &ModelSpec::head_scope, "The head's scope (\"vgg16/fc8/\"): replaced for new classes.")
      .def_prop_ro("heads", [](const ModelSpec& s) {
        std::vector<std::string> names;
        for (const HeadChoice& h : s.heads) names.push_back(h.name);
        return names;
      })
      .def_prop_ro("input_convention", [](const ModelSpec& s) { return std::string(io::convention_name(s.input_convention)); })
      .def("__repr__", [](const ModelSpec& s) { return "kiln.ModelSpec('" + s.name + "')"; });
  m.def("model_specs", &model_specs, "Every registered model (vgg11 ... resnet50_v1).");
  m.def("find_model_spec", &find_model_spec, arg("name"), nb::rv_policy::reference,
        "The spec called `name`; an unknown name is a kiln.Error listing the known ones.");
  m.def("build_model", &build_model, arg("name"), arg("num_classes") = nb::none(), arg("image_size") = 0,
        arg("keep_prob") = 0.5f, arg("head") = "", arg("adaptive_pool") = false, arg("seed") = 0,
        arg("weights") = nb::none(),
        "Builds a registered model by name (weights drawn from `seed`, dropout from seed + 1). num_classes: the "
        "head's outputs (default: the published head's); image_size: the input side (0: the spec's default, "
        "224; VGG's fc6 follows it); keep_prob: dropout's keep probability after fc6 and fc7 (VGG); head: \"\" "
        "or \"fc\" (the published head) or \"avg\" (global average pooling, then the head); adaptive_pool: "
        "average-pool VGG's last feature map to 7x7 so fc6 keeps its published shape at any image size. weights: "
        "a kiln, Keras or Keras 3 file to start from, as vgg_finetune train --weights starts: every layer it has "
        "loads (the head when it has this model's classes; else the head is new), only what it lacks is drawn "
        "from the seed (the same values as without the file), and a VGG at another image size gets "
        "adaptive_pool when the file's fc6 needs it. For the import's full report, use import_weights instead.");
}

void bind_weights(nb::module_& m) {
  nb::class_<io::ImportReport>(m, "ImportReport", "What import_weights loaded, skipped, missed or found mismatched.")
      .def_ro("path", &io::ImportReport::path, "The file read.")
      .def_ro("source_model", &io::ImportReport::source_model, "The file's model (for Keras files, the target's).")
      .def_ro("loaded", &io::ImportReport::loaded, "kiln names of the parameters loaded.")
      .def_ro("skipped", &io::ImportReport::skipped, "File entries not loaded: `skip` or skip_mismatched.")
      .def_ro("unmapped", &io::ImportReport::unmapped, "File entries no assignment-map key covers.")
      .def_ro("missing", &io::ImportReport::missing,
              "Model parameters the map covers that the file lacks (kept as they were, with allow_missing).")
      .def_ro("mismatched", &io::ImportReport::mismatched,
              "Model parameters whose file entry has another shape (kept as they were).")
      .def_ro("checksums", &io::ImportReport::checksums, "\"verified (...)\" or \"none ...\" and why.")
      .def_prop_ro("format", [](const io::ImportReport& r) { return std::string(io::format_name(r.format)); })
      .def_prop_ro("convention", [](const io::ImportReport& r) { return std::string(io::convention_name(r.convention)); })
      .def("__str__", &io::ImportReport::to_string)
      .def("__repr__", &import_report_repr);
  m.def("import_weights",
        [](Module& model, const std::filesystem::path& path, std::vector<std::string> skip, bool allow_missing,
           bool skip_mismatched, std::map<std::string, std::string> assignment_map) {
          io::ImportOptions opt;
          opt.skip = std::move(skip);
          opt.skip_must_match = true;  // a typo in a pattern would load what it meant to skip
          opt.allow_missing = allow_missing;
          opt.skip_mismatched = skip_mismatched;
          opt.assignment_map = std::move(assignment_map);
          return io::import_weights(model, path.string(), opt);
        },
        arg("model"), arg("path"), arg("skip") = std::vector<std::string>{}, arg("allow_missing") = false,
        arg("skip_mismatched") = false, arg("assignment_map") = std::map<std::string, std::string>{}, Release(),
        "Loads a kiln, Keras/tf-keras or Keras 3 weights file into `model` (all or nothing); docs/weights_format.md.");
  m.def("export_weights",
        [](Module& model, const std::filesystem::path& path, const std::string& format, const std::string& convention) {
          io::ExportOptions opt;
          KILN_CHECK(format == "kiln" || format == "keras", "export_weights: format '", format,
                     "' is not one kiln writes; use \"kiln\" or \"keras\"");
          opt.format = format == "kiln" ? io::WeightsFormat::kiln : io::WeightsFormat::keras;
          opt.convention = io::parse_convention(convention);
          io::export_weights(model, path.string(), opt);
        },
        arg("model"), arg("path"), arg("format") = "kiln", arg("convention") = "torchvision_rgb", Release(),
        "Writes the model's parameters and buffers to `path` atomically (kiln's layout or Keras's). `convention` "
        "is recorded in the file as the preprocessing its inputs need (vgg_finetune and load_model read it): the "
        "default, torchvision_rgb, is what Loader, train and load_image use by default; caffe_bgr or tf_rgb for a "
        "model trained on such inputs (e.g. imported from Keras).");
  m.def("load_image", [](const std::filesystem::path& path, int64_t image_size, const std::string& convention) {
          return load_image_tensor(path.string(), image_size, io::parse_convention(convention));
        }, arg("path"), arg("image_size") = 224, arg("convention") = "torchvision_rgb", Release(),
        "One image file as a model input [1, size, size, 3] (resize, centre crop, the convention's normalisation).");
}

}  // namespace

void bind_engine(nb::module_& m) {
  bind_modules(m);
  bind_specs(m);
  bind_weights(m);
}

}  // namespace kiln::python
