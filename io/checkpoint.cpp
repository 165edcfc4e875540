// Checkpoint files of a model directory (see checkpoint.h for the layout): written through
// io/atomic_file, verified by the per-tensor checksums of io/weights.
#include "io/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "io/crc32c.h"
#include "io/hdf5.h"
#include "io/transforms.h"

namespace fs = std::filesystem;

namespace kiln::io {

namespace {

// 2: optimizer datasets carry their CRC32C (kChecksumAttribute, io/weights.h). A state file
// without a state_format_version attribute is version 1 and is read unchecked.
// 3: frozen_file and frozen_digest; the weights file holds what trains (and the buffers).
constexpr int64_t kStateFormatVersion = 3;
constexpr int64_t kFirstFrozenFileVersion = 3;

int64_t state_version(const h5::Group& root) {
  if (!root.has_attribute("state_format_version")) return 1;
  const int64_t v = root.int_attribute("state_format_version");
  KILN_CHECK(v >= 1 && v <= kStateFormatVersion, "checkpoint '", root.file(), "' has state_format_version ", v,
             "; this kiln reads versions 1..", kStateFormatVersion, " (written by a newer kiln?)");
  return v;
}

// A kiln::Error's text on one line (an import lists its problems on further lines).
std::string one_line(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\n') {
      out += text[i];
      continue;
    }
    out += "; ";
    while (i + 1 < text.size() && text[i + 1] == ' ') ++i;
  }
  return out;
}

std::string stem_for(int64_t epoch, int64_t batches) {
  char buf[48];
  if (batches == 0) std::snprintf(buf, sizeof buf, "ckpt-%06lld", static_cast<long long>(epoch));
  else std::snprintf(buf, sizeof buf, "ckpt-%06lld-%06lld", static_cast<long long>(epoch), static_cast<long long>(batches));
  return buf;
}

// HDF5 attribute names: optimizer state names ("vgg16/fc8/weight/momentum") with '/' kept out.
std::string attr_key(const std::string& name) {
  std::string k = name;
  std::replace(k.begin(), k.end(), '/', '|');
  return "int:" + k;
}

// An optimizer's kind and settings (OptimizerSetting), beside its state: absent in checkpoints
// written before 2026-12-04, which restore unchecked.
constexpr const char* kOptimizerKindAttr = "optimizer_kind";
std::string setting_key(const std::string& name) { return "optimizer_setting:" + name; }

std::string fmt_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// The inverse of fmt_double; anything else in the file is a kiln::Error (std::stod would
// throw std::invalid_argument, which no caller expects).
double parse_double(const h5::Group& root, const std::string& name) {
  const std::string text = root.string_attribute(name);
  char* end = nullptr;
  const double v = text.empty() ? 0.0 : std::strtod(text.c_str(), &end);
  KILN_CHECK(!text.empty() && end == text.c_str() + text.size(), "checkpoint '", root.file(), "': attribute '", name,
             "' should be a number, found '", text.substr(0, 64), "'");
  return v;
}

// Refuses values no run writes: on load before the app sizes a model or loops from them
// (`where` "checkpoint 'F'"), on save before a checkpoint its own loader would refuse is
// written (`where` "save_checkpoint"); `why` ends each message.
void check_meta(const CheckpointMeta& m, const std::string& where, const std::string& why) {
  auto in = [&](const char* what, int64_t v, int64_t lo, int64_t hi) {
    KILN_CHECK(v >= lo && v <= hi, where, ": ", what, " is ", v, ", expected ", lo, "..", hi, " (", why, ")");
  };
  // Any crop the loader takes (io/transforms.h kMaxImageSize): vgg_finetune checks its own
  // --image-size rule, and research code may train other sizes.
  in("image_size", m.image_size, 1, kMaxImageSize);
  in("phase", m.phase, 1, 64);  // a trainer's phases (vgg_finetune has 2)
  for (const auto& [what, v] : {std::pair<const char*, int64_t>{"epochs_done", m.epochs_done},
                                {"batches_done", m.batches_done}, {"global_step", m.global_step},
                                {"epoch_correct", m.epoch_correct}, {"epoch_seen", m.epoch_seen},
                                {"epoch_steps", m.epoch_steps}})
    in(what, v, 0, int64_t{1} << 48);
  in("the number of classes", static_cast<int64_t>(m.classes.size()), 1, 1 << 20);
  const std::string& w = m.weights_file;
  KILN_CHECK(!w.empty() && w.find('/') == std::string::npos && w != "." && w != "..", where, ": weights_file '", w,
             "' must be a file name inside the model directory");
  const std::string& z = m.frozen_file;
  KILN_CHECK(z.empty() || (z.find('/') == std::string::npos && z != "." && z != ".." && z != w), where,
             ": frozen_file '", z, "' must be a file name inside the model directory other than its weights file");
}

