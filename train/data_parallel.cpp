// Data-parallel pieces of the trainer (data_parallel.h).
#include "train/data_parallel.h"

#include <cstring>
#include <sstream>

#include "core/ops.h"
#include "io/crc32c.h"

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

void check_replicas(Module& model, Communicator& comm, int64_t step) {
  if (comm.size() == 1) return;
  uint32_t crc = 0;
  auto add = [&crc](const Tensor& t) {
    const Tensor h = t.device().is_cpu() ? t : t.cpu();
    crc = io::crc32c_extend(crc, h.raw_data(), h.nbytes());
  };
  // Parameters only: batch norm's running statistics differ between ranks during an epoch
  // (each rank's own rows) until average_buffers makes them one before evaluation.
  for (ParameterRef& p : model.parameters()) add(*p.tensor);
  std::string mine = std::to_string(crc), root = mine;
  comm.broadcast(root, 0);
  std::vector<double> differs{root == mine ? 0.0 : 1.0};
  comm.allreduce_sum(differs);
  KILN_CHECK(differs[0] == 0, "rank ", comm.rank(), ": after step ", step, " ", differs[0],
             " rank(s) hold weights that differ from rank 0's (this rank's CRC32C ", mine, ", rank 0's ", root, ")");
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

EvalResult evaluate_sharded(Module& model, io::Loader& loader, int64_t num_classes, Communicator& comm) {
  EvalTally tally(num_classes);
  {
    const bool was_training = model.training();
    model.eval();
    NoGradGuard no_grad;
    while (auto b = loader.next())
      if (b->images.dim(0) > 0) tally.add(model(b->images), b->labels);
    model.train(was_training);
  }
  EvalResult local;
  if (tally.images() > 0) {
    local = tally.finish();
  } else {
    local.confusion.assign(static_cast<size_t>(num_classes), std::vector<int64_t>(static_cast<size_t>(num_classes), 0));
  }
  const EvalResult all = reduce_eval(local, comm);
  KILN_CHECK(all.images > 0, "evaluation: no image of '", loader.dataset().root, "' could be read on any rank");
  return all;
}

FeatureCache compute_features_sharded(Sequential& model, size_t cut, const io::Dataset& ds, io::LoaderOptions opt,
                                      Communicator& comm) {
  if (comm.size() == 1) return compute_features(model, cut, ds, opt);
  const auto n = static_cast<int64_t>(ds.size());
  const io::ShardRange mine = io::shard_of(0, n, comm.rank(), comm.size());
  FeatureCache part;
  if (mine.end > mine.begin) {
    io::Dataset share = ds;
    share.samples.assign(ds.samples.begin() + mine.begin, ds.samples.begin() + mine.end);
    part = compute_features(model, cut, share, opt);
  }
  FeatureCache all;
  all.cut = cut;
  all.row.assign(static_cast<size_t>(n), -1);
  std::vector<Tensor> feats;
  int64_t rows = 0;
  for (int q = 0; q < comm.size(); ++q) {
    const io::ShardRange sh = io::shard_of(0, n, q, comm.size());
    // Its shape (rows, then the item shape) and dtype, its row map, its rows.
    std::string head;
    if (q == comm.rank()) {
      std::ostringstream h;
      h << (part.feats.defined() ? part.feats.dim(0) : 0) << " " << static_cast<int>(part.feats.defined() ? part.feats.dtype() : DType::f32);
      for (int64_t d : part.item_shape) h << " " << d;
      head = h.str();
    }
    comm.broadcast(head, q);
    std::istringstream h(head);
    int64_t qrows = 0;
    int dtype = 0;
    h >> qrows >> dtype;
    std::vector<int64_t> item;
    for (int64_t d; h >> d;) item.push_back(d);
    if (qrows == 0) continue;
    int64_t width = 1;
    for (int64_t d : item) width *= d;
    Tensor map = q == comm.rank() ? Tensor::from_vector(part.row, Shape{sh.end - sh.begin})
                                  : Tensor::empty(Shape{sh.end - sh.begin}, TensorOptions{DType::i64, Device::cpu()});
    Tensor lab = q == comm.rank() ? Tensor::from_vector(part.labels, Shape{qrows})
                                  : Tensor::empty(Shape{qrows}, TensorOptions{DType::i64, Device::cpu()});
    Tensor f = q == comm.rank() ? part.feats
                                : Tensor::empty(Shape{qrows, width}, TensorOptions{static_cast<DType>(dtype), Device::cpu()});
    comm.broadcast(map, q);
    comm.broadcast(lab, q);
    comm.broadcast(f, q);
    const std::vector<int64_t> m = map.to_vector<int64_t>();
    for (size_t i = 0; i < m.size(); ++i)
      if (m[i] >= 0) all.row[static_cast<size_t>(sh.begin) + i] = m[i] + rows;
    const std::vector<int64_t> l = lab.to_vector<int64_t>();
    all.labels.insert(all.labels.end(), l.begin(), l.end());
    all.item_shape = item;
    feats.push_back(f);
    rows += qrows;
  }
  KILN_CHECK(rows > 0, "no image of '", ds.root, "' could be read on any rank");
  // One [rows, width] host tensor, shares in rank order.
  const size_t row_bytes = static_cast<size_t>(feats.front().dim(1)) * dtype_size(feats.front().dtype());
  all.feats = Tensor::empty(Shape{rows, feats.front().dim(1)}, TensorOptions{feats.front().dtype(), Device::cpu()});
  char* dst = static_cast<char*>(all.feats.raw_data());
  for (const Tensor& f : feats) {
    std::memcpy(dst, f.raw_data(), static_cast<size_t>(f.dim(0)) * row_bytes);
    dst += static_cast<size_t>(f.dim(0)) * row_bytes;
  }
  return all;
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
    bucket_of_[t.impl_ptr().get()] = buckets_.size();
    if (b.numel * 4 >= bucket_bytes) {
      buckets_.push_back(std::move(b));
      b = Bucket{};
    }
  }
  if (!b.params.empty()) buckets_.push_back(std::move(b));
  for (const Bucket& k : buckets_) waiting_.push_back(k.params.size());
  flats_.resize(buckets_.size());
  works_.resize(buckets_.size());
}

