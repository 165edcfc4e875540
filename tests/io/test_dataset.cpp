// Folder-per-class and list-file data sets: what is found, what is skipped, what is an error.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "io/dataset.h"
#include "tests/support/reference.h"

namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::io;

namespace {
void touch(const fs::path& p) { std::ofstream(p) << "x"; }
}  // namespace

TEST_CASE("image_folder: sorted classes, extensions in any case, hidden files skipped", "[dataset]") {
  const fs::path root = test::make_temp_dir("folder");
  for (const char* c : {"wolf", "bear", "owl"}) fs::create_directories(root / c);
  fs::create_directories(root / ".cache");  // hidden: not a class
  touch(root / ".cache" / "a.jpg");
  touch(root / "README.txt");  // a file at the top: not a class
  for (const char* f : {"b.jpg", "a.JPG", "c.Jpeg", "d.png", "e.BMP", ".hidden.jpg", "notes.txt", "f.gif", "jpg"})
    touch(root / "bear" / f);
  for (const char* f : {"1.png", "2.PNG"}) touch(root / "owl" / f);
  touch(root / "wolf" / "x.jpeg");
  fs::create_directories(root / "wolf" / "y.jpg");  // kept: the loader reports it at decode time

  const Dataset ds = image_folder(root.string());
  CHECK(ds.classes == std::vector<std::string>{"bear", "owl", "wolf"});
  CHECK(ds.class_counts == std::vector<int64_t>{5, 2, 2});
  REQUIRE(ds.size() == 9);
  CHECK(fs::path(ds.samples[0].path).filename() == "a.JPG");
  CHECK(fs::path(ds.samples[4].path).filename() == "e.BMP");
  CHECK(ds.samples[4].label == 0);
  CHECK(ds.samples[5].label == 1);
  CHECK(ds.samples[8].label == 2);
  CHECK(ds.summary() == "9 images in 3 classes: bear 5, owl 2, wolf 2");
  io::Dataset empty_class = ds;  // a split whose classes include one it has no images of
  std::erase_if(empty_class.samples, [](const io::Sample& s) { return s.label == 1; });
  empty_class.class_counts[1] = 0;
  CHECK(empty_class.summary() == "7 images in 2 of 3 classes: bear 5, owl 0, wolf 2");
  fs::remove_all(root);
}

TEST_CASE("image_folder: errors name the folder", "[dataset]") {
  const fs::path root = test::make_temp_dir("folder_err");
  CHECK_THROWS_WITH(image_folder((root / "nope").string()),
                    Catch::Contains((root / "nope").string()) && Catch::Contains("does not exist"));
  fs::create_directories(root / "only");
  touch(root / "only" / "a.jpg");
  CHECK_THROWS_WITH(image_folder(root.string()),
                    Catch::Contains(root.string()) && Catch::Contains("at least two class subfolders, found 1"));
  fs::create_directories(root / "empty");
  touch(root / "empty" / "notes.txt");
  touch(root / "empty" / ".x.jpg");
  CHECK_THROWS_WITH(image_folder(root.string()),
                    Catch::Contains((root / "empty").string()) && Catch::Contains("holds no image file"));
  fs::remove_all(root / "empty");
  fs::create_directories(root / "two\nlines");  // classes.txt would read it as two classes
  touch(root / "two\nlines" / "a.jpg");
  CHECK_THROWS_WITH(image_folder(root.string()), Catch::Contains("holds a line break") && Catch::Contains("rename"));
  fs::remove_all(root);
}

TEST_CASE("image_list: 'path label' lines, relative to the list file", "[dataset]") {
  const fs::path root = test::make_temp_dir("list");
  std::ofstream(root / "train.txt") << "# comment\n"
                                    << "a/x.jpg 0\n"
                                    << "\n"
                                    << "b/with space.png 2\r\n"
                                    << "/abs/y.bmp\t1\n";
  const Dataset ds = image_list((root / "train.txt").string());
  REQUIRE(ds.size() == 3);
  CHECK(ds.samples[0].path == (root / "a/x.jpg").string());
  CHECK(ds.samples[1].path == (root / "b/with space.png").string());
  CHECK(ds.samples[1].label == 2);
  CHECK(ds.samples[2].path == "/abs/y.bmp");
  CHECK(ds.class_counts == std::vector<int64_t>{1, 1, 1});
  CHECK(ds.classes == std::vector<std::string>{"0", "1", "2"});

  std::ofstream(root / "bad.txt") << "a.jpg 0\nb.jpg cat\n";
  CHECK_THROWS_WITH(image_list((root / "bad.txt").string()),
                    Catch::Contains("bad.txt:2") && Catch::Contains("integer label, got 'cat'"));
  std::ofstream(root / "nolabel.txt") << "a.jpg\n";
  CHECK_THROWS_WITH(image_list((root / "nolabel.txt").string()), Catch::Contains("nolabel.txt:1"));
  CHECK_THROWS_WITH(image_list((root / "missing.txt").string()), Catch::Contains("cannot open image list"));
  fs::remove_all(root);
}

TEST_CASE("parse_image_list: hostile list files give errors naming the line, never a crash", "[dataset]") {
  auto parse = [](const std::string& text) { return parse_image_list(text, "/data", "l.txt"); };
  // CRLF, a byte-order mark, tabs, comments, trailing blanks; base_dir "" keeps paths relative.
  const Dataset ok = parse("\xEF\xBB\xBF# c\r\na.jpg 1\r\n\r\n  b c.jpg\t0 \r\n/x/y.png 65535");
  REQUIRE(ok.size() == 3);
  CHECK(ok.samples[0].path == "/data/a.jpg");
  CHECK(ok.samples[1].path == "/data/b c.jpg");
  CHECK(ok.samples[2].label == kMaxListLabel);
  CHECK(ok.classes.size() == static_cast<size_t>(kMaxListLabel) + 1);
  CHECK(parse_image_list("a.jpg 0\n", "", "l.txt").samples[0].path == "a.jpg");
  // Labels past the limit used to allocate one class per number (10^12 -> std::length_error
  // or an out-of-memory kill); signs, hex and spaces inside are not labels.
  CHECK_THROWS_WITH(parse("a.jpg 0\nb.jpg 65536\n"), Catch::Contains("l.txt:2") && Catch::Contains("got '65536'"));
  CHECK_THROWS_WITH(parse("a.jpg 999999999999\n"), Catch::Contains("got '999999999999' (labels are class numbers 0..65535)"));
  CHECK_THROWS_WITH(parse("a.jpg 99999999999999999999999\n"), Catch::Contains("l.txt:1"));
  for (const char* bad : {"a.jpg -1", "a.jpg +1", "a.jpg 0x1f", "a.jpg 1e3", "a.jpg ", "a.jpg", "1"})
    CHECK_THROWS_WITH(parse(bad), Catch::Contains("l.txt:1"));
  // Binary or UTF-16 text: NUL bytes; control bytes are escaped in the message.
  CHECK_THROWS_WITH(parse(std::string("a.jpg 0\nb\0.jpg 1\n", 17)), Catch::Contains("l.txt:2: NUL byte"));
  CHECK_THROWS_WITH(parse("a.jpg \x01\x7f"), Catch::Contains("got '\\x01\\x7f'"));
  CHECK_THROWS_WITH(parse(std::string(20000, 'a') + " 1\n"), Catch::Contains("l.txt:1: line of 20002 bytes"));
  CHECK_THROWS_WITH(parse("# only a comment\n\n"), Catch::Contains("holds no 'path label' line"));
  CHECK_THROWS_WITH(parse(""), Catch::Contains("holds no 'path label' line"));
}