void check_meta(const CheckpointMeta& m, const std::string& file) {
  check_meta(m, "checkpoint '" + file + "'", "corrupt or not written by kiln?");
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Frozen files: frozen-phaseP-DDDDDDDD.weights.h5.
bool is_frozen_name(const std::string& n) { return n.rfind("frozen-", 0) == 0 && ends_with(n, ".weights.h5"); }

// Adds one tensor (name, CRC32C) to a digest.
uint32_t digest_add(uint32_t digest, const std::string& name, uint32_t crc) {
  digest = crc32c_extend(digest, name.data(), name.size() + 1);  // with its '\0': names stay apart
  const unsigned char le[4] = {static_cast<unsigned char>(crc), static_cast<unsigned char>(crc >> 8),
                               static_cast<unsigned char>(crc >> 16), static_cast<unsigned char>(crc >> 24)};
  return crc32c_extend(digest, le, sizeof le);
}

// (name, stored CRC32C) of every dataset below `g`; kiln's files are model/layer/tensor deep.
void stored_checksums(const h5::Group& g, const std::string& prefix, std::map<std::string, uint32_t>& out, int depth) {
  KILN_CHECK(depth < 16 && out.size() < (1u << 20), "weights file '", g.file(), "': groups nested too deep at '",
             prefix, "' (corrupt file?)");
  for (const std::string& child : g.children()) {
    const std::string rel = prefix.empty() ? child : prefix + "/" + child;
    if (g.is_group(child)) {
      stored_checksums(g.group(child), rel, out, depth + 1);
    } else if (g.is_dataset(child)) {
      const h5::Dataset ds = g.dataset(child);
      KILN_CHECK(ds.has_attribute(kChecksumAttribute), "file '", g.file(), "' is corrupt: tensor '", rel,
                 "' has no '", kChecksumAttribute, "' checksum, which kiln writes on every tensor of a frozen file");
      out[rel] = static_cast<uint32_t>(ds.int_attribute(kChecksumAttribute));
    }
  }
}

// The file at `path` (`what`: "frozen file", "weights file") is the one the state recorded.
void check_identity(const CheckpointInfo& c, const char* what, const std::string& path, uint32_t recorded) {
  const uint32_t have = weights_digest_of(path);
  char buf[96];
  std::snprintf(buf, sizeof buf, "digest 0x%08x, the checkpoint was written with 0x%08x", have, recorded);
  KILN_CHECK(have == recorded, what, " '", path, "' is not the one checkpoint '", c.state_path, "' was written with (",
             buf, "); it was replaced or changed after kiln wrote it (another run's file?)");
}

// The files of `c` are the ones its state recorded (a weights digest of 0: not recorded).
void check_identities(const CheckpointInfo& c) {
  if (c.meta.weights_digest != 0) check_identity(c, "weights file", c.weights_path, c.meta.weights_digest);
  if (!c.frozen_path.empty()) check_identity(c, "frozen file", c.frozen_path, c.meta.frozen_digest);
}

}  // namespace

bool is_checkpoint_store_name(const std::string& n) { return n.rfind("ckpt-", 0) == 0 || n.rfind("frozen-", 0) == 0; }

bool is_checkpoint_state_name(const std::string& n) {
  const std::string_view suffix = ".state.h5";
  return n.rfind("ckpt-", 0) == 0 && n.size() > 5 + suffix.size() && n.ends_with(suffix);
}

bool is_run_temporary(const std::string& n, const std::vector<std::string>& run_files) {
  if (!is_temporary_name(n)) return false;
  const std::string target = n.substr(0, n.rfind(".tmp"));
  return is_checkpoint_store_name(target) || std::find(run_files.begin(), run_files.end(), target) != run_files.end();
}

std::vector<std::string> remove_stale_temporaries(const std::string& model_dir,
                                                  const std::vector<std::string>& run_files) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(model_dir, ec)) {
    const std::string n = e.path().filename().string();
    if (is_run_temporary(n, run_files) && e.is_regular_file(ec)) {
      std::error_code rec;
      if (fs::remove(e.path(), rec)) removed.push_back(n);
    }
  }
  std::sort(removed.begin(), removed.end());
  return removed;
}

namespace {

// weights_digest_of's value for named tensors (any device and float dtype).
uint32_t digest_of(const std::vector<std::pair<std::string, const Tensor*>>& tensors) {
  std::map<std::string, uint32_t> crcs;
  for (const auto& [name, tensor] : tensors) {
    const Tensor host = tensor->cpu().to(DType::f32);
    crcs[name] = tensor_checksum(host.data<float>(), static_cast<size_t>(host.numel()));
  }
  uint32_t digest = 0;
  for (const auto& [name, crc] : crcs) digest = digest_add(digest, name, crc);
  return digest;
}

}  // namespace

uint32_t weights_digest_of(Module& model, const std::function<bool(const std::string&)>& select) {
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  for (const ParameterRef& p : model.parameters())
    if (select(p.name)) tensors.emplace_back(p.name, p.tensor);
  return digest_of(tensors);
}

uint32_t weights_digest_of(const std::string& weights_path) {
  const h5::File f = h5::File::open_read(weights_path);
  std::map<std::string, uint32_t> crcs;
  stored_checksums(f.root(), "", crcs, 0);
  uint32_t digest = 0;
  for (const auto& [name, crc] : crcs) digest = digest_add(digest, name, crc);
  return digest;
}

