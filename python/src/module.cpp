// The module kiln._kiln: kiln::Error becomes kiln.Error (a RuntimeError) carrying kiln's
// message, then every part of the surface is bound (bindings.h).
#include <cstring>
#include <string>
#include <utility>

#include <nanobind/nanobind.h>

#include "python/src/bindings.h"

namespace nb = nanobind;

namespace {
// kiln.Error; a plain pointer, never released: it lives as long as the interpreter.
PyObject* g_error_type = nullptr;

// kiln's messages name fixes in C++; a Python user reads the same fix in Python's words.
std::string python_spelling(std::string m) {
  static const std::pair<const char*, const char*> kWords[] = {
      {".to(DType::bf16)", ".astype(\"bfloat16\")"},
      {".to(DType::f32)", ".astype(\"float32\")"},
      {"backward(seed, /*retain_graph=*/true)", "backward(retain_graph=True)"},
  };
  for (const auto& [cpp, py] : kWords)
    for (size_t at = m.find(cpp); at != std::string::npos; at = m.find(cpp, at + std::strlen(py)))
      m.replace(at, std::strlen(cpp), py);
  return m;
}
}  // namespace

NB_MODULE(_kiln, m) {
  m.doc() = "kiln: tensors, autograd, modules, model specs, weights and optimizers (docs/python.md)";
  m.attr("__version__") = KILN_VERSION;  // the CMake project's, as pyproject.toml's
  // One exception class for everything kiln rejects; its message is kiln's own, without the
  // C++ file:line, which stays available as the `location` attribute.
  g_error_type = PyErr_NewExceptionWithDoc("kiln.Error", "An error kiln reported (kiln::Error): the message says what was "
                                           "expected and what was found.", PyExc_RuntimeError, nullptr);
  m.attr("Error") = nb::handle(g_error_type);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const kiln::Error& e) {
      nb::object exc = nb::handle(g_error_type)(nb::str(python_spelling(e.message()).c_str()));
      nb::setattr(exc, "location", nb::str(e.location().c_str()));
      PyErr_SetObject(g_error_type, exc.ptr());
    }
  });
  kiln::python::bind_tensor(m);
  kiln::python::bind_dlpack(m);
  kiln::python::bind_engine(m);
  kiln::python::bind_optim(m);
  kiln::python::bind_train(m);
  kiln::python::bind_data(m);
  kiln::python::bind_device(m);
}
