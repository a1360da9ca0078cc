// The kernels of passes.h, written with at::vec::Vectorized.
//
// Included only by the per-ISA files (passes_avx512.cpp, passes_avx2.cpp,
// passes_default.cpp). Each defines CPU_CAPABILITY (and CPU_CAPABILITY_AVX512 or
// CPU_CAPABILITY_AVX2) before including this, as ATen's build does for its own kernel files,
// and setup.py compiles it with the matching -m flags: Vectorized<T> then has that
// instruction set's width. Everything here is in a namespace named after the instruction set
// (Vectorized<T> too: at::vec::CPU_CAPABILITY), so the three copies never meet at link time.
//
// The ReLU test runs on the elements' bits viewed as signed integers of the same size
// (Bits<T>::Raw), so one compare serves every dtype with no conversion: an element is kept if
// its bits are positive (sign clear and not +0: positive numbers, +Inf, positive NaN) or its
// magnitude is above infinity's (NaN of either sign). A select is then an AND with the
// all-ones / all-zeros lanes of the compare.
#pragma once

#ifndef CPU_CAPABILITY
#error "passes_impl.h is included by the per-ISA files, which define CPU_CAPABILITY"
#endif

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "passes.h"

namespace twolayer_ext::cpu::passes::CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

template <typename T>
struct Bits;
template <>
struct Bits<float> {
  using Raw = int32_t;
  static constexpr Raw kMagnitude = 0x7FFFFFFF, kInfinity = 0x7F800000;
};
template <>
struct Bits<double> {
  using Raw = int64_t;
  static constexpr Raw kMagnitude = 0x7FFFFFFFFFFFFFFF, kInfinity = 0x7FF0000000000000;
};
template <>
struct Bits<c10::BFloat16> {
  using Raw = int16_t;
  static constexpr Raw kMagnitude = 0x7FFF, kInfinity = 0x7F80;
};
template <>
struct Bits<c10::Half> {
  using Raw = int16_t;
  static constexpr Raw kMagnitude = 0x7FFF, kInfinity = 0x7C00;
};

template <typename T>
using Raw = typename Bits<T>::Raw;
template <typename T>
using VecRaw = Vectorized<Raw<T>>;

template <typename T>
const Raw<T>* raw(const T* p) {
  static_assert(sizeof(Raw<T>) == sizeof(T));
  return reinterpret_cast<const Raw<T>*>(p);
}
template <typename T>
Raw<T>* raw(T* p) {
  return reinterpret_cast<Raw<T>*>(p);
}

// All-ones lanes where the element with bits b passes the ReLU (see the top of the file).
template <typename T>
VecRaw<T> kept(const VecRaw<T>& b) {
  using V = VecRaw<T>;
  return (b > V(0)) | ((b & V(Bits<T>::kMagnitude)) > V(Bits<T>::kInfinity));
}

// The first `count` lanes (all of them when count is the width), the rest unspecified.
template <typename V, typename P>
V load(const P* p, int64_t count) {
  return count == V::size() ? V::loadu(p) : V::loadu(p, count);
}

// Eight keep flags (bytes, 0 or 1) -> one mask byte, bit j = flag j, with one multiply.
static_assert(std::endian::native == std::endian::little, "the mask packing assumes x86 order");
inline uint8_t pack8(const uint8_t* flags01) {
  uint64_t word;
  std::memcpy(&word, flags01, 8);
  return static_cast<uint8_t>((word * 0x0102040810204080ULL) >> 56);
}

// One mask byte -> eight flags, flag j = bit j (0 or 1), with one multiply.
inline void unpack8(uint8_t bits, uint8_t* flags01) {
  const uint64_t word =
      ((bits * 0x0101010101010101ULL) & 0x8040201008040201ULL) + 0x7F7F7F7F7F7F7F7FULL;
  const uint64_t ones = (word >> 7) & 0x0101010101010101ULL;
  std::memcpy(flags01, &ones, 8);
}

// Columns per step of a row: a multiple of 8 (steps start on mask bytes) and of every vector
// width, small enough for the scratch arrays to stay in L1.
constexpr int64_t kCols = 256;

