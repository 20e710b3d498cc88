"""The llama.cpp build the server tests run on is portable.

A llama-cpp-python wheel that pip built with llama.cpp's default -march=native on a host that
advertises AVX512/AMX passed every test there and died with SIGILL on its first completion on
another machine of the same kind. `make dev` installs a wheel built with explicit flags
(scripts/llama_wheel.sh); this checks the installed one is that kind of build, and the server
tests (tests/integration/test_openai_*.py) then run on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rationanomaly.model.llama_server import NON_PORTABLE_FEATURES, cpu_flags, llama_build_features, parse_system_info

from tests.conftest import LLAMA_SERVER_MARKS

# ggml's feature names against the kernel's /proc/cpuinfo flag names, for x86.
CPUINFO_NAME = {"SSE3": "PNI", "AVX512": "AVX512F"}
X86_FEATURES = {"SSE3", "SSSE3", "AVX", "AVX_VNNI", "AVX2", "F16C", "FMA", "BMI2", *NON_PORTABLE_FEATURES}


def test_system_info_keeps_the_cpu_section_only() -> None:
    text = "CPU : SSE3 = 1 | AVX = 1 | AVX512 = 1 | OPENMP = 1 | BLAS : ACCELERATE = 1 | "
    assert parse_system_info(text) == {"SSE3": "1", "AVX": "1", "AVX512": "1", "OPENMP": "1"}
    assert parse_system_info("") == {}


def test_cpu_flags_come_from_the_flags_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu pni avx avx2 avx512f\nbugs\t\t: spectre_v1\n")
    assert cpu_flags(cpuinfo) == {"FPU", "PNI", "AVX", "AVX2", "AVX512F"}


@pytest.fixture(scope="module")
def features() -> dict[str, str]:
    return llama_build_features()


def test_installed_build_uses_no_host_specific_instructions(features: dict[str, str]) -> None:
    compiled = {name for name, value in features.items() if name in X86_FEATURES and value == "1"}
    assert features, "llama.cpp reported no CPU backend"
    assert not compiled & NON_PORTABLE_FEATURES, (
        f"llama.cpp was built for {sorted(compiled & NON_PORTABLE_FEATURES)}: a native build, not make dev's portable one"
    )
    # What it was built for, this CPU runs: the server tests that follow start it here.
    missing = {name for name in compiled if CPUINFO_NAME.get(name, name) not in cpu_flags()}
    assert not missing, f"llama.cpp was built for {sorted(missing)}, which this CPU lacks"


for _mark in LLAMA_SERVER_MARKS:  # the pure tests above run everywhere; this one needs the build
    test_installed_build_uses_no_host_specific_instructions = _mark(test_installed_build_uses_no_host_specific_instructions)
