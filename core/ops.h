// The public ops. Each checks its arguments (shapes, dtypes, devices; errors name the op
// and the shapes), calls the backend of its inputs' device, and records an autograd node
// only when grad mode is on and some input requires grad.
// Layout: activations NHWC, conv filters OHWI, linear weights [out, in]. Compute is float32.
// bfloat16, forward and backward: conv2d, linear, relu, max_pool2d, dropout (both forms,
// the fp32 op's Philox masks), adaptive_avg_pool2d, add/sub/mul (tensor and scalar) and
// the views (reshape, flatten, slice) also take bf16 and return bf16, accumulating in
// fp32; every operand of a call (bias included) has the input's dtype (mixed dtypes are an
// error naming both), and gradients have their tensor's dtype. The one cast is
// Tensor::to(DType): differentiable between float32 and bfloat16, its backward converts
// the gradient back, so fp32 master weights cast to bf16 for compute get fp32 gradients.
// batch_norm2d takes a bf16 x too (its statistics, gamma, beta and their gradients stay
// float32) and returns bf16. Float32 only: softmax, log_softmax, softmax_cross_entropy,
// sum, mean, l2_penalty and the optimizer updates (cast around them).
#pragma once

#include <span>
#include <vector>

#include "core/autograd.h"
#include "core/backend.h"
#include "core/tensor.h"

namespace kiln {

// y[n, oh, ow, o] = b[o] + sum_{kh, kw, c} x[n, oh*sh - ph + kh, ow*sw - pw + kw, c] * w[o, kh, kw, c]
// x: [N, H, W, C], w: [O, KH, KW, C], b: [O] or undefined -> y: [N, OH, OW, O].
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b = Tensor(), const Conv2dParams& p = {});
// relu(conv2d(x, w, b, p)) as one pass where the backend can (oneDNN's ReLU post-op on the
// CPU, cuDNN's fused graph or one bias-and-ReLU pass on the GPU), the same values up to the
// rounding a fused bf16 bias skips. When something needs a gradient, on a backend whose
// fused pass pays in training (Backend::conv2d_forward_relu_trains: the GPU's), recorded as
// one node whose backward is relu's (from the output) then conv2d's; otherwise the two ops.
Tensor conv2d_relu(const Tensor& x, const Tensor& w, const Tensor& b = Tensor(), const Conv2dParams& p = {});

// Max over KHxKW windows, padding counts as -inf; backward routes to the first maximum.
// x: [N, H, W, C] -> [N, OH, OW, C].
Tensor max_pool2d(const Tensor& x, const Pool2dParams& p = {});
// max_pool2d(conv2d_relu(x, w, b, cp), pp), VGG's block end: the same values and gradients
// bit for bit. When something needs a gradient it is one node, whose backward applies ReLU's
// mask to the pooled gradient (a quarter of the elements for 2x2 windows) and which keeps
// the pooled output, not the convolution's.
Tensor conv2d_relu_max_pool2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& cp,
                              const Pool2dParams& pp);
// Adaptive average pooling to an out_h x out_w grid, as torch.nn.AdaptiveAvgPool2d (output
// cell o averages inputs [floor(o*in/out), ceil((o+1)*in/out)) per axis; a smaller input is
// repeated). x: [N, H, W, C] -> [N, out_h, out_w, C]. VGG pools pool5 to 7x7 so pretrained
// fc6 fits any image size; 1x1 is global average pooling.
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w);

// Batch normalisation of NHWC activations, per channel over N, H, W: torch's F.batch_norm
// on the NCHW permute. y = gamma * (x - mean) / sqrt(var + eps) + beta. Training form:
// mean/var are the batch's (biased variance), at least two values per channel, and defined
// running_mean/running_var are updated in place as PyTorch does, running = (1 - momentum) *
// running + momentum * batch with the unbiased batch variance (Keras's momentum m is 1 - m
// here: Keras 0.99 = momentum 0.01). Inference form: the running statistics, left unchanged.
// x: [N, H, W, C]; gamma, beta, running_mean, running_var: [C] float32; gamma/beta undefined
// mean 1/0. Gradients reach x, gamma and beta in both forms. A bfloat16 x gives a bfloat16
// y and dx, reduced and normalised in fp32, rounded once on store.
Tensor batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                    Tensor& running_var, bool training, float momentum = 0.1f, float eps = 1e-5f);
// y = x w^T + b. x: [N, in], w: [out, in], b: [out] or undefined -> [N, out].
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());

