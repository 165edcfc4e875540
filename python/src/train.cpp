// kiln.Phase and kiln.train: the model-agnostic trainer (train/trainer.h) over folder data
// sets, thinly: a recipe's phases as data, the loader's main knobs, a per-epoch callback.
// Runs from the start (resuming is vgg_finetune's); the GIL is released while it trains and
// taken back only to call the callback.
#include <optional>
#include <string>
#include <vector>

#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "io/dataset.h"
#include "python/src/bindings.h"
#include "train/api.h"
#include "train/trainer.h"

namespace kiln::python {
namespace {

using nb::arg;

nb::dict eval_dict(const EvalResult& r) {
  nb::dict d;
  d["loss"] = r.loss;
  d["acc"] = r.acc;
  d["images"] = r.images;
  return d;
}

nb::dict epoch_dict(const EpochSummary& e) {
  nb::dict d;
  d["phase"] = e.phase;
  d["phase_name"] = e.phase_name;
  d["epoch"] = e.epoch;
  d["global_step"] = e.global_step;
  d["lr"] = e.lr;
  d["train_loss"] = e.train_loss;
  d["train_acc"] = e.train_acc;
  d["val"] = eval_dict(e.val);
  return d;
}

struct TrainArgs {
  std::string train_dir, val_dir, model_dir, convention;
  int64_t batch_size, image_size;
  int num_workers;
  uint64_t seed;
  bool augment, feature_cache;
};

nb::dict train(Sequential& model, const std::string& arch, std::vector<Phase> phases, const TrainArgs& a,
               nb::object on_epoch) {
  const ModelSpec& spec = find_model_spec(arch);
  const io::Dataset train_ds = io::image_folder(a.train_dir), val_ds = io::image_folder(a.val_dir);
  KILN_CHECK(!phases.empty(), "train: no phases given; pass at least one kiln.Phase");
  TrainerOptions t;
  t.phases = std::move(phases);
  t.loader.batch_size = a.batch_size;
  t.loader.num_workers = a.num_workers;
  t.loader.seed = a.seed;
  t.loader.crop = static_cast<int>(a.image_size);
  t.loader.resize_shorter = resize_for_crop(a.image_size);
  t.loader.convention = io::parse_convention(a.convention);
  t.loader.augment = a.augment;
  t.feature_cache = a.feature_cache;
  t.model_dir = a.model_dir;
  t.run.arch = spec.name;
  t.run.image_size = a.image_size;
  t.run.classes = train_ds.classes;
  t.run.convention = t.loader.convention;
  t.run.seed = a.seed;
  TrainerHooks hooks;
  if (!on_epoch.is_none()) {
    hooks.on_epoch = [on_epoch](const EpochSummary& e) {
      nb::gil_scoped_acquire gil;
      on_epoch(epoch_dict(e));
    };
  }
  TrainResult r;
  {
    nb::gil_scoped_release release;
    Trainer trainer(model, spec, train_ds, val_ds, std::move(t), std::move(hooks));
    r = trainer.run(std::nullopt);
  }
  nb::dict d = eval_dict(r.val);
  d["finished"] = r.finished;
  d["last_checkpoint"] = r.last_checkpoint;
  return d;
}

}  // namespace

void bind_train(nb::module_& m) {
  nb::class_<Phase>(m, "Phase", "One phase of a recipe: what trains (Module.freeze patterns; everything else is "
                                "frozen), learning rate, epochs, SGD momentum, weight decay.")
      .def("__init__",
           [](Phase* self, std::string name, std::vector<std::string> train, double lr, int64_t epochs,
              double momentum, double weight_decay, bool linear_probe) {
             new (self) Phase{std::move(name), std::move(train), lr, nullptr, epochs, momentum, weight_decay,
                              linear_probe ? HeadInit::linear_probe : HeadInit::as_is};
           },
           arg("name"), arg("train") = std::vector<std::string>{}, arg("lr") = 1e-3, arg("epochs") = 1,
           arg("momentum") = 0.0, arg("weight_decay") = 0.0, arg("linear_probe") = false)
      .def_rw("name", &Phase::name)
      .def_rw("train", &Phase::train_patterns)
      .def_rw("lr", &Phase::lr)
      .def_rw("epochs", &Phase::epochs)
      .def_rw("momentum", &Phase::momentum)
      .def_rw("weight_decay", &Phase::weight_decay);
  m.def("train",
        [](Sequential& model, const std::string& arch, std::vector<Phase> phases, const std::string& train_dir,
           const std::string& val_dir, const std::string& model_dir, int64_t batch_size, int64_t image_size,
           int num_workers, uint64_t seed, bool augment, const std::string& convention, bool feature_cache,
           nb::object on_epoch) {
          return train(model, arch, std::move(phases),
                       TrainArgs{train_dir, val_dir, model_dir, convention, batch_size, image_size, num_workers,
                                 seed, augment, feature_cache},
                       std::move(on_epoch));
        },
        arg("model"), arg("arch"), arg("phases"), arg("train_dir"), arg("val_dir"), arg("model_dir"),
        arg("batch_size") = 32, arg("image_size") = 224, arg("num_workers") = 2, arg("seed") = 0,
        arg("augment") = true, arg("convention") = "torchvision_rgb", arg("feature_cache") = true,
        arg("on_epoch") = nb::none(),
        "Trains `model` (built by kiln.build_model(arch, ...)) through `phases` on folder data sets "
        "(<dir>/<class>/*.jpg), checkpointing into model_dir; on_epoch(dict) after each epoch. Returns the "
        "last validation {loss, acc, images} with finished and last_checkpoint.");
}

}  // namespace kiln::python
