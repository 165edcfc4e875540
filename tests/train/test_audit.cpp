// The data audit (train/audit.h): what a dirty folder's report says file by file -- usable
// counts, skipped files and their reasons, duplicate pairs, classes missing from a split or
// too small -- and what it refuses.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/image.h"
#include "tests/support/reference.h"
#include "train/audit.h"

namespace fs = std::filesystem;
using namespace kiln;
using Catch::Contains;
using Why = io::SkippedFile::Why;

namespace {

// A small PNG or JPEG whose pixels depend on `salt`, so no two files share bytes by accident.
io::Image pattern(uint32_t salt) {
  io::Image img;
  img.width = img.height = 12;
  img.pixels.resize(12 * 12 * 3);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>((i * 2654435761u + salt * 97u) >> 9);
  return img;
}

void write_bytes(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

uint32_t png_crc(const std::string& s) {  // CRC-32 as PNG chunks carry it (not CRC32C)
  uint32_t c = 0xFFFFFFFFu;
  for (const char ch : s) {
    c ^= static_cast<uint8_t>(ch);
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

// A PNG whose every chunk and CRC is in order but whose compressed pixels stop half way
// (the IDAT cut and its CRC recomputed, as a broken writer might leave it): kiln's
// structure walk accepts it, only decoding finds it.
void write_png_short_idat(const fs::path& p, uint32_t salt) {
  io::write_png(p.string(), pattern(salt));
  std::string b = read_bytes(p);
  const size_t at = b.find("IDAT") - 4;
  const auto be32 = [&](size_t i) {
    return (uint32_t{static_cast<uint8_t>(b[i])} << 24) | (uint32_t{static_cast<uint8_t>(b[i + 1])} << 16) |
           (uint32_t{static_cast<uint8_t>(b[i + 2])} << 8) | uint32_t{static_cast<uint8_t>(b[i + 3])};
  };
  const uint32_t len = be32(at), cut = len / 2;
  std::string chunk = "IDAT" + b.substr(at + 8, cut);
  const uint32_t crc = png_crc(chunk);
  std::string out = b.substr(0, at);
  for (const uint32_t v : {cut}) for (int s = 24; s >= 0; s -= 8) out += static_cast<char>((v >> s) & 0xFF);
  out += chunk;
  for (int s = 24; s >= 0; s -= 8) out += static_cast<char>((crc >> s) & 0xFF);
  out += b.substr(at + 12 + len);
  write_bytes(p, out);
}

// train/: cat (4 usable, one a copy of another, plus six files that are not used), dog 8,
// owl 8, yak 1 (train only, and small); val/: cat, dog, owl, two of them copies of train
// images, one of those filed under another class.
struct DirtyData {
  fs::path root = test::make_temp_dir("audit");
  fs::path train = root / "train", val = root / "val";
  DirtyData() {
    uint32_t salt = 0;
    for (const char* c : {"cat", "dog", "owl", "yak"}) fs::create_directories(train / c);
    for (const char* c : {"cat", "dog", "owl"}) fs::create_directories(val / c);
    for (const char* f : {"a.png", "b.png", "c.png"}) io::write_png((train / "cat" / f).string(), pattern(++salt));
    fs::copy_file(train / "cat" / "a.png", train / "cat" / "a_again.png");
    io::write_jpeg((train / "cat" / "full.jpg").string(), pattern(++salt));
    const std::string jpg = read_bytes(train / "cat" / "full.jpg");
    fs::remove(train / "cat" / "full.jpg");
    write_bytes(train / "cat" / "truncated.jpg", jpg.substr(0, jpg.size() / 2));
    write_bytes(train / "cat" / "garbage.jpg", "this is not an image at all");
    write_bytes(train / "cat" / "empty.jpg", "");
    write_bytes(train / "cat" / "photo.webp", "RIFF\x10\0\0\0WEBPVP8 ");
    write_bytes(train / "cat" / "anim.gif", "GIF89a");
    write_bytes(train / "cat" / "._a.jpg", std::string("\0\x05\x16\x07", 4) + "Mac OS X");
    for (int i = 0; i < 8; ++i) io::write_png((train / "dog" / ("d" + std::to_string(i) + ".png")).string(), pattern(++salt));
    for (int i = 0; i < 8; ++i) io::write_png((train / "owl" / ("o" + std::to_string(i) + ".png")).string(), pattern(++salt));
    io::write_png((train / "yak" / "y.png").string(), pattern(++salt));
    io::write_png((val / "cat" / "v.png").string(), pattern(++salt));
    fs::copy_file(train / "cat" / "b.png", val / "cat" / "b_copy.png");
    io::write_png((val / "dog" / "v.png").string(), pattern(++salt));
    io::write_png((val / "owl" / "v.png").string(), pattern(++salt));
    fs::copy_file(train / "dog" / "d3.png", val / "owl" / "d3_as_owl.png");
  }
  ~DirtyData() { fs::remove_all(root); }
  std::string p(const fs::path& x) const { return x.string(); }
};

const io::SkippedFile* find_skipped(const AuditReport& r, const fs::path& p) {
  for (const io::SkippedFile& f : r.skipped)
    if (f.path == p.string()) return &f;
  return nullptr;
}

}  // namespace

TEST_CASE("audit: usable counts, every skipped file with its reason, duplicate pairs, class warnings", "[audit]") {
  const DirtyData d;
  const AuditReport r = audit_data_dir(d.root.string());
  REQUIRE(r.splits.size() == 2);
  CHECK(r.classes == std::vector<std::string>{"cat", "dog", "owl", "yak"});
  const SplitAudit& train = *r.split("train");
  const SplitAudit& val = *r.split("val");
  CHECK(train.usable.class_counts == std::vector<int64_t>{4, 8, 8, 1});
  CHECK(train.found == std::vector<int64_t>{7, 8, 8, 1});  // truncated, garbage and empty had .jpg
  CHECK(val.usable.class_counts == std::vector<int64_t>{2, 1, 2, 0});
  CHECK(train.usable.size() == 21);
  for (const io::Sample& s : train.usable.samples) CHECK(fs::path(s.path).filename() != "truncated.jpg");

  REQUIRE(r.skipped.size() == 6);
  const auto why = [&](const char* name) {
    const io::SkippedFile* f = find_skipped(r, d.train / "cat" / name);
    REQUIRE(f != nullptr);
    return *f;
  };
  CHECK(why("truncated.jpg").why == Why::undecodable);
  CHECK_THAT(io::skip_reason(why("truncated.jpg")), Contains("failed to decode: truncated JPEG"));
  CHECK_THAT(io::skip_reason(why("garbage.jpg")), Contains("failed to decode: not a JPEG, PNG or BMP"));
  CHECK(why("empty.jpg").why == Why::empty);
  CHECK(io::skip_reason(why("photo.webp")) == "unsupported format .webp (kiln reads .jpg, .jpeg, .png, .bmp)");
  CHECK(io::skip_group(why("anim.gif")) == "unsupported .gif");
  CHECK(io::skip_group(why("._a.jpg")) == "macOS ._ file");

  REQUIRE(r.duplicates.size() == 3);
  const DuplicatePair& within = r.duplicates[0];
  CHECK(within.first == d.p(d.train / "cat" / "a.png"));
  CHECK(within.second == d.p(d.train / "cat" / "a_again.png"));
  CHECK((within.first_split == 0 && within.second_split == 0));
  const DuplicatePair& across = r.duplicates[1];
  CHECK(across.first == d.p(d.train / "cat" / "b.png"));
  CHECK(across.second == d.p(d.val / "cat" / "b_copy.png"));
  CHECK((across.first_split == 0 && across.second_split == 1));
  const DuplicatePair& relabelled = r.duplicates[2];
  CHECK(relabelled.second == d.p(d.val / "owl" / "d3_as_owl.png"));
  CHECK((relabelled.first_label == 1 && relabelled.second_label == 2));

  CHECK(r.errors.empty());
  REQUIRE(r.warnings.size() == 2);
  CHECK_THAT(r.warnings[0], Contains("class 'yak' has 1 train image, under 1/4 of the median class in train (6)"));
  CHECK_THAT(r.warnings[1], Contains("val has no image of class 'yak'") && Contains("no folder"));

  const std::string s = r.summary(0, "/m/skipped.txt");
  CHECK_THAT(s, Contains("  train: 21 images in 4 classes: cat 4, dog 8, owl 8, yak 1 (3 more image files found, not usable)"));
  CHECK_THAT(s, Contains("skipped: 6 files (2 failed to decode, 1 empty, 1 macOS ._ file, 1 unsupported .gif, "
                         "1 unsupported .webp) -- see /m/skipped.txt\n"));
  CHECK_THAT(s, Contains("2 val images are exact copies of train images: val accuracy overstates"));
  CHECK_THAT(s, Contains("1 train image is an exact copy of another train image"));
  CHECK_THAT(s, Contains("1 image is filed under two classes"));
  CHECK_THAT(s, Contains("(class 'owl' vs 'dog')"));

  // skipped.txt: one "path<TAB>reason" line per file, sorted by path.
  const std::string txt = r.skipped_text();
  CHECK(std::count(txt.begin(), txt.end(), '\n') == 6);
  CHECK(txt.rfind(d.p(d.train / "cat" / "._a.jpg") + "\tmacOS resource fork", 0) == 0);
  CHECK_THAT(txt, Contains(d.p(d.train / "cat" / "empty.jpg") + "\tempty file (0 bytes)\n"));
  CHECK_THAT(txt, Contains(d.p(d.train / "cat" / "photo.webp") + "\tunsupported format .webp"));
}

TEST_CASE("audit: the skipped counts take the plural where a group names a file or a folder", "[audit]") {
  const DirtyData d;
  write_bytes(d.train / "dog" / "._d0.png", std::string("\0\x05\x16\x07", 4) + "Mac OS X");
  fs::create_directories(d.train / "owl" / "more");
  fs::create_directories(d.train / "dog" / "more");
  const std::string s = audit_data_dir(d.root.string()).summary(0, "/m/skipped.txt");
  CHECK_THAT(s, Contains("2 folders in a class folder") && Contains("2 macOS ._ files") &&
                    Contains("2 failed to decode"));
}

TEST_CASE("audit: only decoding finds compressed data cut short, which the structure walk alone passes", "[audit]") {
  const DirtyData d;
  write_png_short_idat(d.train / "dog" / "d0.png", 99);
  AuditOptions structure;
  structure.full_decode = false;
  const AuditReport fast = audit_data_dir(d.root.string(), structure);
  CHECK(find_skipped(fast, d.train / "dog" / "d0.png") == nullptr);
  const AuditReport full = audit_data_dir(d.root.string());
  const io::SkippedFile* f = find_skipped(full, d.train / "dog" / "d0.png");
  REQUIRE(f != nullptr);
  CHECK_THAT(io::skip_reason(*f), Contains("failed to decode: cannot decode ("));
  CHECK(full.split("train")->usable.class_counts[1] == 7);
}

TEST_CASE("audit: what train refuses -- a class with no usable train image, a val class train lacks", "[audit]") {
  const DirtyData d;
  fs::remove(d.train / "yak" / "y.png");
  write_bytes(d.train / "yak" / "y.jpg", "");  // the class's only file is empty
  fs::create_directories(d.val / "emu");
  io::write_png((d.val / "emu" / "e.png").string(), pattern(77));
  const AuditReport r = audit_splits({{"train", d.train.string()}, {"val", d.val.string()}});
  REQUIRE(r.errors.size() == 2);
  CHECK_THAT(r.errors[0], Contains("class 'yak' has no usable image in train") &&
                              Contains("1 image file found, none usable"));
  CHECK_THAT(r.errors[1], Contains("val has class 'emu' that train has no folder for") &&
                              Contains("rename or remove '" + d.p(d.val / "emu") + "'"));
  CHECK_THAT(r.summary(0, ""), Contains("error: class 'yak' has no usable image in train"));
}

TEST_CASE("audit: one folder given as both train and val is refused", "[audit]") {
  const DirtyData d;
  const std::string same = (d.train / ".." / d.train.filename()).string();  // another spelling of it
  const AuditReport r = audit_splits({{"train", d.train.string()}, {"val", same}});
  REQUIRE_FALSE(r.errors.empty());
  CHECK_THAT(r.errors.back(), Contains("val is the same folder as train ('" + same + "')") &&
                                  Contains("give a folder of other images"));
}

TEST_CASE("audit: a single folder of classes, fewer than two classes, train without val", "[audit]") {
  const DirtyData d;
  const AuditReport one = audit_data_dir(d.val.string());
  REQUIRE(one.splits.size() == 1);
  CHECK(one.splits[0].usable.size() == 5);
  CHECK(one.duplicates.empty());
  CHECK(one.errors.empty());
  fs::remove_all(d.val / "dog");
  fs::remove_all(d.val / "owl");
  CHECK_THAT(audit_data_dir(d.val.string()).errors.at(0), Contains("has 1 class folder; training needs at least two"));
  CHECK_THROWS_WITH(audit_data_dir(d.p(d.root / "nope")), Contains("nope") && Contains("does not exist"));
  fs::remove_all(d.val);
  const AuditReport train_only = audit_data_dir(d.root.string());
  CHECK(train_only.splits.size() == 1);
  // An error, as train --data-dir refuses it, naming the way out.
  CHECK_THAT(train_only.errors.back(), Contains("has train/ but no val/") && Contains("--train-dir"));
  fs::rename(d.root / "train", d.root / "val");
  CHECK_THAT(audit_data_dir(d.root.string()).errors.back(), Contains("has val/ but no train/"));
}
