// Checkpoints of a training run, in its model directory: any Module, any Optimizer, and the
// run's position and settings (CheckpointMeta). Moved down from apps/vgg_finetune so that
// every trainer (train/, research code) writes and resumes the same files. Each is two files:
// ckpt-EEEEEE[-BBBBBB].weights.h5, an ordinary kiln weights file (export_weights, so any kiln
// program can import it), and ckpt-EEEEEE[-BBBBBB].state.h5 with the optimizer state, epoch,
// step, phase, generator and data-order state (EEEEEE: epochs done; BBBBBB: batches done in
// the next epoch, for a checkpoint taken mid-epoch by --checkpoint-every). Both files are
// written atomically (io/atomic_file.h: temporary, fsync, rename), weights first; the
// state file is what makes a checkpoint exist: a kill at any moment leaves at worst an orphan
// (complete) weights file or a *.tmp file, never a checkpoint pointing at a half-written one.
// A run starting on the directory removes stale *.tmp files (remove_stale_temporaries).
//
// What a phase freezes does not change while it runs, so it is written once per phase, not
// per checkpoint (state format 3): frozen-phaseP-DDDDDDDD.weights.h5, an ordinary kiln
// weights file of the frozen parameters (DDDDDDDD: their digest, frozen_digest), written
// before the phase's first checkpoint; each checkpoint's weights file then holds only the
// trainable parameters and the buffers, and its state file names the frozen file that
// completes it (frozen_file, frozen_digest; a frozen file with another digest is refused).
// Pruning keeps a frozen file while a kept checkpoint names it. Checkpoints of versions 1
// and 2 (one full weights file each) still load and resume.
//
// Both files prove they are intact: every tensor in them carries its CRC32C (weights: kiln
// format 2, docs/weights_format.md; state: root attribute state_format_version 2 or 3, each
// optimizer/<name> dataset with a crc32c attribute), checked on every load. State files
// without state_format_version (version 1) and weights files of kiln format 1 were written
// before checksums and load unchecked. `train` resumes from the newest checkpoint that
// verifies (newest_intact_checkpoint); newer damaged ones are renamed to *.corrupt, kept
// for inspection and never read or pruned again (set_aside).
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/kiln.h"
#include "io/atomic_file.h"
#include "io/convention.h"
#include "io/hdf5.h"
#include "io/weights.h"
#include "layers/optim.h"

