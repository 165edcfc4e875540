// kiln.Loader: the image pipeline (io/loader.h) as a Python iterable of (images, labels)
// kiln tensors -- NHWC float32 images as kiln's models take them, int64 labels -- so that a
// training loop in Python (or a PyTorch head, through DLPack, without copies) reads what
// vgg_finetune reads. One pass over it is one epoch; the next pass starts the next epoch.
// The GIL is released while a batch is waited for.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "io/dataset.h"
#include "io/loader.h"
#include "python/src/bindings.h"
#include "train/api.h"

namespace kiln::python {
namespace {

using nb::arg;

// A Loader over an image folder, with the epoch state Python's iteration protocol needs.
struct PyLoader {
  std::unique_ptr<io::Loader> loader;
  bool epoch_done = false;  // the last next() ended an epoch: the next pass starts the next one
};

PyLoader make_loader(const std::string& root, int64_t batch_size, int64_t image_size, bool augment, bool shuffle,
                     uint64_t seed, int num_workers, const std::string& convention, const std::string& device,
                     bool drop_last) {
  KILN_CHECK(batch_size >= 1, "kiln.Loader: batch_size must be >= 1, got ", batch_size);
  KILN_CHECK(image_size >= 1, "kiln.Loader: image_size must be >= 1, got ", image_size);
  io::LoaderOptions o;
  o.batch_size = batch_size;
  o.crop = static_cast<int>(image_size);
  o.resize_shorter = resize_for_crop(image_size);  // 256 for 224: the ImageNet recipe, as vgg_finetune
  o.augment = augment;
  o.shuffle = shuffle;
  o.seed = seed;
  o.num_workers = num_workers;
  o.convention = io::parse_convention(convention);
  o.device = device_from_name(device);
  o.drop_last = drop_last;
  o.warn = false;  // skipped files are counted in `skipped`, not printed from worker threads
  PyLoader p;
  p.loader = std::make_unique<io::Loader>(io::image_folder(root), o);
  return p;
}

}  // namespace

void bind_data(nb::module_& m) {
  nb::class_<PyLoader>(m, "Loader",
                       "Batches of an image folder (root/<class>/*.jpg|png|...) as (images, labels): images a "
                       "float32 kiln.Tensor [n, image_size, image_size, 3] (NHWC, the convention applied), labels "
                       "int64 [n] (class indices in `classes` order). Iterating gives one epoch; iterating again "
                       "gives the next (a new order when shuffle). Files that fail to decode are skipped.")
      .def(nb::new_(&make_loader), arg("root"), arg("batch_size") = 32, arg("image_size") = 224,
           arg("augment") = false, arg("shuffle") = true, arg("seed") = 0, arg("num_workers") = 2,
           arg("convention") = "torchvision_rgb", arg("device") = "cpu", arg("drop_last") = false,
           "augment: random crops and flips (else the centre crop after resizing the shorter side to "
           "image_size * 256 / 224); convention: torchvision_rgb, caffe_bgr or tf_rgb.")
      .def("__iter__", [](nb::handle self) { return self; })
      .def("__next__",
           [](PyLoader& p) -> std::pair<Tensor, Tensor> {
             p.epoch_done = false;
             std::optional<io::Batch> b;
             {
               nb::gil_scoped_release unlocked;
               b = p.loader->next();
             }
             if (!b) {
               p.epoch_done = true;
               throw nb::stop_iteration();
             }
             return {b->images, b->labels};
           })
      .def("__len__", [](const PyLoader& p) { return p.loader->batches_per_epoch(); },
           "Batches per epoch.")
      .def_prop_ro("classes", [](const PyLoader& p) { return p.loader->dataset().classes; })
      .def_prop_ro("epoch", [](const PyLoader& p) { return p.loader->epoch(); },
                   "The epoch being served (0-based).")
      .def_prop_ro("num_images", [](const PyLoader& p) { return static_cast<int64_t>(p.loader->dataset().size()); })
      .def("epoch_order", [](const PyLoader& p, uint64_t epoch) { return p.loader->epoch_order(epoch); },
           arg("epoch"), "The dataset indices of `epoch` in the order they are served.");
}

}  // namespace kiln::python
