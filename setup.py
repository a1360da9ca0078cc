"""Build script for the twolayer_ext C++/CUDA extension.

Environment variables:
  TWOLAYER_EXT_CUDA=0    build the CPU kernels only.
  TWOLAYER_EXT_CUDA=1    require the CUDA kernels (a missing toolkit is an error).
  (unset)                compile the CUDA kernels whenever torch is a CUDA build and a
                         CUDA toolkit is found (CUDA_HOME, or nvcc on PATH), GPU or not.
  TORCH_CUDA_ARCH_LIST   honoured; defaults to "9.0+PTX" when no GPU is visible.
  CUDA_HOME              the toolkit to use; guessed from nvcc on PATH or /usr/local/cuda.
  TWOLAYER_EXT_SANITIZE=1  build with -fsanitize=address,undefined (CPU only; see
                         scripts/sanitize_cpu.sh, which runs the CPU tests under it).
  TWOLAYER_EXT_DEBUG_INFO=1  keep the C++ debug information (-g) that Python's own CFLAGS
                         ask for; without it the C++ objects are built with -g0.
"""

from __future__ import annotations

import copy
import glob
import importlib.metadata
import os
import platform
import shutil
from typing import Any

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "9.0+PTX"

# Per-ISA translation units, csrc/cpu/isa/*_<isa>.cpp: code written with at::vec::Vectorized,
# compiled once per instruction set with these flags, as ATen compiles its own kernels
# (its AVX512 and AVX2 capabilities); csrc/cpu/isa/passes.cpp picks one at run time. The rest
# of the extension is built for the baseline, so the wheel runs on any x86-64 CPU.
ISA_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "default": [],
}


def _isa_kernels() -> dict[str, list[str]]:
    """The per-ISA variants this machine's compiler builds: all on x86-64, else the baseline."""
    if platform.machine().lower() in ("x86_64", "amd64") and os.name == "posix":
        return ISA_FLAGS
    return {"default": []}


def _is_toolkit(path: str | None) -> bool:
    return (
        bool(path)
        and os.path.isfile(os.path.join(path, "bin", "nvcc"))
        and os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))
    )


