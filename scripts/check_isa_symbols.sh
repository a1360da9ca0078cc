#!/usr/bin/env bash
# The per-ISA objects (csrc/cpu/isa/passes_<isa>.o, built by setup.py with that ISA's -m
# flags) must define nothing outside their ISA's namespace. An inline function from a header
# that such a file emitted out of line would be merged at link time with the baseline copy
# of the same name, and the linker may keep the AVX-512 one, which then runs, and crashes,
# on CPUs without AVX-512. Run after a build in this checkout (make install).
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
objects=(build/temp.*/csrc/cpu/isa/passes_avx512.o build/temp.*/csrc/cpu/isa/passes_avx2.o)
if [ ${#objects[@]} -eq 0 ]; then
  echo "check_isa_symbols: no per-ISA objects under build/ (build first, on x86-64)" >&2
  exit 1
fi
status=0
for obj in "${objects[@]}"; do
  isa=$(basename "$obj" .o)
  isa=${isa#passes_}
  ns=$(echo "$isa" | tr a-z A-Z)
  # Defined symbols (text, weak, unique), demangled, not in twolayer_ext::cpu::passes::<ISA>.
  stray=$(nm -C --defined-only "$obj" | awk '$2 ~ /^[TtWwVvu]$/' | grep -v "twolayer_ext::cpu::passes::${ns}::" || true)
  # Local symbols cannot be merged; DW.ref.__gxx_personality_v0 is exception-table data,
  # the same bytes in every object.
  stray=$(echo "$stray" | grep -v " [tw] " | grep -v "DW.ref.__gxx_personality_v0" || true)
  if [ -n "$stray" ]; then
    echo "check_isa_symbols: $obj defines symbols outside the ${ns} namespace:" >&2
    echo "$stray" >&2
    status=1
  fi
done
[ $status -eq 0 ] && echo "check_isa_symbols: ${#objects[@]} per-ISA objects define only their ISA's symbols"
# csrc/cpu/two_layer_amx.cpp compiles its kernel under a target pragma (AVX-512, AMX) and the
# rest, amx_bf16_usable included, for every CPU: only the kernel's functions may hold VEX,
# EVEX or AMX instructions.
for obj in build/temp.*/csrc/cpu/two_layer_amx.o; do
  wide=$(objdump -d -C "$obj" |
    awk '/^[0-9a-f]+ <.*>:$/ {name = $0} /\t(v[a-z0-9]+|tile[a-z]+|tdp[a-z0-9]+|ldtilecfg) / {print name}' |
    sort -u)
  stray=$(echo "$wide" | grep -v -e "AmxTwoLayer::forward" -e "AmxTwoLayer::backward" \
    -e "(anonymous namespace)::kernel::" | grep . || true)
  if [ -z "$wide" ] || [ -n "$stray" ]; then
    echo "check_isa_symbols: $obj: AVX-512/AMX code outside its kernel (or no kernel):" >&2
    echo "$stray" >&2
    status=1
  else
    echo "check_isa_symbols: $obj: AVX-512/AMX code only in its kernel"
  fi
done
exit $status