namespace {

// The state file's attributes (read back by read_checkpoint_meta).
void write_meta(h5::Group& root, const CheckpointMeta& meta) {
  root.set_string_attribute("kind", kCheckpointKind);
  root.set_int_attribute("state_format_version", kStateFormatVersion);
  root.set_int_attribute("epochs_done", meta.epochs_done);
  root.set_int_attribute("batches_done", meta.batches_done);
  root.set_string_attribute("epoch_loss_sum", fmt_double(meta.epoch_loss_sum));
  root.set_int_attribute("epoch_correct", meta.epoch_correct);
  root.set_int_attribute("epoch_seen", meta.epoch_seen);
  root.set_int_attribute("epoch_steps", meta.epoch_steps);
  root.set_int_attribute("global_step", meta.global_step);
  root.set_int_attribute("phase", meta.phase);
  root.set_string_attribute("val_loss", fmt_double(meta.val_loss));
  root.set_string_attribute("val_acc", fmt_double(meta.val_acc));
  root.set_string_attribute("arch", meta.arch);
  root.set_string_attribute("head", meta.head);
  root.set_int_attribute("adaptive_pool", meta.adaptive_pool ? 1 : 0);
  root.set_string_attribute("train_from", meta.train_from);
  root.set_string_attribute("precision", meta.precision);
  root.set_int_attribute("image_size", meta.image_size);
  root.set_string_list_attribute("classes", meta.classes);
  root.set_string_attribute("convention", convention_name(meta.convention));
  // uint64 values go through their bit pattern: HDF5 int attributes are int64.
  root.set_int_attribute("seed", static_cast<int64_t>(meta.seed));
  root.set_int_attribute("data_size", meta.data_size);
  root.set_int_attribute("data_digest", static_cast<int64_t>(meta.data_digest));
  root.set_int_attribute("batch_size", meta.batch_size);
  if (meta.loader_seed) root.set_int_attribute("loader_seed", static_cast<int64_t>(*meta.loader_seed));
  if (meta.shuffle) root.set_int_attribute("shuffle", *meta.shuffle ? 1 : 0);
  root.set_int_attribute("init_gen_seed", static_cast<int64_t>(meta.init_gen.seed));
  root.set_int_attribute("init_gen_offset", static_cast<int64_t>(meta.init_gen.offset));
  root.set_int_attribute("dropout_gen_seed", static_cast<int64_t>(meta.dropout_gen.seed));
  root.set_int_attribute("dropout_gen_offset", static_cast<int64_t>(meta.dropout_gen.offset));
  root.set_string_attribute("weights_file", meta.weights_file);
  root.set_string_attribute("frozen_file", meta.frozen_file);
  root.set_int_attribute("frozen_digest", meta.frozen_digest);
  root.set_int_attribute("weights_digest", meta.weights_digest);
}

}  // namespace

namespace {

// Host float32 copies that share no memory with their sources (which go on training). From a
// GPU they go to pinned memory, queued without a wait per tensor, and wait() waits once for
// all of them. Into pageable memory the driver stages every byte through a pinned buffer of
// its own, one blocking copy per tensor, and a phase-2 VGG16 checkpoint copies 1.1 GB; the
// pinned blocks come back from the pinned cache at the next checkpoint (the same sizes).
class HostCopies {
 public:
  HostCopies() = default;
  HostCopies(const HostCopies&) = delete;
  HostCopies& operator=(const HostCopies&) = delete;
  // Until wait() returns, the copy of a GPU tensor may still be arriving.
  Tensor operator()(const Tensor& t) {
    if (t.device().is_cpu()) return t.dtype() == DType::f32 ? t.clone() : t.to(DType::f32);
    const Tensor src = t.to(DType::f32);  // a cast on the device, before the copy
    Tensor host;
    try {
      host = Tensor::empty(src.shape(), TensorOptions{DType::f32, Device::cpu(), true});
    } catch (const Error&) {
      return src.cpu();  // no page-locked memory to be had (a container's limit): the blocking copy
    }
    host.copy_from(src, /*non_blocking=*/true);
    if (std::find(devices_.begin(), devices_.end(), t.device()) == devices_.end()) devices_.push_back(t.device());
    return host;
  }
  // Waits for every copy made so far: before anything reads them.
  void wait() {
    for (const Device& d : devices_) synchronize(d);
    devices_.clear();
  }

 private:
  std::vector<Device> devices_;  // where copies were queued from
};

void prune_checkpoints(const std::string& model_dir, int keep_last);

// Named tensors as the (name, pointer) pairs digest_of and write_kiln_weights take.
std::vector<std::pair<std::string, const Tensor*>> refs(const std::vector<std::pair<std::string, Tensor>>& v) {
  std::vector<std::pair<std::string, const Tensor*>> out;
  for (const auto& [name, t] : v) out.emplace_back(name, &t);
  return out;
}

// The state file an image's checkpoint is written to (the file that makes it exist).
std::string state_path_of(const CheckpointImage& im) {
  return checkpoint_state_path(im.model_dir, im.meta.epochs_done, im.meta.batches_done);
}

}  // namespace

std::string checkpoint_state_path(const std::string& model_dir, int64_t epochs_done, int64_t batches_done) {
  return (fs::path(model_dir) / (stem_for(epochs_done, batches_done) + ".state.h5")).string();
}

FrozenImage::FrozenImage(const std::vector<std::pair<std::string, const Tensor*>>& tensors) {
  HostCopies host_copy;
  for (const auto& [name, t] : tensors) {
    host_.emplace_back(name, host_copy(*t));
    source_.emplace_back(*t);
  }
  host_copy.wait();
}

bool FrozenImage::holds(const std::vector<std::pair<std::string, const Tensor*>>& tensors) const {
  if (tensors.size() != source_.size()) return false;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].first != host_[i].first || !source_[i].unchanged(*tensors[i].second)) return false;
  }
  return true;
}

uint32_t FrozenImage::digest() const {
  std::call_once(digest_once_, [this] { digest_ = digest_of(refs(host_)); });
  return digest_;
}

std::string FrozenImage::file_on_disk() const {
  const std::lock_guard<std::mutex> lock(file_mu_);
  return file_;
}

