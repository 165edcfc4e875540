// Tensor shapes and strides: a small vector of int64 extents, row-major.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>
#include <vector>

namespace kiln {

// Extents of a tensor, outermost first. A 0-d shape (scalar) has one element.
class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) : dims_(dims) {}
  explicit Shape(std::vector<int64_t> dims) : dims_(std::move(dims)) {}

  int64_t rank() const { return static_cast<int64_t>(dims_.size()); }
  // Extent of dimension d; negative d counts from the end.
  int64_t operator[](int64_t d) const { return dims_[index(d)]; }
  int64_t& operator[](int64_t d) { return dims_[index(d)]; }
  // Product of extents (1 for a scalar).
  int64_t numel() const;
  // Product of the extents before dimension d, d in [0, rank]: the rows of a view around d.
  int64_t numel_before(int64_t d) const;
  // Product of the extents after dimension d, d in [0, rank): the inner run of a view around d.
  int64_t numel_after(int64_t d) const;
  // [numel_before(d), extent d, numel_after(d)]: the [outer, n, inner] view a kernel along d takes.
  Shape around(int64_t d) const;
  const std::vector<int64_t>& dims() const { return dims_; }
  // Row-major strides in elements.
  std::vector<int64_t> contiguous_strides() const;
  // "[2, 3, 4]".
  std::string str() const;
  bool operator==(const Shape&) const = default;

 private:
  // d as an index into dims_; a kiln::Error naming the shape when it is out of range.
  size_t index(int64_t d) const {
    const int64_t i = d < 0 ? d + rank() : d;
    if (i < 0 || i >= rank()) out_of_range(d);
    return static_cast<size_t>(i);
  }
  [[noreturn]] void out_of_range(int64_t d) const;

  std::vector<int64_t> dims_;
};

std::ostream& operator<<(std::ostream& os, const Shape& s);

}  // namespace kiln
