// Whether an element passed the ReLU, per element type: !(v <= 0), i.e. v > 0 or
// NaN (torch.relu keeps NaN, threshold_backward passes its gradient; relu'(0) = 0).
//
// The 16-bit types are tested on their bits, through an unsigned 16-bit view
// (Raw), and selected by bits: loops over them become integer compares and
// selects that the compiler vectorises for baseline x86-64 (SSE2, 8 lanes),
// instead of a float conversion per element, which it does not vectorise.
// float and double test the value itself.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

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

}  // namespace twolayer_ext::cpu
