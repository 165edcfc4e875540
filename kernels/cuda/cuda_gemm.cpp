// linear on the GPU through cuBLASLt. kiln's matrices are row-major; cuBLASLt's are
// column-major, so each row-major [r, c] matrix is read as its column-major transpose
// [c, r] and every product is computed transposed (C^T = B^T A^T). The bias of the
// forward pass rides in the GEMM's epilogue. Descriptors and the heuristic's algorithm
// are built once per (device, shape, options, pointer alignments, dtype) and cached.
// bfloat16: A, B, C and the bias are CUDA_R_16BF, computed with CUBLAS_COMPUTE_32F (fp32
// accumulation, float scaling); the epilogue adds the bias in fp32 and rounds each output
// to bf16 once, as the CPU's oneDNN matmul does. The backward's dx and dw are the same
// bf16 GEMMs (no bias), db the deterministic column sum of dy, rounded once to bf16.
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <tuple>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::cuda {
namespace {

// cuBLASLt's recommended workspace on Hopper; the heuristic may ask for up to this much.
constexpr size_t kMaxWorkspaceBytes = size_t{32} << 20;

enum class GemmKind : uint8_t { forward, backward_data, backward_weight };

const char* kind_name(GemmKind k) {
  switch (k) {
    case GemmKind::forward: return "y = x w^T";
    case GemmKind::backward_data: return "dx = dy w";
    case GemmKind::backward_weight: return "dw = dy^T x";
  }
  return "?";
}

// The largest power of two (<= 256) dividing the address: the heuristic must only offer
// kernels that can read buffers this aligned (its default assumes 256).
uint32_t alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

struct GemmKey {
  int device;
  GemmKind kind;
  int64_t m, n, k;  // column-major C[m, n] = op(A)[m, k] op(B)[k, n]
  bool bias, tf32;
  uint32_t align_a, align_b, align_c, align_bias;
  bool bf16 = false;  // bf16 matrices and bias, fp32 compute (tf32 is then false: it does not apply)
  auto tie() const { return std::tie(device, kind, m, n, k, bias, tf32, align_a, align_b, align_c, align_bias, bf16); }
  bool operator<(const GemmKey& o) const { return tie() < o.tie(); }
  std::string str() const {
    std::ostringstream os;
    os << kind_name(kind) << " (column-major m=" << m << " n=" << n << " k=" << k << (bias ? ", bias" : "")
       << (bf16 ? ", bfloat16 with fp32 accumulation" : tf32 ? ", tf32" : ", strict fp32") << ", alignments "
       << align_a << "/" << align_b << "/" << align_c << ")";
    return os.str();
  }
};

// One GEMM shape: a column-major problem with its descriptors and chosen algorithm.
struct GemmPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace_bytes = 0;
  std::mutex mu;  // the bias pointer is set on the shared descriptor right before each launch
  GemmPlan() = default;
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;
  ~GemmPlan() {  // statuses ignored: nothing useful to do at teardown
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

struct PreferenceGuard {
  cublasLtMatmulPreference_t p = nullptr;
  PreferenceGuard() { KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p)); }
  ~PreferenceGuard() { cublasLtMatmulPreferenceDestroy(p); }
  PreferenceGuard(const PreferenceGuard&) = delete;
  PreferenceGuard& operator=(const PreferenceGuard&) = delete;
};

// One call: column-major C[m, n] = op_a(A) op_b(B) (+ bias[m] broadcast over columns).
// A is stored [m, k] (op N) or [k, m] (op T) with leading dimension lda; B likewise.
// A, B, C and bias hold `dtype` elements (float32 or bfloat16).
struct GemmCall {
  GemmKind kind;
  cublasOperation_t op_a, op_b;
  int64_t m, n, k;
  const void* A;
  int64_t lda;
  const void* B;
  int64_t ldb;
  void* C;
  int64_t ldc;
  const void* bias;  // nullptr: none
  DType dtype = DType::f32;
};

std::unique_ptr<GemmPlan> make_plan(const GemmKey& key, const GemmCall& g, cublasLtHandle_t h) {
  auto plan = std::make_unique<GemmPlan>();
  // bf16 accumulates in plain fp32 (its products are exact in fp32), with float alpha/beta.
  const cublasComputeType_t compute = key.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  KILN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->op, compute, CUDA_R_32F));
  // The matrices' element type.
  const cudaDataType_t data = key.bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const int32_t op_a = g.op_a, op_b = g.op_b;
  KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  const uint32_t epilogue = g.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  KILN_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
  if (g.bias) {
    // The heuristic reads the pointer's alignment; the key holds that alignment.
    const void* bias = g.bias;
    KILN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    if (key.bf16) {  // the default already, spelled out: the bias is read as bf16
      const int32_t bias_type = CUDA_R_16BF;
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                       sizeof(bias_type)));
    }
  }
  // Stored shapes: rows x cols of the matrix before its op, column-major.
  const bool ta = g.op_a == CUBLAS_OP_T, tb = g.op_b == CUBLAS_OP_T;
  KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, data, ta ? g.k : g.m, ta ? g.m : g.k, g.lda));
  KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, data, tb ? g.n : g.k, tb ? g.k : g.n, g.ldb));
  KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->c, data, g.m, g.n, g.ldc));

  PreferenceGuard pref;
  const uint64_t max_ws = kMaxWorkspaceBytes;
  KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws,
                                                         sizeof(max_ws)));
  const uint32_t align[4] = {key.align_a, key.align_b, key.align_c, key.align_c};
  const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i)
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, align_attr[i], &align[i], sizeof(align[i])));
  if (key.bf16) {
    // Split-K partial sums only in fp32 (COMPUTE_TYPE): the INPLACE and OUTPUT_TYPE schemes
    // add partials in the output type, a bf16 rounding per partial where the CPU rounds once.
    const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;  // NONE (no split) is always allowed
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                           &schemes, sizeof(schemes)));
  }

  constexpr int kRequested = 8;
  cublasLtMatmulHeuristicResult_t results[kRequested] = {};
  int returned = 0;
  // C is also D (beta = 0, written in place).
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, plan->op, plan->a, plan->b, plan->c, plan->c, pref.p,
                                                           kRequested, results, &returned);
  KILN_CHECK(st == CUBLAS_STATUS_SUCCESS || st == CUBLAS_STATUS_NOT_SUPPORTED, current_op(),
             ": cublasLtMatmulAlgoGetHeuristic failed: ", cublas_status_name(st), " for ", key.str());
  for (int i = 0; i < returned && i < kRequested; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS || results[i].workspaceSize > kMaxWorkspaceBytes) continue;
    plan->algo = results[i].algo;
    plan->workspace_bytes = results[i].workspaceSize;
    return plan;
  }
  KILN_FAIL(current_op(), ": cuBLASLt offers no algorithm for ", key.str(), " (status ", cublas_status_name(st),
            ", ", returned, " results)");
}

