// Devices and GPU math from Python (docs/python.md): how many GPUs, waiting for one, its
// memory, and the switches the KILN_* variables set at start (TF32, conv algorithm search,
// determinism, cuDNN API), settable at run time as torch.backends' are; and the op profiler.
#include <string>
#include <vector>

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include "core/conv_api.h"
#include "core/profiler.h"
#include "python/src/bindings.h"

namespace kiln::python {

namespace {
using nb::arg;

DeviceType device_type_from_name(const std::string& kind) {
  if (kind == "cpu") return DeviceType::cpu;
  if (kind == "cuda") return DeviceType::cuda;
  KILN_FAIL("unknown device type '", kind, "': use \"cpu\" or \"cuda\"");
}
// "kiln.Profiler(by_shape=False, timing, 3 rows of 12 calls)": its mode and what it holds.
std::string profiler_repr(const Profiler& p) {
  const std::vector<ProfileRow> rows = p.rows();
  int64_t calls = 0;
  for (const ProfileRow& r : rows) calls += r.calls;
  return std::string("kiln.Profiler(by_shape=") + (p.by_shape() ? "True" : "False") +
         (p.timing() ? ", timing, " : ", stopped, ") + std::to_string(rows.size()) + " rows of " +
         std::to_string(calls) + " calls)";
}

// kiln.Profiler: core/profiler.h as a context manager.
void bind_profiler(nb::module_& m) {
  nb::class_<Profiler>(m, "Profiler",
                       "Times every kiln op this thread runs, each alone (the device drained around it), from "
                       "its creation until stop() or the end of its `with` block: `with kiln.Profiler() as p: "
                       "step()`, then print(p.table()). One at a time per process, and once: a stopped one is not "
                       "started again (make a new one; README, 'Benchmarks').")
      .def(nb::init<bool>(), arg("by_shape") = false, "by_shape: a row per op and input shape, else per op.")
      // A second `with` over a stopped profiler timed nothing and said nothing.
      .def("__enter__", [](Profiler& p) -> Profiler& {
             KILN_CHECK(p.timing(), "this kiln.Profiler has stopped (its `with` block ended, or stop() was called) "
                        "and does not time again: make a new one, `with kiln.Profiler() as p:`");
             return p;
           }, nb::rv_policy::reference)
      .def("__exit__", [](Profiler& p, nb::args) { p.stop(); })
      .def("stop", &Profiler::stop, "Stops timing; the rows stay readable.")
      .def("reset", &Profiler::reset, "Forgets the rows so far (a warm-up's) and goes on timing.")
      .def(
          "rows",
          [](const Profiler& p) {
            nb::list out;
            for (const ProfileRow& r : p.rows()) {
              nb::dict d;
              d["op"] = r.op, d["shape"] = r.shape, d["calls"] = r.calls, d["total_ms"] = r.total_ms;
              out.append(d);
            }
            return out;
          },
          "The rows, most total time first: dicts with op, shape (\"\" unless by_shape), calls, total_ms.")
      .def_prop_ro("untimed_calls", &Profiler::untimed_calls,
                   "Calls that passed untimed: while recording a CUDA graph, or from other threads.")
      .def("table", &Profiler::table, arg("top") = 25, "The rows as a text table (top: how many; 0: all).")
      .def("__repr__", &profiler_repr);
}
}  // namespace

void bind_device(nb::module_& m) {
  m.def("device_count", [](const std::string& kind) { return device_count(device_type_from_name(kind)); },
        arg("kind") = "cuda", "Usable devices of a type: 0 for \"cuda\" without a GPU or a CUDA build; \"cpu\" is 1.");
  m.def("device_name", [](const std::string& d) { return device_name(device_from_name(d)); }, arg("device"),
        "The device's model for reports, e.g. \"NVIDIA H200 (sm_90, 139.8 GiB)\"; \"cpu\" for the CPU.");
  m.def("synchronize", [](const std::string& d) {
          nb::gil_scoped_release release;
          synchronize(device_from_name(d));
        }, arg("device") = "cuda",
        "Waits until the work queued on the device has finished (kiln's GPU ops return before it has).");
  m.def("memory_stats", [](const std::string& d) {
          const MemoryStats s = memory_stats(device_from_name(d));
          nb::dict out;
          out["current_bytes"] = s.current_bytes;
          out["peak_bytes"] = s.peak_bytes;
          out["reserved_bytes"] = s.reserved_bytes;
          return out;
        }, arg("device"),
        "Bytes in tensors now, their peak since the last reset_peak_memory, and bytes the device's pool holds "
        "(in use or cached); all 0 on the CPU.");
  m.def("reset_peak_memory", [](const std::string& d) { reset_peak_memory(device_from_name(d)); }, arg("device"),
        "Starts a new peak for memory_stats.");
  m.def("gpu_math", [] {
          const ComputeOptions& o = compute_options();
          nb::dict out;
          out["tf32"] = tf32_mode();
          out["conv_search"] = o.exhaustive_conv_search ? "exhaustive" : "heuristic";
          out["deterministic"] = o.deterministic;
          out["conv_api"] = conv_api_name(conv_api());
          out["conv_fuse"] = conv_fuse();
          out["summary"] = gpu_math_summary();
          return out;
        },
        "The GPU math switches in force: tf32 (\"none\", \"conv\", \"all\"), conv_search (\"heuristic\", "
        "\"exhaustive\"), deterministic, conv_api (\"legacy\", \"graph\"), conv_fuse (the graph API's conv + bias + "
        "ReLU as one graph), and a summary in words. They start from KILN_TF32, KILN_CONV_SEARCH, "
        "KILN_DETERMINISTIC, KILN_CONV_API and KILN_CONV_FUSE (README).");
  m.def("set_gpu_math",
        [](std::optional<std::string> tf32, std::optional<std::string> conv_search, std::optional<bool> deterministic,
           std::optional<std::string> conv_api, std::optional<bool> conv_fuse) {
          set_gpu_math(GpuMathSettings{tf32, conv_search, deterministic, conv_api, conv_fuse});
        },
        nb::kw_only(), arg("tf32") = nb::none(), arg("conv_search") = nb::none(), arg("deterministic") = nb::none(),
        arg("conv_api") = nb::none(), arg("conv_fuse") = nb::none(),
        "Sets GPU math switches (None leaves one as it is), all or none: an unknown value, or deterministic=True "
        "with conv_search=\"exhaustive\", raises kiln.Error and changes nothing. Takes effect from the next op; "
        "no effect on the CPU.");
  bind_profiler(m);
}

}  // namespace kiln::python
