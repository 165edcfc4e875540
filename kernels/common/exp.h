// e^x (and tanh and log) in float without a library call or a branch, so that the loops over
// them vectorise (glibc's expf and logf do not without -ffast-math). One range reduction and
// polynomial, two range policies: exp_nonpositive for softmax's exponents (x <= 0, tiny results
// flushed to 0) and exp_float for the unary ops (the whole float range, denormals included).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/hd.h"

namespace kiln::common {

// A float's bits and back (memcpy: the defined way, compiled to a register move).
KILN_HD uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}
KILN_HD float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

// 2^n for an integer-valued n in [-126, 127], from the exponent bits.
KILN_HD float pow2_int(float n) { return float_of(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23); }

// e^x as p * 2^n: Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, then Taylor to r^7
// (truncation 5e-9 relative); returns p and sets n (an integer, as a float). Needs |x| < 2^22 / log2(e).
// Plain multiplies and adds in a fixed order, so every CPU (and every target_clones variant,
// -ffp-contract=off) gives the same bits.
KILN_HD float exp_parts(float x, float& n) {
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693145751953125f;  // 15 significant bits: n * kLn2Hi is exact for |n| <= 511
  const float kLn2Lo = 1.42860682030941723212e-6f;
  const float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float t = x * kLog2e;
  n = (t + kRound) - kRound;
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p;
}

// e^x for x <= 0 (a softmax's exponents, after subtracting the row maximum; a scalar double
// exp per element made the CPU's softmax-cross-entropy 3-15x slower than PyTorch's); within
// 2 ulp of e^x on [-87, 0] (tested against double exp). Below -87, e^x < 1.7e-38 is returned
// as 0: next to a softmax's largest term, 1, no float holds it. NaN stays NaN.
KILN_HD float exp_nonpositive(float x) {
  // Selects, not branches, so the loops vectorise. A NaN x fails the comparison and is
  // reduced as -87 (n stays in [-126, 0]: 2^n a normal float), then returned as itself below.
  const float xc = x >= -87.0f ? x : -87.0f;
  float n;
  const float p = exp_parts(xc, n);
  return x >= -87.0f ? p * pow2_int(n) : (x < -87.0f ? 0.0f : x);
}

// e^x over every float: within 2 ulp where e^x is a normal float (tested against double exp),
// rounded once into the denormals below -87.3, 0 below -103.98, +inf above 88.72, NaN as NaN.
// 2^n is applied in two halves, each a normal float, so that results near both ends of the
// range are neither flushed nor overflowed early.
KILN_HD float exp_float(float x) {
  const float kMax = 88.72283935546875f;  // the largest float whose e^x is finite
  const float xc = x > -104.0f ? (x < kMax ? x : kMax) : -104.0f;  // NaN: reduced as -104, returned below
  float n;
  const float p = exp_parts(xc, n);                                   // n in [-150, 128]
  const float kRound = 12582912.0f;
  const float half = (n * 0.5f + kRound) - kRound;                    // in [-75, 64]
  const float y = (p * pow2_int(half)) * pow2_int(n - half);
  return x > kMax ? INFINITY : (x == x ? y : x);
}

// tanh(x) from the same exponential, vectorisable: an odd polynomial below |x| = 0.625 (Cephes'
// tanhf coefficients, where 1 - 2 / (e^2x + 1) would cancel), 1 - 2 / (e^2|x| + 1) with x's
// sign above (+-1 from |x| = 9 on, e^2|x| = inf past 44). Within 3 ulp of tanh (tested).
KILN_HD float tanh_float(float x) {
  const float a = x < 0.0f ? -x : x;
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = x * (1.0f + z * p);  // x * (...), not x + ...: tanh(-0) is -0
  const float big = 1.0f - 2.0f / (exp_float(2.0f * a) + 1.0f);
  return a < 0.625f ? small : (x < 0.0f ? -big : big);  // NaN: big is NaN
}

