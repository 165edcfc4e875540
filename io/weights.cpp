// Weight import (format detection, assignment map, checks, then an all-or-nothing load)
// and export (kiln's layout or Keras's, written atomically: io/atomic_file.h).
#include "io/weights.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <set>
#include <sstream>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/crc32c.h"
#include "io/hdf5.h"
#include "io/keras_archive.h"
#include "io/weights_sources.h"

namespace kiln::io {

using kiln::detail::concat;
using namespace weights_detail;

namespace {

// 2: every dataset carries its CRC32C (kChecksumAttribute). 1 (no checksums) is still read.
constexpr int64_t kKilnFormatVersion = 2;
constexpr int64_t kFirstChecksummedVersion = 2;

// Checksums are defined over little-endian float32 bytes, which is how floats sit in memory here.
static_assert(std::endian::native == std::endian::little, "kiln's tensor checksums assume a little-endian host");

// Every dataset below `g`, depth first, as paths relative to the root without the '/'.
// Each group is entered once (`seen`: object addresses): hard and soft links can make a
// group its own descendant, which would otherwise recurse until the stack runs out.
void walk_datasets(const h5::Group& g, const std::string& prefix, std::vector<std::string>& out,
                   std::set<uint64_t>& seen, int depth = 0) {
  KILN_CHECK(depth < 64, "weights file '", g.file(), "': groups nested deeper than 64 levels at '", prefix,
             "' (corrupt file?)");
  for (const std::string& child : g.children()) {
    const std::string rel = prefix.empty() ? child : prefix + "/" + child;
    if (g.is_group(child)) {
      if (seen.insert(g.object_address(child)).second) walk_datasets(g.group(child), rel, out, seen, depth + 1);
    } else if (g.is_dataset(child)) {
      out.push_back(rel);
    }
  }
}

SourceList list_kiln(const h5::Group& root) {
  SourceList s;
  s.format = WeightsFormat::kiln;
  const int64_t version = root.int_attribute("kiln_format_version");
  KILN_CHECK(version >= 1 && version <= kKilnFormatVersion, "weights file '", root.file(), "' has kiln_format_version ",
             version, "; this kiln reads versions 1..", kKilnFormatVersion);
  s.model = root.string_attribute("model");
  // A kiln file without the attribute records no convention: unknown.
  s.convention = root.has_attribute("input_convention")
                     ? parse_convention(root.string_attribute("input_convention"))
                     : InputConvention::unknown;
  std::vector<std::string> paths;
  std::set<uint64_t> seen{root.object_address(".")};
  walk_datasets(root, "", paths, seen);
  for (const std::string& p : paths) s.entries.push_back({p, "/" + p, Layout::same});
  return s;
}

// The shape an entry has once in kiln's layout; empty when the file shape cannot be in
// that layout (wrong rank).
std::vector<int64_t> kiln_shape(const std::vector<int64_t>& f, Layout layout) {
  switch (layout) {
    case Layout::same: return f;
    case Layout::conv_hwio:
      if (f.size() != 4) return {};
      return {f[3], f[0], f[1], f[2]};
    case Layout::dense_io:
      if (f.size() != 2) return {};
      return {f[1], f[0]};
  }
  return {};
}

const char* layout_note(Layout layout) {
  switch (layout) {
    case Layout::same: return "";
    case Layout::conv_hwio: return " (Keras conv kernel (kh, kw, in, out), read as OHWI)";
    case Layout::dense_io: return " (Keras dense kernel (in, out), read as [out, in])";
  }
  return "";
}

bool matches_any(const std::vector<std::string>& patterns, const std::string& name) {
  return std::any_of(patterns.begin(), patterns.end(), [&](const std::string& p) { return name_matches(p, name); });
}

// The kiln name `source` maps to, or "" when no key covers it. Longest key wins.
std::string apply_map(const std::map<std::string, std::string>& map, const std::string& source) {
  size_t best = 0;
  const std::pair<const std::string, std::string>* hit = nullptr;
  for (const auto& kv : map) {
    const std::string& k = kv.first;
    const bool scope = !k.empty() && k.back() == '/';
    const bool ok = scope ? source.compare(0, k.size(), k) == 0 : source == k;
    if (ok && (hit == nullptr || k.size() > best)) {
      hit = &kv;
      best = k.size();
    }
  }
  if (!hit) return "";
  const bool scope = !hit->first.empty() && hit->first.back() == '/';
  return scope ? hit->second + source.substr(hit->first.size()) : hit->second;
}

// True when some value of the map covers kiln name `target`.
bool map_covers(const std::map<std::string, std::string>& map, const std::string& target) {
  for (const auto& kv : map) {
    const std::string& v = kv.second;
    const bool scope = !v.empty() && v.back() == '/';
    if (scope ? target.compare(0, v.size(), v) == 0 : target == v) return true;
  }
  return false;
}

std::string list_str(const std::vector<std::string>& v, size_t limit = 8) {
  std::ostringstream os;
  for (size_t i = 0; i < v.size() && i < limit; ++i) os << (i ? ", " : "") << v[i];
  if (v.size() > limit) os << ", ... (" << v.size() - limit << " more)";
  return os.str();
}

std::string shape_of(const Tensor& t) { return h5::shape_str(t.shape().dims()); }

// Missing: covered by the map, not skipped, and absent from the file (`present`: the names
// the file has an entry for, loaded or shaped otherwise; an entry of another shape is that,
// not missing).
std::vector<std::string> missing_parameters(const std::vector<ParameterRef>& targets,
                                            const std::map<std::string, std::string>& map,
                                            const std::vector<std::string>& skip, std::vector<std::string> present) {
  std::sort(present.begin(), present.end());
  std::vector<std::string> missing;
  for (const ParameterRef& p : targets) {
    if (!map_covers(map, p.name) || matches_any(skip, p.name)) continue;
    if (!std::binary_search(present.begin(), present.end(), p.name)) missing.push_back(p.name);
  }
  return missing;
}

std::vector<std::string> map_keys(const std::map<std::string, std::string>& map) {
  std::vector<std::string> keys;
  for (const auto& kv : map) keys.push_back("'" + kv.first + "'");
  return keys;
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// Checks the values read from `ds` against its checksum attribute.
void check_checksum(const h5::Dataset& ds, const std::string& file, const std::string& tensor,
                    const std::vector<float>& v) {
  const std::string corrupt = concat("file '", file, "' is corrupt: tensor '", tensor, "' ");
  const char* changed = "; the file was changed after kiln wrote it";
  KILN_CHECK(ds.has_attribute(kChecksumAttribute), corrupt, "has no '", kChecksumAttribute,
             "' checksum, which kiln writes on every tensor of this format", changed);
  const int64_t stored = ds.int_attribute(kChecksumAttribute);
  KILN_CHECK(stored >= 0 && stored <= int64_t{0xFFFFFFFF}, corrupt, "has checksum attribute ", stored,
             ", which is no 32-bit CRC", changed);
  const uint32_t computed = tensor_checksum(v.data(), v.size());
  KILN_CHECK(computed == static_cast<uint32_t>(stored), corrupt, "fails its checksum (stored ",
             hex32(static_cast<uint32_t>(stored)), ", computed ", hex32(computed), ")", changed);
}

// What ImportReport::checksums says for a file of `format` (and kiln format `version`).
std::string checksum_status(WeightsFormat format, int64_t version) {
  switch (format) {
    case WeightsFormat::kiln:
      return version >= kFirstChecksummedVersion
                 ? "verified (CRC32C of every tensor read)"
                 : "none (kiln format version 1: written by an older kiln or converted by another tool)";
    case WeightsFormat::keras: return "none in file (Keras files carry no checksums)";
    case WeightsFormat::keras3: return "none in file (Keras 3 files carry no checksums)";
  }
  return "none";
}

[[noreturn]] void fail_unknown_format(const h5::Group& root) {
  // A checkpoint's state file is what a run names last; its weights are another file.
  KILN_CHECK(!(root.has_attribute("kind") && root.string_attribute("kind") == kCheckpointKind), "'", root.file(),
             "' is a checkpoint's state file (optimizer state and progress), not a weights file: write the "
             "model's weights with 'vgg_finetune export --model-dir DIR --out FILE' (the checkpoint's own weights "
             "files hold only part of the model when its phase froze layers)");
  KILN_FAIL("'", root.file(), "' is HDF5 but not a weights file kiln knows: expected a kiln_format_version attribute ",
            "(kiln), a layer_names attribute (Keras) or a layers/ group (Keras 3); found groups [",
            list_str(root.children()), "] and attributes [", list_str(root.attribute_names()), "]");
}

// Reads one entry into a host float32 tensor in kiln's layout, checking its checksum first
// when `verify`.
Tensor read_entry(const h5::Group& root, const SourceEntry& e, const std::vector<int64_t>& shape, bool verify) {
  const h5::Dataset ds = root.dataset(e.origin.substr(1));
  std::vector<float> v = ds.read_f32();
  if (verify) check_checksum(ds, root.file(), e.name, v);
  Tensor t = Tensor::empty(Shape(shape));
  float* dst = t.data<float>();
  if (e.layout == Layout::same) {
    std::copy(v.begin(), v.end(), dst);
  } else {
    // Both Keras kernels are [rows, out] matrices: (kh*kw*in, out) or (in, out).
    const int64_t cols = ds.shape().back();
    transpose(v.data(), dst, ds.numel() / std::max<int64_t>(cols, 1), cols);
  }
  return t;
}

}  // namespace

namespace weights_detail {

void transpose(const float* src, float* dst, int64_t rows, int64_t cols) {
  constexpr int64_t B = 64;  // blocked: both sides stay in cache
  for (int64_t r0 = 0; r0 < rows; r0 += B)
    for (int64_t c0 = 0; c0 < cols; c0 += B)
      for (int64_t r = r0; r < std::min(rows, r0 + B); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + B); ++c) dst[c * rows + r] = src[r * cols + c];
}

}  // namespace weights_detail

const char* format_name(WeightsFormat f) {
  switch (f) {
    case WeightsFormat::kiln: return "kiln";
    case WeightsFormat::keras: return "keras (HDF5)";
    case WeightsFormat::keras3: return "keras 3 (.weights.h5)";
  }
  return "?";
}

std::string ImportReport::to_string() const {
  std::ostringstream os;
  os << "weights '" << path << "' (" << format_name(format) << ", model '" << source_model << "', input "
     << convention_name(convention) << "): " << loaded.size() << " loaded, " << skipped.size() << " skipped";
  // mismatched entries are skipped ones (each parameter is counted once).
  if (!mismatched.empty()) os << " (" << mismatched.size() << " of them shaped unlike the model's)";
  os << ", " << unmapped.size() << " unmapped, " << missing.size() << " missing";
  auto line = [&](const char* what, const std::vector<std::string>& v) {
    if (!v.empty()) os << "\n  " << what << ": " << list_str(v);
  };
  line("skipped", skipped);
  line("unmapped", unmapped);
  line("missing (left as initialised)", missing);
  line("shape differs (skipped)", mismatched);
  if (!checksums.empty()) os << "\n  checksums: " << checksums;
  return os.str();
}

uint32_t tensor_checksum(const float* data, size_t n) { return crc32c(data, n * sizeof(float)); }

void write_checksummed(h5::Group& g, const std::string& rel, const std::vector<int64_t>& shape, const float* data) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  g.write_f32(rel, shape, data);
  // Stored as an int64 attribute holding the unsigned 32-bit value (HDF5 int attributes here are int64).
  g.dataset(rel).set_int_attribute(kChecksumAttribute, tensor_checksum(data, static_cast<size_t>(n)));
}

