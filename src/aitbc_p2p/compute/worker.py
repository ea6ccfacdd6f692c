"""A compute worker process: ``python -m aitbc_p2p.compute.worker --accel auto``.

It owns one device. The executor (compute/executor.py) talks to it over stdin/stdout
in frames: 4-byte big-endian length + canonical CBOR. Requests::

    {"id": n, "op": "run", "workload": name, "params": map}
    {"id": n, "op": "info"}
    {"id": n, "op": "measure", "dtypes": [...]}

Answers carry the same id: zero or more ``{"id", "event": map}`` (e.g. streamed tokens),
then one ``{"id", "ok": bool, ...}``. The first frame is ``{"ready": true, "pid", "device"}``.
A crash or an out-of-memory kill of this process loses only the job it was running.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any, BinaryIO

from aitbc_p2p.codec import decode, encode
from aitbc_p2p.codec.framing import HEADER, frame, frame_size
from aitbc_p2p.compute.capability import choose_device, measure, probe, proc_status_mb
from aitbc_p2p.compute.context import RunContext, torch_available
from aitbc_p2p.compute.workloads import Workload, get_workload
from aitbc_p2p.exceptions import AitbcError, CodecError, ComputeError
from aitbc_p2p.market.jobs import MAX_OUTPUT

MAX_FRAME = 64 << 20


def read_frame(stream: BinaryIO) -> Any | None:
    head = stream.read(HEADER)
    if len(head) < HEADER:
        return None
    try:
        size = frame_size(head, MAX_FRAME)
    except CodecError as e:
        raise SystemExit(f"refused: {e}") from e
    return decode(stream.read(size), max_size=MAX_FRAME)


def _reset_peak_rss() -> None:
    try:  # Linux: writing 5 to clear_refs resets VmHWM (the peak resident set)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class Worker:
    def __init__(
        self,
        out: BinaryIO,
        device: str,
        models: dict[str, str],
        ollama_url: str | None,
        workloads: Mapping[str, Workload] | None = None,
    ) -> None:
        self.out = out
        self.device = device
        self.models = models
        self.ollama_url = ollama_url
        self.workloads = workloads
        """The lookup table (None: the real workloads)."""

    def send(self, obj: Any) -> None:
        self.out.write(frame(encode(obj)))
        self.out.flush()

    def handle(self, req: dict[str, Any]) -> None:
        rid = req.get("id", 0)
        op = req.get("op")
        try:
            if op == "run":
                self.send({"id": rid, **self.run(rid, str(req["workload"]), dict(req["params"]))})
            elif op == "info":
                self.send(
                    {"id": rid, "ok": True, "info": probe(self.device, models=self.models, ollama_url=self.ollama_url)}
                )
            elif op == "measure":
                self.send({"id": rid, "ok": True, "gflops": measure(self.device, list(req["dtypes"]))})
            else:
                self.send({"id": rid, "ok": False, "error": f"unknown op {op!r}"})
        except (AitbcError, RuntimeError, ValueError, TypeError, KeyError, MemoryError, OSError) as e:
            print(traceback.format_exc(), file=sys.stderr)
            self.send({"id": rid, "ok": False, "error": f"{type(e).__name__}: {e}"[:2000]})

    def run(self, rid: int, workload: str, params: dict[str, Any]) -> dict[str, Any]:
        spec = get_workload(workload, self.workloads)
        clean = spec.validate(params)
        kept: list[bytes] = []
        ctx = RunContext(
            device=self.device,
            emit=lambda event: self.send({"id": rid, "event": event}),
            models=self.models,
            ollama_url=self.ollama_url,
            keep=kept.append,
        )
        torch: Any = sys.modules.get("torch")
        cuda = torch is not None and self.device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        _reset_peak_rss()
        start = time.perf_counter()
        result = spec.run(clean, ctx)
        compute_ms = max(1, int((time.perf_counter() - start) * 1000))
        output = encode(result)
        if len(output) > MAX_OUTPUT:
            raise ComputeError(
                f"the result is {len(output):,} bytes, more than the {MAX_OUTPUT:,} a job result carries"
            )
        metrics = {"compute_ms": compute_ms, "output_bytes": len(output), "peak_rss_mb": proc_status_mb("VmHWM")}
        if cuda:
            metrics["peak_vram_mb"] = int(torch.cuda.max_memory_allocated(self.device) // (1 << 20))
        for key in ("tokens", "ttft_ms", "tokens_per_s", "steps", "ms_per_step"):
            if isinstance(result.get(key), int):
                metrics[key] = result[key]
        reply = {"ok": True, "output": output, "metrics": metrics}
        if kept:
            reply["kept"] = kept[-1]
        return reply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aitbc-compute-worker")
    parser.add_argument("--accel", default="auto", help="auto | gpu | cpu (used when --device is not given)")
    parser.add_argument("--device", help="a torch device such as cuda:1")
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH of a local causal LM")
    parser.add_argument("--ollama-url")
    parser.add_argument("--fault-workloads", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # The protocol owns the real stdout; anything a library prints goes to stderr.
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download a model at run time
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    models = dict(item.split("=", 1) for item in args.model)
    table = None
    if args.fault_workloads:  # tests of the executor's limits
        from aitbc_p2p.compute.faults import with_faults

        table = with_faults()
    if torch_available():
        import torch  # noqa: F401 - warm up here, so that no job is billed for the import
    device = args.device or choose_device(args.accel)
    worker = Worker(proto, device, models, args.ollama_url, table)
    worker.send({"ready": True, "pid": os.getpid(), "device": device})
    stdin = sys.stdin.buffer
    while True:
        req = read_frame(stdin)
        if req is None or req.get("op") == "exit":
            return 0
        worker.handle(req)


if __name__ == "__main__":
    sys.exit(main())
