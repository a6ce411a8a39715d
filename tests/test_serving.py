"""The HTTP API as apps see it: a real uvicorn server on 127.0.0.1 over model versions the real pipeline built."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
import pytest
import yaml

from ml import registry
from ml.candidates import SOURCES, generate
from ml.features import FEATURES, build_features
from ml.snapshot import Snapshot
from persona.warehouse import read_df
from tests.conftest import assert_same_top_k, raw_user_ids

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`uvicorn serving.app:create_app --factory` in a subprocess; restartable on the same config."""

    def __init__(self, config: Path, env: dict | None = None):
        self.config, self.env, self.proc, self.base = config, env or {}, None, None

    def start(self) -> "Server":
        port = _free_port()
        env = dict(os.environ, PERSONA_CONFIG=str(self.config), **self.env)
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory",
                                      "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                                     env=env, cwd=ROOT)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
            self.proc = None

    def get(self, path: str, **params) -> httpx.Response:
        headers = params.pop("headers", None)
        return httpx.get(f"{self.base}{path}", params=params, headers=headers, timeout=15)

    def post(self, path: str, body, headers=None) -> httpx.Response:
        return httpx.post(f"{self.base}{path}", json=body, headers=headers, timeout=15)


@pytest.fixture(scope="module")
def env(pipeline_run, tmp_path_factory):
    """A copy of the pipeline's champion version in its own models dir, with its own inbox and logs."""
    settings, _ = pipeline_run
    folder = tmp_path_factory.mktemp("serving")
    champ = registry.champion_dir(settings.models_dir)
    models = folder / "models"
    shutil.copytree(champ, models / "versions" / champ.name)
    registry.promote(models, champ.name)
    cfg = yaml.safe_load(settings.source_file.read_text())
    cfg["paths"]["models_dir"] = str(models)
    cfg["serving"] = {"inbox": str(folder / "inbox" / "events.jsonl"),
                      "prediction_log": str(folder / "predictions.jsonl"), "prediction_log_sample_rate": 1.0,
                      "reload_interval_s": 0.3}
    config = folder / "persona.yaml"
    config.write_text(yaml.safe_dump(cfg))
    stored, raw_of = raw_user_ids(settings)
    return {"settings": settings, "models": models, "config": config, "folder": folder, "version": champ.name,
            "snap": Snapshot.load(champ / "snapshot"), "booster": lgb.Booster(model_file=str(champ / "ranker.txt")),
            "stored": stored, "raw_of": raw_of}


@pytest.fixture(scope="module")
def server(env):
    s = Server(env["config"]).start()
    yield s
    s.stop()


def _offline_top_k(env, user: str, k: int = 10):
    """The offline ranker's top-k for a shop's raw user id (the snapshot holds its pseudonym)."""
    snap = env["snap"]
    u = snap.user_index[env["stored"](user)]
    cand = generate(snap, u, env["settings"]["candidates"])
    scores = env["booster"].predict(build_features(snap, u, cand))
    order = np.lexsort((cand.items, -scores))[:k]
    return [str(snap.item_ids[i]) for i in cand.items[order]], scores[order]