// log(x) without a library call, vectorisable: x = m 2^e with m in [sqrt(1/2), sqrt(2)), then
// Cephes' logf polynomial in m - 1 and e ln2 added in two parts. A denormal x is its mantissa
// bits as an integer times 2^-149. log(0) = -inf, log(x < 0) = NaN, log(inf) = inf, NaN kept.
// Within 2 ulp (tested). The selects are on integers and the arms hold no float arithmetic:
// GCC left the loop scalar ("control flow in loop") for a conditional float multiply.
KILN_HD float log_float(float x) {
  const uint32_t xbits = bits_of(x);
  // Masks, not ?:, for the two cases: GCC moved the int-to-float conversion into a branch of
  // its own (a conversion "could trap") and then could not vectorise the loop.
  const uint32_t tiny = (xbits & 0x7f800000u) == 0 ? 0xffffffffu : 0u;  // denormal or zero
  const uint32_t ibits = bits_of(static_cast<float>(static_cast<int32_t>(xbits & 0x007fffffu)));  // exact: < 2^23
  const uint32_t bits = (ibits & tiny) | (xbits & ~tiny);
  int32_t e = static_cast<int32_t>((bits >> 23) & 0xffu) - 127 - static_cast<int32_t>(149u & tiny);
  uint32_t mbits = (bits & 0x007fffffu) | 0x3f800000u;  // the mantissa as a float in [1, 2)
  const uint32_t high = mbits > 0x3fb504f3u ? 0xffffffffu : 0u;  // m > sqrt(2): m / 2 and e + 1
  mbits -= 0x00800000u & high;
  e += static_cast<int32_t>(1u & high);
  const float m = float_of(mbits);
  const float fe = static_cast<float>(e);
  const float f = m - 1.0f, z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  float y = f * z * p;
  y = y + fe * -2.12194440e-4f;
  y = y - 0.5f * z;
  const float r = (f + y) + fe * 0.693359375f;
  // The result by mask too: r chosen by ?: was computed only where it is returned, and that
  // branch (float arithmetic "could trap") kept the loop scalar.
  const float special = x == 0.0f ? -INFINITY : (x < 0.0f ? NAN : x);  // 0, negative; inf and NaN as x
  const uint32_t ok = 0u - static_cast<uint32_t>((x > 0.0f) & (x < INFINITY));  // no &&: its branch came back
  return float_of((bits_of(r) & ok) | (bits_of(special) & ~ok));
}

// erfc(z) for z >= 0 (Numerical Recipes' erfcc: t = 1 / (1 + z/2), erfc = t e^(-z^2 + P(t)),
// fractional error under 1.2e-7 in exact arithmetic), with -z^2 split so that float rounding
// of z^2 does not grow with z: s is z with its low 12 mantissa bits cleared, s^2 is exact, and
// e^(-z^2) = e^(-s^2) e^(-(z - s)(z + s)). Within 8 ulp up to z = 9 (tested: 6.0); 0 past ~10.
// gelu's CDF is erfc(-x/sqrt 2) / 2, so erf itself (which cancels near 0) is never formed.
KILN_HD float erfc_nonnegative(float z) {
  z = z > 11.0f ? 11.0f : z;  // erfc(11) rounds to 0; an infinite z made (z - s) NaN. NaN stays.
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const float s = float_of(bits_of(z) & 0xfffff000u);
  // Two factors: p - s^2 as one exponent rounded p's bits away (an ulp of 67 is 7.6e-6); the
  // small parts, p and (z - s)(z + s), share one.
  return t * exp_float(p - (z - s) * (z + s)) * exp_float(-(s * s));
}

// 1 / (1 + e^-x): sigmoid's value, and the factor silu's and both their gradients take.
KILN_HD float sigmoid_float(float x) { return 1.0f / (1.0f + exp_float(-x)); }

// The standard normal CDF, Phi(x) = erfc(-x / sqrt 2) / 2, by erfc_nonnegative of |x| / sqrt 2:
// within 12 ulp above x = -2, 2e-5 relative below (x / sqrt 2 rounded to a float; torch's float
// gelu, 1 + erf(x / sqrt 2), cancels there).
KILN_HD float normal_cdf(float x) {
  const float e = erfc_nonnegative((x < 0.0f ? -x : x) * 0.70710678118654752f);
  return x < 0.0f ? 0.5f * e : 1.0f - 0.5f * e;
}

}  // namespace kiln::common