// The rows of weight [rows, features] (float32) at indices (int32 or int64, any shape, each in
// [0, rows), checked as read: on a GPU a wait for the kernel, so no CUDA graph capture) -> [..., features]
// (torch's F.embedding: index_select along dimension 0). Gradient to weight: each row's uses
// summed in order.
Tensor embedding(const Tensor& weight, const Tensor& indices);

// Layer normalisation over the last dimension (torch's F.layer_norm with normalized_shape [C]):
// (x - mean) / sqrt(var + eps) * gamma + beta, with the biased variance; gamma and beta [C], or
// undefined for none. Float32. Fused where the backend has a kernel for it (the CPU: statistics
// in double, three passes over x), else composed of mean, sub, mul, div and sqrt (CUDA, until
// its kernel has run on a GPU); gradients reach x, gamma and beta either way.
Tensor layer_norm(const Tensor& x, const Tensor& gamma = Tensor(), const Tensor& beta = Tensor(), float eps = 1e-5f);

// max(x, 0), any shape. NaN maps to 0, as the fused conv+ReLU paths do (oneDNN's post-op,
// kiln's CUDA bias+ReLU pass); torch.relu keeps NaN. A network diverging inside can thus
// show a finite loss: the trainer's checks of the loss see only what reaches it.
Tensor relu(const Tensor& x);

// Training: x / keep_prob where the mask keeps it, else 0 (a dropped NaN or inf becomes 0;
// torch multiplies by the mask, giving NaN), mask drawn from gen's Philox stream (the mask
// is regenerated in backward, never stored). Eval (training=false) or keep_prob == 1: x itself.
Tensor dropout(const Tensor& x, float keep_prob, bool training, Generator& gen = default_generator());

// Same memory, new shape (one extent may be -1). Backward reshapes the gradient back.
Tensor reshape(const Tensor& x, const Shape& shape);

// [N, d1, d2, ...] -> [N, d1*d2*...] (NHWC flatten: Keras's order; torch.nn.Flatten's default).
Tensor flatten(const Tensor& x);
// Dimensions start_dim to end_dim (negative from the end) joined into one, the same memory
// (torch.flatten; flatten(x, 0) is every dimension, a 0-d x gives [1]).
Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim = -1);

// Rows [begin, end) of dimension 0, sharing memory.
Tensor slice(const Tensor& x, int64_t begin, int64_t end);

// Elements [start, start + length) of dimension dim (negative counts from the last), every
// dimension else whole: torch's narrow, but a copy, as kiln's tensors are contiguous (slice is
// the view along dimension 0). Any dtype.
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
// x's entries at indices (int32 or int64, one index or a list: rank 0 or 1, each in
// [0, x.dim(dim)), checked as read: on a GPU a wait, no graph capture) along dimension dim
// (negative counts from the last), every other dimension whole, in the indices' order, repeats
// allowed (torch.index_select; a negative index is refused, as there). Any dtype. Gradient to x
// (float32 or bfloat16): each entry's uses summed in order, so repeats give the same bits every run.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& indices);
// out[i][j][k] = x[i][indices[i][j][k]][k] for dim 1, and so for any dim (torch.gather): indices
// int32 or int64 of x's rank (>= 1), each extent but dim's at most x's (x's corner they cover is
// read; an empty index too),
// each index in [0, x.dim(dim)) (checked as embedding's); the result
// has indices' shape. Any dtype. Gradient to x (float32 or bfloat16): each entry's uses summed in
// order. gather(log_softmax(logits), 1, labels as [N, 1]) picks each row's label's log-probability.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& indices);
// x with src's entries added along dimension dim at indices, in the indices' order (repeats
// accumulate; the same bits every run), the result a new tensor. index_add: indices one index or
// a list (rank 0 or 1) and src x's shape but their count along dim (torch.index_add; a sum per
// segment, as a graph network's messages). scatter_add: an index per element (torch.scatter_add),
// indices of x's rank, each extent but dim's at most x's (x's corner they cover is written), src
// at least as long as indices (its corner is read). Indices int32 or int64 in [0, x.dim(dim)),
// checked as embedding's. x and src float32, or bfloat16 (summed in float32, rounded once).
// Gradients: g to x, g's entries at the indices to src.
Tensor index_add(const Tensor& x, int64_t dim, const Tensor& indices, const Tensor& src);
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& indices, const Tensor& src);
// xs joined along dimension dim, in order: one dtype and device, every other extent equal (torch.cat).
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
// xs of one shape joined along a new dimension dim (0 to rank; negative counts from the end):
// three [N, C] make [3, N, C] at dim 0, [N, 3, C] at dim 1 (torch.stack).
Tensor stack(const std::vector<Tensor>& xs, int64_t dim);
// x without its extents of 1 (torch.squeeze): every one, or dimension dim's only (x's shape kept
// where that extent is not 1). The same memory, a reshape.
Tensor squeeze(const Tensor& x);
Tensor squeeze(const Tensor& x, int64_t dim);
// x with an extent of 1 inserted as dimension dim, 0 to rank (negative counts from rank + 1:
// -1 appends), torch.unsqueeze; the same memory, a reshape.
Tensor unsqueeze(const Tensor& x, int64_t dim);
// x reversed along each of dims (each once; torch.flip): a copy, whose gradient is g flipped back.
// Any dtype; an index_select per dimension (on a GPU a wait for its index check: no graph capture).
Tensor flip(const Tensor& x, const std::vector<int64_t>& dims);
// x in new memory, any dtype, with autograd passing through (torch.clone; Python's clone()):
// Tensor::clone is the same copy detached from the graph.
Tensor copy_of(const Tensor& x);
// x cut along dim into pieces of `size` entries, the last shorter where size does not divide the
// extent (torch.split; size 0 only for an empty dimension), or of the given sizes, which sum to
// the extent (torch's split_with_sizes: a name of its own, as split(x, {3}) would pick the size).
// Copies, their gradients gathered into one of x's shape (split, chunk and unbind alike).
std::vector<Tensor> split(const Tensor& x, int64_t size, int64_t dim = 0);
std::vector<Tensor> split_with_sizes(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim = 0);
// x cut along dim into at most `chunks` pieces of ceil(extent / chunks) entries (torch.chunk: fewer
// where they cover the extent sooner, 6 in 4 chunks is 3 of 2; an empty dimension gives `chunks`
// empty pieces).
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim = 0);
// x's slices along dim with that dimension dropped: unbind of [3, N] is three [N] (torch.unbind,
// stack's inverse); copies.
std::vector<Tensor> unbind(const Tensor& x, int64_t dim = 0);