def _find_cuda_home() -> str | None:
    """CUDA_HOME/CUDA_PATH if set, else the toolkit around nvcc on PATH, else /usr/local/cuda.

    torch.utils.cpp_extension guesses dirname(dirname(which nvcc)), which is wrong when
    nvcc on PATH is a wrapper script (as on our build machines), so look for a real toolkit.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    return next((c for c in candidates if _is_toolkit(c)), None)


def _want_cuda(torch_mod) -> bool:
    flag = os.environ.get("TWOLAYER_EXT_CUDA", "").strip()
    if flag == "0":
        return False
    home = _find_cuda_home()
    have = torch_mod.version.cuda is not None and _is_toolkit(home)
    if flag == "1" and not have:
        raise RuntimeError(
            "TWOLAYER_EXT_CUDA=1 but the CUDA kernels cannot be built: "
            f"torch {torch_mod.__version__} (CUDA {torch_mod.version.cuda}), "
            f"CUDA toolkit found at {home!r}. Install a CUDA build of torch and set CUDA_HOME."
        )
    if have:
        os.environ["CUDA_HOME"] = home  # must be set before cpp_extension is imported
    return have


def _compile_flags(with_cuda: bool, avx512_passes: bool) -> tuple[list[str], list[str]]:
    """The C++ compiler's and the linker's extra flags, from TWOLAYER_EXT_DEBUG_INFO and
    TWOLAYER_EXT_SANITIZE."""
    sanitize = os.environ.get("TWOLAYER_EXT_SANITIZE") == "1"
    if sanitize and with_cuda:
        raise RuntimeError("TWOLAYER_EXT_SANITIZE=1 needs a CPU-only build: TWOLAYER_EXT_CUDA=0")
    # -fopenmp: at::parallel_for is an inline OpenMP region; without it the
    # kernels would silently run on one thread. No -march=native: the binary
    # must run on any x86-64 CPU (BLAS picks the ISA at run time).
    cxx = ["-O1" if sanitize else "-O3", "-fopenmp", "-Wall", "-Wno-unused-function"]
    # -g0 overrides the -g in Python's CFLAGS: the debug information of torch's headers made
    # each object about 45x larger and its compile about 1.6x slower (csrc/autograd/relu.cpp:
    # 8 MB and 33 s against 0.2 MB and 20 s, Zen 3), a cost every install and CI build paid.
    # Sanitizer builds keep line tables (-g1), enough for their reports to name file and line.
    if sanitize:
        cxx.append("-g1")
    elif os.environ.get("TWOLAYER_EXT_DEBUG_INFO") != "1":
        cxx.append("-g0")
    cxx.append(f"-DTWOLAYER_EXT_ISA_PASSES={int(avx512_passes)}")
    # Host code that asks a device's rule (csrc/paths/) calls the CUDA one only where it exists.
    cxx.append(f"-DTWOLAYER_EXT_WITH_CUDA={int(with_cuda)}")
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"] if sanitize else []
    return cxx + san, ["-fopenmp", *san]


def _write_build_config(torch_mod, arch_list: str) -> None:
    """Record what the extension is built against; __init__ checks it at import time."""
    path = os.path.join(ROOT, "twolayer_ext", "_build_config.py")
    with open(path, "w") as f:
        f.write("# Generated by setup.py at build time. Do not edit.\n")
        f.write(f"TORCH_VERSION = {torch_mod.__version__!r}\n")
        f.write(f"TORCH_CUDA_VERSION = {torch_mod.version.cuda!r}\n")
        f.write(f"CUDA_ARCH_LIST = {arch_list!r}\n")


def _with_isa_kernels(build_ext_cls: type, isa_kernels: dict[str, list[str]]) -> type:
    """torch's BuildExtension, compiling the per-ISA files first, each with its own flags.

    BuildExtension gives every source of an extension the same flags, so these are compiled
    by the same compiler wrapper (ninja included) with the extension's final flags plus the
    ISA's, and linked in as extra objects.
    """

    class BuildWithIsaKernels(build_ext_cls):  # type: ignore[misc, valid-type]
        def build_extension(self, ext: Any) -> None:  # setuptools.Extension
            objects = []
            for isa, flags in isa_kernels.items():
                files = sorted(glob.glob(f"csrc/cpu/isa/*_{isa}.cpp"))
                args = copy.deepcopy(ext.extra_compile_args)
                args["cxx"] = [*args["cxx"], *flags]
                objects += self.compiler.compile(
                    files,
                    output_dir=self.build_temp,
                    macros=ext.define_macros,
                    include_dirs=ext.include_dirs,
                    debug=self.debug,
                    extra_postargs=args,
                    depends=ext.depends,
                )
            ext.extra_objects = [*(ext.extra_objects or []), *objects]
            super().build_extension(ext)

    return BuildWithIsaKernels


def main() -> None:
    import torch

    with_cuda = _want_cuda(torch)
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    isa_kernels = _isa_kernels()
    per_isa = {f for isa in ISA_FLAGS for f in glob.glob(f"csrc/cpu/isa/*_{isa}.cpp")}
    sources = sorted(
        glob.glob("csrc/*.cpp")
        + glob.glob("csrc/paths/*.cpp")
        + glob.glob("csrc/autograd/*.cpp")
        + glob.glob("csrc/composite/*.cpp")
        + glob.glob("csrc/vmap/*.cpp")
        + glob.glob("csrc/cpu/*.cpp")
        + [f for f in glob.glob("csrc/cpu/isa/*.cpp") if f not in per_isa]
    )
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    cxx_flags, link_flags = _compile_flags(with_cuda, "avx512" in isa_kernels)
    # py_limited_api: the module uses CPython's stable ABI only (csrc/ops.cpp), so one
    # wheel serves every Python >= 3.10 (tag cp310-abi3; torch adds -DPy_LIMITED_API).
    ext_kwargs = {
        "include_dirs": include_dirs,
        "extra_link_args": link_flags,
        "py_limited_api": True,
    }
    arch_list = ""
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
        arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST") or "visible GPU(s)"
        if arch_list == "visible GPU(s)" and torch.cuda.is_available():
            caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
            arch_list = ";".join(f"{a}.{b}" for a, b in sorted(caps))
        # *.cu: the kernels (nvcc); *.cpp: host code only (the ops around cuBLAS, the launches'
        # callers), for the host compiler, which builds it in half of nvcc's time.
        sources += sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
        ext = CUDAExtension(
            "twolayer_ext._C",
            sources,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
            **ext_kwargs,
        )
    else:
        ext = CppExtension(
            "twolayer_ext._C", sources, extra_compile_args={"cxx": cxx_flags}, **ext_kwargs
        )
    _write_build_config(torch, arch_list)
    setup(
        ext_modules=[ext],
        cmdclass={"build_ext": _with_isa_kernels(BuildExtension, isa_kernels)},
        options={"bdist_wheel": {"py_limited_api": "cp310"}},
        # The extension runs only with the torch it was compiled against: pin it, so that
        # pip installs that torch with the wheel and reports any later change as a conflict.
        install_requires=[f"torch=={importlib.metadata.version('torch')}", "numpy"],
    )


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import it
    main()