// Rows of n columns that one step takes: narrow rows whose masks are whole bytes (n a multiple
// of 8, below kCols) lie with their mask bits in one contiguous run for any number of rows, so
// a step takes kCols / n of them, sparing per-row steps that cost more than a narrow row
// (docs/BENCHMARKS.md, "Narrow layers' ReLU masks"); other rows, one per step.
constexpr int64_t rows_per_step(int64_t n) {
  return n > 0 && n % 8 == 0 && n < kCols ? kCols / n : 1;
}

}  // namespace

template <typename T>
void relu_mask_rows(T* y, uint8_t* mask, int64_t begin, int64_t end, int64_t n) {
  using V = VecRaw<T>;
  constexpr int64_t L = V::size();
  const int64_t nbytes = (n + 7) / 8;  // mask_bytes(n)
  if (rows_per_step(n) > 1 && end - begin > 1) {
    // Rows [begin, end) and their masks are each one contiguous run: the same bits as one long
    // row, run as one.
    return relu_mask_rows(y + begin * n, mask ? mask + begin * nbytes : nullptr, 0, 1,
                          (end - begin) * n);
  }
  alignas(64) uint8_t flags[kCols];
  for (int64_t i = begin; i < end; ++i) {
    Raw<T>* row = raw(y + i * n);
    for (int64_t c0 = 0; c0 < n; c0 += kCols) {
      const int64_t count = std::min(kCols, n - c0);
      Raw<T>* r = row + c0;
      for (int64_t j = 0; j < count; j += L) {
        const int64_t c = std::min(L, count - j);
        const V b = load<V>(r + j, c);
        (b & kept<T>(b)).store(r + j, c);
      }
      if (mask == nullptr) continue;
      // at::vec has no bit mask that means the same in every instruction set (zero_mask()
      // gives 16-bit types two bits per lane under AVX2), so the packing is plain integer
      // code, which the compiler vectorises at this file's width: after the select exactly
      // the kept elements have nonzero bits.
      for (int64_t j = 0; j < count; ++j) flags[j] = r[j] != 0;
      std::fill(flags + count, flags + (count + 7) / 8 * 8, uint8_t{0});
      uint8_t* bytes = mask + i * nbytes + c0 / 8;
      for (int64_t b = 0; b < (count + 7) / 8; ++b) bytes[b] = pack8(flags + 8 * b);
    }
  }
}

template <typename T>
void select_kept(const T* y, const T* v, T* out, int64_t begin, int64_t end) {
  using V = VecRaw<T>;
  constexpr int64_t L = V::size();
  const Raw<T>* yr = raw(y);
  const Raw<T>* vr = raw(v);
  Raw<T>* o = raw(out);
  int64_t i = begin;
  for (; i + L <= end; i += L) (V::loadu(vr + i) & kept<T>(V::loadu(yr + i))).store(o + i);
  if (i < end) {
    const int64_t c = end - i;
    (V::loadu(vr + i, c) & kept<T>(V::loadu(yr + i, c))).store(o + i, c);
  }
}

