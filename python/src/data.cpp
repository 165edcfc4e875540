// kiln.Loader: the image pipeline (io/loader.h) as a Python iterable of (images, labels)
// kiln tensors -- NHWC float32 images as kiln's models take them, int64 labels -- so that a
// training loop in Python (or a PyTorch head, through DLPack, without copies) reads what
// vgg_finetune reads. One pass over it is one epoch; the next pass starts the next epoch.
// The GIL is released while a batch is waited for.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <nanobind/stl/filesystem.h>
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
  PyLoader() = default;
  // make_loader returns one by value (the atomics do not move by themselves).
  PyLoader(PyLoader&& o) noexcept
      : loader(std::move(o.loader)), served(o.served.load()), pass(o.pass.load()), epoch(o.epoch.load()),
        batch_size(o.batch_size), image_size(o.image_size), device(std::move(o.device)), mu(std::move(o.mu)) {}
  std::unique_ptr<io::Loader> loader;
  // Changed under `mu`; atomic so that epoch and the reprs read them without waiting for it.
  std::atomic<int64_t> served{0};  // batches of the current epoch taken from the loader; 0 after its end
  std::atomic<int64_t> pass{0};    // iter() calls: only the newest pass's iterator serves batches
  std::atomic<uint64_t> epoch{0};  // loader->epoch() after the last next(): the epoch being served
  int64_t batch_size = 0, image_size = 0;  // as given, for the repr
  std::string device;
  // Held (with the GIL released) around everything that reads or changes the loader and the
  // counters above: io::Loader is single-consumer, and two Python threads draining one pass
  // both got past the pass check while the GIL was released, so one took the next epoch's first
  // batch. A unique_ptr: make_loader returns a PyLoader by value.
  std::unique_ptr<std::mutex> mu = std::make_unique<std::mutex>();
};

// One pass over a Loader (what iter(loader) returns, as a DataLoader's iterator): it serves
// the rest of the epoch its pass started, and ends once a newer pass has begun.
struct LoaderPass {
  PyLoader* loader;
  int64_t pass;    // -1 once it ran to its epoch's end
  uint64_t epoch;  // the epoch it serves
};

// A string as Python quotes it.
std::string py_str(const std::string& s) { return nb::repr(nb::str(s.c_str(), s.size())).c_str(); }

// "kiln.Loader('data/train', 8 images in 2 classes, batch_size=4, image_size=32, epoch 0)":
// what it reads and serves, from what it holds (nothing is waited for).
std::string loader_repr(const PyLoader& p) {
  const io::Dataset& d = p.loader->dataset();
  return "kiln.Loader(" + py_str(d.root) + ", " + std::to_string(d.size()) + " images in " +
         std::to_string(d.classes.size()) + " classes, batch_size=" + std::to_string(p.batch_size) +
         ", image_size=" + std::to_string(p.image_size) + (p.device == "cpu" ? "" : ", device=" + py_str(p.device)) +
         ", epoch " + std::to_string(p.epoch.load()) + ")";
}

// "kiln.LoaderPass(epoch 0, 2 of 5 batches served)", "... ended)" or "... ended: a newer pass took over)".
std::string pass_repr(const LoaderPass& lp) {
  const PyLoader& p = *lp.loader;
  const std::string head = "kiln.LoaderPass(epoch " + std::to_string(lp.epoch);
  if (lp.pass < 0) return head + ", ended)";
  if (lp.pass != p.pass.load()) return head + ", ended: a newer pass took over)";
  return head + ", " + std::to_string(p.served.load()) + " of " + std::to_string(p.loader->batches_per_epoch()) +
         " batches served)";
}

PyLoader make_loader(const std::filesystem::path& root, int64_t batch_size, int64_t image_size, bool augment, bool shuffle,
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
  p.loader = std::make_unique<io::Loader>(io::image_folder(root.string()), o);
  p.epoch = p.loader->epoch();
  p.batch_size = batch_size;
  p.image_size = image_size;
  p.device = o.device.str();
  return p;
}