GemmPlan& plan_for(const GemmKey& key, const GemmCall& g, cublasLtHandle_t h) {
  static std::mutex mu;
  // Never destroyed: a thread still running at exit (a Python daemon thread in kiln.train) may
  // use a plan while static destructors run; the process's end reclaims it.
  static auto& cache = *new std::map<GemmKey, std::unique_ptr<GemmPlan>>;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return *it->second;
  }
  std::unique_ptr<GemmPlan> plan = make_plan(key, g, h);  // outside the lock: the heuristic is slow-ish
  std::lock_guard<std::mutex> lock(mu);
  auto [it, inserted] = cache.emplace(key, std::move(plan));  // another thread may have won: use its plan
  (void)inserted;
  return *it->second;
}

// Runs one GEMM on the scope's stream. k == 0 gives C = 0 (+ bias).
void gemm(const OpScope& scope, int device, const GemmCall& g) {
  if (g.m == 0 || g.n == 0) return;
  const bool bf16 = g.dtype == DType::bf16;
  if (g.k == 0) {
    KILN_CUDA_CHECK(cudaMemsetAsync(g.C, 0, static_cast<size_t>(g.m * g.n) * dtype_size(g.dtype), scope.stream()));
    // C^T is row-major [n, m]: bias over its columns (0 + b is exact in bf16 too).
    if (g.bias && bf16)
      launch_add_bias(static_cast<BFloat16*>(g.C), static_cast<const BFloat16*>(g.bias), g.n, g.m, scope.stream());
    else if (g.bias)
      launch_add_bias(static_cast<float*>(g.C), static_cast<const float*>(g.bias), g.n, g.m, scope.stream());
    return;
  }
  const GemmKey key{device,         g.kind,         g.m,
                    g.n,            g.k,            g.bias != nullptr,
                    !bf16 && compute_options().matmul_tf32, alignment(g.A), alignment(g.B),
                    alignment(g.C), g.bias ? alignment(g.bias) : 256u, bf16};
  cublasLtHandle_t h = cublaslt_handle(device);
  GemmPlan& plan = plan_for(key, g, h);
  Workspace ws(device, plan.workspace_bytes);
  const float one = 1.0f, zero = 0.0f;
  std::lock_guard<std::mutex> lock(plan.mu);
  if (g.bias) {
    const void* bias = g.bias;
    KILN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  KILN_CUBLAS_CHECK(cublasLtMatmul(h, plan.op, &one, g.A, plan.a, g.B, plan.b, &zero, g.C, plan.c, g.C, plan.c,
                                   &plan.algo, ws.data(), plan.workspace_bytes, scope.stream()));
}

// linear_forward in bfloat16: x, w, b and y bf16 (core checked that they match).
void linear_forward_bf16(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  const int dev = x.device().index;
  OpScope scope("linear (bfloat16)", dev);
  KILN_CHECK(w.dtype() == DType::bf16 && y.dtype() == DType::bf16 && (!b.defined() || b.dtype() == DType::bf16),
             current_op(), ": x is bfloat16, so w, b and y must be too; got w ", w.description(), ", y ",
             y.description(), (b.defined() ? ", b " + b.description() : std::string()));
  const int64_t rows = x.dim(0), in = x.dim(1), out = w.dim(0);
  // Column-major: y^T[out, N] = (w viewed [in, out])^T (x viewed [in, N]), as in float32.
  gemm(scope, dev,
       GemmCall{GemmKind::forward, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, w.raw_data(), in, x.raw_data(), in,
                y.raw_data(), out, b.defined() ? b.raw_data() : nullptr, DType::bf16});
  scope.done();
}

}  // namespace