autograd::GradReadyHook GradientReducer::hook() {
  return [this](const TensorImpl& leaf) { ready(leaf); };
}

void GradientReducer::ready(const TensorImpl& leaf) {
  auto it = bucket_of_.find(&leaf);
  if (it == bucket_of_.end() || comm_.size() == 1) return;
  --waiting_[it->second];
  // In bucket order, so that every rank issues the same collectives in the same order.
  while (started_ < buckets_.size() && waiting_[started_] == 0) {
    start(started_++);
    ++started_in_backward_;
  }
}

void GradientReducer::start(size_t k) {
  const Bucket& b = buckets_[k];
  const Device device = params_[b.params.front()].tensor->device();
  Tensor flat = Tensor::zeros(Shape{b.numel}, TensorOptions{DType::f32, device});
  int64_t at = 0;
  for (size_t i : b.params) {
    const Tensor& p = *params_[i].tensor;
    const Tensor g = p.grad();
    if (g.defined()) flat.slice(at, at + p.numel()).copy_from(g.reshape(Shape{p.numel()}));
    at += p.numel();
  }
  flats_[k] = flat;
  works_[k] = comm_.allreduce_sum_async(flat);
}

void GradientReducer::reduce() {
  if (comm_.size() == 1) return;
  while (started_ < buckets_.size()) start(started_++);
  for (size_t k = 0; k < buckets_.size(); ++k) {
    works_[k]->wait();
    int64_t at = 0;
    for (size_t i : buckets_[k].params) {
      Tensor& p = *params_[i].tensor;
      const Tensor sum = flats_[k].slice(at, at + p.numel()).reshape(p.shape());
      if (Tensor g = p.grad(); g.defined())
        g.copy_from(sum);
      else
        p.set_grad(sum.clone());  // no sample here this step: the others' sum
      at += p.numel();
    }
  }
  // Ready for the next step.
  for (size_t k = 0; k < buckets_.size(); ++k) {
    waiting_[k] = buckets_[k].params.size();
    flats_[k] = Tensor();
    works_[k].reset();
  }
  started_ = 0;
}

}  // namespace kiln