// Mean over the batch of -log softmax(logits)[label]; fused and numerically stable.
// logits: [N, K] float32, labels: [N] int32/int64 in [0, K) -> scalar [].
Tensor softmax_cross_entropy(const Tensor& logits, const Tensor& labels);

// Softmax over the last dimension, any rank >= 1.
Tensor softmax(const Tensor& x);
// Log-softmax over the last dimension, any rank >= 1.
Tensor log_softmax(const Tensor& x);
// Softmax and log-softmax over dimension dim (negative from the end): for another than the last,
// the backend's kernel along it where it has one (the CPU), else the last dimension's kernels
// with dim permuted last and back (two copies).
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);

// Elementwise, float32 or bfloat16. Shapes broadcast as in NumPy and PyTorch (aligned from
// the right, each pair of extents equal or one of them 1): [N, H, W, C] + [C] adds per
// channel, and a broadcast operand's gradient is summed back to its shape. add, sub, mul,
// maximum and minimum also take int32 and int64 tensors (an int32 beside an int64 widened),
// exact, wrapping as torch's, without gradient; with a number, a whole one in the dtype's range.
// An integer tensor beside a float one is converted to the float's dtype first, and div of two
// integer tensors computes in float32 (torch's promotion); pow does the former.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
// IEEE division (correctly rounded, as a / b in C++): x / 0 is +-inf, 0 / 0 NaN.
Tensor div(const Tensor& a, const Tensor& b);
// With a scalar. A bfloat16 a meets s as a float32 and the result is rounded once (torch 1.13
// rounds s to bfloat16 first: a bfloat16 ulp apart at most; the comparisons, clamp and pow do
// round s, as torch's do there).
Tensor add(const Tensor& a, float s);
Tensor sub(const Tensor& a, float s);
Tensor mul(const Tensor& a, float s);
// a / s, divided (not multiplied by 1 / s, which rounds twice).
Tensor div(const Tensor& a, float s);
// With the scalar on the left: s - a, and s / a (IEEE, as div). One pass each, and a
// bf16 a is computed in float32 with s as given, rounded once, as a - s and a / s are.
Tensor sub(float s, const Tensor& a);
Tensor div(float s, const Tensor& a);
// -a, as a * -1: exact, -0 for 0 and NaN kept, as torch.neg.
Tensor neg(const Tensor& a);
// a ** b per element, broadcast as add (torch.pow): on the CPU as pow below (the double power
// where a is positive and finite and b finite, powf for the rest), powf per element on a GPU; a
// negative base to a non-integer power is NaN. Gradients torch's: b * a ** (b - 1) to a (0 where
// b is 0), a ** b * log(a) to b (0 where a is 0 and b >= 0). bfloat16 computes in float32 and
// rounds once.
Tensor pow(const Tensor& a, const Tensor& b);
// x ** p for a number p (x ** 2, x ** 0.5), as torch's number-exponent path: 2, 3, 0.5, -0.5, -1,
// -2 in its exact forms (x * x, sqrt(x), 1 / x, ...), so x ** 2 is x * x bit for bit; other p by
// powf on a GPU, and on the CPU by the double power rounded to float (within half an ulp but for
// ~1e-13; an exact tie may round either way) where x is positive and finite (powf for the rest,
// and for an infinite or NaN p: their signs and ends are the C library's). p is used as a float32,
// rounded to bfloat16 for a bfloat16 x (as torch's). A bfloat16 x ** p is computed in float32 and
// rounded to bfloat16, so x ** 3 and x ** -2 round once where torch's round x * x first (kiln's
// are the nearer, and differ from torch's by a bfloat16 ulp in about a quarter of values).
Tensor pow(const Tensor& x, float p);
// base ** x for a number base (2 ** x, 10 ** x), as pow above (on the CPU the double power for a
// positive finite base and finite x, else powf); the gradient
// is base ** x * log(base). base is rounded to bfloat16 for a bfloat16 x, as p above.
Tensor pow(float base, const Tensor& x);
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, float s) { return add(a, s); }
inline Tensor operator-(const Tensor& a, float s) { return sub(a, s); }
inline Tensor operator*(const Tensor& a, float s) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, float s) { return div(a, s); }
inline Tensor operator+(float s, const Tensor& a) { return add(a, s); }
inline Tensor operator-(float s, const Tensor& a) { return sub(s, a); }
inline Tensor operator*(float s, const Tensor& a) { return mul(a, s); }
inline Tensor operator/(float s, const Tensor& a) { return div(s, a); }

