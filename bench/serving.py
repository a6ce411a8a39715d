"""Serving benchmark: latency/throughput of `/v1/recommendations` over HTTP, and ONNX vs native LightGBM.

    make bench-serving            # or: .venv/bin/python bench/serving.py [--requests 2000]

- The server (uvicorn, one process) runs on one core, the load generator on another (`taskset` /
  sched_setaffinity), so they do not steal each other's CPU.
- Every user is known; candidate counts per source are raised to 500 so the ranker scores the
  largest candidate set the catalog allows (the ask is 500; the measured count is reported).
- Fixed warm-up and request counts per concurrency level; latencies are measured by the client.
- ONNX vs native: the same 500 real feature rows (the version's test rows), one thread each, same
  process, median of repeated runs; the ratio is against the native run measured here.
- Where the time goes: the same request's stages timed in-process (candidates, features, ONNX).
Writes bench/results/serving.json and bench/results/serving.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
LEVELS = (1, 4, 16, 64)
PER_SOURCE = 500


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _bench_config(settings, folder: Path) -> Path:
    import yaml

    cfg = yaml.safe_load(settings.source_file.read_text()) if settings.source_file else {}
    cfg.setdefault("paths", {})["models_dir"] = str(settings.models_dir)
    cfg["candidates"] = dict(settings["candidates"], covisitation=PER_SOURCE, embedding=PER_SOURCE,
                             repeat=PER_SOURCE, popularity=PER_SOURCE)
    # the load generator sends the snapshot's ids, which are already the stored pseudonyms: served as given
    # (the per-request HMAC of a raw id costs about a microsecond; the tests cover that path)
    cfg["privacy"] = dict(settings["privacy"], pseudonymize=False)
    cfg["serving"] = dict(settings["serving"], inbox=str(folder / "inbox.jsonl"),
                          prediction_log=str(folder / "predictions.jsonl"), reload_interval_s=0)
    path = folder / "persona.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class _Conn:
    """A minimal HTTP/1.1 keep-alive GET client on asyncio streams: far less client CPU per request than
    a full client library, so the numbers measure the server, not the load generator."""

    def __init__(self, host: str, port: int):
        self.host, self.port, self.reader, self.writer = host, port, None, None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(l.split(b":")[1]) for l in lines if l.lower().startswith(b"content-length"))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _run_level(host: str, port: int, users: list[str], concurrency: int, n: int, warmup: int, k: int,
                     paths: list[str] | None = None) -> dict:
    from urllib.parse import quote

    paths = paths or [f"/v1/recommendations?user_id={quote(u)}&k={k}" for u in users]
    conns = [_Conn(host, port) for _ in range(concurrency)]

    async def drive(total: int, lat: list | None, ncand: list | None) -> float:
        it = iter(range(total))

        async def worker(conn: _Conn) -> None:
            for i in it:
                t = time.perf_counter()
                status, body = await conn.get(paths[i % len(paths)])
                dt = time.perf_counter() - t
                if status != 200:
                    raise RuntimeError(f"{status}: {body[:200]!r}")
                if lat is not None:
                    lat.append(dt)
                    ncand.append(json.loads(body).get("n_candidates", 0))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in conns))
        return time.perf_counter() - t0

    try:
        await drive(warmup, None, None)
        lat, ncand = [], []
        wall = await drive(n, lat, ncand)
    finally:
        for c in conns:
            c.close()
    ms = np.array(lat) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "rps": round(n / wall, 1), "requests": n,
            "mean_candidates": round(float(np.mean(ncand)), 1)}


def onnx_vs_native(version_dir: Path, rows: int = 500, repeats: int = 2000) -> dict:
    """The same `rows` feature rows scored by onnxruntime and by LightGBM, one thread each, in this process."""
    import lightgbm as lgb

    from ml.onnx_export import OnnxScorer

    X = np.load(version_dir / "eval" / "test_X.npy")
    if len(X) < rows:
        X = np.vstack([X] * (rows // max(len(X), 1) + 1))
    X = np.ascontiguousarray(X[:rows], dtype=np.float32)
    onnx = OnnxScorer(version_dir / "ranker.onnx", providers=["CPUExecutionProvider"], threads=1)
    booster = lgb.Booster(model_file=str(version_dir / "ranker.txt"))

    def native() -> None:
        booster.predict(X, num_threads=1)

    def run_onnx() -> None:
        onnx(X)

    for _ in range(30):
        native(), run_onnx()
    times = {native: [], run_onnx: []}
    for r in range(repeats):  # interleaved, so both see the same machine load
        for fn in ((native, run_onnx) if r % 2 == 0 else (run_onnx, native)):
            t = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - t)
    native_ms = float(np.median(times[native])) * 1e3
    onnx_ms = float(np.median(times[run_onnx])) * 1e3
    diff = float(np.max(np.abs(booster.predict(X, num_threads=1) - onnx(X))))
    # fixed cost per call vs cost per row: the same comparison over batch sizes (rows repeated past the test rows)
    scaling = {}
    for n in (1, 50, 500, 5000):
        Xn = np.ascontiguousarray(np.vstack([X] * (n // len(X) + 1))[:n])
        med = {}
        for name, fn in (("native_ms", lambda: booster.predict(Xn, num_threads=1)), ("onnx_ms", lambda: onnx(Xn))):
            for _ in range(10):
                fn()
            ts = []
            for _ in range(max(20, 20000 // n)):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            med[name] = float(np.median(ts)) * 1e3
        scaling[str(n)] = {k: round(v, 4) for k, v in med.items()} | {
            "speedup": round(med["native_ms"] / med["onnx_ms"], 2),
            "native_us_per_row": round(med["native_ms"] * 1e3 / n, 3), "onnx_us_per_row": round(med["onnx_ms"] * 1e3 / n, 3)}
    return {"rows": rows, "native_lightgbm_ms": round(native_ms, 4), "onnx_ms": round(onnx_ms, 4),
            "speedup": round(native_ms / onnx_ms, 2), "max_abs_diff": diff, "n_trees": booster.num_trees(),
            "n_leaves": int(sum(t["num_leaves"] for t in booster.dump_model()["tree_info"])), "by_batch_size": scaling}


def stage_profile(version_dir: Path, cfg: dict, users: list[str], k: int = 10) -> dict:
    """Median ms per stage of one recommendations request, in-process (no HTTP)."""
    from ml.candidates import generate
    from ml.features import build_features
    from serving.bundle import ModelBundle

    b = ModelBundle(version_dir, cfg, providers=["CPUExecutionProvider"])
    snap = b.snapshot
    stages = {"candidates": [], "features": [], "onnx": [], "rank+json": [], "total_in_process": []}
    for n, user in enumerate(users[:400]):
        u = snap.user_index[user]
        t0 = time.perf_counter()
        cand = generate(snap, u, b.per_source)
        t1 = time.perf_counter()
        X = build_features(snap, u, cand)
        t2 = time.perf_counter()
        s = b.scorer(X)
        t3 = time.perf_counter()
        order = np.lexsort((cand.items, -s))[:k]
        json.dumps([b.item_payload(str(snap.item_ids[i]), float(x)) for i, x in zip(cand.items[order], s[order])])
        t4 = time.perf_counter()
        if n >= 20:
            for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                stages[key].append(dt * 1e3)
    return {key: round(float(np.median(v)), 3) for key, v in stages.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="measured requests per concurrency level")
    p.add_argument("--warmup", type=int, default=300, help="warm-up requests per level (not measured)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--client-core", type=int, default=1)
    args = p.parse_args(argv)

    from ml import registry
    from persona.config import load_settings

    settings = load_settings()
    version_dir = registry.champion_dir(settings.models_dir)
    snap_users = np.load(version_dir / "snapshot" / "snapshot.npz")["user_ids"]
    rng = np.random.default_rng(0)
    users = [str(u) for u in rng.choice(snap_users, size=min(2000, len(snap_users)), replace=False)]
    ncpu = os.cpu_count() or 1
    pin = shutil.which("taskset") is not None and ncpu >= 2

    tmp = Path(tempfile.mkdtemp(prefix="persona-bench-"))
    config = _bench_config(settings, tmp)
    port = _free_port()
    cmd = [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", "--no-access-log"]
    if pin:
        cmd = ["taskset", "-c", str(args.server_core)] + cmd
        os.sched_setaffinity(0, {args.client_core})
    env = dict(os.environ, PERSONA_CONFIG=str(config), OMP_NUM_THREADS="1")
    server = subprocess.Popen(cmd, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("bench: server did not start")
            time.sleep(0.3)
        load_before = os.getloadavg()
        levels = {}
        for c in LEVELS:
            levels[str(c)] = asyncio.run(_run_level("127.0.0.1", port, users, c, args.requests, args.warmup, args.k))
            print(f"concurrency {c:>3}: " + "  ".join(f"{k} {v}" for k, v in levels[str(c)].items()), flush=True)
        # the floor: the same client and server answering /health (no model work) at concurrency 1
        floor = asyncio.run(_run_level("127.0.0.1", port, users, 1, args.requests, args.warmup, args.k, ["/health"]))
        print(f"/health at concurrency 1: p50_ms {floor['p50_ms']}  p99_ms {floor['p99_ms']}", flush=True)
        rss = _peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)
    if pin:
        os.sched_setaffinity(0, {args.server_core})
    cmp_ = onnx_vs_native(version_dir)
    print(f"ONNX vs native LightGBM on {cmp_['rows']} rows, 1 thread: native {cmp_['native_lightgbm_ms']} ms, "
          f"onnx {cmp_['onnx_ms']} ms -> {cmp_['speedup']}x", flush=True)
    cfg = dict(settings.data, candidates=dict(settings["candidates"], covisitation=PER_SOURCE, embedding=PER_SOURCE,
                                             repeat=PER_SOURCE, popularity=PER_SOURCE))
    stages = stage_profile(version_dir, cfg, users)
    print("in-process stages (median ms): " + ", ".join(f"{k} {v}" for k, v in stages.items()))

    out = {"model_version": version_dir.name, "concurrency": levels, "onnx_vs_native_speedup": cmp_["speedup"],
           "onnx_vs_native": cmp_, "stages_ms": stages, "server_peak_rss_mb": round(rss, 1),
           "health_floor_c1": {k: floor[k] for k in ("p50_ms", "p95_ms", "p99_ms", "rps")},
           "setup": {"requests_per_level": args.requests, "warmup_per_level": args.warmup, "k": args.k,
                     "candidates_per_source": PER_SOURCE, "users": len(users), "pinned": pin,
                     "server_core": args.server_core if pin else None,
                     "client_core": args.client_core if pin else None, "cpus": ncpu,
                     "loadavg_before": [round(x, 2) for x in load_before], "python": platform.python_version(),
                     "machine": platform.machine(),
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                              text=True).stdout.strip() or None}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(out, indent=2))
    (RESULTS / "serving.md").write_text(render_md(out))
    print(f"wrote {RESULTS / 'serving.md'} and serving.json")
    return 0


def render_md(out: dict) -> str:
    s = out["setup"]
    lines = ["# Serving benchmark", "", f"{s.get('date', '')} · commit `{s.get('commit')}` · command `make bench-serving`", "",
             f"Model version `{out['model_version']}`; `/v1/recommendations?k={s['k']}` over HTTP; one uvicorn "
             f"process pinned to core {s['server_core']}, the load generator (asyncio keep-alive HTTP/1.1) on core "
             f"{s['client_core']}; {s['warmup_per_level']} warm-up + {s['requests_per_level']} measured requests "
             f"per level over {s['users']} distinct known users; candidates per source {s['candidates_per_source']}. "
             f"{s['cpus']} CPUs, load average before the run {s['loadavg_before']}.", "",
             "| concurrency | p50 ms | p95 ms | p99 ms | req/s | candidates scored (mean) |", "|---|---|---|---|---|---|"]
    for c, v in out["concurrency"].items():
        lines.append(f"| {c} | {v['p50_ms']} | {v['p95_ms']} | {v['p99_ms']} | {v['rps']} | {v['mean_candidates']} |")
    o = out["onnx_vs_native"]
    lines += ["", f"ONNX vs native LightGBM, the same {o['rows']} real feature rows, one thread each, same process "
                  f"({o['n_trees']} trees): native {o['native_lightgbm_ms']} ms, ONNX {o['onnx_ms']} ms: "
                  f"**{o['speedup']}x** (max |diff| {o['max_abs_diff']:.2e}).", ""]
    if "by_batch_size" in o:
        lines += [f"The same comparison by batch size ({o['n_trees']} trees, {o['n_leaves']} leaves in all): where "
                  "the time goes is per row, not per call, so the ratio is the two tree-walking kernels' ratio.", "",
                  "| rows | native ms | ONNX ms | native µs/row | ONNX µs/row | native / ONNX |", "|---|---|---|---|---|---|"]
        lines += [f"| {n} | {v['native_ms']} | {v['onnx_ms']} | {v['native_us_per_row']} | {v['onnx_us_per_row']} | "
                  f"{v['speedup']}x |" for n, v in o["by_batch_size"].items()]
        lines += [""]
    lines += [
              f"Server peak RSS: {out['server_peak_rss_mb']} MB.", "",
              "Where one request's time goes (in-process, median ms): " +
              ", ".join(f"{k} {v}" for k, v in out["stages_ms"].items()) +
              f". The HTTP floor (`/health`, no model work, concurrency 1) is p50 {out['health_floor_c1']['p50_ms']} ms, "
              f"p99 {out['health_floor_c1']['p99_ms']} ms; the rest is FastAPI parameter handling, "
              "JSON, and, above concurrency 1, queueing behind other requests on the one server core "
              "(latency ~ concurrency / throughput).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