void FrozenImage::set_file_on_disk(const std::string& path) const {
  const std::lock_guard<std::mutex> lock(file_mu_);
  file_ = path;
}

CheckpointImage take_checkpoint(const std::string& model_dir, Module& model, Optimizer& opt, CheckpointMeta meta,
                                int keep_last, std::shared_ptr<const FrozenImage> previous) {
  const NoGradGuard no_grad;  // copies, not graph nodes
  std::error_code ec;
  KILN_CHECK(fs::is_directory(model_dir, ec), "save_checkpoint: the model directory '", model_dir,
             "' does not exist or is not a directory; create it first");
  KILN_CHECK(keep_last >= 1, "save_checkpoint: keep_last must be 1 or more (the checkpoint being written is one), got ",
             keep_last);
  meta.weights_file = stem_for(meta.epochs_done, meta.batches_done) + ".weights.h5";
  // What the loader will refuse is refused now, not found at the resume.
  check_meta(meta, "save_checkpoint", "kiln's loader would refuse this checkpoint: fill CheckpointMeta as "
             "io/checkpoint.h describes, e.g. classes with the class names and image_size with the input crop");
  CheckpointImage im;
  im.model_dir = model_dir;
  im.keep_last = keep_last;
  im.model_name = model.name();
  // What the phase freezes goes to its own file, written once: it cannot change while the
  // phase runs, and a new digest (other values) means a new file, never one rewritten.
  std::set<std::string> frozen;
  for (const ParameterRef& p : model.parameters())
    if (!p.trainable) frozen.insert(p.name);
  meta.frozen_file.clear();
  meta.frozen_digest = 0;
  auto is_frozen = [&](const std::string& name) { return frozen.count(name) > 0; };
  // Their digest, and so the frozen file's name, is computed by write_checkpoint from these
  // copies: the training thread only copies, and only when the last copies are out of date.
  std::vector<std::pair<std::string, const Tensor*>> frozen_now;
  for (const ParameterRef& p : model.parameters())
    if (is_frozen(p.name)) frozen_now.emplace_back(p.name, p.tensor);
  if (!frozen_now.empty())
    im.frozen = previous && previous->holds(frozen_now) ? std::move(previous)
                                                         : std::make_shared<const FrozenImage>(frozen_now);
  // The weights file: what trains, and the buffers, in export_weights' order.
  HostCopies host_copy;
  for (const ParameterRef& p : model.parameters())
    if (!is_frozen(p.name)) im.weights.emplace_back(p.name, host_copy(*p.tensor));
  for (const BufferRef& b : model.buffers())
    if (!is_frozen(b.name)) im.weights.emplace_back(b.name, host_copy(*b.tensor));
  im.optimizer_kind = opt.kind();
  im.optimizer_settings = opt.settings();
  for (const OptimizerStateRef& st : opt.state())
    im.optimizer_state.emplace_back(st.name, st.tensor->dtype() == DType::i64 ? st.tensor->cpu().clone()
                                                                               : host_copy(*st.tensor));
  host_copy.wait();
  im.meta = std::move(meta);
  return im;
}

std::string write_checkpoint(const CheckpointImage& im) {
  const std::string& model_dir = im.model_dir;
  CheckpointMeta meta = im.meta;
  if (im.frozen) {
    meta.frozen_digest = im.frozen->digest();
    char name[64];
    std::snprintf(name, sizeof name, "frozen-phase%d-%08x.weights.h5", meta.phase, meta.frozen_digest);
    meta.frozen_file = name;
    const std::string frozen_path = (fs::path(model_dir) / meta.frozen_file).string();
    if (im.frozen->file_on_disk() != frozen_path) {
      // A file of this name from before (a resume, a run started over): its name and digest
      // attribute say which values it should hold, not that its data still do, so every
      // tensor is read and checked once; a damaged one is written again.
      bool have = false;
      try {
        have = fs::exists(frozen_path) && weights_digest_of(frozen_path) == meta.frozen_digest;
        if (have) verify_weights(frozen_path);
      } catch (const Error&) {
        have = false;  // unreadable or damaged: written again
      }
      if (!have) write_kiln_weights(frozen_path, im.model_name, meta.convention, refs(im.frozen->host()));  // atomic
      im.frozen->set_file_on_disk(frozen_path);
    }
  }
  const std::string weights_path = (fs::path(model_dir) / meta.weights_file).string();
  write_kiln_weights(weights_path, im.model_name, meta.convention, refs(im.weights));
  meta.weights_digest = weights_digest_of(weights_path);  // the checksums it was just written with

  const std::string path = state_path_of(im);
  write_atomic(path, [&](const std::string& tmp) {
    h5::File f = h5::File::create(tmp);
    h5::Group root = f.root();
    write_meta(root, meta);
    root.set_string_attribute(kOptimizerKindAttr, im.optimizer_kind);
    for (const OptimizerSetting& o : im.optimizer_settings)
      root.set_string_attribute(setting_key(o.name), fmt_double(o.value));
    for (const auto& [name, host] : im.optimizer_state) {
      if (host.dtype() == DType::i64) {
        root.set_int_attribute(attr_key(name), static_cast<int64_t>(host.item()));
      } else {
        const std::vector<float> v = host.to_vector<float>();
        write_checksummed(root, "optimizer/" + name, host.shape().dims(), v.data());
      }
    }
    f.close();
  });
  prune_checkpoints(model_dir, im.keep_last);
  return path;
}

