// TensorBoard event files (io/tensorboard.h), read back by the real `tensorboard` package
// (tests/reference/read_events.py), and the metrics CSV (io/metrics.h).
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/metrics.h"
#include "io/tensorboard.h"
#include "tests/support/reference.h"

namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::io;
using Catch::Matchers::Contains;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// `"key": value` out of one line of read_events.py's JSON (flat objects, no nesting).
std::string json_field(const std::string& line, const std::string& key) {
  std::smatch m;
  const std::regex re("\"" + key + "\": (\"([^\"]*)\"|[^,}]+)");
  REQUIRE(std::regex_search(line, m, re));
  return m[2].matched ? m[2].str() : m[1].str();
}

uint32_t crc_of(const std::string& s) { return crc32c(s.data(), s.size()); }

}  // namespace

TEST_CASE("crc32c matches known answers", "[tensorboard]") {
  CHECK(crc_of("") == 0x00000000u);
  CHECK(crc_of("123456789") == 0xE3069283u);
  CHECK(crc_of("a") == 0xC1D04330u);
  // RFC 3720 (iSCSI) B.4 test vectors.
  CHECK(crc_of(std::string(32, '\0')) == 0x8A9136AAu);
  CHECK(crc_of(std::string(32, '\xff')) == 0x62A8AB43u);
  std::string inc(32, '\0');
  for (int i = 0; i < 32; ++i) inc[i] = static_cast<char>(i);
  CHECK(crc_of(inc) == 0x46DD794Eu);
  // The mask TFRecord applies: rotate right by 15, add a constant.
  const uint32_t c = 0xE3069283u;
  CHECK(masked_crc32c("123456789", 9) == static_cast<uint32_t>(((c >> 15) | (c << 17)) + 0xa282ead8u));
}

TEST_CASE("TensorBoard event file starts with a well-framed file_version record", "[tensorboard]") {
  const std::string dir = test::make_temp_dir("tb_frame") + "/nested/run";
  std::string path;
  {
    TensorBoardWriter w(dir);
    path = w.path();
    CHECK(fs::path(path).parent_path() == fs::path(dir));
    CHECK(fs::path(path).filename().string().rfind("events.out.tfevents.", 0) == 0);
  }
  const std::string bytes = read_text(path);
  REQUIRE(bytes.size() >= 16);
  uint64_t len = 0;
  for (int i = 0; i < 8; ++i) len |= uint64_t{static_cast<uint8_t>(bytes[i])} << (8 * i);
  REQUIRE(bytes.size() == 16 + len);
  auto le32 = [&](size_t at) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<uint8_t>(bytes[at + i])} << (8 * i);
    return v;
  };
  CHECK(le32(8) == masked_crc32c(bytes.data(), 8));
  CHECK(le32(12 + len) == masked_crc32c(bytes.data() + 12, len));
  CHECK(bytes.find("brain.Event:2") != std::string::npos);

  // A second writer in the same second gets its own file rather than truncating the first.
  TensorBoardWriter w2(dir);
  CHECK(w2.path() != path);
}