namespace kiln::io {

// The state file's "kind" attribute: what tells a checkpoint from a weights file. The app's
// name stays in it: every checkpoint written so far carries it, and a resume must keep
// reading them.
inline constexpr const char* kCheckpointKind = "vgg_finetune checkpoint";

// Where a run stands and what it was made with: enough to rebuild the model and continue.
struct CheckpointMeta {
  int64_t epochs_done = 0;   // epochs completed; the next epoch to run (0-based) is this
  int64_t batches_done = 0;  // > 0: a mid-epoch checkpoint, this many batches of epoch epochs_done served
  int64_t global_step = 0;   // optimizer steps over all phases
  int phase = 1;             // phase of the last completed epoch (mid-epoch: of the epoch in progress)
  double val_loss = 0, val_acc = 0;  // val_acc < 0: not evaluated at this checkpoint
  // Mid-epoch: the epoch's running training statistics so far (so its summary line is the same).
  double epoch_loss_sum = 0;
  int64_t epoch_correct = 0, epoch_seen = 0, epoch_steps = 0;
  std::string arch;          // the model spec's name ("vgg16")
  // The head the model was built with ("" or "fc": the published one; "avg") and whether
  // its last feature map is pooled adaptively (train/model_spec.h ModelOptions). Optional
  // attributes: checkpoints written before them read as "" and false, which they were.
  std::string head;
  bool adaptive_pool = false;
  // The first layer phase 1 trains ("": the head alone): layers the weights file lacked.
  std::string train_from;
  // The precision policy's name (train/precision.h); checkpoints written before it read "fp32".
  std::string precision = "fp32";
  int64_t image_size = 224;  // the input crop, 1..kMaxImageSize (save_checkpoint checks)
  std::vector<std::string> classes;  // label i is classes[i]; at least one (save_checkpoint checks)
  InputConvention convention = InputConvention::unknown;  // in use; stored by name ("caffe_bgr")
  uint64_t seed = 0;         // the run's --seed (the loader's seed derives from it)
  // The training samples the loader's order was drawn over: their count and a CRC32C of
  // their paths (relative to the data folder) and labels (train/trainer.h samples_digest).
  // Optional attributes: 0 in checkpoints written before them, which then compare as unknown.
  int64_t data_size = 0;
  uint32_t data_digest = 0;
  // The batch size batches_done counts in (the global batch under data parallel). Optional
  // attribute: 0, unknown, in checkpoints written before it.
  int64_t batch_size = 0;
  // The order batches_done counts in: an epoch's order is drawn from the loader's seed, when
  // it shuffles. Optional attributes: empty in checkpoints written before them, unknown.
  std::optional<uint64_t> loader_seed;
  std::optional<bool> shuffle;
  PhiloxState init_gen, dropout_gen;
  std::string weights_file;  // file name inside the model directory
  // Version 3: the frozen parameters' file inside the model directory ("": weights_file
  // holds every parameter) and its digest (weights_digest_of).
  std::string frozen_file;
  uint32_t frozen_digest = 0;
  // The weights file's digest (weights_digest_of), so that another run's file of the same
  // name is refused. Optional attribute: 0, unchecked, in checkpoints written before it.
  uint32_t weights_digest = 0;
};

// One complete checkpoint on disk: its two files and its metadata.
struct CheckpointInfo {
  std::string state_path;
  std::string weights_path;
  std::string frozen_path;  // "" when weights_path holds every parameter
  CheckpointMeta meta;
};

// Whether a file name in a model directory belongs to the checkpoint store: ckpt-* (checkpoints,
// their temporaries and *.corrupt set-asides) and frozen-* (frozen files). Other writers keep
// clear of these names.
bool is_checkpoint_store_name(const std::string& file_name);
// Whether a file name is a checkpoint's state file, ckpt-EEEEEE[-BBBBBB].state.h5: the file a
// checkpoint exists by (its weights file may be an orphan).
bool is_checkpoint_state_name(const std::string& file_name);

// Loads a checkpoint's parameters and buffers into `model`: its weights file and, from
// version 3, the frozen file it names (whose digest must be the one recorded). Every
// parameter and buffer must come from one of them; on an error the model keeps the values it
// had (copied first: the model's size again, for the call).
void load_checkpoint_weights(Module& model, const CheckpointInfo& c);

// The identity of a set of tensors: CRC32C over their names (sorted) and per-tensor CRC32Cs.
// From the model's tensors whose names `select` accepts, or from a kiln weights file's
// datasets and their stored checksums (which verify_weights checks against the values). It
// names a phase's frozen file and ties a checkpoint's weights file to its state file.
uint32_t weights_digest_of(Module& model, const std::function<bool(const std::string&)>& select);
uint32_t weights_digest_of(const std::string& weights_path);

// Writes the checkpoint of (meta.epochs_done, meta.batches_done) (the frozen file when the
// model has frozen parameters and no file of theirs exists yet, weights, then state), then
// deletes all but the last `keep_last` checkpoints and the best by validation accuracy, and
// the frozen files no remaining checkpoint names. Returns the state path.
std::string save_checkpoint(const std::string& model_dir, Module& model, Optimizer& opt, CheckpointMeta meta,
                            int keep_last);

// The frozen parameters' host copies (float32), shared by the checkpoints of a phase: they
// cannot change while it runs, so one copy and one digest serve them all. On the lent H200
// each phase-1 checkpoint of VGG16 copied and checksummed its 537 MB again (2026-12-04).
class FrozenImage {
 public:
  // Copies `tensors` (name, parameter) to the host, keeping a reference to each to recognise it.
  explicit FrozenImage(const std::vector<std::pair<std::string, const Tensor*>>& tensors);
  // Whether it still holds these tensors' values: the same names in order, each unchanged
  // since copied (TensorStamp: the same memory at the same write count, not shared with a
  // library that may write it unseen).
  bool holds(const std::vector<std::pair<std::string, const Tensor*>>& tensors) const;
  // The copies, named.
  const std::vector<std::pair<std::string, Tensor>>& host() const { return host_; }
  // weights_digest_of's value for them, computed on the first call (by the writing thread).
  uint32_t digest() const;
  // The file this process wrote these values to, or found intact (every tensor's data read
  // and checked): later checkpoints of the phase reuse it unread. "" before the first.
  std::string file_on_disk() const;
  // const: the image is shared read-only between checkpoints; only this path changes, under a lock.
  void set_file_on_disk(const std::string& path) const;