def _users(env, n: int) -> list[str]:
    snap = env["snap"]
    sizes = np.diff(snap.hist_ptr)
    rich = np.argsort(-sizes, kind="stable")[:n // 2]
    spread = np.linspace(0, len(snap.user_ids) - 1, n - len(rich)).astype(int)
    return [env["raw_of"][str(snap.user_ids[u])] for u in np.concatenate([rich, spread])]


def test_serving_request_path_imports_no_torch_lightgbm_or_dagster(env):
    code = ("import sys; from serving.app import create_app; app = create_app(); "
            "bad = [m for m in ('torch', 'lightgbm', 'dagster', 'transformers') if m in sys.modules]; "
            "assert not bad, bad; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PERSONA_CONFIG=str(env["config"])))
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_health_ready_and_openapi(server, env):
    h = server.get("/health").json()
    assert h["status"] == "ok" and h["model_version"] == env["version"] and "CPUExecutionProvider" in h["providers"]
    r = server.get("/ready")
    assert r.status_code == 200 and r.json()["ready"] and r.json()["checks"]["encoder"]
    paths = server.get("/openapi.json").json()["paths"]
    assert {"/v1/recommendations", "/v1/search", "/v1/users/{user_id}/profile", "/v1/items/{item_id}/similar",
            "/v1/events", "/health", "/ready", "/metrics"} <= set(paths)


def test_served_top_k_equals_offline_ranker_for_many_users(server, env):
    for user in _users(env, 12):
        items, scores = _offline_top_k(env, user, 10)
        r = server.get("/v1/recommendations", user_id=user, k=10)
        assert r.status_code == 200, r.text
        assert r.json()["strategy"] == "ranker"
        assert_same_top_k(r.json(), items, scores)


def test_explain_names_candidate_sources_and_top_features(server, env):
    user = _users(env, 2)[0]
    plain = server.get("/v1/recommendations", user_id=user, k=5).json()
    r = server.get("/v1/recommendations", user_id=user, k=5, explain="true").json()
    assert [i["item_id"] for i in r["items"]] == [i["item_id"] for i in plain["items"]]
    for it in r["items"]:
        e = it["explanation"]
        assert e["sources"] and set(e["sources"]) <= set(SOURCES)
        assert 1 <= len(e["top_features"]) <= 3
        assert all(f["feature"] in FEATURES for f in e["top_features"])
        contrib = [abs(f["contribution"]) for f in e["top_features"]]
        assert contrib == sorted(contrib, reverse=True) and contrib[0] > 0
    # the sources named are the offline candidate generation's; repeat only ever names items the user touched
    snap = env["snap"]
    u = snap.user_index[env["stored"](user)]
    hist = {str(snap.item_ids[i]) for i in snap.history(u)[0]}
    cand = generate(snap, u, env["settings"]["candidates"])
    row_of = {str(snap.item_ids[i]): n for n, i in enumerate(cand.items)}
    for it in r["items"]:
        offline = {SOURCES[j] for j in np.flatnonzero(cand.sources[row_of[it["item_id"]]])}
        assert set(it["explanation"]["sources"]) == offline
        assert "repeat" not in offline or it["item_id"] in hist


def test_exclude_purchased_drops_bought_items(server, env):
    snap = env["snap"]
    col = 5  # ui_n_purchase
    buyers = [u for u in range(len(snap.user_ids)) if (snap.history(u)[1][:, col] > 0).any()]
    user = env["raw_of"][str(snap.user_ids[buyers[0]])]
    bought = {str(snap.item_ids[i]) for i, f in zip(*snap.history(buyers[0])) if f[col] > 0}
    r = server.get("/v1/recommendations", user_id=user, k=50, exclude_purchased="true").json()
    assert r["items"] and not bought & {i["item_id"] for i in r["items"]}


def test_cold_start_user_gets_popular_items_and_query_only_search(server, env):
    snap = env["snap"]
    r = server.get("/v1/recommendations", user_id="someone-new", k=5, explain="true").json()
    assert r["strategy"] == "fallback"
    assert [i["item_id"] for i in r["items"]] == [str(snap.item_ids[i]) for i in snap.pop_order[:5]]
    assert all(i["explanation"]["sources"] == ["popularity"] for i in r["items"])
    s = server.get("/v1/search", q="water bottle", user_id="someone-new", k=5).json()
    assert s["strategy"] == "query_only" and len(s["items"]) == 5
    anonymous = server.get("/v1/search", q="water bottle", k=5).json()
    assert [i["item_id"] for i in anonymous["items"]] == [i["item_id"] for i in s["items"]]


def test_search_finds_the_query_and_personalizes_for_known_users(server, env):
    r = server.get("/v1/search", q="men's t-shirts", k=10, explain="true").json()
    assert r["strategy"] == "query_only"
    cats = [i["category"] or "" for i in r["items"]]
    assert sum("T-Shirts" in c for c in cats) >= 7, cats
    assert all("semantic" in i["explanation"]["sources"] or "lexical" in i["explanation"]["sources"] for i in r["items"])
    user = _users(env, 2)[0]
    p = server.get("/v1/search", q="men's t-shirts", user_id=user, k=10, explain="true").json()
    assert p["strategy"] == "personalized"
    assert any(i["explanation"]["personal_score"] > 0 for i in p["items"])
    assert all(f["feature"] in FEATURES for i in p["items"] for f in i["explanation"]["top_features"])
    assert sum("T-Shirts" in (i["category"] or "") for i in p["items"]) >= 5


def test_profile_has_the_batch_segment_and_tags(server, env):
    user = _users(env, 2)[0]
    stored = env["stored"](user)
    assert stored != user  # the warehouse holds the pseudonym of the shop's raw id
    row = read_df(env["settings"].warehouse_path,
                  "select segment, tags from user_profiles where snapshot = 'serving' and user_id = ?", [stored])
    p = server.get(f"/v1/users/{user}/profile").json()
    assert p["user_id"] == user
    assert p["segment"] == int(row["segment"][0]) and p["tags"] == list(row["tags"][0])
    assert p["strategy"] == "batch" and p["interests"] and p["recent_items"]
    batch = read_df(env["settings"].warehouse_path, "select label, weight from user_interests where snapshot = "
                    "'serving' and user_id = ? order by interest_rank", [stored])
    assert [i["label"] for i in p["batch_interests"]] == list(batch["label"]) and len(batch) >= 1
    r = server.get("/v1/users/nobody-at-all/profile")
    assert r.status_code == 404 and "nobody-at-all" in r.json()["detail"]


def test_a_warehouse_pseudonym_sent_as_user_id_is_refused_not_served_as_a_stranger(server, env):
    pseudonym = str(env["snap"].user_ids[0])
    for path, params in (("/v1/recommendations", {"user_id": pseudonym}), ("/v1/search", {"q": "mug", "user_id": pseudonym}),
                         (f"/v1/users/{pseudonym}/profile", {})):
        r = server.get(path, **params)
        assert r.status_code == 422 and "warehouse pseudonym" in r.json()["detail"], (path, r.text)
    raw = env["raw_of"][pseudonym]
    assert server.get("/v1/recommendations", user_id=raw).json()["strategy"] == "ranker"


BAD_GETS = [
    ("/v1/recommendations", {"user_id": "x", "k": 0}, 422),
    ("/v1/recommendations", {"user_id": "x", "k": 101}, 422),
    ("/v1/recommendations", {"user_id": "x", "k": "ten"}, 422),
    ("/v1/recommendations", {"k": 5}, 422),
    ("/v1/recommendations", {"user_id": "   "}, 422),
    ("/v1/recommendations", {"user_id": "x" * 300}, 422),
    ("/v1/recommendations", {"user_id": "x", "exclude_purchased": "maybe"}, 422),
    ("/v1/search", {"user_id": "x"}, 422),
    ("/v1/search", {"q": "   "}, 422),
    ("/v1/search", {"q": "mug " * 60}, 422),
    ("/v1/search", {"q": "mug", "k": 1000}, 422),
    ("/v1/items/NO-SUCH-ITEM/similar", {}, 404),
    ("/v1/items/NO-SUCH-ITEM/similar", {"k": -1}, 422),
    ("/v1/users/no-such-user/profile", {}, 404),
    ("/v1/nothing-here", {}, 404),
]


@pytest.mark.parametrize("path,params,status", BAD_GETS)
def test_bad_requests_get_a_4xx_with_a_message(server, path, params, status):
    r = server.get(path, **params)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]


@pytest.mark.parametrize("body", [
    {"events": []},
    {"events": [{"user_id": "u", "item_id": "NO-SUCH-ITEM", "event_type": "view"}]},
    {"events": [{"user_id": "u", "item_id": "{item}", "event_type": "teleport"}]},
    {"events": [{"user_id": "", "item_id": "{item}", "event_type": "view"}]},
    {"events": [{"user_id": "u", "item_id": "{item}", "event_type": "view", "price": -3}]},
    {"events": [{"user_id": "u", "item_id": "{item}", "event_type": "view", "extra": 1}]},
    {"user_id": "u"},
    "not json at all",
])
def test_bad_events_get_a_422_and_write_nothing(server, env, body):
    inbox = Path(env["folder"]) / "inbox" / "events.jsonl"
    before = inbox.read_text() if inbox.exists() else ""
    item = str(env["snap"].item_ids[0])
    if isinstance(body, dict):
        body = json.loads(json.dumps(body).replace("{item}", item))
        r = server.post("/v1/events", body)
    else:
        r = httpx.post(f"{server.base}/v1/events", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]
    assert (inbox.read_text() if inbox.exists() else "") == before


def test_metrics_and_prediction_log(server, env):
    server.get("/v1/recommendations", user_id="metrics-user", k=3)
    text = server.get("/metrics").text
    assert 'persona_http_requests_total{method="GET",route="/v1/recommendations",status="200"}' in text
    assert f'persona_model_info{{version="{env["version"]}"}} 1.0' in text
    assert "persona_http_request_seconds_bucket" in text
    rows = [json.loads(l) for l in (env["folder"] / "predictions.jsonl").read_text().splitlines()]
    mine = [r for r in rows if r["user_id"] == env["stored"]("metrics-user")]  # logged pseudonymized
    assert mine and mine[-1]["strategy"] == "fallback" and len(mine[-1]["items"]) == 3


def test_posted_events_change_recommendations_at_once_and_survive_a_restart(server, env):
    snap = env["snap"]
    users = _users(env, 6)
    user, bystander = users[1], users[2]
    before = server.get("/v1/recommendations", user_id=user, k=10).json()
    top = [i["item_id"] for i in before["items"]]
    # an item the user never touched, outside their top-10: carted three times, then bought
    hist = {str(snap.item_ids[i]) for i in snap.history(snap.user_index[env["stored"](user)])[0]}
    item = next(str(snap.item_ids[i]) for i in snap.pop_order[20:] if str(snap.item_ids[i]) not in hist | set(top))
    events = [{"user_id": user, "item_id": item, "event_type": t} for t in ("view", "cart", "cart", "purchase")]
    r = server.post("/v1/events", {"events": events})
    assert r.status_code == 200 and r.json()["accepted"] == 4
    after = server.get("/v1/recommendations", user_id=user, k=10, explain="true").json()
    assert after["strategy"] == "ranker_online"
    assert [i["item_id"] for i in after["items"]] != top
    assert item in [i["item_id"] for i in after["items"]]
    carted = next(i for i in after["items"] if i["item_id"] == item)
    assert "repeat" in carted["explanation"]["sources"]
    excluded = server.get("/v1/recommendations", user_id=user, k=10, exclude_purchased="true").json()
    assert item not in [i["item_id"] for i in excluded["items"]]
    profile = server.get(f"/v1/users/{user}/profile").json()
    assert profile["strategy"] == "online" and profile["online_events"] == 4 and profile["recent_items"][0] == item
    # a brand-new user becomes known through events alone
    server.post("/v1/events", {"events": [{"user_id": "fresh-visitor", "item_id": item, "event_type": "cart"}]})
    fresh = server.get("/v1/recommendations", user_id="fresh-visitor", k=5).json()
    assert fresh["strategy"] == "ranker_online" and fresh["items"]
    assert server.get("/v1/users/fresh-visitor/profile").json()["recent_items"] == [item]
    # users without events keep offline parity
    items, scores = _offline_top_k(env, bystander, 10)
    assert_same_top_k(server.get("/v1/recommendations", user_id=bystander, k=10).json(), items, scores)
    # durable: in the inbox as canonical rows, and still applied after a restart
    lines = [json.loads(l) for l in (env["folder"] / "inbox" / "events.jsonl").read_text().splitlines()]
    assert [(l["user_id"], l["item_id"], l["event_type"]) for l in lines if l["user_id"] == user] == \
        [(user, item, t) for t in ("view", "cart", "cart", "purchase")]
    assert all({"event_id", "session_id", "ts"} <= set(l) for l in lines)
    server.stop()
    server.start()
    again = server.get("/v1/recommendations", user_id=user, k=10).json()
    assert again["strategy"] == "ranker_online"
    assert [i["item_id"] for i in again["items"]] == [i["item_id"] for i in after["items"]]
    assert server.get(f"/v1/users/{user}/profile").json()["online_events"] == 4


NEW_ITEM = "NEW-TEE-1"


def _add_item_without_events(version: Path) -> None:
    """A catalog addition after training: embedded with the version's own encoder, no events, no co-visitation."""
    from ml.onnx_encoder import OnnxTextEncoder
    from ml.snapshot import ITEM_FEATURES

    snap = Snapshot.load(version / "snapshot")
    catalog = json.loads((version / "catalog.json").read_text())
    tee = next(i for i, it in enumerate(catalog.values()) if "T-Shirts" in (it.get("category_path") or ""))
    like = str(snap.item_ids[tee])
    item = {"title": "Google Men's Heavyweight Hero Tee Teal", "category_path": catalog[like]["category_path"],
            "brand": "Google", "price": 18.99}
    text = f"{item['title']} | {' > '.join(item['category_path'].split('/'))} | Google"
    vec = OnnxTextEncoder(version / "encoder").encode([text])
    feat = np.zeros((1, len(ITEM_FEATURES)), np.float32)
    feat[0, ITEM_FEATURES.index("it_price")] = item["price"]
    snap.item_ids = np.append(snap.item_ids.astype(str), NEW_ITEM)
    snap.item_emb = np.vstack([snap.item_emb, vec])
    snap.item_feat = np.vstack([snap.item_feat, feat])
    for name in ("item_cat", "item_top", "item_brand"):
        setattr(snap, name, np.append(getattr(snap, name), getattr(snap, name)[tee]).astype(np.int32))
    snap.pop_order = np.append(snap.pop_order, len(snap.item_ids) - 1).astype(np.int32)
    snap.covis_ptr = np.append(snap.covis_ptr, snap.covis_ptr[-1])
    snap.meta["n_items"] = len(snap.item_ids)
    shutil.rmtree(version / "snapshot")
    snap.save(version / "snapshot")
    catalog[NEW_ITEM] = item
    (version / "catalog.json").write_text(json.dumps(catalog))


def test_model_swap_under_concurrent_requests_has_zero_failures(server, env):
    models, old = env["models"], env["version"]
    src = models / "versions" / old

    def write(folder: Path) -> None:  # the same real artifacts under a new version id, plus a new catalog item
        for f in src.iterdir():
            if f.name not in ("manifest.json", "metrics.json", "features.json"):
                (shutil.copytree if f.is_dir() else shutil.copy2)(f, folder / f.name)
        _add_item_without_events(folder)

    manifest = json.loads((src / "manifest.json").read_text())
    new_dir = registry.create_version(models, write, manifest, json.loads((src / "metrics.json").read_text()),
                                      json.loads((src / "features.json").read_text()))
    users = _users(env, 8) + ["cold-one"]
    seen, failures, stop = [], [], threading.Event()

    def hammer(n: int) -> None:
        with httpx.Client(timeout=15) as c:
            j = n
            while not stop.is_set():
                try:
                    r = c.get(f"{server.base}/v1/recommendations", params={"user_id": users[j % len(users)], "k": 10})
                    if r.status_code != 200:
                        failures.append(r.status_code)
                    else:
                        seen.append(r.json()["model_version"])
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                j += 1

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    registry.promote(models, new_dir.name)
    deadline = time.time() + 60
    while time.time() < deadline and (not seen or seen[-1] != new_dir.name):
        time.sleep(0.2)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert old in seen and new_dir.name in seen
    assert seen[-1] == new_dir.name and server.get("/health").json()["model_version"] == new_dir.name
    assert "persona_model_swaps_total 1.0" in server.get("/metrics").text


def test_new_item_without_events_is_reachable_by_content(server, env):
    """After the swap the champion's catalog has NEW-TEE-1, which no event ever touched."""
    assert server.get("/health").json()["model_version"] != env["version"]
    r = server.get(f"/v1/items/{NEW_ITEM}/similar", k=5, explain="true").json()
    assert r["strategy"] == "content" and len(r["items"]) == 5 and NEW_ITEM not in [i["item_id"] for i in r["items"]]
    assert all(i["explanation"]["sources"] == ["content"] for i in r["items"])
    assert sum("T-Shirts" in (i["category"] or "") for i in r["items"]) >= 3
    # and the other way round: its nearest item lists it among its own similar items, search finds it
    near = r["items"][0]["item_id"]
    assert NEW_ITEM in [i["item_id"] for i in server.get(f"/v1/items/{near}/similar", k=20).json()["items"]]
    found = server.get("/v1/search", q="teal hero tee", k=5).json()
    assert NEW_ITEM in [i["item_id"] for i in found["items"]]
    snap = env["snap"]
    popular = str(snap.item_ids[snap.pop_order[0]])
    assert server.get(f"/v1/items/{popular}/similar", k=5).json()["strategy"] == "covisitation+content"


def test_api_key_auth_when_configured(env):
    s = Server(env["config"], {"PERSONA__SERVING__API_KEY": "s3cret"}).start()
    try:
        user = _users(env, 2)[0]
        r = s.get("/v1/recommendations", user_id=user)
        assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
        assert s.get("/v1/recommendations", user_id=user, headers={"X-API-Key": "wrong"}).status_code == 401
        assert s.post("/v1/events", {"events": []}).status_code == 401
        ok = s.get("/v1/recommendations", user_id=user, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200 and ok.json()["items"]
        assert s.get("/health").status_code == 200 and s.get("/ready").status_code == 200
        assert s.get("/metrics").status_code == 200
    finally:
        s.stop()


def test_a_request_over_the_timeout_answers_504_and_is_counted():
    """The middleware itself, around an ASGI app that takes too long (no model needed)."""
    import asyncio

    from serving.app import TimeoutAndMetrics
    from serving.metrics import Metrics

    class Holder:
        metrics = Metrics()

    async def slow_app(scope, receive, send):
        await asyncio.sleep(1.0)

    app = TimeoutAndMetrics(slow_app, lambda: Holder, timeout_s=0.05)
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(app({"type": "http", "method": "GET", "path": "/v1/slow"}, receive, send))
    assert sent[0]["status"] == 504 and b"timed out after 0.05 s" in sent[1]["body"]
    assert Holder.metrics.timeouts._value.get() == 1


def test_server_without_the_ingestion_key_refuses_to_start_naming_the_missing_key(env, tmp_path):
    missing = tmp_path / "nowhere" / "pseudonym.key"
    out = subprocess.run([sys.executable, "-c", "from serving.app import create_app; create_app()"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PERSONA_CONFIG=str(env["config"]), PERSONA_PSEUDONYM_KEY="",
                                  PERSONA__PRIVACY__KEY_FILE=str(missing)))
    assert out.returncode != 0
    assert "no pseudonymization key" in out.stderr and str(missing) in out.stderr
    assert "Traceback" not in out.stderr
    assert not missing.exists()  # serving never creates a key that would match none of the stored ids


def _copy_with_key(models: Path, src: Path, key: str) -> Path:
    """The same real artifacts as a new version whose manifest says it was made under another pseudonym key."""
    def write(folder: Path) -> None:
        for f in src.iterdir():
            if f.name not in ("manifest.json", "metrics.json", "features.json"):
                (shutil.copytree if f.is_dir() else shutil.copy2)(f, folder / f.name)

    manifest = dict(json.loads((src / "manifest.json").read_text()), pseudonym_key=key)
    return registry.create_version(models, write, manifest, json.loads((src / "metrics.json").read_text()),
                                   json.loads((src / "features.json").read_text()))


def test_a_model_made_under_another_pseudonym_key_is_refused_at_start_and_on_reload(server, env, tmp_path):
    from data_contracts.privacy import Pseudonymizer

    models, serving_now = env["models"], server.get("/health").json()["model_version"]
    src = models / "versions" / serving_now
    ours = json.loads((src / "manifest.json").read_text())["pseudonym_key"]
    assert ours == Pseudonymizer.from_settings(env["settings"], create=False).fingerprint != "off"

    # promoted while serving: the watcher refuses it and the current version keeps answering
    other = _copy_with_key(models, src, "0123456789abcdef")
    registry.promote(models, other.name)
    try:
        time.sleep(2.0)  # several reload intervals (0.3 s)
        assert server.get("/health").json()["model_version"] == serving_now
        r = server.get("/v1/recommendations", user_id=_users(env, 1)[0], k=5)
        assert r.status_code == 200 and r.json()["model_version"] == serving_now
        assert "persona_model_swap_failures_total 1.0" in server.get("/metrics").text  # tried once, not per tick
        # at start: a clear refusal naming the version and both fingerprints, no traceback
        out = subprocess.run([sys.executable, "-c", "from serving.app import create_app; create_app()"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, PERSONA_CONFIG=str(env["config"])))
        assert out.returncode != 0 and "Traceback" not in out.stderr
        assert other.name in out.stderr and "another key" in out.stderr and "0123456789abcdef" in out.stderr
        assert ours in out.stderr
    finally:
        registry.promote(models, serving_now)
