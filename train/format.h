// One printf-style number formatter for the training floor and its apps (evaluation
// details, metrics logs, the app's lines for people), instead of a copy in each file.
#pragma once

#include <string>

namespace kiln {

// `value` formatted by the printf format `format` ("%.4f"); results longer than 63
// characters are cut.
std::string format_number(const char* format, double value);

}  // namespace kiln
