#include "core/shape.h"

#include <cstdint>
#include <sstream>

#include "core/error.h"

namespace kiln {

int64_t Shape::numel() const {
  for (int64_t d : dims_)
    if (d == 0) return 0;  // empty, however large the other extents
  int64_t n = 1;
  for (int64_t d : dims_)
    KILN_CHECK(!__builtin_mul_overflow(n, d, &n), "shape ", *this, " has more than 2^63 - 1 elements");
  return n;
}

int64_t Shape::numel_before(int64_t d) const {
  KILN_CHECK(d >= 0 && d <= rank(), "numel_before: dimension ", d, " is outside [0, ", rank(), "] for ", *this);
  return Shape(std::vector<int64_t>(dims_.begin(), dims_.begin() + d)).numel();
}

int64_t Shape::numel_after(int64_t d) const {
  KILN_CHECK(d >= 0 && d < rank(), "numel_after: dimension ", d, " is outside [0, ", rank(), ") for ", *this);
  return Shape(std::vector<int64_t>(dims_.begin() + d + 1, dims_.end())).numel();
}

Shape Shape::around(int64_t d) const { return Shape{numel_before(d), (*this)[d], numel_after(d)}; }

std::vector<int64_t> Shape::contiguous_strides() const {
  std::vector<int64_t> s(dims_.size());
  int64_t acc = 1;
  for (size_t i = dims_.size(); i-- > 0;) {
    s[i] = acc;
    // Only an empty shape's strides can pass 2^63 - 1 (numel refuses the rest); they never address.
    if (__builtin_mul_overflow(acc, dims_[i], &acc)) acc = INT64_MAX;
  }
  return s;
}

void Shape::out_of_range(int64_t d) const {
  KILN_CHECK(rank() > 0, "dimension ", d, " of a 0-d shape, which has none");
  KILN_FAIL("dimension ", d, " is out of range for shape ", str(), " (rank ", rank(), ": valid are ", -rank(), "..",
            rank() - 1, ")");
}

std::string Shape::str() const {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < dims_.size(); ++i) os << (i ? ", " : "") << dims_[i];
  os << ']';
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

}  // namespace kiln