// In-place writes, torch's add_, mul_, copy_, clamp_ (python/ has the methods). They write t's
// memory, which t's views share (reshape, slice, detach), and advance its version (mark_modified),
// so a graph that saved t refuses its backward. They record no gradient: with grad mode on they
// are refused where one would be needed (check_in_place); under NoGradGuard they are
// initializations and hand-written updates.
// Refuses the in-place write `name` into t (reading `operand`, if given) where autograd would
// need it: grad mode on and t or the operand requiring grad.
void check_in_place(const std::string& name, const Tensor& t, const Tensor* operand = nullptr);
// t = t (op) other, op add, sub, mul, div, pow, maximum or minimum: the values binary op gives
// (its promotion: an integer other beside a float t converted), stored in t's dtype. other
// broadcasts to t's shape; a float result into an integer t is refused, as torch's. Same dtypes
// run the out-of-place kernel in one pass over t (its bits); an other sharing t's memory
// elsewhere is copied first.
void binary_in_place(BinaryOp op, const Tensor& t, const Tensor& other);
// t = t (op) s, as add(t, s) and the like: one pass for add, sub, mul and div of a float t; an
// integer t is refused (the result would be float32, as torch's).
void binary_in_place(BinaryOp op, const Tensor& t, float s);
// t's values become src's, broadcast to t's shape, converted to t's dtype (astype's rules) from
// any device (torch's copy_); `name` is the method's in the errors (fill_, uniform_).
void copy_in_place(const Tensor& t, const Tensor& src, bool non_blocking = false, const std::string& name = "copy_");
// t = op(t) for a float t in one pass (unary's kernel and bits; torch's exp_, sigmoid_); an
// integer t gets what op gives it (abs exactly; the rest are refused as unary's).
void unary_in_place(UnaryOp op, const Tensor& t);
// t clamped into [lo, hi] in place, as clamp (torch's clamp_): two passes over t, its bits.
void clamp_in_place(const Tensor& t, float lo, float hi);
// Every element of t set to value, converted as Backend::fill does (torch's fill_ and zero_; an
// int64 past 2^53 is exact through copy_in_place from a 0-d int64 tensor instead).
void fill_in_place(const Tensor& t, double value, const std::string& name = "fill_");
// t's values become r's, an op of t computed out of place (torch's exp_, clamp_): r has t's
// shape, and a float r into an integer t is refused.
void store_in_place(const std::string& name, const Tensor& t, const Tensor& r);
// Elementwise math, float32 or bfloat16 (computed in fp32, rounded once), any shape, with
// gradients. Values from kiln's own vectorisable exponential, log and normal CDF
// (kernels/common/exp.h): within 2 ulp of the exact value (gelu 12), the CPU and GPU a few ulp
// apart. Outside the domain as in IEEE and torch: log(0) = -inf, log(-1) and sqrt(-1) NaN.
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
// 1 / (1 + exp(-x)); e^x / (1 + e^x) below 0, so denormal rather than 0 down to -103.9.
Tensor sigmoid(const Tensor& x);
// x * Phi(x), Phi the standard normal CDF (the exact erf form, torch's default; not tanh's).
Tensor gelu(const Tensor& x);
// x * sigmoid(x) (swish).
Tensor silu(const Tensor& x);
// |x|; its gradient is 0 at 0, as torch's.
Tensor abs(const Tensor& x);
// log(1 + e^x), stable for any x (torch.nn.functional.softplus); gradient sigmoid(x).
Tensor softplus(const Tensor& x);
// torch's softplus(x, beta, threshold): log(1 + e^(beta x)) / beta, and x itself (gradient 1)
// where beta x > threshold; composed of the ops above, a bfloat16 x in float32 and rounded once
// (softplus(x) itself for beta 1 and threshold >= 20: the same in float32 up to a threshold of
// ~88.7, past which torch's e^x overflows to inf and kiln's stays x).
Tensor softplus(const Tensor& x, float beta, float threshold);
// torch's gelu(x, approximate="tanh"): 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), composed of
// the ops above in torch's order (nine passes, where gelu is one), a bfloat16 x in float32.
Tensor gelu_tanh(const Tensor& x);
// x with its last two dimensions swapped (rank >= 2; torch's x.transpose(-2, -1) made
// contiguous): a copy, as kiln's tensors are always contiguous. Gradient: dy transposed.
Tensor transpose(const Tensor& x);
// x with its dimensions reordered: the result's dimension i is x's dims[i] (torch.permute, but a
// copy: kiln's tensors are contiguous), any dtype; dims names each of x's once (negative from
// the end). [B, T, H, D] -> [B, H, T, D] ({0, 2, 1, 3}) splits attention into heads. The
// gradient is g permuted back.
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
// x with dimensions d0 and d1 swapped (torch.transpose(x, d0, d1), a copy): a permute.
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
// a @ b, float32 or bfloat16 (as linear), gradients to both; it runs where linear runs (oneDNN,
// cuBLASLt). a [M, K] @ b [K, N] -> [M, N] is linear(a, transpose(b)); a [..., M, K] @ b [K, N]
// is one such product over all of a's rows; a [..., M, K] @ b [..., K, N] with the same leading
// dimensions (attention's scores, for one) one product per matrix, a loop of linear's kernels.
// Leading dimensions broadcast as torch's ([B, H, M, K] @ [1, H, K, N], [M, K] @ [B, K, N]): a b
// whose leading extents are all 1 is one [K, N] matrix; otherwise an operand with fewer matrices
// than the common batch is repeated to it first (a copy; leading 1s alone are a view), at most 6
// batch dimensions other than 1. A 1-d a is a [1, K] row and a 1-d b a [K, 1] column, their
// added extent removed from the result, as torch's ([K] @ [K] is the 0-d dot product).
Tensor matmul(const Tensor& a, const Tensor& b);
// The larger (maximum) or smaller (minimum) of a and b per element, broadcast as add; a NaN in
// either is returned (torch's rule, where fmax would drop it). The gradient goes to the operand
// that won, half to each on a tie, and whole to both where a NaN is involved (torch's formula).
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
// x limited to [lo, hi] per element (torch.clamp; -inf or inf leaves a side open). NaN stays NaN.
// The gradient passes where lo <= x <= hi, the bounds included. lo > hi or a NaN bound is refused.
Tensor clamp(const Tensor& x, float lo, float hi);
// a where cond is nonzero, else b, per element (torch.where): cond, a and b broadcast together
// as add's. cond is a mask of any dtype (a comparison's 0/1, or an integer tensor); nonzero and
// NaN count as true. The gradient goes to a where cond holds and to b elsewhere. A number for a
// or b is a constant in the other's dtype.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor where(const Tensor& cond, const Tensor& a, float b);
Tensor where(const Tensor& cond, float a, const Tensor& b);
// Both numbers: a float32 tensor of cond's shape, on its device (torch.where(c, 1.0, 0.0)).
Tensor where(const Tensor& cond, float a, float b);
// x with `value` where mask is nonzero (torch.masked_fill: -inf over attention scores a token
// may not see); mask broadcasts to x's shape, which the result keeps.
Tensor masked_fill(const Tensor& x, const Tensor& mask, float value);
// x's lower (tril) or upper (triu) triangle in its last two dimensions, the rest 0 (torch.tril,
// torch.triu): element (i, j) kept where j - i <= diagonal (tril) or j - i >= diagonal (triu).
// Float32, bfloat16 or int32/int64, rank >= 2; the gradient passes where kept. A causal mask is
// tril(ones([T, T])).
Tensor tril(const Tensor& x, int64_t diagonal = 0);
Tensor triu(const Tensor& x, int64_t diagonal = 0);
// torch's shorthands, composed: x * x (exact, integers too), 1 / x (an integer x as float32),
// 1 / sqrt(x) (in float32, a bfloat16 x rounded once); gradients through the ops they are made of.
Tensor square(const Tensor& x);
Tensor reciprocal(const Tensor& x);
Tensor rsqrt(const Tensor& x);
// Masks of x's shape, float32 0/1 for an integer x and in x's dtype for a float one (comparisons'
// masks): where x is NaN (x != x), +-inf, or neither (torch.isnan, isinf, isfinite).
Tensor isnan(const Tensor& x);
Tensor isinf(const Tensor& x);
Tensor isfinite(const Tensor& x);
// Comparisons per element, broadcast as add: 1 where a > b (>=, <, <=, ==, !=) holds, else 0, in
// a's dtype (kiln has no bool tensors); a NaN compares unequal to everything. Float32 or bfloat16,
// or integers: int32 and int64 tensors (with each other; an int32 widened beside an int64) compare
// exactly into a float32 mask, so mean(eq(argmax(logits, -1), labels)) is the accuracy. No
// gradient: the result is a mask to multiply by, count or average.
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
// The comparisons against a number: gt(x, 0.5) is 1 where x > 0.5. s meets a float32 x rounded to
// float32 and a bfloat16 x rounded to bfloat16, as torch's (eq(x, 0.1) holds where x is bf16's
// 0.1); clamp's bounds the same. An integer x meets s exactly (a double: every int32, and int64s
// to 2^53): gt(x, 2.5) is gt(x, 2), eq(x, 2.5) nowhere, and an s past x's range or NaN gives
// every element the same answer.
Tensor gt(const Tensor& a, double s);
Tensor ge(const Tensor& a, double s);
Tensor lt(const Tensor& a, double s);
Tensor le(const Tensor& a, double s);
Tensor eq(const Tensor& a, double s);
Tensor ne(const Tensor& a, double s);
// x summed down to `shape`, of which x's shape is a broadcast (torch's sum_to_size): each
// element the sum, in double, of those that broadcast from it. x itself when shapes match.
Tensor sum_to(const Tensor& x, const Shape& shape);
// x repeated up to `shape`, a broadcast of x's (torch's expand, as a copy), any dtype. x itself
// when shapes match.
Tensor broadcast_to(const Tensor& x, const Shape& shape);