 private:
  std::vector<std::pair<std::string, Tensor>> host_;
  std::vector<TensorStamp> source_;  // what each copy was made from
  mutable std::once_flag digest_once_;
  mutable uint32_t digest_ = 0;
  mutable std::mutex file_mu_;
  mutable std::string file_;
};

// A checkpoint taken but not yet on disk: host copies (float32; the optimizer's int64 step
// counts as they are) of everything save_checkpoint writes, so the files can be written on
// another thread while the model trains on (CheckpointWriter).
struct CheckpointImage {
  std::string model_dir;
  int keep_last = 1;
  CheckpointMeta meta;  // weights_file filled in; frozen_file and frozen_digest by write_checkpoint
  std::string model_name;
  std::vector<std::pair<std::string, Tensor>> weights;  // what trains, and the buffers
  // The frozen parameters (null when none): their digest names the frozen file, written when
  // not on disk yet.
  std::shared_ptr<const FrozenImage> frozen;
  std::string optimizer_kind;
  std::vector<OptimizerSetting> optimizer_settings;
  std::vector<std::pair<std::string, Tensor>> optimizer_state;
};

// save_checkpoint's first half, on the training thread: checks `meta` and copies to the host
// what the checkpoint holds. Copies only: checksums and files are write_checkpoint's. The
// frozen parameters are not copied again when `previous` (the last image's) still holds them.
CheckpointImage take_checkpoint(const std::string& model_dir, Module& model, Optimizer& opt, CheckpointMeta meta,
                                int keep_last, std::shared_ptr<const FrozenImage> previous = nullptr);
// Its second half, on any thread: the frozen parameters' digest, the files (the frozen file
// only when no file of that digest is on disk), then the pruning. Returns the state path.
std::string write_checkpoint(const CheckpointImage& image);

// Writes checkpoints on a thread of its own, one at a time, so the training goes on while the
// last one goes to disk (on the lent H200, 2026-12-04, checkpoints were 7.0 s of the seed
// recipe's 18.6). A write's error is thrown by the next call that waits for it.
class CheckpointWriter {
 public:
  // Idle: no thread runs until submit().
  CheckpointWriter() = default;
  // Waits for the write in flight; an error then goes to stderr (a destructor cannot throw).
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;
  // Waits for the previous write (throwing its error), then starts writing `image`; returns
  // the state path it writes.
  std::string submit(CheckpointImage image);
  // Waits for the write in flight and returns its state path ("" when none was), or throws
  // the error that stopped it, naming the checkpoint.
  std::string wait();

