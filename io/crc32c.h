// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TensorBoard's
// TFRecord framing and of every tensor kiln writes (docs/weights_format.md). One
// implementation for all of kiln: the SSE4.2 crc32 instruction when the CPU has it (chosen
// at run time, so the library needs no -msse4.2), a byte table otherwise.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kiln::io {

// CRC32C of n bytes. crc32c("123456789", 9) == 0xE3069283.
uint32_t crc32c(const void* data, size_t n);
// Continues a CRC32C over more bytes: crc32c_extend(crc32c(a), b) == crc32c(a followed by b).
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n);

// The two implementations behind crc32c_extend, for tests and measurements.
namespace crc32c_detail {
// True when this CPU has SSE4.2 (and kiln was built for x86-64): crc32c uses the instruction.
bool hardware_available();
// The instruction path: three interleaved streams per 24 KiB block, combined. Only call it
// when hardware_available().
uint32_t extend_hardware(uint32_t crc, const void* data, size_t n);
// The portable path: one table lookup per byte (~0.5 GB/s).
uint32_t extend_table(uint32_t crc, const void* data, size_t n);
}  // namespace crc32c_detail

}  // namespace kiln::io
