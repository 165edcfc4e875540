// The training floor's formatters for people's lines (evaluation details, metrics logs,
// errors naming classes, the app's output), instead of a copy in each file.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {

// `value` formatted by the printf format `format` ("%.4f"); results longer than 63
// characters are cut.
std::string format_number(const char* format, double value);

// "1 epoch", "3 epochs": the count with `one` when it is 1, else with `many`.
std::string plural(long long n, const std::string& one, const std::string& many);

// "a, b, c": the names joined by `separator`, the first `limit` of them then "..." when there
// are more ("; " joins items that hold commas themselves).
std::string join_names(const std::vector<std::string>& names, size_t limit = static_cast<size_t>(-1),
                       const std::string& separator = ", ");

// The lines of a text file as an editor may have saved it: a UTF-8 byte-order mark dropped,
// and the CR of a CR LF ending (Windows editors, spreadsheets).
std::vector<std::string> text_lines(std::string_view text);

// `s` without its leading and trailing spaces and tabs.
std::string trimmed(std::string_view s);

}  // namespace kiln
