"""Run llama.cpp's OpenAI-compatible server (llama-cpp-python) on a GGUF, for tests and benches.

It is a real server on CPU, so the openai backend is exercised against the same HTTP surface
it meets in production with vLLM. Needs llama-cpp-python built portably (`make dev`, which runs
scripts/llama_wheel.sh) and the `server` extra.
"""

from __future__ import annotations

import ctypes
import importlib.util
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx
import structlog

from rationanomaly.model.loading import DEFAULT_MODEL_NAME, default_gguf_path

log = structlog.get_logger(__name__)


class LlamaServerError(RuntimeError):
    """The server package is missing, or the server did not come up."""


INSTALL_HINT = "run `make dev` (a portable llama-cpp-python build, scripts/llama_wheel.sh, and the server extra)"
# Instruction sets a portable build must not be compiled for: a host may advertise them and
# still trap them (a VM that lists AVX512/AMX in /proc/cpuinfo), and most hosts lack them.
NON_PORTABLE_FEATURES = frozenset({
    "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AVX_VNNI", "AMX_INT8", "AMX_BF16", "AMX_TILE",
})  # fmt: skip


def llama_server_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def llama_build_features(python: str = sys.executable) -> dict[str, str]:
    """The CPU features the installed llama.cpp was compiled with, from its system info line.

    ggml lists a feature only when it was compiled in (`AVX2 = 1`), whatever the CPU has. Read
    in a child interpreter: loading a library built for the wrong CPU must not take this
    process down with it.
    """
    probe = "import llama_cpp, sys; sys.stdout.write(llama_cpp.llama_print_system_info().decode())"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise LlamaServerError(f"cannot read llama.cpp's build info ({done.returncode}): {done.stderr.strip()[-500:]}")
    return parse_system_info(done.stdout)


def parse_system_info(text: str) -> dict[str, str]:
    """`"CPU : SSE3 = 1 | AVX2 = 1 | OPENMP = 1 |"` → `{"SSE3": "1", "AVX2": "1", "OPENMP": "1"}`.

    Only the CPU backend's section counts; other backends (Metal, CUDA) list their own.

    >>> parse_system_info("CPU : SSE3 = 1 | AVX2 = 1 | REPACK = 1 | Metal : EMBED_LIBRARY = 1 |")
    {'SSE3': '1', 'AVX2': '1', 'REPACK': '1'}
    """
    features: dict[str, str] = {}
    in_cpu = False
    for part in text.split("|"):
        if ":" in part:
            section, _, part = part.partition(":")
            in_cpu = section.strip() == "CPU"
        name, eq, value = part.partition("=")
        if in_cpu and eq:
            features[name.strip()] = value.strip()
    return features


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags the kernel reports for this CPU, upper-cased as ggml names them."""
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(flag.upper() for flag in line.partition(":")[2].split())
    return frozenset()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """`with LlamaServer() as server: server.base_url` — starts, waits for /v1/models, stops."""

    def __init__(
        self,
        gguf: Path | None = None,
        *,
        port: int | None = None,
        alias: str = DEFAULT_MODEL_NAME,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.gguf = gguf
        self.port = port or free_port()
        self.alias = alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The server process, for tests that freeze it (SIGSTOP) to make a server that hangs."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def start(self) -> LlamaServer:
        if not llama_server_available():
            raise LlamaServerError(f"llama_cpp is not installed; {INSTALL_HINT}")
        gguf = self.gguf or default_gguf_path()
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(gguf),
            "--model_alias", self.alias,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
        ]  # fmt: skip
        if self.n_threads is not None:
            command += ["--n_threads", str(self.n_threads)]
        self._log_file = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
        self._process = subprocess.Popen(
            command,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        log.info("starting llama.cpp server", port=self.port, gguf=str(gguf), log=self._log_file.name)
        self._wait_ready()
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._log_file is not None:
            self._log_file.close()
            Path(self._log_file.name).unlink(missing_ok=True)
            self._log_file = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                tail = self._log_tail()
                self.stop()
                raise LlamaServerError(f"llama.cpp server exited during start-up:\n{tail}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2.0).is_success:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.25)
        tail = self._log_tail()
        self.stop()
        raise LlamaServerError(f"llama.cpp server not ready after {self.startup_timeout_s:g}s:\n{tail}")

    def _log_tail(self, limit: int = 2000) -> str:
        if self._log_file is None:
            return ""
        self._log_file.flush()
        return Path(self._log_file.name).read_text(errors="replace")[-limit:]


def _die_with_parent() -> None:
    """Runs in the child before exec: a test run or bench killed by a timeout must not leave
    a server behind holding a CPU core (Linux PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
