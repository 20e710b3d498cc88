"""Run llama.cpp's OpenAI-compatible server (llama-cpp-python) on a GGUF, for tests and benches.

It is a real server on CPU, so the openai backend is exercised against the same HTTP surface
it meets in production with vLLM. Needs the `server` extra: `pip install 'rationanomaly[server]'`.
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


def llama_server_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


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

    def start(self) -> LlamaServer:
        if not llama_server_available():
            raise LlamaServerError("llama_cpp is not installed; run `pip install 'rationanomaly[server]'`")
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
