// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), a
// counter-based generator: the numbers depend only on (seed, counter), so the CPU and the
// CUDA backend produce the same stream element by element, in any order, on any thread.
#pragma once

#include <cstdint>

#include "core/hd.h"

namespace kiln {

// Where a fill draws from: the generator's seed and the first 128-bit counter it may use.
// Element i of the fill uses counter (offset + i / 4), word i % 4.
struct PhiloxState {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

// Four 32-bit words of output for one counter.
struct Philox4 {
  uint32_t v[4];
};

// One Philox4x32-10 block: counter words {lo(counter), hi(counter), 0, 0}, key {lo(seed), hi(seed)}.
KILN_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The block for 64-bit counter `counter` under `seed`.
KILN_HD Philox4 philox_block(uint64_t seed, uint64_t counter) {
  return philox4x32_10(static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0u, 0u,
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// 32 random bits -> float in [0, 1), exactly representable (24 bits of mantissa).
KILN_HD float bits_to_unit_float(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }

// Word k of a block, without indexing the array by a runtime value (which would push the
// block to local memory on the GPU).
KILN_HD uint32_t philox_word(const Philox4& b, unsigned k) {
  return k == 0 ? b.v[0] : k == 1 ? b.v[1] : k == 2 ? b.v[2] : b.v[3];
}

// The i-th uniform [0, 1) number of the stream at `s`.
KILN_HD float philox_uniform(PhiloxState s, uint64_t i) {
  const Philox4 b = philox_block(s.seed, s.offset + i / 4);
  return bits_to_unit_float(philox_word(b, static_cast<unsigned>(i % 4)));
}

// Elements 4 * block .. 4 * block + 3 of philox_uniform's stream, bit for bit, from one
// Philox block instead of four (fills go block by block).
KILN_HD void philox_uniform4(PhiloxState s, uint64_t block, float out[4]) {
  const Philox4 b = philox_block(s.seed, s.offset + block);
  for (int k = 0; k < 4; ++k) out[k] = bits_to_unit_float(b.v[k]);
}

}  // namespace kiln