template <typename T>
void mask_grad_rows(const T* g, int64_t gs0, int64_t gs1, KeepSource<T> keep, int64_t begin,
                    int64_t end, int64_t n, T* gm, at::opmath_type<T>* part) {
  using V = VecRaw<T>;
  using R = Raw<T>;
  constexpr int64_t L = V::size();
  const int64_t nbytes = (n + 7) / 8;  // mask_bytes(n)
  // Where a step takes several rows, its mask bits, y and gm are each one contiguous run; the
  // bias sums below still add them row by row.
  const int64_t step_rows = rows_per_step(n);
  const bool flat_g = gs1 == 1 && (step_rows == 1 || gs0 == n);
  alignas(64) R gathered[kCols];     // a step of a strided gradient, made contiguous
  alignas(64) uint8_t flags[kCols];  // the packed mask's bits as bytes, 0 or 1
  alignas(64) R lanes[kCols];        // ... and as all-ones / zero lanes
  // The masked step, for the bias-gradient sums; the 16-bit sums below read a whole float
  // vector from a row's last columns, hence the slack.
  alignas(64) R masked[kCols + 64] = {};
  for (int64_t i = begin; i < end; i += step_rows) {
    const int64_t nr = std::min(step_rows, end - i);
    for (int64_t c0 = 0; c0 < n; c0 += kCols) {
      const int64_t count = std::min(kCols, n - c0);  // columns of each row (n if nr > 1)
      const int64_t total = nr * count;
      const R* gr = raw(g + i * gs0 + c0 * gs1);
      if (!flat_g) {
        for (int64_t r = 0; r < nr; ++r) {
          const R* row = raw(g + (i + r) * gs0 + c0 * gs1);
          for (int64_t j = 0; j < count; ++j) gathered[r * count + j] = row[j * gs1];
        }
        gr = gathered;
      }
      const R* yr = nullptr;
      if (keep.mask != nullptr) {
        const uint8_t* bytes = keep.mask + i * nbytes + c0 / 8;
        for (int64_t b = 0; b < (total + 7) / 8; ++b) unpack8(bytes[b], flags + 8 * b);
        for (int64_t j = 0; j < total; ++j) lanes[j] = -static_cast<R>(flags[j]);
      } else {
        yr = raw(keep.y + i * n + c0);
      }
      R* out = gm != nullptr ? raw(gm + i * n + c0) : nullptr;
      for (int64_t j = 0; j < total; j += L) {
        const int64_t c = std::min(L, total - j);
        const V k = yr == nullptr ? load<V>(lanes + j, c) : kept<T>(load<V>(yr + j, c));
        const V m = load<V>(gr + j, c) & k;
        if (out != nullptr) m.store(out + j, c);
        m.store(masked + j);
      }
      if (part == nullptr) continue;
      // part[c0 + j] += masked[j], element by element in row order: the same sums, bit for
      // bit, in every instruction set and for any split of the rows.
      at::opmath_type<T>* p = part + c0;
      for (int64_t r = 0; r < nr; ++r) {
        const T* mv = reinterpret_cast<const T*>(masked + r * count);
        if constexpr (std::is_same_v<at::opmath_type<T>, T>) {
          using VA = Vectorized<T>;
          for (int64_t j = 0; j < count; j += VA::size()) {
            const int64_t c = std::min<int64_t>(VA::size(), count - j);
            (load<VA>(p + j, c) + load<VA>(mv + j, c)).store(p + j, c);
          }
        } else {  // 16-bit types: converted to float (exactly), as torch accumulates them
          using VF = Vectorized<float>;
          for (int64_t j = 0; j < count; j += VF::size()) {
            const int64_t c = std::min<int64_t>(VF::size(), count - j);
            VF f;  // VF::size() elements from mv + j: within `masked` and its slack
            if constexpr (std::is_same_v<T, c10::BFloat16>) {
              at::vec::load_fp32_from_bf16(mv + j, f);
            } else {
              at::vec::load_fp32_from_fp16(mv + j, f);
            }
            (load<VF>(p + j, c) + f).store(p + j, c);
          }
        }
      }
    }
  }
}

// at::vec converts a vector of T to two of float and back (the remainder, one element at a
// time, with c10's conversions: the same rounding).
template <typename T>
void widen_to_float(const T* src, float* dst, int64_t begin, int64_t end) {
  using V = Vectorized<T>;
  using VF = Vectorized<float>;
  static_assert(V::size() == 2 * VF::size());
  int64_t i = begin;
  for (; i + V::size() <= end; i += V::size()) {
    const auto [lo, hi] = at::vec::convert_to_float<T>(V::loadu(src + i));
    lo.store(dst + i);
    hi.store(dst + i + VF::size());
  }
  for (; i < end; ++i) dst[i] = static_cast<float>(src[i]);
}

template <typename T>
void round_from_float(const float* src, T* dst, int64_t begin, int64_t end) {
  using V = Vectorized<T>;
  using VF = Vectorized<float>;
  int64_t i = begin;
  for (; i + V::size() <= end; i += V::size()) {
    at::vec::convert_from_float<T>(VF::loadu(src + i), VF::loadu(src + i + VF::size()))
        .store(dst + i);
  }
  for (; i < end; ++i) dst[i] = static_cast<T>(src[i]);
}

TWOLAYER_EXT_INSTANTIATE_PASSES()

}  // namespace twolayer_ext::cpu::passes::CPU_CAPABILITY