namespace {

// Keeps the last `keep_last` and the best by validation accuracy (the earliest of equals),
// and removes orphans, stale temporaries and frozen files no checkpoint names.
void prune_checkpoints(const std::string& model_dir, int keep_last) {
  std::error_code ec;
  std::vector<CheckpointInfo> all = list_checkpoints(model_dir);
  size_t best = 0;
  for (size_t i = 0; i < all.size(); ++i)
    if (all[i].meta.val_acc > all[best].meta.val_acc) best = i;
  for (size_t i = 0; i + static_cast<size_t>(keep_last) < all.size(); ++i) {
    if (i == best) continue;
    fs::remove(all[i].state_path, ec);  // state first: a checkpoint stops existing before its weights go
    fs::remove(all[i].weights_path, ec);
  }
  // Orphan weights files (a run killed between the two writes) and stale temporaries.
  for (const auto& e : fs::directory_iterator(model_dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("ckpt-", 0) != 0) continue;
    const bool tmp_file = is_temporary_name(n);
    const std::string suffix = ".weights.h5";
    bool orphan = false;
    if (n.size() > suffix.size() && n.substr(n.size() - suffix.size()) == suffix) {
      const std::string state = n.substr(0, n.size() - suffix.size()) + ".state.h5";
      orphan = !fs::exists(fs::path(model_dir) / state);
    }
    if (tmp_file || orphan) fs::remove(e.path(), ec);
  }
  // Frozen files no remaining checkpoint names (a finished phase's, or one left by a kill
  // before its checkpoint's state file was written).
  std::set<std::string> named;
  for (const CheckpointInfo& c : list_checkpoints(model_dir)) named.insert(c.meta.frozen_file);
  for (const auto& e : fs::directory_iterator(model_dir, ec)) {
    const std::string n = e.path().filename().string();
    if (is_frozen_name(n) && !named.count(n)) fs::remove(e.path(), ec);
  }
}

}  // namespace

std::string save_checkpoint(const std::string& model_dir, Module& model, Optimizer& opt, CheckpointMeta meta,
                            int keep_last) {
  return write_checkpoint(take_checkpoint(model_dir, model, opt, std::move(meta), keep_last));
}

CheckpointWriter::~CheckpointWriter() {
  try {
    wait();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: %s\n", e.what());
  }
}

std::string CheckpointWriter::submit(CheckpointImage image) {
  wait();
  path_ = state_path_of(image);
  thread_ = std::thread([this, im = std::move(image)] {
    try {
      write_checkpoint(im);
    } catch (...) {
      error_ = std::current_exception();
    }
  });
  return path_;
}

std::string CheckpointWriter::wait() {
  if (!thread_.joinable()) return "";
  thread_.join();  // orders the thread's error_ before this read
  const std::string path = std::move(path_);
  path_.clear();
  if (!error_) return path;
  const std::exception_ptr e = std::exchange(error_, nullptr);
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    KILN_FAIL("writing checkpoint '", path, "' (on the background writer) failed: ", x.what(),
              "; the checkpoints written before it are kept");
  }
}

CheckpointMeta read_checkpoint_meta(const std::string& state_path) {
  const h5::File f = h5::File::open_read(state_path);
  return read_checkpoint_meta(f.root());
}

CheckpointMeta read_checkpoint_meta(const h5::Group& root) {
  const std::string& state_path = root.file();
  KILN_CHECK(root.has_attribute("kind") && root.string_attribute("kind") == kCheckpointKind, "'", state_path,
             "' is not a kiln checkpoint state file (its 'kind' attribute is not '", kCheckpointKind, "')");
  CheckpointMeta m;
  m.epochs_done = root.int_attribute("epochs_done");
  if (root.has_attribute("batches_done")) {  // absent in checkpoints written before mid-epoch ones
    m.batches_done = root.int_attribute("batches_done");
    m.epoch_loss_sum = parse_double(root, "epoch_loss_sum");
    m.epoch_correct = root.int_attribute("epoch_correct");
    m.epoch_seen = root.int_attribute("epoch_seen");
    m.epoch_steps = root.int_attribute("epoch_steps");
  }
  m.global_step = root.int_attribute("global_step");
  m.phase = static_cast<int>(root.int_attribute("phase"));
  m.val_loss = parse_double(root, "val_loss");
  m.val_acc = parse_double(root, "val_acc");
  m.arch = root.string_attribute("arch");
  if (root.has_attribute("head")) m.head = root.string_attribute("head");
  if (root.has_attribute("adaptive_pool")) m.adaptive_pool = root.int_attribute("adaptive_pool") != 0;
  if (root.has_attribute("train_from")) m.train_from = root.string_attribute("train_from");
  if (root.has_attribute("precision")) m.precision = root.string_attribute("precision");
  m.image_size = root.int_attribute("image_size");
  m.classes = root.string_list_attribute("classes");
  m.convention = parse_convention(root.string_attribute("convention"));
  m.seed = static_cast<uint64_t>(root.int_attribute("seed"));
  if (root.has_attribute("data_digest")) {
    m.data_size = root.int_attribute("data_size");
    m.data_digest = static_cast<uint32_t>(root.int_attribute("data_digest"));
  }
  if (root.has_attribute("batch_size")) m.batch_size = root.int_attribute("batch_size");
  if (root.has_attribute("loader_seed")) m.loader_seed = static_cast<uint64_t>(root.int_attribute("loader_seed"));
  if (root.has_attribute("shuffle")) m.shuffle = root.int_attribute("shuffle") != 0;
  m.init_gen = {static_cast<uint64_t>(root.int_attribute("init_gen_seed")),
                static_cast<uint64_t>(root.int_attribute("init_gen_offset"))};
  m.dropout_gen = {static_cast<uint64_t>(root.int_attribute("dropout_gen_seed")),
                   static_cast<uint64_t>(root.int_attribute("dropout_gen_offset"))};
  m.weights_file = root.string_attribute("weights_file");
  if (state_version(root) >= kFirstFrozenFileVersion) {
    m.frozen_file = root.string_attribute("frozen_file");
    const int64_t d = root.int_attribute("frozen_digest");
    KILN_CHECK(d >= 0 && d <= int64_t{0xFFFFFFFF}, "checkpoint '", state_path, "': frozen_digest ", d,
               " is no 32-bit CRC (corrupt or not written by kiln?)");
    m.frozen_digest = static_cast<uint32_t>(d);
  }
  if (root.has_attribute("weights_digest")) {
    const int64_t d = root.int_attribute("weights_digest");
    KILN_CHECK(d >= 0 && d <= int64_t{0xFFFFFFFF}, "checkpoint '", state_path, "': weights_digest ", d,
               " is no 32-bit CRC (corrupt or not written by kiln?)");
    m.weights_digest = static_cast<uint32_t>(d);
  }
  check_meta(m, state_path);
  return m;
}