// Sum of all elements -> scalar [], float32 or bfloat16 (a bf16 x gives a bf16 scalar, as
// torch.sum: summed in double, rounded to float32, then to bf16); int32 or int64 into an int64
// scalar, exact, wrapping as torch's (no gradient). sum over dims takes floats only.
Tensor sum(const Tensor& x);
// Mean of all elements -> scalar [], as sum's (a bf16 mean is float32's, rounded to bf16 once).
Tensor mean(const Tensor& x);
// Sum or mean over the dimensions `dims` (negative counts from the last; each once), float32 or
// bfloat16, accumulated in double (a bf16 sum rounded to float32, then to bf16; a bf16 mean scales
// that sum and rounds again: within about an ulp and a half, where the whole mean is within half):
// [N, T, C] summed over {1} is [N, C], or [N, 1, C] with keepdim (torch's x.sum(dims, keepdim)).
// The one-dimension forms take dim alone: mean(x, -1, true). A mean over dimensions that hold no
// element is refused (torch returns NaN).
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& x, int64_t dim, bool keepdim = false);
// The variance over `dims`: sum((x - mean)^2) / max(count - correction, 0), two passes in float32
// (a bfloat16 x rounded once at the end; torch.var; correction 1 is the unbiased estimate, 0 the
// population's; count <= correction gives inf or NaN, and an empty reduction NaN, as torch's).
// stddev is its square root (torch.std; Python's kiln.std), whose gradient is 0 where it is 0, as
// torch's. Gradients through the composition.
Tensor var(const Tensor& x, const std::vector<int64_t>& dims, int64_t correction = 1, bool keepdim = false);
Tensor stddev(const Tensor& x, const std::vector<int64_t>& dims, int64_t correction = 1, bool keepdim = false);
// The p-norm over `dims` (torch.linalg.vector_norm, x.norm(p, dim)): (sum |x|^p)^(1/p) for p > 0,
// the largest |x| for p = inf; float32 or bfloat16, summed in float32 (as sum's), a bfloat16 x's
// result rounded once. Gradients through the composition, 0 where the norm is 0 (torch's there);
// for p other than 2 a NaN element's gradient is 0 where torch's is NaN, and for p past ~30
// p |x|^(p-1) overflows float32 (torch's formula divides by the norm first).
Tensor vector_norm(const Tensor& x, double p, const std::vector<int64_t>& dims, bool keepdim = false);
// The largest (amax) or smallest (amin) element over `dims`, as sum's: exact, NaN wins, float32,
// bfloat16, int32 or int64 (torch.amax). The gradient is shared evenly among the elements equal to
// the result.
Tensor amax(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor amin(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor amax(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor amin(const Tensor& x, int64_t dim, bool keepdim = false);
// log(sum(exp(x))) over `dims`, as sum's (torch.logsumexp): each row shifted by its maximum, so
// no exp overflows; a row of -inf or an empty one gives -inf, one holding +inf gives +inf, NaN
// NaN. Float32, or bfloat16 computed in float32 and rounded once. Gradient: softmax(x) * g.
Tensor logsumexp(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
// The position of the first maximum (argmax) or minimum (argmin) along dimension dim (negative
// from the end), int64, dim dropped or, keepdim, kept as 1 (torch.argmax, argmin; no gradient).
// A NaN beats every number, so a row holding one gives its first NaN's position, as torch; -0
// equals +0. x float32, bfloat16, int32 or int64 (integers compared exactly, through amax and eq;
// a 0-d x gives 0-d 0, dim 0 or -1), dim not empty. The default is C++'s: Python's kiln.argmax(x)
// without a dim is torch's, the position in the flattened x.
Tensor argmax(const Tensor& x, int64_t dim = -1, bool keepdim = false);
Tensor argmin(const Tensor& x, int64_t dim = -1, bool keepdim = false);
// The running sums of x along dimension dim (negative from the end; a 0-d x gives a copy): y[..k..]
// = x[..0..] + ... + x[..k..] (torch.cumsum). float32 summed in double, bfloat16 in float (torch's
// CPU accumulators), each output rounded once, in order: the same bits on every backend and thread
// count. Gradient: g summed from each position to the end.
Tensor cumsum(const Tensor& x, int64_t dim);
// Entries of x along one dimension and where each came from: sort, topk, and max and min along a
// dimension.
struct ValuesIndices {
  Tensor values;   // gather(x, dim, indices): x's dtype, differentiable
  Tensor indices;  // int64, positions along dim
};
// The largest (max) or smallest (min) entry along dim and its position, argmax's (torch.max(x,
// dim)): values equal amax's, but the gradient goes to that one position, not shared among ties.
// Float32, bfloat16, int32 or int64. The values are a gather: on a GPU a wait for its index
// check, no graph capture.
ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim = false);
ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim = false);
// x's entries along dim (negative from the end) in ascending or descending order
// (torch.sort(stable=True)): NaN above everything (last ascending, first descending), -0 equal
// to 0, equal entries in their order along dim. Float32 or bfloat16 x, any rank (a 0-d x sorts
// to itself); rows along dim under 2^32 entries. The gradient reaches x through the gather
// (which on a GPU waits for its index check: no CUDA graph capture; argsort has no gather).
ValuesIndices sort(const Tensor& x, int64_t dim = -1, bool descending = false);
// sort(x, dim, descending).indices, the values not gathered (torch.argsort(stable=True)).
Tensor argsort(const Tensor& x, int64_t dim = -1, bool descending = false);
// The k largest (largest false: smallest) entries along dim, in sort's order (torch.topk, whose
// order of equal entries is open: kiln's is by position), 0 <= k <= the extent of dim.
ValuesIndices topk(const Tensor& x, int64_t k, int64_t dim = -1, bool largest = true);

// Losses for research code, float32, the mean over every element (torch's reduction='mean');
// pred and target of one shape (no broadcast: a [N] target against [N, 1] predictions would
// silently compare every pair). Built from the ops above, so gradients flow to both operands
// and they run on either device.
// mean((pred - target)^2)
Tensor mse_loss(const Tensor& pred, const Tensor& target);
// mean(|pred - target|)
Tensor l1_loss(const Tensor& pred, const Tensor& target);
// Binary cross-entropy of sigmoid(logits) against targets in [0, 1], from the logits, as
// torch's binary_cross_entropy_with_logits: mean(softplus(x) - x y), finite for any logit
// (a sigmoid then a log gives inf from |x| ~ 17 on), and accurate for a confident logit of either sign.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& targets);

// How a loss reduces its per-element values: torch's reduction= "mean", "sum" or "none".
enum class Reduction : uint8_t { mean, sum, none };

// The options of nll_loss and cross_entropy, torch's names and defaults.
struct ClassLossOptions {
  Tensor weight;                        // [C] float32 per-class weights; undefined: every class 1
  int64_t ignore_index = -100;          // a class-index target equal to it adds nothing, to sums or counts
  Reduction reduction = Reduction::mean;  // mean: divided by the targets' summed weights (their count)
  float label_smoothing = 0.0f;         // cross_entropy: the target mixed with uniform, eps / C per class
};

// torch.nn.functional.cross_entropy: log_softmax over the class dimension, then nll_loss, with
// label smoothing. logits [C], [N, C] or [N, C, d1, ...] float32 (the class dimension second,
// as torch's); target either class indices (int32/int64, logits' shape without C; each in
// [0, C) or ignore_index) or class probabilities (float32, logits' shape). Built from log_softmax,
// gather and sums, so gradients flow to logits (and to probabilities that require grad).
// A target outside [0, C) raises, naming its position and value (a host wait on a GPU, as
// gather's check). reduction none gives the per-element losses (0 where ignored). The plain
// form (class indices, every one a class, no weight, no smoothing, the mean) runs as
// softmax_cross_entropy, one fused kernel, after reading the targets' extremes on the host.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const ClassLossOptions& opt = {});
// torch.nn.functional.nll_loss: -log_probs[target] per element (times weight[target]), reduced;
// log_probs as cross_entropy's logits, target class indices only; label_smoothing must be 0.
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, const ClassLossOptions& opt = {});

// Weight decay as TF-slim writes it: scale * sum_i sum(w_i^2) / 2 -> scalar [].
// Apply it to weights only, not biases.
Tensor l2_penalty(std::span<const Tensor> weights, float scale);

// In-place SGD step over every parameter given, in one backend call (an optimizer gives
// only what trains this step). Runs without recording (it is not differentiable).
void sgd_update(std::span<SgdParamRef> params, const SgdOptions& opt);

// In-place Adam step (PyTorch's formula, bias-corrected for `step`, counted from 1) over
// every parameter given, in one backend call; param, grad, exp_avg and exp_avg_sq share a
// shape. Runs without recording.
void adam_update(std::span<AdamParamRef> params, const AdamOptions& opt, int64_t step);

// out[..., c] = lut[c, u8[..., c]]: uint8 pixels [..., C] through a float32 table [C, 256]
// (the input convention: mean, scale, std), on the device of its inputs. No gradient.
Tensor lut_u8(const Tensor& u8, const Tensor& lut);

// Square crops of many 8-bit images, mirrored when asked, through the table: lut_u8 of
// the bytes crop_to_bytes would cut, in one pass and without the bytes in between.
// atlas: uint8 [bytes], images packed back to back, each [height, width, 3] (HWC) with its
//   channels already in the table's order (a BGR convention packs them swapped).
// desc: int64 [n, 6] on the host, one row per output image: (byte offset of its image in
//   atlas, height, width, top y0, left x0, flip 0/1). Checked here, every window inside
//   its image and every image inside atlas, before anything runs; for a GPU atlas the op
//   copies desc to the device itself (the host tensor may go as soon as it returns).
// lut: float32 [3, 256] on atlas's device. crop: the side of every window.
// -> float32 [n, crop, crop, 3] (NHWC) on atlas's device, with
//   out[i, y, x, c] = lut[c, atlas[off + ((y0 + y) * width + x0 + (flip ? crop-1-x : x)) * 3 + c]].
// No gradient.
Tensor crop_flip_lut_u8(const Tensor& atlas, const Tensor& desc, const Tensor& lut, int64_t crop);

// Output extent of a convolution or pooling window along one axis.
int64_t window_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad);

}  // namespace kiln
