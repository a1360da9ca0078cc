// switches.h: each environment switch is one row of kSwitches, read by one function.
#include "twolayer_ext/switches.h"

#include <ATen/Context.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstdlib>
#include <cstring>

namespace twolayer_ext {
namespace {

struct Switch {
  const char* name;
  std::array<const char*, 2> values;  // the values it accepts besides unset; nullptr: none
};

constexpr Switch kCpuGemm{"TWOLAYER_EXT_CPU_GEMM", {"aten", nullptr}};
constexpr Switch kCpuFusedMlp{"TWOLAYER_EXT_CPU_FUSED_MLP", {"0", "1"}};
constexpr Switch kCudaFusedMlp{"TWOLAYER_EXT_CUDA_FUSED_MLP", {"0", "1"}};
constexpr std::array<Switch, 3> kSwitches{kCpuGemm, kCpuFusedMlp, kCudaFusedMlp};

constexpr int kUnset = -1;

// The index in s.values of the switch's value (kUnset when unset or empty), or a ValueError
// naming the allowed values. No allocation unless the value is wrong: the ops read their
// switches on every call.
int read(const Switch& s) {
  const char* value = std::getenv(s.name);
  if (value == nullptr || *value == '\0') return kUnset;
  for (size_t i = 0; i < s.values.size(); ++i) {
    if (s.values[i] != nullptr && std::strcmp(value, s.values[i]) == 0) return static_cast<int>(i);
  }
  std::string allowed;
  for (const char* v : s.values) {
    if (v != nullptr) allowed += (allowed.empty() ? "'" : ", '") + std::string(v) + "'";
  }
  TORCH_CHECK_VALUE(false, s.name, " must be one of ", allowed, " (or unset), but got '", value,
                    "' (README, \"Path switches\")");
}

// TWOLAYER_EXT_FUSED_MLP meant both devices; a program that still sets it is told, rather
// than silently ignored.
void check_retired_fused_mlp() {
  const char* value = std::getenv("TWOLAYER_EXT_FUSED_MLP");
  TORCH_CHECK_VALUE(value == nullptr || *value == '\0',
                    "TWOLAYER_EXT_FUSED_MLP is no longer read: set TWOLAYER_EXT_CPU_FUSED_MLP "
                    "for the CPU ops or TWOLAYER_EXT_CUDA_FUSED_MLP for the CUDA ops (README, "
                    "\"Path switches\")");
}

}  // namespace

bool cpu_gemm_aten_forced() { return read(kCpuGemm) != kUnset; }  // its one value: "aten"

std::optional<bool> cpu_fused_mlp_forced() {
  check_retired_fused_mlp();
  const int value = read(kCpuFusedMlp);  // values {"0", "1"}
  if (value == kUnset) return std::nullopt;
  return value == 1;
}

bool cuda_fused_mlp_on() {
  check_retired_fused_mlp();
  return read(kCudaFusedMlp) == 1;  // values {"0", "1"}
}

bool cuda_matmul_tf32() {
  // Not allowTF32CuBLAS(): it raises once a program has used the new fp32_precision API.
  return at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) ==
         at::Float32Precision::TF32;
}

std::vector<std::pair<std::string, std::string>> switch_values() {
  std::vector<std::pair<std::string, std::string>> values;
  for (const Switch& s : kSwitches) {
    const int i = read(s);
    values.emplace_back(s.name, i == kUnset ? "" : s.values[static_cast<size_t>(i)]);
  }
  return values;
}

}  // namespace twolayer_ext
