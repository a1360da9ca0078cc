// isa.h: ATen's capability, narrowed to what the CPU has of our per-ISA files' features.
#include "isa.h"

#include <ATen/Version.h>
#include <ATen/cpu/Utils.h>

#include <string>

namespace twolayer_ext::cpu {
namespace {

Isa pick() {
#if defined(__x86_64__) && defined(__GNUC__)
  const std::string aten = at::get_cpu_capability();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq");
  if (aten == "AVX512" && avx512) return Isa::kAvx512;
  if ((aten == "AVX512" || aten == "AVX2") && avx2) return Isa::kAvx2;
#endif
  return Isa::kDefault;
}

}  // namespace

Isa isa() {
  static const Isa chosen = pick();
  return chosen;
}

bool intel_cpu() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool intel = __builtin_cpu_is("intel");
  return intel;
#else
  return false;
#endif
}

bool cpu_has(const char* feature) {
  static const auto capabilities = at::cpu::get_cpu_capabilities();
  const auto it = capabilities.find(feature);
  return it != capabilities.end() && it->second.isBool() && it->second.toBool();
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kDefault:
      break;
  }
  return "default";
}

}  // namespace twolayer_ext::cpu
