#include "io/metrics.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"

namespace kiln::io {

namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + '"';
}

std::string csv_line(const std::vector<std::string>& fields) {
  std::string line;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i > 0) line += ',';
    line += csv_field(fields[i]);
  }
  return line + '\n';
}

}  // namespace

MetricsCsv::MetricsCsv(const std::string& path, std::vector<std::string> columns)
    : path_(path), columns_(std::move(columns)) {
  KILN_CHECK(!columns_.empty(), path_, ": a metrics CSV needs at least one column");
  const std::string header = csv_line(columns_);

  // An existing, non-empty file must start with our header; we append after its content.
  std::error_code ec;
  KILN_CHECK(!std::filesystem::is_directory(path_, ec), path_, " is a folder, where kiln keeps its metrics file: ",
             "move it away");
  bool need_header = true;
  {
    std::ifstream in(path_, std::ios::binary);
    if (in) {
      std::string existing((std::istreambuf_iterator<char>(in)), {});
      if (!existing.empty()) {
        // Its first line is the header, or the header saved with a CR LF ending (a spreadsheet).
        const std::string first = existing.substr(0, existing.find('\n'));
        const std::string want = header.substr(0, header.size() - 1);
        KILN_CHECK(first == want || first == want + "\r", path_, ": exists with a different header; expected '", want,
                   "', found '", first, "' (move the file away to start a new one)");
        need_header = false;
        // A run killed mid-row leaves a row cut short, with no final newline: it goes.
        if (existing.back() != '\n') write_file_atomic(path_, existing.substr(0, existing.rfind('\n') + 1));
      }
    }
  }

  out_.open(path_, std::ios::binary | std::ios::app);
  KILN_CHECK(out_.is_open(), path_, ": cannot open for appending (", std::strerror(errno), ")");
  if (need_header) out_ << header;
  out_.flush();
  KILN_CHECK(out_.good(), path_, ": cannot write the header");
}

void MetricsCsv::append(const std::vector<std::string>& values) {
  KILN_CHECK(values.size() == columns_.size(), path_, ": a row has ", values.size(), " values for ",
             columns_.size(), " columns");
  out_ << csv_line(values);
  out_.flush();
  KILN_CHECK(out_.good(), path_, ": cannot write a row (", std::strerror(errno), ")");
}

void MetricsCsv::drop_rows_after(int64_t last) {
  out_.close();
  std::ifstream in(path_, std::ios::binary);
  std::string kept, line;
  for (bool header = true; std::getline(in, line); header = false) {
    char* end = nullptr;
    const long long first = std::strtoll(line.c_str(), &end, 10);
    // A line cut short by a kill has no newline and is dropped with the rest.
    const bool whole = !in.eof();
    if (header || (whole && end != line.c_str() && *end == ',' && first <= last)) kept += line + '\n';
  }
  in.close();
  write_file_atomic(path_, kept);
  out_.open(path_, std::ios::binary | std::ios::app);
  KILN_CHECK(out_.is_open(), path_, ": cannot open for appending (", std::strerror(errno), ")");
}

}  // namespace kiln::io
