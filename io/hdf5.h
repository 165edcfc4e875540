// RAII wrappers over the HDF5 C API: files, groups, datasets and attributes, every status
// checked and turned into a kiln::Error naming the file and the object. This header does
// not include hdf5.h, so code that embeds kiln needs no HDF5 headers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::io::h5 {

// HDF5's hid_t (int64_t since HDF5 1.10; checked in hdf5.cpp).
using Id = int64_t;

// Holds the lock every call of kiln's into HDF5 takes: Debian's HDF5 is built without its
// thread safety, and kiln writes checkpoints on a thread of their own. Code that calls the
// HDF5 C API itself while kiln may be running holds one around those calls. Recursive:
// kiln's own calls on the holding thread still go through.
class CallLock {
 public:
  CallLock();
  ~CallLock();
  CallLock(const CallLock&) = delete;
  CallLock& operator=(const CallLock&) = delete;
};

// Files come from the internet: what a file declares is checked before kiln allocates
// for it. The most bytes one dataset may hold once read (fc6 of VGG16 is 411 MB in float32).
inline constexpr int64_t kMaxDatasetBytes = int64_t{4} << 30;
// The most bytes one attribute may hold once read (Keras's name lists are a few KB).
inline constexpr int64_t kMaxAttributeBytes = int64_t{16} << 20;

// Owns one HDF5 identifier and closes it with the matching H5?close.
class Handle {
 public:
  Handle() = default;
  Handle(Id id, int (*close)(Id)) : id_(id), close_(close) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Id get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset();
  // Gives up ownership without closing.
  Id release() {
    const Id id = id_;
    id_ = -1;
    return id;
  }

 private:
  Id id_ = -1;
  int (*close_)(Id) = nullptr;
};

// The element class of a dataset or attribute, as kiln cares about it.
struct TypeInfo {
  enum Class { floating, integer, string, other } cls = other;
  size_t size = 0;  // bytes per element
  // "float32", "int64", "string", "compound" ...
  std::string name() const;
};

class Dataset;

// A group or file root (HDF5 "location"); object paths are relative to it.
class Group {
 public:
  Group(Handle h, std::string file, std::string path) : h_(std::move(h)), file_(std::move(file)), path_(std::move(path)) {}

  const std::string& file() const { return file_; }
  const std::string& path() const { return path_; }
  // "'/model_weights/fc1' in file 'x.h5'", for messages.
  std::string where(const std::string& child = "") const;

  // True when `rel` (may contain '/') names an existing link below this group.
  bool exists(const std::string& rel) const;
  bool is_group(const std::string& rel) const;
  bool is_dataset(const std::string& rel) const;
  // Names of direct children, in HDF5's name order.
  std::vector<std::string> children() const;
  // The file address of the object at `rel`: equal addresses are the same object (hard
  // links can make a group its own descendant; walks use this to visit each group once).
  uint64_t object_address(const std::string& rel) const;

  Group group(const std::string& rel) const;
  Dataset dataset(const std::string& rel) const;
  // Creates `rel` and any missing intermediate groups.
  Group create_group(const std::string& rel);
  // Writes a float32 dataset of `shape` at `rel` (intermediate groups created).
  void write_f32(const std::string& rel, const std::vector<int64_t>& shape, const float* data);
  // Writes an int32 dataset (used by tests to make wrong-dtype files).
  void write_i32(const std::string& rel, const std::vector<int64_t>& shape, const int32_t* data);

  // ---- attributes ----
  bool has_attribute(const std::string& name) const;
  std::vector<std::string> attribute_names() const;
  // A string attribute, scalar or 1-d, fixed- or variable-length, as a list of strings
  // (trailing NULs and spaces of fixed-length strings stripped).
  std::vector<std::string> string_list_attribute(const std::string& name) const;
  std::string string_attribute(const std::string& name) const;
  int64_t int_attribute(const std::string& name) const;
  // Writes (replacing) a scalar variable-length string attribute.
  void set_string_attribute(const std::string& name, const std::string& value);
  // Writes (replacing) a 1-d fixed-length string attribute, as h5py writes a numpy 'S' array
  // (what Keras writes for layer_names and weight_names).
  void set_string_list_attribute(const std::string& name, const std::vector<std::string>& values);
  void set_int_attribute(const std::string& name, int64_t value);

  Id id() const { return h_.get(); }

 private:
  Handle h_;
  std::string file_;
  std::string path_;
};

// One dataset: its shape, element type and (float) values.
class Dataset {
 public:
  Dataset(Handle h, std::string file, std::string path);
  const std::string& path() const { return path_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const;
  const TypeInfo& type() const { return type_; }
  // All values converted to float32 by HDF5; the stored type must be an IEEE float (16,
  // 32 or 64 bits). The storage is checked first (check_storage).
  std::vector<float> read_f32() const;
  // Refuses, before any read, storage kiln does not read from untrusted files: layouts other
  // than contiguous/compact/chunked (virtual datasets), external storage (other files on
  // disk), filters other than deflate/shuffle/fletcher32, more than kMaxDatasetBytes, and
  // contiguous data that would extend past the end of the file.
  void check_storage() const;

  // ---- attributes (kiln's per-tensor checksum), read and written as a group's are ----
  bool has_attribute(const std::string& name) const;
  int64_t int_attribute(const std::string& name) const;
  void set_int_attribute(const std::string& name, int64_t value);

 private:
  Handle h_;
  std::string file_;
  std::string path_;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  TypeInfo type_;
  bool standard_float_ = false;
};

// An open HDF5 file. Closing (destructor or close()) flushes.
class File {
 public:
  // Opens an existing file read-only; a missing path or a non-HDF5 file is a kiln::Error.
  static File open_read(const std::string& path);
  // Opens an HDF5 file image held in memory, read-only (HDF5's core driver). The bytes are
  // copied, so the caller's buffer may go away; `name` is used in messages only.
  static File open_image(const void* data, size_t size, const std::string& name);
  // Creates (truncating) a file for writing.
  static File create(const std::string& path);

  const std::string& path() const { return path_; }
  Group root() const;
  void flush();
  // Closes now, checking the status (a failed final write surfaces here, not silently).
  void close();

 private:
  File(Handle h, std::string path) : h_(std::move(h)), path_(std::move(path)) {}
  Handle h_;
  std::string path_;
};

// "(3, 3, 64, 128)": a shape as HDF5/numpy print it.
std::string shape_str(const std::vector<int64_t>& shape);

// HDF5 files, groups, datasets, datatypes and attributes open in this process: 0 whenever
// no h5 object is alive. Fuzzers check it after every input, since LeakSanitizer cannot see
// an identifier kiln forgot to close (its memory belongs to libhdf5, whose leaks are
// suppressed).
int64_t open_object_count();

}  // namespace kiln::io::h5