std::vector<float> read_checksummed(const h5::Group& g, const std::string& rel, bool verify) {
  const h5::Dataset ds = g.dataset(rel);
  std::vector<float> v = ds.read_f32();
  if (verify) check_checksum(ds, g.file(), rel, v);
  return v;
}

std::string weights_source_model(const h5::Group& root) {
  if (root.has_attribute("kiln_format_version"))
    return root.has_attribute("model") ? root.string_attribute("model") : "";
  return is_keras(root) ? keras_file_model(root) : "";
}

std::string verify_weights(const std::string& path) {
  const h5::File file = open_weights_file(path);  // HDF5, or a .keras archive's weights
  const h5::Group root = file.root();
  if (!root.has_attribute("kiln_format_version")) {
    if (is_keras(root)) return checksum_status(WeightsFormat::keras, 0);
    if (is_keras3(root)) return checksum_status(WeightsFormat::keras3, 0);
    fail_unknown_format(root);
  }
  list_kiln(root);  // the version and attributes checks
  const int64_t version = root.int_attribute("kiln_format_version");
  if (version >= kFirstChecksummedVersion) verify_checksums(root);
  return checksum_status(WeightsFormat::kiln, version);
}

size_t verify_checksums(const h5::Group& g) {
  std::vector<std::string> paths;
  std::set<uint64_t> seen{g.object_address(".")};
  walk_datasets(g, "", paths, seen);
  for (const std::string& p : paths) read_checksummed(g, p, true);
  return paths.size();
}

