#!/usr/bin/env bash
# Build (once per machine kind) a portable llama-cpp-python wheel and print its path.
#
#   scripts/llama_wheel.sh PYTHON        -> /root/.cache/rationanomaly/wheels/<key>/llama_cpp_python-….whl
#
# Why not `pip install llama-cpp-python`: pip builds it from source with llama.cpp's default
# GGML_NATIVE=ON (-march=native), and caches that wheel under a key that ignores CMAKE_ARGS. A
# wheel built on a host that advertises AVX512/AMX then dies with SIGILL on its first completion
# on another host of the same kind. Here the instruction set is chosen explicitly, the build
# never reads or writes pip's cache, and the wheel lives in a directory named after the version
# and the exact CMake flags, so a wheel built any other way can never be picked up.
#
# Levels (LLAMA_CPU_LEVEL): x86-64-v3 (AVX, AVX2, FMA, F16C, BMI2: every x86 server CPU since
# 2013) is the default on a CPU that has AVX2; `baseline` (SSE4.2 only, slower) is chosen
# automatically on one that lacks it, or can be forced. llama.cpp's own run-time dispatch
# (GGML_CPU_ALL_VARIANTS) needs GGML_BACKEND_DL, which llama-cpp-python does not load, so one
# explicit level per wheel is the portable choice it allows.
set -euo pipefail

python=${1:?usage: llama_wheel.sh PYTHON}
version=${LLAMA_CPP_VERSION:-0.3.36}
cache=${RATIONANOMALY_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rationanomaly/wheels}

if [ -z "${LLAMA_CPU_LEVEL:-}" ]; then
    if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then LLAMA_CPU_LEVEL=x86-64-v3; else LLAMA_CPU_LEVEL=baseline; fi
fi
common="-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF -DGGML_CCACHE=OFF -DGGML_SSE42=ON"
common="$common -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF"
common="$common -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
case "$LLAMA_CPU_LEVEL" in
    x86-64-v3) flags="$common -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" ;;
    baseline)  flags="$common -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF" ;;
    *) echo "llama_wheel: LLAMA_CPU_LEVEL must be x86-64-v3 or baseline, not '$LLAMA_CPU_LEVEL'" >&2; exit 2 ;;
esac

pytag=$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
key=$(printf '%s|%s|%s|%s' "$version" "$pytag" "$(uname -m)" "$flags" | sha256sum | cut -c1-12)
dir="$cache/llama-cpp-python-$version-$LLAMA_CPU_LEVEL-$key"

wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
    echo "llama_wheel: building llama-cpp-python $version for $LLAMA_CPU_LEVEL (once per machine: ~7 min on 2 cores)" >&2
    mkdir -p "$cache"
    tmp=$(mktemp -d "$cache/.build-XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    # SOURCE_DATE_EPOCH would silently flip llama.cpp's instruction-set defaults; the flags
    # above are explicit anyway, but keep the build's environment from steering it.
    env -u SOURCE_DATE_EPOCH CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        "$python" -m pip wheel --quiet --no-cache-dir --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$version" -w "$tmp" >&2
    printf '%s\n' "$flags" > "$tmp/CMAKE_ARGS"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    trap - EXIT
    wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl | head -1)
fi
echo "$wheel"