std::pair<Tensor, Tensor> next_batch(LoaderPass& lp) {
  PyLoader& p = *lp.loader;
  std::optional<io::Batch> b;
  {
    nb::gil_scoped_release unlocked;
    const std::lock_guard<std::mutex> lock(*p.mu);  // taken without the GIL: its holder may wait for a batch
    if (lp.pass == p.pass) {  // else a newer pass took over the loader, or this one ended
      // A batch whose every file failed to decode has no rows: skipped (a mean loss over it is NaN).
      for (;;) {
        b = p.loader->next();
        p.epoch = p.loader->epoch();
        if (!b) break;
        ++p.served;
        if (b->labels.numel() > 0) break;
      }
      if (!b) {
        p.served = 0;
        lp.pass = -1;  // ended: stays ended
      }
    }
  }
  if (!b) throw nb::stop_iteration();
  return {b->images, b->labels};
}

}  // namespace

void bind_data(nb::module_& m) {
  nb::class_<LoaderPass>(m, "LoaderPass", "One pass (epoch) over a kiln.Loader, as iter(loader) returns it.")
      .def("__iter__", [](nb::handle self) { return self; })
      .def("__next__", &next_batch)
      .def("__repr__", &pass_repr);
  nb::class_<PyLoader>(m, "Loader",
                       "Batches of an image folder (root/<class>/*.jpg|png|...) as (images, labels): images a "
                       "float32 kiln.Tensor [n, image_size, image_size, 3] (NHWC, the convention applied), labels "
                       "int64 [n] (class indices in `classes` order). Iterating gives one epoch; iterating again "
                       "gives the next (a new order when shuffle), also after a pass stopped early. One pass at a "
                       "time: a new iter() ends the one before (zip(loader, loader) yields nothing). Files that "
                       "fail to decode are skipped, so a batch may be short; one left with no image is not served "
                       "(len() counts it).")
      .def(nb::new_(&make_loader), arg("root"), arg("batch_size") = 32, arg("image_size") = 224,
           arg("augment") = false, arg("shuffle") = true, arg("seed") = 0, arg("num_workers") = 2,
           arg("convention") = "torchvision_rgb", arg("device") = "cpu", arg("drop_last") = false,
           "augment: random crops and flips (else the centre crop after resizing the shorter side to "
           "image_size * 256 / 224); convention: torchvision_rgb, caffe_bgr or tf_rgb.")
      // A pass stopped early (a break, a peek with next(iter(loader))) leaves its epoch
      // unfinished: a new pass first runs out that epoch's remaining batches, unread, so
      // that every pass starts an epoch of its own.
      .def("__iter__",
           [](PyLoader& p) {
             nb::gil_scoped_release unlocked;
             const std::lock_guard<std::mutex> lock(*p.mu);
             if (p.served > 0) {
               while (p.loader->next()) {
               }
               p.served = 0;
               p.epoch = p.loader->epoch();
             }
             return LoaderPass{&p, ++p.pass, p.epoch.load()};
           },
           nb::keep_alive<0, 1>(), "A pass over the next epoch.")
      .def("__len__", [](const PyLoader& p) { return p.loader->batches_per_epoch(); },
           "Batches per epoch.")
      .def_prop_ro("classes", [](const PyLoader& p) { return p.loader->dataset().classes; },
                   "Class names, sorted; label i is classes[i].")
      .def_prop_ro("epoch", [](const PyLoader& p) { return p.epoch.load(); }, "The epoch being served (0-based).")
      .def_prop_ro("num_images", [](const PyLoader& p) { return static_cast<int64_t>(p.loader->dataset().size()); },
                   "Image files found (a file that fails to decode is counted, and skipped when served).")
      .def("epoch_order", [](const PyLoader& p, uint64_t epoch) { return p.loader->epoch_order(epoch); },
           arg("epoch"), "The dataset indices of `epoch` in the order they are served.")
      .def("__repr__", &loader_repr);
}

}  // namespace kiln::python