namespace {

// A problem for each skip pattern that matches no file entry (by its name or the model name it
// maps to) and no parameter or buffer of the model: ImportOptions::skip_must_match.
void refuse_unmatched_skips(const std::vector<std::string>& skip, const std::vector<SourceEntry>& entries,
                            const std::map<std::string, std::string>& map, const std::vector<ParameterRef>& targets,
                            std::vector<std::string>& problems) {
  for (const std::string& p : skip) {
    const bool in_file = std::any_of(entries.begin(), entries.end(), [&](const SourceEntry& e) {
      const std::string target = apply_map(map, e.name);
      return name_matches(p, e.name) || (!target.empty() && name_matches(p, target));
    });
    const bool in_model =
        std::any_of(targets.begin(), targets.end(), [&](const ParameterRef& t) { return name_matches(p, t.name); });
    if (!in_file && !in_model)
      problems.push_back(concat("skip pattern '", p, "' matches no entry of the file and no parameter of the model",
                                p.empty() || p.back() == '/' ? "" : " (a scope ends in '/', e.g. '" + p + "/')"));
  }
}

}  // namespace

ImportReport import_weights(Module& model, const std::string& path, const ImportOptions& opt) {
  const h5::File file = open_weights_file(path);  // HDF5, or a .keras archive's weights
  return import_weights(model, file, opt);
}

