// Whether an element passed the ReLU, per element type: !(v <= 0), i.e. v > 0 or
// NaN (torch.relu keeps NaN, threshold_backward passes its gradient; relu'(0) = 0).
//
// The 16-bit types are tested on their bits, through an unsigned 16-bit view
// (Raw), and selected by bits: loops over them become integer compares and
// selects that the compiler vectorises (8 lanes with SSE2, 32 with AVX-512),
// instead of a float conversion per element, which it does not vectorise.
// float and double test the value itself.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <bit>
#include <cstdint>
#include <cstring>

// Marks a function to be compiled for AVX-512 (x86-64-v4), AVX2 (x86-64-v3) and the
// baseline ISA, the best of which runs (GCC/Clang target_clones: an ifunc resolved when the
// library loads). For the element-wise passes, whose loops live in always_inline templates
// so that each clone vectorises them at its own width; the rest of the extension is built
// for the baseline (SSE2), so the wheel runs on any x86-64 CPU. (at::vec::Vectorized<T> is
// only as wide as the ISA its translation unit is compiled for: ATen builds each of its
// kernel files once per ISA; target_clones does the same for these loops.) Measured, LinearReLU
// forward 512x256->512: the epilogue took 133 us at SSE2 width in float64 and 40 us cloned
// (torch's relu: 52 us); bfloat16 32 -> 17 us (torch 27 us).
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define TWOLAYER_EXT_ISA_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TWOLAYER_EXT_ISA_CLONES
#endif

namespace twolayer_ext::cpu {

template <typename T>
struct ReluBits {
  using Raw = T;  // float, double: the value itself
  static bool keep(Raw v) { return !(v <= Raw(0)); }
};

// Bits of a 16-bit float: sign 0x8000; NaN: magnitude above the infinity pattern.
template <uint16_t kInfinity>
struct ReluBits16 {
  using Raw = uint16_t;
  static bool keep(Raw b) {
    const uint16_t magnitude = b & 0x7FFF;
    return magnitude > kInfinity || (magnitude != 0 && (b & 0x8000) == 0);
  }
};
template <>
struct ReluBits<c10::BFloat16> : ReluBits16<0x7F80> {};
template <>
struct ReluBits<c10::Half> : ReluBits16<0x7C00> {};

// The element type's storage viewed as ReluBits<T>::Raw (same size and bits; +0 is all
// zero bits in every type).
template <typename T>
inline const typename ReluBits<T>::Raw* raw(const T* p) {
  static_assert(sizeof(typename ReluBits<T>::Raw) == sizeof(T));
  return reinterpret_cast<const typename ReluBits<T>::Raw*>(p);
}
template <typename T>
inline typename ReluBits<T>::Raw* raw(T* p) {
  return reinterpret_cast<typename ReluBits<T>::Raw*>(p);
}

// Eight keep flags (bytes, zero or not) <-> one packed mask byte (bit j = flag j), with a
// multiply instead of a loop over the bits. Little-endian: flag j is byte j of the word.
static_assert(std::endian::native == std::endian::little, "the mask packing assumes x86 order");

inline uint8_t pack8(const uint8_t* flags01) {  // flags01: eight bytes, each 0 or 1
  uint64_t word;
  std::memcpy(&word, flags01, 8);
  return static_cast<uint8_t>((word * 0x0102040810204080ULL) >> 56);
}

inline void unpack8(uint8_t bits, uint8_t* flags) {  // flag j nonzero iff bit j is set
  const uint64_t word = (bits * 0x0101010101010101ULL) & 0x8040201008040201ULL;
  std::memcpy(flags, &word, 8);
}

}  // namespace twolayer_ext::cpu