void CudaBackend::linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  // x: [N, in], w: [out, in], b: [out] or undefined, y: [N, out]
  if (x.dtype() == DType::bf16) return linear_forward_bf16(x, w, b, y);
  const int dev = x.device().index;
  OpScope scope("linear", dev);
  const int64_t rows = x.dim(0), in = x.dim(1), out = w.dim(0);
  // Column-major: y^T[out, N] = (w viewed [in, out])^T (x viewed [in, N]).
  gemm(scope, dev,
       GemmCall{GemmKind::forward, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, w.data<float>(), in, x.data<float>(), in,
                y.data<float>(), out, b.defined() ? b.data<float>() : nullptr});
  scope.done();
}

// float32 or bfloat16: every tensor given has dy's dtype (core made them so); the GEMMs
// run in that dtype, bf16 with fp32 accumulation.
void CudaBackend::linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor& dx, Tensor& dw,
                                  Tensor& db) {
  // dy: [N, out], x: [N, in], w: [out, in]; dx: [N, in], dw: [out, in], db: [out], each optional
  const int dev = dy.device().index;
  const DType dt = dy.dtype();
  const bool bf16 = dt == DType::bf16;
  OpScope scope(bf16 ? "linear backward (bfloat16)" : "linear backward", dev);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&x, &w, &dx, &dw, &db})
    KILN_CHECK(!t->defined() || t->dtype() == dt, current_op(), ": dy is ", dtype_name(dt),
               " so every operand must be too; got ", t->description());
  const int64_t rows = dy.dim(0), out = dy.dim(1);
  const void* pdy = dy.raw_data();
  if (dx.defined()) {
    const int64_t in = dx.dim(1);
    // Column-major: dx^T[in, N] = (w viewed [in, out]) (dy viewed [out, N]).
    gemm(scope, dev,
         GemmCall{GemmKind::backward_data, CUBLAS_OP_N, CUBLAS_OP_N, in, rows, out, w.raw_data(), in, pdy, out,
                  dx.raw_data(), in, nullptr, dt});
  }
  if (dw.defined()) {
    const int64_t in = dw.dim(1);
    // Column-major: dw^T[in, out] = (x viewed [in, N]) (dy viewed [out, N])^T.
    gemm(scope, dev,
         GemmCall{GemmKind::backward_weight, CUBLAS_OP_N, CUBLAS_OP_T, in, out, rows, x.raw_data(), in, pdy, out,
                  dw.raw_data(), in, nullptr, dt});
  }
  if (db.defined() && out > 0) {  // rows == 0 gives zeros
    if (bf16)
      launch_column_sum(dy.data<BFloat16>(), rows, out, db.data<BFloat16>(), scope.stream());
    else
      launch_column_sum(dy.data<float>(), rows, out, db.data<float>(), scope.stream());
  }
  scope.done();
}

}  // namespace kiln::cuda