ImportReport import_weights(Module& model, const h5::File& file, const ImportOptions& opt) {
  const std::string& path = file.path();
  const h5::Group root = file.root();
  SourceList src;
  if (root.has_attribute("kiln_format_version")) src = list_kiln(root);
  else if (is_keras(root)) src = list_keras(root, model);
  else if (is_keras3(root)) src = list_keras3(root, model);
  else fail_unknown_format(root);
  const int64_t version = src.format == WeightsFormat::kiln ? root.int_attribute("kiln_format_version") : 0;
  const bool verify = src.format == WeightsFormat::kiln && version >= kFirstChecksummedVersion;

  ImportReport rep;
  rep.path = path;
  rep.format = src.format;
  rep.source_model = src.model;
  rep.convention = src.convention;
  rep.checksums = checksum_status(src.format, version);

  std::map<std::string, std::string> map = opt.assignment_map;
  if (map.empty()) {
    KILN_CHECK(src.model == model.name(), "weights file '", path, "' is for model '", src.model, "', not '",
               model.name(), "'; pass an assignment_map to load across models");
    map[src.model + "/"] = model.name() + "/";
  }

  // Buffers load like parameters (they are saved beside them; never trained).
  std::vector<ParameterRef> targets = model.parameters();
  for (const BufferRef& b : model.buffers()) targets.push_back(ParameterRef{b.name, b.tensor, false, false});
  std::map<std::string, ParameterRef> params;
  for (const ParameterRef& p : targets) params.emplace(p.name, p);

  std::vector<std::string> problems;
  std::vector<std::pair<const SourceEntry*, ParameterRef>> plan;
  std::vector<std::vector<int64_t>> plan_shapes;
  std::vector<std::string> unknown_targets, shape_refused;
  for (const SourceEntry& e : src.entries) {
    const std::string target = apply_map(map, e.name);
    const bool skip = matches_any(opt.skip, e.name) || (!target.empty() && matches_any(opt.skip, target));
    if (target.empty() && !skip) {
      rep.unmapped.push_back(e.name);
      continue;
    }
    auto it = target.empty() ? params.end() : params.find(target);
    const std::string where = concat("entry '", e.origin, "' (", e.name, target.empty() || target == e.name ? "" : " -> ",
                                     target == e.name ? "" : target, ")");
    if (skip) {
      rep.skipped.push_back(e.name);
      if (it != params.end()) {
        const std::vector<int64_t> ks = kiln_shape(root.dataset(e.origin.substr(1)).shape(), e.layout);
        if (ks != it->second.tensor->shape().dims()) rep.mismatched.push_back(target);
      }
      continue;
    }
    if (it == params.end()) {
      unknown_targets.push_back(target);
      problems.push_back(concat(where, ": model '", model.name(), "' has no parameter '", target, "'"));
      continue;
    }
    const h5::Dataset ds = root.dataset(e.origin.substr(1));
    if (ds.type().cls != h5::TypeInfo::floating) {
      problems.push_back(concat(where, ": expected float32 values, found ", ds.type().name()));
      continue;
    }
    const std::vector<int64_t> ks = kiln_shape(ds.shape(), e.layout);
    const Tensor& t = *it->second.tensor;
    if (ks != t.shape().dims() && opt.skip_mismatched) {
      rep.skipped.push_back(e.name);
      rep.mismatched.push_back(target);
      continue;
    }
    if (ks != t.shape().dims()) {
      problems.push_back(concat(where, ": model expects ", shape_of(t), ", file has ", h5::shape_str(ds.shape()),
                                layout_note(e.layout), " (is the file for another image size or class count?)"));
      shape_refused.push_back(target);
      continue;
    }
    ds.check_storage();  // layout, filters, external files, extent in the file: before any value is read
    plan.emplace_back(&e, it->second);
    plan_shapes.push_back(ks);
  }

  std::vector<std::string> present = shape_refused;
  present.insert(present.end(), rep.mismatched.begin(), rep.mismatched.end());
  for (const auto& pe : plan) present.push_back(pe.second.name);
  rep.missing = missing_parameters(targets, map, opt.skip, std::move(present));
  if (opt.skip_must_match) refuse_unmatched_skips(opt.skip, src.entries, map, targets, problems);
  // A map that covers nothing in the file loads nothing: a typo in it, not a success.
  if (plan.empty() && !rep.unmapped.empty() && rep.skipped.empty() && problems.empty())
    problems.push_back(concat("no entry of the file maps to a model parameter: all ", rep.unmapped.size(),
                              " are unmapped (e.g. '", rep.unmapped.front(), "'); the assignment map's keys are ",
                              list_str(map_keys(map), 4), " (a scope key ends in '/')"));
  if (!rep.missing.empty() && !opt.allow_missing)
    problems.push_back(concat("model parameters missing from the file: ", list_str(rep.missing),
                              " (a file for part of the model: allow missing parameters, or skip them, to keep their initial values)"));

  if (!problems.empty()) {
    std::ostringstream os;
    os << "cannot load weights '" << path << "' (" << format_name(src.format) << ", model '" << src.model
       << "') into model '" << model.name() << "': " << problems.size() << " problem" << (problems.size() > 1 ? "s" : "");
    for (size_t i = 0; i < problems.size() && i < 12; ++i) os << "\n  " << problems[i];
    if (problems.size() > 12) os << "\n  ... and " << problems.size() - 12 << " more";
    if (!unknown_targets.empty())
      os << "\n  (names the model lacks: " << list_str(unknown_targets, 4)
         << " -- is this a weights file for another model?)";
    KILN_FAIL(os.str());
  }

  // Read (and verify) everything first, then assign: a read error or a corrupt tensor
  // leaves the model untouched.
  std::vector<Tensor> values;
  values.reserve(plan.size());
  for (size_t i = 0; i < plan.size(); ++i)
    values.push_back(read_entry(root, *plan[i].first, plan_shapes[i], verify));
  for (size_t i = 0; i < plan.size(); ++i) {
    plan[i].second.tensor->copy_from(values[i]);
    rep.loaded.push_back(plan[i].second.name);
  }
  return rep;
}

