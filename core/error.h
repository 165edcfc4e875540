// kiln::Error is the one exception type the engine throws: a readable message that says
// what was expected, what was found and where. Only apps/ turns it into an exit code.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace kiln {

// The engine's exception: what() is the message with file:line of the check appended (for
// logs and tests); people see message() alone (apps print the location with --verbose).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, std::string location = "")
      : std::runtime_error(location.empty() ? message : message + " [" + location + "]"),
        message_(message),
        location_(std::move(location)) {}
  // The message without the source location.
  const std::string& message() const { return message_; }
  // "io/weights.cpp:294", or "" when none was recorded.
  const std::string& location() const { return location_; }

 private:
  std::string message_, location_;
};

namespace detail {
// Streams every argument into one string; lets checks write `"got ", shape` inline.
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void throw_error(const char* file, int line, const std::string& message);
}  // namespace detail

}  // namespace kiln

// Throws kiln::Error with the message and file:line when `cond` is false.
#define KILN_CHECK(cond, ...)                                                     \
  do {                                                                            \
    if (!(cond)) ::kiln::detail::throw_error(__FILE__, __LINE__, ::kiln::detail::concat(__VA_ARGS__)); \
  } while (0)

// Throws kiln::Error unconditionally.
#define KILN_FAIL(...) ::kiln::detail::throw_error(__FILE__, __LINE__, ::kiln::detail::concat(__VA_ARGS__))
