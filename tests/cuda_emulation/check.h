// What the emulation drivers (fused_mlp.cpp, passes.cpp) share: failure counting and
// conversions between a device type and double. Include after the kernels (it needs
// dtypes.cuh's Numeric).
#pragma once

#include <cstdio>
#include <cstring>
#include <string>

namespace emu {

inline int failures = 0;

inline void check(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAIL %s\n", what.c_str());
    ++failures;
  }
}

// The exit status and last line of a driver.
inline int report(const char* what) {
  if (failures == 0) {
    std::printf("%s emulation: all passed\n", what);
  } else {
    std::printf("%s emulation: %d failed\n", what, failures);
  }
  return failures == 0 ? 0 : 1;
}

template <typename T>
double to_double(T v) {
  return static_cast<double>(twolayer_ext::cuda::Numeric<T>::to_acc(v));
}

template <typename T>
T from_double(double v) {
  using N = twolayer_ext::cuda::Numeric<T>;
  return N::from_acc(static_cast<typename N::acc>(v));
}

template <typename T>
bool same_bits(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

}  // namespace emu
