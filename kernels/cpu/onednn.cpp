#include "kernels/cpu/onednn.h"

namespace kiln::cpu {

dnnl::engine& onednn_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& onednn_stream() {
  thread_local dnnl::stream s(onednn_engine());
  return s;
}

dnnl::primitive_attr user_scratchpad(dnnl::primitive_attr attr) {
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

Scratchpad::Scratchpad(const dnnl::memory::desc& md, std::unordered_map<int, dnnl::memory>& args) {
  const size_t bytes = md.get_size();
  if (bytes == 0) return;
  buf_ = Tensor::empty(Shape{static_cast<int64_t>(bytes)}, TensorOptions{DType::u8});
  args.insert_or_assign(DNNL_ARG_SCRATCHPAD, dnnl::memory(md, onednn_engine(), buf_.raw_data()));
}

}  // namespace kiln::cpu