namespace {

// A setting as a person wrote it: the shortest text that reads back as the same float.
std::string fmt_setting(double v) {
  char buf[64];
  for (int digits = 6; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (static_cast<float>(std::strtod(buf, nullptr)) == static_cast<float>(v)) break;
  }
  return buf;
}

// The saved settings `opt` does not share, as "momentum 0.9 saved, 0.5 here"; refuses
// another kind of optimizer outright (its state means something else).
std::string changed_settings(const h5::Group& root, const Optimizer& opt) {
  std::string changed;
  if (!root.has_attribute(kOptimizerKindAttr)) return changed;  // written before settings were recorded
  const std::string kind = root.string_attribute(kOptimizerKindAttr);
  KILN_CHECK(kind == opt.kind(), "checkpoint '", root.file(), "' holds the state of ", kind.substr(0, 64),
             ", but it is being restored into ", opt.kind(), "; build the optimizer it was saved with");
  for (const OptimizerSetting& o : opt.settings()) {
    const std::string key = setting_key(o.name);
    if (!root.has_attribute(key)) continue;
    const double saved = parse_double(root, key);
    if (saved != o.value)
      changed += (changed.empty() ? "" : "; ") + o.name + " " + fmt_setting(saved) + " saved, " + fmt_setting(o.value) +
                 " here";
  }
  return changed;
}

}  // namespace

void restore_optimizer(const std::string& state_path, Optimizer& opt, bool allow_changed_settings) {
  const h5::File f = h5::File::open_read(state_path);
  restore_optimizer(f.root(), opt, allow_changed_settings);
}

void restore_optimizer(const h5::Group& root, Optimizer& opt, bool allow_changed_settings) {
  const std::string& state_path = root.file();
  const bool verify = state_version(root) >= 2;
  const std::string changed = changed_settings(root, opt);
  KILN_CHECK(changed.empty() || allow_changed_settings, "checkpoint '", state_path, "' was saved by ", opt.kind(),
             " with other settings (", changed, "); build the optimizer with the saved settings to "
             "resume that run (kiln.train: the Phase's momentum), or allow changed settings (vgg_finetune train "
             "--allow-changed-config; TrainerOptions::allow_changed_optimizer_settings)");
  for (const OptimizerStateRef& s : opt.state()) {
    if (s.tensor->dtype() == DType::i64) {
      const std::string key = attr_key(s.name);
      KILN_CHECK(root.has_attribute(key), "checkpoint '", state_path, "' has no optimizer entry '", s.name, "'");
      s.tensor->copy_from(Tensor::from_vector(std::vector<int64_t>{root.int_attribute(key)}, s.tensor->shape()));
    } else {
      const std::string rel = "optimizer/" + s.name;
      // A state the saved settings did not make (momentum 0 then, 0.9 now) starts at zero, as
      // in a new optimizer, when changed settings are allowed.
      if (!changed.empty() && !root.is_dataset(rel)) {
        s.tensor->copy_from(Tensor::zeros(s.tensor->shape(), TensorOptions{s.tensor->dtype(), s.tensor->device()}));
        continue;
      }
      KILN_CHECK(root.is_dataset(rel), "checkpoint '", state_path, "' has no optimizer entry '", s.name,
                 "' (the optimizer holds parameters or settings the saved one did not: does this phase train other layers "
                 "than the run's, or with another momentum?)");
      const h5::Dataset ds = root.dataset(rel);
      KILN_CHECK(ds.shape() == s.tensor->shape().dims(), "checkpoint '", state_path, "': optimizer entry '", s.name,
                 "' has shape ", h5::shape_str(ds.shape()), ", expected ", h5::shape_str(s.tensor->shape().dims()));
      const std::vector<float> v = read_checksummed(root, rel, verify);
      s.tensor->copy_from(Tensor::from_vector(v, s.tensor->shape()));
    }
  }
}