 private:
  std::thread thread_;
  std::string path_;          // the state path being written
  std::exception_ptr error_;  // set by the thread when its write failed
};

// A checkpoint that cannot be resumed from: its files and why.
struct DamagedCheckpoint {
  std::string state_path;
  std::string weights_path;  // "" when it has none
  std::string frozen_path;   // set only when the frozen file is what failed (set aside too)
  std::string reason;        // one line naming the file and the tensor or attribute at fault
};

// Complete checkpoints (state file present and readable, weights file and any frozen file it
// names present), oldest first. State files that do not read, or whose weights or frozen file
// is gone, go to `damaged` when given.
// The tensors' checksums are not read here (verify_checkpoint does).
std::vector<CheckpointInfo> list_checkpoints(const std::string& model_dir,
                                             std::vector<DamagedCheckpoint>* damaged = nullptr);
// The newest checkpoint list_checkpoints finds, or none. Checksums are not verified (choose_checkpoint does).
std::optional<CheckpointInfo> latest_checkpoint(const std::string& model_dir);
// The one with the highest val_acc (the earliest of equals), or none; its checksums are not verified either.
std::optional<CheckpointInfo> best_checkpoint(const std::string& model_dir);
// The same choices from a list_checkpoints result already read (oldest first).
std::optional<CheckpointInfo> latest_checkpoint(const std::vector<CheckpointInfo>& all);
std::optional<CheckpointInfo> best_checkpoint(const std::vector<CheckpointInfo>& all);

// The state file of the checkpoint after `epochs_done` epochs and `batches_done` batches of
// the next (0: an epoch's end) in model_dir: ckpt-EEEEEE[-BBBBBB].state.h5.
std::string checkpoint_state_path(const std::string& model_dir, int64_t epochs_done, int64_t batches_done);
// A state file's metadata, from its attributes only: no tensor is read, so no checksum is checked.
CheckpointMeta read_checkpoint_meta(const std::string& state_path);
// The same from an open state file's root (the file may be an in-memory image). Values a
// run could not have written (image size, phase, counts) are refused.
CheckpointMeta read_checkpoint_meta(const h5::Group& root);
// Copies the saved optimizer state into `opt` (built for the same phase: same state names).
// A checkpoint records its optimizer's kind and settings (momentum, betas, ...; not lr): another
// kind is refused, and other settings too unless `allow_changed_settings`, when the state
// they did not make starts at zero.
void restore_optimizer(const std::string& state_path, Optimizer& opt, bool allow_changed_settings = false);
// The same from an open state file's root; shapes and types are checked before reading.
void restore_optimizer(const h5::Group& root, Optimizer& opt, bool allow_changed_settings = false);

// Reads every tensor of the files of `c` (state, weights, frozen) and checks its checksum
// and the frozen file's digest; a kiln::Error names the
// corrupt file and tensor. Files written before checksums pass unchecked.
void verify_checkpoint(const CheckpointInfo& c);

// What `train` resumes from: the newest checkpoint that verifies, and the damaged ones
// (unreadable, or newer ones that failed verification), newest first.
struct ResumeChoice {
  std::optional<CheckpointInfo> checkpoint;  // none: the directory holds no checkpoint
  std::vector<DamagedCheckpoint> damaged;
};
// A directory holding checkpoints none of which is intact is a kiln::Error (starting over
// there would mix a new run with the old one's files).
ResumeChoice newest_intact_checkpoint(const std::string& model_dir);
// The checkpoint to use (eval, predict, export, kiln.load_checkpoint): the latest, or the
// best by validation accuracy, of those whose files are all there and verify. `warn` hears of
// each one passed over ("checkpoint '...' cannot be loaded: why") and of the one used instead,
// before any error; `best` refuses while any cannot be loaded (that one may be the best),
// naming the caller's switch `best_option` ("--best").
CheckpointInfo choose_checkpoint(const std::string& model_dir, bool best, const std::string& best_option,
                                 const std::function<void(const std::string&)>& warn);
// choose_checkpoint, then `load` of the one chosen. A file of it gone by then is a run writing
// model_dir that pruned it meanwhile (a file missing at the choice fails the choice), not
// damage: it chooses again, three tries in all. Returns the checkpoint loaded.
CheckpointInfo choose_and_load_checkpoint(const std::string& model_dir, bool best, const std::string& best_option,
                                          const std::function<void(const std::string&)>& warn,
                                          const std::function<void(const CheckpointInfo&)>& load);
// Renames a damaged checkpoint's files to <name>.corrupt (.corrupt.1, ... if taken): kept for
// inspection, no longer a checkpoint. Returns the new file names.
std::vector<std::string> set_aside(const DamagedCheckpoint& d);

// Whether `file_name` is a temporary (<name>.tmp[<pid>]) a killed writer of the model
// directory left: of a checkpoint file, or of one of `run_files` (the other files the run
// writes there, "config.txt"). Any other *.tmp file is the user's, never removed.
bool is_run_temporary(const std::string& file_name, const std::vector<std::string>& run_files);

// Removes the temporaries (is_run_temporary) a killed run may have left in the model
// directory (never treated as checkpoints). Returns their names.
std::vector<std::string> remove_stale_temporaries(const std::string& model_dir,
                                                  const std::vector<std::string>& run_files = {});

}  // namespace kiln::io
