// Data-parallel pieces of the trainer (data_parallel.h).
#include "train/data_parallel.h"

#include <sstream>

#include "core/ops.h"

namespace kiln {

void broadcast_model(Module& model, Communicator& comm) {
  if (comm.size() == 1) return;
  for (ParameterRef& p : model.parameters()) comm.broadcast(*p.tensor, 0);
  for (BufferRef& b : model.buffers()) comm.broadcast(*b.tensor, 0);
}

void check_same_run(Communicator& comm, const std::string& fingerprint) {
  if (comm.size() == 1) return;
  std::string root = fingerprint;
  comm.broadcast(root, 0);
  std::vector<double> differs(static_cast<size_t>(comm.size()), 0.0);
  differs[static_cast<size_t>(comm.rank())] = root == fingerprint ? 0 : 1;
  comm.allreduce_sum(differs);
  std::string ranks;
  for (size_t r = 0; r < differs.size(); ++r)
    if (differs[r] != 0) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
  if (ranks.empty()) return;
  std::string detail;
  if (root != fingerprint) {
    std::istringstream a(root), b(fingerprint);
    std::string la, lb;
    while (std::getline(a, la) && std::getline(b, lb) && la == lb) {
    }
    detail = " (here: '" + lb + "', rank 0: '" + la + "')";
  }
  KILN_FAIL("rank ", comm.rank(), ": rank(s) ", ranks, " were started with another model, recipe or data than rank 0",
            detail, ": start every rank with the same command, weights and data");
}

void average_buffers(Module& model, Communicator& comm) {
  if (comm.size() == 1) return;
  for (BufferRef& b : model.buffers()) {
    if (b.tensor->dtype() != DType::f32) continue;
    comm.allreduce_sum(*b.tensor);
    b.tensor->copy_from(mul(*b.tensor, 1.0f / static_cast<float>(comm.size())));
  }
}

EvalResult reduce_eval(const EvalResult& local, Communicator& comm) {
  if (comm.size() == 1) return local;
  const auto images = static_cast<double>(local.images);
  std::vector<double> v{local.loss * images, local.acc * images, images};
  for (const auto& row : local.confusion)
    for (int64_t c : row) v.push_back(static_cast<double>(c));
  comm.allreduce_sum(v);
  EvalResult r = local;
  r.images = static_cast<int64_t>(v[2]);
  r.loss = r.images > 0 ? v[0] / v[2] : 0.0;
  r.acc = r.images > 0 ? v[1] / v[2] : 0.0;
  size_t at = 3;
  for (auto& row : r.confusion)
    for (int64_t& c : row) c = static_cast<int64_t>(v[at++]);
  return r;
}

GradientReducer::GradientReducer(std::vector<ParameterRef> params, Communicator& comm, int64_t bucket_bytes)
    : params_(std::move(params)), comm_(comm) {
  Bucket b;
  for (size_t i = params_.size(); i-- > 0;) {
    const Tensor& t = *params_[i].tensor;
    KILN_CHECK(t.dtype() == DType::f32, "data-parallel: parameter ", params_[i].name, " is ", t.description(),
               "; gradients are reduced in float32");
    b.params.push_back(i);
    b.numel += t.numel();
    bytes_ += static_cast<int64_t>(t.nbytes());
    if (b.numel * 4 >= bucket_bytes) {
      buckets_.push_back(std::move(b));
      b = Bucket{};
    }
  }
  if (!b.params.empty()) buckets_.push_back(std::move(b));
}

void GradientReducer::reduce() {
  if (comm_.size() == 1) return;
  std::vector<Tensor> flats;
  std::vector<std::shared_ptr<CommWork>> works;
  for (const Bucket& b : buckets_) {
    const Device device = params_[b.params.front()].tensor->device();
    Tensor flat = Tensor::zeros(Shape{b.numel}, TensorOptions{DType::f32, device});
    int64_t at = 0;
    for (size_t i : b.params) {
      const Tensor& p = *params_[i].tensor;
      const Tensor g = p.grad();
      if (g.defined()) flat.slice(at, at + p.numel()).copy_from(g.reshape(Shape{p.numel()}));
      at += p.numel();
    }
    works.push_back(comm_.allreduce_sum_async(flat));
    flats.push_back(flat);
  }
  for (size_t k = 0; k < buckets_.size(); ++k) {
    works[k]->wait();
    int64_t at = 0;
    for (size_t i : buckets_[k].params) {
      Tensor& p = *params_[i].tensor;
      const Tensor sum = flats[k].slice(at, at + p.numel()).reshape(p.shape());
      if (Tensor g = p.grad(); g.defined())
        g.copy_from(sum);
      else
        p.impl_ptr()->grad = sum.clone().impl_ptr();  // no sample here this step: the others' sum
      at += p.numel();
    }
  }
}

}  // namespace kiln
