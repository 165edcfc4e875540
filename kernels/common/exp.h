// e^x (and tanh and log) in float without a library call or a branch, so that the loops over
// them vectorise (glibc's expf and logf do not without -ffast-math). One range reduction and
// polynomial, three range policies: exp_nonpositive for softmax's exponents (x <= 0, tiny results
// flushed to 0), exp_float for the unary ops (the whole float range, denormals included) and
// exp_split for e^(-x^2) (gelu's CDF and density), whose exponent would be rounded as one float.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/hd.h"

namespace kiln::common {

// u's bits read as a To of the same size (memcpy: the defined way, compiled to a register move).
template <typename To, typename From>
KILN_HD To bits_as(From u) {
  static_assert(sizeof(To) == sizeof(From), "bits_as: the sizes differ");
  To t;
  memcpy(&t, &u, sizeof t);
  return t;
}

// A float's bits and back; a double's (pow_positive's exponent and mantissa).
KILN_HD uint32_t bits_of(float f) { return bits_as<uint32_t>(f); }
KILN_HD float float_of(uint32_t u) { return bits_as<float>(u); }
KILN_HD uint64_t bits_of(double d) { return bits_as<uint64_t>(d); }
KILN_HD double double_of(uint64_t u) { return bits_as<double>(u); }

// 2^n for an integer-valued n in [-126, 127], from the exponent bits.
KILN_HD float pow2_int(float n) { return float_of(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23); }

// e^r for |r| <= ln2/2 (a reduced argument): Taylor to r^7 (truncation 5e-9 relative).
KILN_HD float exp_reduced(float r) {
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

// Cody-Waite's constants, shared by every reduction below.
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2Hi = 0.693145751953125f;  // 15 significant bits: n * kLn2Hi is exact for |n| <= 511
inline constexpr float kLn2Lo = 1.42860682030941723212e-6f;
inline constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer

// e^x as p * 2^n: Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, then exp_reduced;
// returns p and sets n (an integer, as a float). Needs |x| < 2^22 / log2(e).
// Plain multiplies and adds in a fixed order, so every CPU (and every target_clones variant,
// -ffp-contract=off) gives the same bits.
KILN_HD float exp_parts(float x, float& n) {
  const float t = x * kLog2e;
  n = (t + kRound) - kRound;
  return exp_reduced((x - n * kLn2Hi) - n * kLn2Lo);
}

// p * 2^n for an integer-valued n in [-252, 254], 2^n applied in two halves, each a normal
// float, so that a result near either end of the range is neither flushed nor overflowed early
// (one rounding into the denormals).
KILN_HD float times_pow2(float p, float n) {
  const float half = (n * 0.5f + kRound) - kRound;
  return (p * pow2_int(half)) * pow2_int(n - half);
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
// rounded once into the denormals below -87.3 (times_pow2), 0 below -103.98, +inf above 88.72,
// NaN as NaN.
KILN_HD float exp_float(float x) {
  const float kMax = 88.72283935546875f;  // the largest float whose e^x is finite
  const float xc = x > -104.0f ? (x < kMax ? x : kMax) : -104.0f;  // NaN: reduced as -104, returned below
  float n;
  const float p = exp_parts(xc, n);  // n in [-150, 128]
  const float y = times_pow2(p, n);
  // By masks, not ?:: inlined into log_float (softplus), GCC threaded the ?: into branches and
  // left the loop scalar ("control flow in loop").
  const uint32_t over = 0u - static_cast<uint32_t>(x > kMax), nan = 0u - static_cast<uint32_t>(x != x);
  return float_of((bits_of(INFINITY) & over) | (bits_of(x) & nan) | (bits_of(y) & ~(over | nan)));
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

// e^(a + b) for an a in [-122, 0] that is exact (a product of two floats of 12 significant bits)
// and a small b (|b| <= 2): one reduction and one polynomial where exp_float(a) * exp_float(b)
// took two. a - n ln2's high part is exact where a is large (by Sterbenz's lemma and a's bits), so the
// large exponent is never rounded; the sum is, once, in r + b (under an ulp of 2). Results below
// 2^-126 are rounded once into the denormals (times_pow2).
KILN_HD float exp_split(float a, float b) {
  const float m = ((a + b) * kLog2e + kRound) - kRound;  // in [-179, 3]
  const float n = m >= -179.0f ? m : -179.0f;  // NaN (a NaN z): a defined int conversion; p is NaN
  return times_pow2(exp_reduced(((a - n * kLn2Hi) - n * kLn2Lo) + b), n);
}

// x with its low 12 mantissa bits cleared: its square is exact, so e^(-x^2) can be split as
// e^(-s^2) e^(-(x - s)(x + s)) without the rounding of x^2 (an ulp of 67 is 7.6e-6) in the exponent.
KILN_HD float high_half(float x) { return float_of(bits_of(x) & 0xfffff000u); }

// erfc(z) for z >= 0 (Numerical Recipes' erfcc: t = 1 / (1 + z/2), erfc = t e^(-z^2 + P(t)),
// fractional error under 1.2e-7 in exact arithmetic), with -z^2 split by high_half. Within 8 ulp
// up to z = 9 (7.7 over every 7th float there; tested on every 251st); 0 past ~10. P by Horner:
// Estrin's shorter chain for its high terms was 15% faster but reached 8.2 ulp near z = 0.05.
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
  const float s = high_half(z);
  return t * exp_split(-(s * s), p - (z - s) * (z + s));
}

// log(1 + t) for t >= 0, accurate where 1 + t rounds t away (Goldberg's: log(u) t / (u - 1)
// with u = 1 + t corrects u's rounding; t itself once u is 1). Within 3 ulp (tested). Both
// arms are computed and one picked by integer masks: with ?: GCC moved the log and the division
// into a branch of their own (float arithmetic "could trap") and left the loop scalar.
KILN_HD float log1p_nonnegative(float t) {
  const float u = 1.0f + t;
  const float d = u - 1.0f;
  const uint32_t same = 0u - static_cast<uint32_t>(d == 0.0f);     // 1 + t rounded to 1: t itself
  const uint32_t huge = 0u - static_cast<uint32_t>(u == INFINITY);  // inf * (inf / inf) would be NaN
  const float den = float_of((bits_of(d) & ~same) | (bits_of(1.0f) & same));
  const uint32_t r = bits_of(log_float(u) * (t / den));
  return float_of((bits_of(t) & same) | (bits_of(u) & huge) | (r & ~(same | huge)));
}

// log(1 + e^x) as max(x, 0) + log(1 + e^-|x|): no overflow for large x, e^x's relative
// accuracy kept for very negative x (where 1 + e^x rounds to 1).
KILN_HD float softplus_float(float x) {
  const float a = x < 0.0f ? -x : x;
  return (x > 0.0f ? x : 0.0f) + log1p_nonnegative(exp_float(-a));  // NaN: 0 + NaN
}

// scale / (1 + e^-x): sigmoid's value (scale 1), silu's (scale x), and the factor their
// gradients take. Below 0 as scale e^x / (1 + e^x), so e^x is never above 1: 1 / (1 + e^-x)
// overflowed e^-x to inf from x = -88.7 and returned 0 where sigmoid is a denormal, down to
// -103.9 (softplus' gradient too). sigmoid within 3 ulp where it is a normal float; silu within
// |x| of the denormals' spacing below -87.3, where e^x is a denormal rounded first (up to 47 ulp
// where silu itself is still normal, -91.8 to -87.3). Picked by mask: vectorised.
KILN_HD float sigmoid_float(float x, float scale = 1.0f) {
  const float e = exp_float(float_of(bits_of(x) | 0x80000000u));  // e^-|x|; NaN stays NaN
  const uint32_t negative = static_cast<uint32_t>(static_cast<int32_t>(bits_of(x)) >> 31);  // -0: 1 / 2 either way
  return float_of((bits_of(scale * e) & negative) | (bits_of(scale) & ~negative)) / (1.0f + e);
}

// x ** p for a positive finite x (denormals too) and a finite p, vectorisable: 2^(p log2 x) in
// double, rounded once to float, so within half an ulp but for the double math's ~1e-13 relative
// error (an exact tie, 66049 ** 1.5, may round either way). glibc's powf is within 0.82 ulp, but
// its scalar calls kept the loop at 10% of memory speed.
// x = m 2^e, m in [sqrt(1/2), sqrt(2)) (every float is a normal double: no denormal case);
// log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, by its series to s^17 (truncation
// 1e-15 relative); 2^y = 2^n e^g, g = (y - n) ln 2 in [-0.35, 0.35], by Taylor to g^12
// (truncation 2e-16). y is clamped to [-400, 400]: past float's range either way, and 2^n a
// normal double.
// Integers as doubles go through bits (2^52 + k holds k in its low mantissa bits), not
// conversions, so the AVX2 clone (no int64 <-> double instructions) vectorises too. Other x
// (zero, negative, infinite, NaN) give garbage: the caller takes powf there.
KILN_HD float pow_positive(float x, float p) {
  constexpr double kTwo52 = 4503599627370496.0;
  const uint64_t b = bits_of(static_cast<double>(x));
  const double m1 = double_of((b & 0x000fffffffffffffu) | 0x3ff0000000000000u);  // the mantissa, in [1, 2)
  // Masks from the sign bit of a difference (m1 is never sqrt 2 itself), by SSE2's 64-bit shifts
  // and subtractions: a 64-bit compare (pcmpgtq, SSE4.2) left the baseline copy scalar, 20 ns an
  // element, and double selects cost the AVX2 copy a fifth of its speed.
  const uint64_t high = (bits_of(m1 - 1.41421356237309504880) >> 63) - 1;  // all ones where m1 > sqrt 2
  const double m = double_of(bits_of(m1) - (0x0010000000000000u & high));
  const double e = (double_of(0x4330000000000000u | (b >> 52)) - kTwo52) - 1023.0 + double_of(bits_of(1.0) & high);
  const double s = (m - 1.0) / (m + 1.0), z = s * s;
  double q = 1.0 / 17;
  q = q * z + 1.0 / 15;
  q = q * z + 1.0 / 13;
  q = q * z + 1.0 / 11;
  q = q * z + 1.0 / 9;
  q = q * z + 1.0 / 7;
  q = q * z + 1.0 / 5;
  q = q * z + 1.0 / 3;
  const double log2m = (2.0 * s + 2.0 * s * (z * q)) * 1.4426950408889634074;
  const double u = static_cast<double>(p) * (e + log2m);
  // Clamped by masks, made as high's: a compare widened to a 64-bit mask has no SSE2 form.
  const uint64_t below = 0 - (bits_of(u + 400.0) >> 63), above = 0 - (bits_of(400.0 - u) >> 63);
  const double y = double_of((bits_of(u) & ~(below | above)) | (bits_of(-400.0) & below) | (bits_of(400.0) & above));
  const double n = (y + 1.5 * kTwo52) - 1.5 * kTwo52;  // y rounded to an integer
  const double g = (y - n) * 0.69314718055994530942;
  double t = 1.0 / 479001600;  // 1/12!
  t = t * g + 1.0 / 39916800;
  t = t * g + 1.0 / 3628800;
  t = t * g + 1.0 / 362880;
  t = t * g + 1.0 / 40320;
  t = t * g + 1.0 / 5040;
  t = t * g + 1.0 / 720;
  t = t * g + 1.0 / 120;
  t = t * g + 1.0 / 24;
  t = t * g + 1.0 / 6;
  t = t * g + 0.5;
  t = t * g + 1.0;
  t = t * g + 1.0;
  const double two_n = double_of(bits_of(n + (kTwo52 + 1023.0)) << 52);  // n + 1023 in [623, 1423]
  return static_cast<float>(t * two_n);
}

// The standard normal CDF, Phi(x) = erfc(-x / sqrt 2) / 2, by erfc_nonnegative of |x| / sqrt 2:
// within 12 ulp above x = -2, 2e-5 relative below (x / sqrt 2 rounded to a float; torch's float
// gelu, 1 + erf(x / sqrt 2), cancels there).
KILN_HD float normal_cdf(float x) {
  const float e = erfc_nonnegative((x < 0.0f ? -x : x) * 0.70710678118654752f);
  return x < 0.0f ? 0.5f * e : 1.0f - 0.5f * e;
}

// The standard normal density, e^(-x^2/2) / sqrt(2 pi), with x^2 split by high_half: within
// 3 ulp (tested: 2.2); 0 from |x| = 15.6 on (e^-121.7 is below every float), NaN kept.
KILN_HD float normal_pdf(float x) {
  const float a = x < 0.0f ? -x : x;
  const float c = a > 15.6f ? 15.6f : a;  // an infinite x made (c - s) NaN
  const float s = high_half(c);
  return 0.39894228040143268f * exp_split(-0.5f * (s * s), -0.5f * ((c - s) * (c + s)));
}

}  // namespace kiln::common