std::vector<CheckpointInfo> list_checkpoints(const std::string& model_dir, std::vector<DamagedCheckpoint>* damaged) {
  std::vector<CheckpointInfo> out;
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) return out;
  const std::string suffix = ".state.h5";
  for (const auto& e : fs::directory_iterator(model_dir, ec)) {
    const std::string n = e.path().filename().string();
    if (!is_checkpoint_state_name(n)) continue;
    CheckpointInfo info;
    info.state_path = e.path().string();
    // Unreadable, or its weights gone: not a checkpoint we can resume from.
    const std::string conventional = info.state_path.substr(0, info.state_path.size() - suffix.size()) + ".weights.h5";
    try {
      info.meta = read_checkpoint_meta(info.state_path);
    } catch (const Error& err) {
      if (damaged) damaged->push_back({info.state_path, conventional, "", one_line(err.message())});
      continue;
    }
    info.weights_path = (fs::path(model_dir) / info.meta.weights_file).string();
    if (!fs::exists(info.weights_path)) {
      if (damaged)
        damaged->push_back({info.state_path, "", "", "state file '" + info.state_path + "' names weights file '" +
                                                     info.weights_path + "', which is missing"});
      continue;
    }
    if (!info.meta.frozen_file.empty()) {
      info.frozen_path = (fs::path(model_dir) / info.meta.frozen_file).string();
      if (!fs::exists(info.frozen_path)) {
        if (damaged)
          damaged->push_back({info.state_path, info.weights_path, "",
                              "state file '" + info.state_path + "' names frozen file '" + info.frozen_path +
                                  "', which is missing"});
        continue;
      }
    }
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointInfo& a, const CheckpointInfo& b) {
              return a.meta.epochs_done != b.meta.epochs_done ? a.meta.epochs_done < b.meta.epochs_done
                                                              : a.meta.batches_done < b.meta.batches_done;
            });
  return out;
}

std::optional<CheckpointInfo> latest_checkpoint(const std::string& model_dir) {
  return latest_checkpoint(list_checkpoints(model_dir));
}

std::optional<CheckpointInfo> best_checkpoint(const std::string& model_dir) {
  return best_checkpoint(list_checkpoints(model_dir));
}

std::optional<CheckpointInfo> latest_checkpoint(const std::vector<CheckpointInfo>& all) {
  if (all.empty()) return std::nullopt;
  return all.back();
}

std::optional<CheckpointInfo> best_checkpoint(const std::vector<CheckpointInfo>& all) {
  if (all.empty()) return std::nullopt;
  size_t best = 0;
  for (size_t i = 0; i < all.size(); ++i)
    if (all[i].meta.val_acc > all[best].meta.val_acc) best = i;
  return all[best];
}

namespace {

void verify_own_files(const CheckpointInfo& c) {
  {
    const h5::File f = h5::File::open_read(c.state_path);
    const h5::Group root = f.root();
    if (state_version(root) >= 2) verify_checksums(root);
  }
  verify_weights(c.weights_path);
  if (c.meta.weights_digest != 0) check_identity(c, "weights file", c.weights_path, c.meta.weights_digest);
}

void verify_frozen(const CheckpointInfo& c) {
  if (c.frozen_path.empty()) return;
  verify_weights(c.frozen_path);
  check_identity(c, "frozen file", c.frozen_path, c.meta.frozen_digest);
}

}  // namespace

void verify_checkpoint(const CheckpointInfo& c) {
  verify_own_files(c);
  verify_frozen(c);
}

void load_checkpoint_weights(Module& model, const CheckpointInfo& c) {
  check_identities(c);  // before anything is loaded
  if (c.frozen_path.empty()) {
    import_weights(model, c.weights_path);
    return;
  }
  // Each import is all or nothing, but there are two: a model built for other classes took the frozen
  // file's layers and then refused the weights file's head, and kiln.load_checkpoint's caller kept a
  // half-loaded model. The values from before are copied (for a moment, the model's size again) and put
  // back on any failure.
  std::vector<std::pair<Tensor*, Tensor>> before;
  for (const ParameterRef& p : model.parameters()) before.emplace_back(p.tensor, p.tensor->clone());
  for (const BufferRef& b : model.buffers()) before.emplace_back(b.tensor, b.tensor->clone());
  try {
    ImportOptions part;
    part.allow_missing = true;  // each file holds part; together they must hold everything
    std::set<std::string> loaded;
    for (const std::string& path : {c.frozen_path, c.weights_path})
      for (std::string& n : import_weights(model, path, part).loaded) loaded.insert(std::move(n));
    std::vector<std::string> missing;
    for (const ParameterRef& p : model.parameters())
      if (!loaded.count(p.name)) missing.push_back(p.name);
    for (const BufferRef& b : model.buffers())
      if (!loaded.count(b.name)) missing.push_back(b.name);
    KILN_CHECK(missing.empty(), "checkpoint '", c.state_path, "': neither its weights file '", c.weights_path,
               "' nor its frozen file '", c.frozen_path, "' holds '", missing.front(), "' (", missing.size(),
               " tensor(s) missing)");
  } catch (...) {
    for (auto& [tensor, value] : before) tensor->copy_from(value);
    throw;
  }
}

namespace {

// A checkpoint file that cannot be read (its permissions) is not damaged: a resume must not
// set it aside and train again from an older one, so it stops first, naming the file.
void check_store_readable(const std::string& model_dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(model_dir, ec)) {
    const std::string n = e.path().filename().string();
    if (!is_checkpoint_store_name(n) || !ends_with(n, ".h5") || !e.is_regular_file(ec)) continue;
    const std::string why = unreadable_reason(e.path().string());
    KILN_CHECK(why.empty(), "cannot read '", e.path().string(), "': ", why, "; the run's files are left as they are: ",
               "make them readable (chmod, chown) or run as their owner");
  }
}

}  // namespace