TEST_CASE("TensorBoard reads back scalars and images", "[tensorboard]") {
  const std::string dir = test::make_temp_dir("tb_read");
  const std::vector<std::pair<int64_t, double>> loss = {{0, 2.5}, {1, 1.25}, {2, 0.1}, {10, -3.75}, {1000000000000, 1e-3}};
  const int64_t h = 5, w = 7;
  std::vector<uint8_t> rgb(h * w * 3);
  int64_t byte_sum = 0;
  for (size_t i = 0; i < rgb.size(); ++i) {
    rgb[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
    byte_sum += rgb[i];
  }
  {
    TensorBoardWriter writer(dir);
    for (const auto& [step, v] : loss) writer.add_scalar("train/loss", v, step);
    writer.add_scalar("val/accuracy", 0.875, 3);
    writer.add_image_rgb("samples/input", rgb, h, w, 4);
    writer.add_image_rgb("samples/input", std::vector<uint8_t>(2 * 3 * 3, 200), 2, 3, 5);
    writer.flush();
    CHECK_THROWS_AS(writer.add_image_rgb("bad", rgb, h, w + 1, 0), Error);

    const std::string out = dir + "/events.jsonl";
    test::run_reference_script("read_events.py", dir + " " + out);
    std::vector<std::string> lines;
    std::ifstream in(out);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    REQUIRE(lines.size() == loss.size() + 1 + 2);

    // Scalars: tags sorted, steps in order, values exactly the float we wrote.
    for (size_t i = 0; i < loss.size(); ++i) {
      INFO(lines[i]);
      CHECK(json_field(lines[i], "kind") == "scalar");
      CHECK(json_field(lines[i], "tag") == "train/loss");
      CHECK(std::stoll(json_field(lines[i], "step")) == loss[i].first);
      CHECK(std::strtod(json_field(lines[i], "value").c_str(), nullptr) == static_cast<float>(loss[i].second));
    }
    const std::string& acc = lines[loss.size()];
    CHECK(json_field(acc, "tag") == "val/accuracy");
    CHECK(std::stoll(json_field(acc, "step")) == 3);
    CHECK(std::strtod(json_field(acc, "value").c_str(), nullptr) == 0.875);

    // Images: the Summary.Image size fields and the decoded PNG agree with what we wrote.
    const std::string& im = lines[loss.size() + 1];
    INFO(im);
    CHECK(json_field(im, "kind") == "image");
    CHECK(json_field(im, "tag") == "samples/input");
    CHECK(json_field(im, "step") == "4");
    CHECK(json_field(im, "width") == "7");
    CHECK(json_field(im, "height") == "5");
    CHECK(json_field(im, "format") == "PNG");
    CHECK(json_field(im, "mode") == "RGB");
    CHECK(json_field(im, "decoded_width") == "7");
    CHECK(json_field(im, "decoded_height") == "5");
    CHECK(std::stoll(json_field(im, "byte_sum")) == byte_sum);
    const std::string& im2 = lines[loss.size() + 2];
    CHECK(json_field(im2, "step") == "5");
    CHECK(json_field(im2, "width") == "3");
    CHECK(json_field(im2, "height") == "2");
    CHECK(std::stoll(json_field(im2, "byte_sum")) == 2 * 3 * 3 * 200);
  }
}

TEST_CASE("TensorBoardWriter names the directory it cannot create", "[tensorboard]") {
  const std::string dir = test::make_temp_dir("tb_err");
  const std::string file = dir + "/not_a_dir";
  std::ofstream(file) << "x";
  try {
    TensorBoardWriter w(file + "/run");
    FAIL("expected kiln::Error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find(file) != std::string::npos);
  }
}

TEST_CASE("a resumed run's logs drop what an interrupted run wrote past its checkpoint", "[tensorboard]") {
  const std::string dir = test::make_temp_dir("tb_resume");
  {
    TensorBoardWriter w(dir);  // the interrupted run: steps 1-5, checkpointed at step 2
    for (int64_t step = 1; step <= 5; ++step) w.add_scalar("val/loss", static_cast<double>(step), step);
  }
  {
    TensorBoardWriter w(dir);  // the resumed run: a second file
    w.add_session_start(3);
    w.add_scalar("val/loss", 30.0, 3);
    w.add_scalar("val/loss", 40.0, 4);
  }
  const std::string out = dir + "/events.jsonl";
  test::run_reference_script("read_events.py", dir + " " + out);
  std::vector<std::string> seen;
  std::ifstream in(out);
  for (std::string line; std::getline(in, line);)
    seen.push_back(json_field(line, "step") + "=" + json_field(line, "value"));
  CHECK(seen == std::vector<std::string>{"1=1.0", "2=2.0", "3=30.0", "4=40.0"});

  // metrics.csv: rows past the checkpoint's epoch go, and so does a row a kill cut short.
  const std::string path = dir + "/metrics.csv";
  {
    MetricsCsv csv(path, {"epoch", "loss"});
    for (int e = 1; e <= 4; ++e) csv.append({std::to_string(e), "0.5"});
  }
  std::ofstream(path, std::ios::app) << "5,0.2";  // no newline: killed mid-row
  MetricsCsv csv(path, {"epoch", "loss"});
  csv.drop_rows_after(2);
  csv.append({"3", "0.25"});
  CHECK(read_text(path) == "epoch,loss\n1,0.5\n2,0.5\n3,0.25\n");
  csv.drop_rows_after(0);
  CHECK(read_text(path) == "epoch,loss\n");
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST_CASE("MetricsCsv writes the header once and appends across instances", "[tensorboard]") {
  const std::string dir = test::make_temp_dir("metrics_csv");
  const std::string path = dir + "/metrics.csv";
  const std::vector<std::string> cols = {"epoch", "loss", "note"};
  {
    MetricsCsv csv(path, cols);
    csv.append({"0", "2.5", "plain"});
    // Each row is on disk as soon as append returns.
    CHECK(read_text(path) == "epoch,loss,note\n0,2.5,plain\n");
    csv.append({"1", "1.25", "has, comma"});
  }
  {
    MetricsCsv csv(path, cols);
    csv.append({"2", "0.5", "say \"hi\""});
    CHECK_THROWS_AS(csv.append({"3", "0.1"}), Error);
  }
  CHECK(read_text(path) ==
        "epoch,loss,note\n"
        "0,2.5,plain\n"
        "1,1.25,\"has, comma\"\n"
        "2,0.5,\"say \"\"hi\"\"\"\n");

  // An empty existing file gets the header.
  const std::string empty = dir + "/empty.csv";
  std::ofstream(empty).close();
  MetricsCsv(empty, {"a"}).append({"1"});
  CHECK(read_text(empty) == "a\n1\n");

  // A different header is refused, naming the file; the file is left alone.
  const std::string before = read_text(path);
  try {
    MetricsCsv(path, {"epoch", "accuracy"});
    FAIL("expected kiln::Error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find(path) != std::string::npos);
  }
  CHECK(read_text(path) == before);

  // Found by review: a row cut short by a kill stayed in the file for good (rows went on
  // below it); a header saved with CR LF (a spreadsheet) was refused as "different" though
  // it read the same; a folder in the file's place gave libstdc++'s words, no file name.
  const std::string cut = dir + "/cut.csv";
  std::ofstream(cut, std::ios::binary) << "epoch,loss\n1,0.5\n2,0.2";
  MetricsCsv(cut, {"epoch", "loss"}).append({"2", "0.25"});
  CHECK(read_text(cut) == "epoch,loss\n1,0.5\n2,0.25\n");
  const std::string crlf = dir + "/crlf.csv";
  std::ofstream(crlf, std::ios::binary) << "epoch,loss\r\n1,0.5\r\n";
  MetricsCsv(crlf, {"epoch", "loss"}).append({"2", "0.25"});
  CHECK(read_text(crlf) == "epoch,loss\r\n1,0.5\r\n2,0.25\n");
  fs::create_directory(dir + "/folder.csv");
  CHECK_THROWS_WITH(MetricsCsv(dir + "/folder.csv", {"a"}), Contains(dir + "/folder.csv is a folder"));
  std::error_code ec;
  fs::remove_all(dir, ec);
}
