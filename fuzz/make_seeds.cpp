// Writes the seed corpora of fuzz_weights, fuzz_checkpoint and fuzz_image_list with kiln's
// own writers (export_weights in kiln's and Keras's layouts, save_checkpoint), so each
// fuzzer starts from valid files of every kind. Keras 3 files, which kiln cannot write,
// come from make_seeds.py (h5py). Usage: fuzz_make_seeds <kiln source dir>
// The files are deterministic and a few KB each; they are committed under fuzz/corpus/.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "io/checkpoint.h"
#include "fuzz/tiny_vgg.h"
#include "io/weights.h"

namespace fs = std::filesystem;
using namespace kiln;

namespace {

void write_text(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

void weights_seeds(const fs::path& dir) {
  Generator gen(7);
  auto model = fuzz::make_tiny_vgg(gen);
  io::export_weights(*model, (dir / "kiln.h5").string());
  io::export_weights(*model, (dir / "keras.h5").string(), io::ExportOptions{.format = io::WeightsFormat::keras});
  // fc8 of another class count: with the skip option the import takes the mismatch path.
  auto wide = fuzz::make_tiny_vgg(gen, 5);
  io::export_weights(*wide, (dir / "kiln_fc8_5classes.h5").string(),
                     io::ExportOptions{.convention = io::InputConvention::tf_rgb});
}

void checkpoint_seeds(const fs::path& dir) {
  Generator gen(7);
  auto model = fuzz::make_tiny_vgg(gen);
  SGD opt(*model, SgdOptions{.lr = 0.01f, .momentum = 0.9f});
  const fs::path tmp = fs::temp_directory_path() / ("kiln_seed_ckpt_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  io::CheckpointMeta meta;
  meta.epochs_done = 2;
  meta.global_step = 20;
  meta.classes = {"bear", "owl", "wolf"};
  meta.convention = io::InputConvention::caffe_bgr;
  meta.image_size = 64;
  meta.val_acc = 0.5;
  fs::copy_file(io::save_checkpoint(tmp.string(), *model, opt, meta, 5), dir / "state.h5",
                fs::copy_options::overwrite_existing);
  meta.batches_done = 3;  // mid-epoch: the running-statistics attributes are read too
  meta.epoch_loss_sum = 1.25;
  meta.epoch_seen = 24;
  fs::copy_file(io::save_checkpoint(tmp.string(), *model, opt, meta, 5), dir / "state_mid_epoch.h5",
                fs::copy_options::overwrite_existing);
  fs::remove_all(tmp);
}

void image_list_seeds(const fs::path& dir) {
  write_text(dir / "simple.txt", "a/x.jpg 0\nb/y.png 1\n/abs/z.bmp 2\n");
  write_text(dir / "comments_crlf.txt", "# train split\r\n\r\nwith space.jpg\t1\r\n  c.jpg 0  \r\n");
  write_text(dir / "bom_tabs.txt", "\xEF\xBB\xBFimg/1.jpg\t3\nimg/2.jpg\t12\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <kiln source dir>\n", argv[0]);
    return 2;
  }
  const fs::path corpus = fs::path(argv[1]) / "fuzz" / "corpus";
  for (const char* t : {"weights", "checkpoint", "image_list"}) fs::create_directories(corpus / t);
  weights_seeds(corpus / "weights");
  checkpoint_seeds(corpus / "checkpoint");
  image_list_seeds(corpus / "image_list");
  std::printf("seeds written under %s\n", corpus.string().c_str());
  return 0;
}