ResumeChoice newest_intact_checkpoint(const std::string& model_dir) {
  check_store_readable(model_dir);
  ResumeChoice r;
  const std::vector<CheckpointInfo> all = list_checkpoints(model_dir, &r.damaged);
  for (auto it = all.rbegin(); it != all.rend() && !r.checkpoint; ++it) {
    try {
      verify_own_files(*it);
    } catch (const Error& err) {
      r.damaged.push_back({it->state_path, it->weights_path, "", one_line(err.message())});
      continue;
    }
    try {
      verify_frozen(*it);
      r.checkpoint = *it;
    } catch (const Error& err) {
      r.damaged.push_back({it->state_path, it->weights_path, it->frozen_path, one_line(err.message())});
    }
  }
  // Newest first, by file name (ckpt-EEEEEE[-BBBBBB] sorts in training order without its suffix).
  auto stem = [](const DamagedCheckpoint& d) { return d.state_path.substr(0, d.state_path.rfind(".state.h5")); };
  std::sort(r.damaged.begin(), r.damaged.end(),
            [&](const DamagedCheckpoint& a, const DamagedCheckpoint& b) { return stem(a) > stem(b); });
  if (!r.checkpoint && !r.damaged.empty())
    KILN_FAIL("model directory '", model_dir, "' holds ", r.damaged.size(), " checkpoint(s) and none is intact (the ",
              "newest: ", r.damaged.front().reason, "); not starting over on top of them: move its ckpt-* and ",
              "frozen-* files elsewhere, or use a new --model-dir");
  return r;
}

CheckpointInfo choose_checkpoint(const std::string& model_dir, bool best, const std::string& best_option,
                                 const std::function<void(const std::string&)>& warn) {
  KILN_CHECK(fs::is_directory(model_dir), "model directory '", model_dir, "' ",
             fs::exists(model_dir) ? "is a file, not a folder: give the folder training wrote" : "does not exist");
  std::vector<DamagedCheckpoint> damaged;
  std::vector<CheckpointInfo> all = list_checkpoints(model_dir, &damaged);
  if (all.empty() && damaged.empty()) {
    const std::string writer = dir_lock_holder(model_dir);
    KILN_FAIL("model directory '", model_dir, "' holds no checkpoint ",
              writer.empty() ? std::string("(train into it first: vgg_finetune train or kiln.train)")
                             : "yet: a run (" + writer + ") is training into it and has not written its first one; "
                               "try again after its first epoch");
  }
  std::optional<CheckpointInfo> ck;
  while (!all.empty() && !ck) {
    const std::optional<CheckpointInfo> pick = best ? best_checkpoint(all) : latest_checkpoint(all);
    try {
      verify_checkpoint(*pick);
      ck = pick;
    } catch (const Error& e) {
      damaged.push_back({pick->state_path, pick->weights_path, "", e.message()});
      std::erase_if(all, [&](const CheckpointInfo& c) { return c.state_path == pick->state_path; });
    }
    if (best) break;
  }
  for (const DamagedCheckpoint& d : damaged) warn("checkpoint '" + d.state_path + "' cannot be loaded: " + d.reason);
  KILN_CHECK(!best || damaged.empty(), best_option, ": ", damaged.size(), " checkpoint(s) of '", model_dir,
             "' cannot be loaded (warnings above) and one may be the best: restore the files they name, or leave ",
             best_option, " out to use the latest checkpoint that loads");
  KILN_CHECK(ck, "model directory '", model_dir, "' holds ", damaged.size(),
             " checkpoint(s) and none can be loaded (warnings above): restore the files they name, or train again");
  if (!damaged.empty()) warn("using '" + ck->state_path + "', the latest checkpoint that can be loaded");
  return *ck;
}

CheckpointInfo choose_and_load_checkpoint(const std::string& model_dir, bool best, const std::string& best_option,
                                          const std::function<void(const std::string&)>& warn,
                                          const std::function<void(const CheckpointInfo&)>& load) {
  for (int attempt = 1;; ++attempt) {
    const CheckpointInfo ck = choose_checkpoint(model_dir, best, best_option, warn);
    try {
      load(ck);
      return ck;
    } catch (const Error&) {
      std::error_code ec;
      const bool gone = !fs::exists(ck.state_path, ec) || !fs::exists(ck.weights_path, ec) ||
                        (!ck.frozen_path.empty() && !fs::exists(ck.frozen_path, ec));
      if (!gone || attempt == 3) throw;
    }
  }
}

std::vector<std::string> set_aside(const DamagedCheckpoint& d) {
  std::vector<std::string> moved;
  for (const std::string& path : {d.state_path, d.weights_path, d.frozen_path}) {
    std::error_code ec;
    if (path.empty() || !fs::exists(path, ec)) continue;
    // Never over an earlier .corrupt file of the same name: that would delete it.
    std::string to = path + ".corrupt";
    for (int n = 1; fs::exists(to, ec); ++n) to = path + ".corrupt." + std::to_string(n);
    fs::rename(path, to, ec);
    KILN_CHECK(!ec, "cannot rename the damaged checkpoint file '", path, "' to '", to, "': ", ec.message());
    moved.push_back(fs::path(to).filename().string());
  }
  return moved;
}

}  // namespace kiln::io