void write_kiln_weights(const std::string& path, const std::string& model_name, InputConvention convention,
                        const std::vector<std::pair<std::string, const Tensor*>>& tensors) {
  write_atomic(path, [&](const std::string& tmp) {
    h5::File file = h5::File::create(tmp);
    {
      h5::Group root = file.root();
      root.set_int_attribute("kiln_format_version", kKilnFormatVersion);
      root.set_string_attribute("model", model_name);
      root.set_string_attribute("input_convention", convention_name(convention));
      for (const auto& [name, tensor] : tensors) {
        const Tensor host = tensor->cpu().to(DType::f32);
        write_checksummed(root, name, host.shape().dims(), host.data<float>());
      }
    }
    file.flush();
    file.close();
  });
}

void export_weights(Module& model, const std::string& path, const ExportOptions& opt) {
  KILN_CHECK(opt.format == WeightsFormat::kiln || opt.format == WeightsFormat::keras, "export_weights: format ",
             format_name(opt.format), " is import-only; export writes kiln or keras");
  if (opt.format == WeightsFormat::kiln) {
    std::vector<std::pair<std::string, const Tensor*>> tensors;
    for (const ParameterRef& p : model.parameters())
      if (!opt.select || opt.select(p.name)) tensors.emplace_back(p.name, p.tensor);
    for (const BufferRef& b : model.buffers())
      if (!opt.select || opt.select(b.name)) tensors.emplace_back(b.name, b.tensor);
    write_kiln_weights(path, model.name(), opt.convention, tensors);
    return;
  }
  write_atomic(path, [&](const std::string& tmp) {
    h5::File file = h5::File::create(tmp);
    {
      h5::Group root = file.root();
      write_keras(root, model, opt.convention);
    }
    file.flush();
    file.close();
  });
}

}  // namespace kiln::io
