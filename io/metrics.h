// Appending training metrics to a CSV file, one row per call, that survives a killed run.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace kiln::io {

// A CSV file with a fixed header. A new or empty file gets the header; an existing file
// must start with the same header (else kiln::Error naming the file), and rows are
// appended after its content, so a resumed run continues the same file. Each row is
// flushed as it is written: a killed run leaves only complete rows. Fields containing a
// comma, quote or line break are quoted (RFC 4180, quotes doubled).
class MetricsCsv {
 public:
  MetricsCsv(const std::string& path, std::vector<std::string> columns);

  // One row; values.size() must equal the number of columns (else kiln::Error).
  void append(const std::vector<std::string>& values);
  // Keeps the header and the rows whose first value, an integer, is at most `last`
  // (rewritten atomically): a resumed run drops the rows of the steps it will run again.
  void drop_rows_after(int64_t last);

 private:
  std::string path_;
  std::vector<std::string> columns_;
  std::ofstream out_;
};

}  // namespace kiln::io
