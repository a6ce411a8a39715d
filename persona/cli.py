"""`persona` command: run the whole graph, open the Dagster UI, serve the promoted model, manage the model
registry, replay the data with drift-triggered retraining."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from persona.config import PROJECT_ROOT, ConfigError, Settings, load_settings

OFFLINE_ENV = {
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def prepare_environment(settings: Settings) -> Path:
    """Project-local DAGSTER_HOME with telemetry off, offline model loading, and the dbt manifest."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ["PERSONA_WAREHOUSE_PATH"] = str(settings.warehouse_path)
    ensure_dbt_manifest()
    return home


def ensure_dbt_manifest() -> None:
    dbt_dir = PROJECT_ROOT / "dbt_project"
    if (dbt_dir / "target" / "manifest.json").exists():
        return
    dbt = Path(sys.executable).parent / "dbt"
    print("preparing the dbt manifest (dbt parse) ...", flush=True)
    subprocess.run([str(dbt), "parse", "--quiet", "--profiles-dir", str(dbt_dir), "--project-dir", str(dbt_dir)],
                   check=True, cwd=dbt_dir)


def _fmt_metric(m: dict, ci: dict, key: str) -> str:
    lo, hi = ci[key]
    return f"{m[key]:.4f} [{lo:.3f}, {hi:.3f}]"


def monitor_line(latest: dict | None) -> str | None:
    """The champion monitor's retrain decision in one line (what the drift sensor acts on), or None."""
    if not latest or "decision" not in latest:
        return None
    d, fd = latest["decision"], latest.get("feature_drift", {})
    why = "; ".join(d.get("reasons") or []) or "nothing beyond its thresholds"
    return (f"retrain trigger     {'YES' if d.get('retrain') else 'no'}: {fd.get('n_drifted', '?')}/"
            f"{fd.get('n_columns', '?')} features beyond their natural movement, NDCG@10 "
            f"{d.get('ndcg_now', float('nan')):.4f} vs champion {d.get('ndcg_champion', float('nan')):.4f} ({why})")


def print_summary(summary: dict, latest_monitor: dict | None = None) -> None:
    print()
    print("Persona run summary")
    print("===================")
    print(f"events in           {summary['events_in']:>10,}   quarantined {summary['events_quarantined']:,}")
    print(f"users profiled      {summary['users_profiled']:>10,}   segments {summary['segments']}")
    print(f"test users          {summary['test_users']:>10,}")
    print()
    keys = ("ndcg@10", "recall@20", "mrr@20")
    print(f"{'model':<14}" + "".join(f"{k + ' [95% CI]':<26}" for k in keys))
    for model, m in summary["metrics"].items():
        ci = summary["intervals"][model]
        print(f"{model:<14}" + "".join(f"{_fmt_metric(m, ci, k):<26}" for k in keys))
    d = summary["ranker_vs_best_baseline"]
    print(f"\nranker - {d['baseline']} (NDCG@10): {d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]")
    print(f"onnx max |diff|     {summary['onnx_max_abs_diff']:.2e}")
    print(f"features moved      {summary['drift_share']:.2%} (train vs test window, plain test)   "
          f"report {summary['drift_report']}")
    line = monitor_line(latest_monitor)
    if line:
        print(line)
    print(f"model               {summary['model_dir']}")
    print(f"warehouse           {summary['warehouse']}")
    print()


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    prepare_environment(settings)
    if settings.source_file is not None:  # the assets resolve their settings from the environment
        os.environ["PERSONA_CONFIG"] = str(settings.source_file)
    if not settings.source_path.exists():
        print(f"persona: source file not found: {settings.source_path} (source.path in the config)", file=sys.stderr)
        return 2
    from dagster import DagsterInstance

    from orchestration.definitions import defs

    job = defs.resolve_job_def("persona_full")
    print(f"materializing the Persona graph on {settings.source_path} (DAGSTER_HOME={settings.dagster_home})", flush=True)
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance, raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": args.log_level}}}})
    if not result.success:
        print("\npersona run failed:", file=sys.stderr)
        for event in result.all_events:
            if event.is_step_failure:
                err = event.step_failure_data.error
                msg = err.cause.message if err and err.cause else (err.message if err else "")
                print(f"  step {event.step_key}: {msg.strip() or (err.message if err else '')}", file=sys.stderr)
        failed_checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                         and not e.event_specific_data.passed]
        for e in failed_checks:
            ev = e.event_specific_data
            print(f"  check {ev.asset_check_key.name} on {ev.asset_key.to_user_string()} failed "
                  f"(alert appended to {settings.alerts_path})", file=sys.stderr)
        return 1
    summary = json.loads((settings.artifacts_dir / "summary.json").read_text())
    latest = settings.artifacts_dir / "drift" / "monitor" / "latest.json"
    print_summary(summary, json.loads(latest.read_text()) if latest.exists() else None)
    print(f"summary written to {settings.artifacts_dir / 'summary.json'}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    prepare_environment(settings)
    dagster = Path(sys.executable).parent / "dagster"
    cmd = [str(dagster), "dev", "-m", "orchestration.definitions", "-h", args.host, "-p", str(args.port)]
    print(f"Dagster UI on http://{args.host}:{args.port} (webserver + daemon, DAGSTER_HOME={settings.dagster_home})")
    return subprocess.call(cmd, cwd=PROJECT_ROOT)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    if args.config:
        os.environ["PERSONA_CONFIG"] = str(Path(args.config).resolve())
    import logging

    import uvicorn

    # the app logs the model version and the onnxruntime providers actually obtained at INFO
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = args.host or settings["serving"]["host"]
    port = args.port or int(settings["serving"]["port"])
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, log_level="info")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ml import registry

    settings = load_settings(args.config)
    models_dir = Path(args.models_dir) if args.models_dir else settings.models_dir
    try:
        if args.models_command == "list":
            rows = registry.list_versions(models_dir)
            if args.json:
                print(json.dumps({"champion": registry.champion_version(models_dir), "versions": rows,
                                  "history": registry.history(models_dir),
                                  "problems": registry.verify(models_dir)}, indent=2, default=str))
                return 0
            if not rows:
                print(f"no versions in {models_dir}")
            for r in rows:
                nd = r["ndcg@10"]
                print(f"{'*' if r['champion'] else ' '} {r['version']}  ndcg@10 {'-' if nd is None else f'{nd:.4f}'}"
                      f"  cutoff {str(r.get('training_cutoff') or '-')[:10]}  data {r.get('data_hash') or '-'}"
                      f"  code {r.get('code_version') or '-'}  created {str(r['created_at'] or '-')[:19]}")
            for h in registry.history(models_dir)[-5:]:
                print(f"  {h['at'][:19]} {h['action']:<8} {h['version']} {'(was ' + h['previous'] + ')' if h.get('previous') else '(first champion)'} {h.get('reason', '')}")
            for problem in registry.verify(models_dir):
                print(f"  problem: {problem}", file=sys.stderr)
            return 0
        if args.models_command == "promote":
            registry.promote(models_dir, args.version, reason=args.reason or "manual promotion (persona models promote)")
            print(f"champion is now {args.version}")
            return 0
        if args.models_command == "rollback":
            before = registry.champion_version(models_dir)
            target = registry.rollback(models_dir, to=args.to, reason=args.reason or "")
            print(f"rolled back: champion {before} -> {target}")
            return 0
    except registry.RegistryError as exc:
        print(f"persona models: {exc}", file=sys.stderr)
        return 1
    return 2


def cmd_replay(args: argparse.Namespace) -> int:
    from ml.replay import ReplayUnavailable, run_replay

    settings = load_settings(args.config)
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    status = 0
    for source in args.source:
        try:
            payload = run_replay(settings, source, path=args.path, out_dir=args.out, max_steps=args.max_steps,
                                 step_days=args.step_days)
        except ReplayUnavailable as exc:
            print(f"persona replay: skipping {source}: {exc}", file=sys.stderr)
            continue
        steps = payload["steps"]
        print(f"\n{source}: {len(steps)} steps, {sum(s['retrained'] for s in steps)} retrained, "
              f"{sum(s['promoted'] for s in steps)} promoted, {payload['seconds']}s")
        print(f"{'cut':<12}{'drift':>7}{'ndcg@10':>9}  retrained promoted  trigger")
        for s in steps:
            ds, nd = s["drift_share"], s["ndcg@10"]
            print(f"{s['cut']:<12}{'-' if ds is None else f'{ds:.2f}':>7}{'-' if nd is None else f'{nd:.4f}':>9}  "
                  f"{str(s['retrained']):<9} {str(s['promoted']):<8} {'; '.join(s['trigger'])}")
    return status


def cmd_ingest(args: argparse.Namespace) -> int:
    """Run a file through its adapter (the code the ingest asset uses) and report; writes nothing."""
    settings = load_settings(args.config)
    from data_contracts.adapters import SourceError, load_source

    from data_contracts.privacy import PrivacyError, load_key

    try:
        key = load_key(settings) if settings.get("privacy.pseudonymize") else None
        result = load_source(args.path, args.format, mapping=args.mapping, quality=settings["quality"],
                             pseudonym_key=key)
    except PrivacyError as exc:
        print(f"persona ingest: {exc}", file=sys.stderr)
        return 2
    except SourceError as exc:
        print(f"persona ingest: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # never a traceback for a bad file: name the file and what went wrong
        print(f"persona ingest: {args.path}: cannot load ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    s = result.summary()
    rate = s["quarantined"] / s["rows_in"] if s["rows_in"] else 0.0
    by_source = settings["quality"].get("max_quarantine_rate_by_source") or {}
    source = result.events.column("source")[0].as_py() if result.events.num_rows else (args.format or "mapping")
    limit = float(by_source.get(source, by_source.get(args.format or "", settings["quality"]["max_quarantine_rate"])))
    cols = ["source_file", "source_row", "reason", "field", "raw"]
    sample = (result.quarantine.slice(0, max(args.show, 0)).select(cols).to_pylist() if args.show > 0 else [])
    if args.json:
        out = {"path": str(args.path), "rows_in": s["rows_in"], "accepted": s["accepted"],
               "quarantined": s["quarantined"], "reasons": s["reasons"], "repairs": s["repairs"],
               "events": s["events"], "items": s["items"], "quarantine_rate": rate,
               "max_quarantine_rate": limit, "within_threshold": rate <= limit}
        if args.show > 0:
            out["quarantine_sample"] = sample
        print(json.dumps(out))
    else:
        print(f"{args.path}: {s['rows_in']:,} rows in, {s['accepted']:,} accepted "
              f"({s['events']:,} events, {s['items']:,} items), {s['quarantined']:,} quarantined ({rate:.2%})")
        for code, n in s["reasons"].items():
            print(f"  quarantined  {code:<24}{n:>10,}")
        for code, n in s["repairs"].items():
            print(f"  repaired     {code:<24}{n:>10,}")
        if sample:
            print(f"first {len(sample)} quarantined row(s) (row = 0-based data row, header not counted, as in "
                  "quarantine_events.source_row):")
            for q in sample:
                raw = q["raw"] if q["raw"] is None or len(q["raw"]) <= 160 else q["raw"][:157] + "..."
                print(f"  {Path(q['source_file']).name} row {q['source_row']}: {q['reason']}"
                      f"{' (' + q['field'] + ')' if q['field'] else ''}  {raw}")
    if rate > limit:
        print(f"persona ingest: warning: quarantine rate {rate:.2%} is above {limit:.2%} "
              f"(a pipeline load of this file fails the blocking quarantine_rate check)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="persona", description=__doc__)
    parser.add_argument("--config", help="config file (default: $PERSONA_CONFIG or ./persona.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="materialize the whole graph in-process and print a summary")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("ui", help="Dagster webserver + daemon (schedules and sensors run)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_ui)
    p = sub.add_parser("serve", help="HTTP API over the promoted model")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("models", help="the model registry: list versions, promote one, roll back the champion")
    p.add_argument("--models-dir", help="registry folder (default: paths.models_dir)")
    msub = p.add_subparsers(dest="models_command", required=True)
    q = msub.add_parser("list", help="versions (champion starred), recent promotions, consistency problems")
    q.add_argument("--json", action="store_true")
    q = msub.add_parser("promote", help="make VERSION the champion (atomic pointer swap, logged)")
    q.add_argument("version")
    q.add_argument("--reason")
    q = msub.add_parser("rollback", help="point the champion back to the version it replaced (or --to VERSION)")
    q.add_argument("--to")
    q.add_argument("--reason")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("replay", help="walk the data week by week: monitor, retrain when triggered, gate, promote")
    p.add_argument("--source", nargs="+", default=["ga"], help="ga (default), uci, or an adapter name")
    p.add_argument("--path", help="source file (default: the embedded GA data / the adapter's default)")
    p.add_argument("--out", help="output folder (default: replay.out_dir)")
    p.add_argument("--max-steps", type=int, help="only the last N steps")
    p.add_argument("--step-days", type=float, help="step length (default: replay.step_days per source)")
    p.set_defaults(func=cmd_replay)
    p = sub.add_parser("ingest", help="check a log file against the contract: accepted / quarantined counts by reason")
    p.add_argument("path", help="the file (or a folder of files) to load")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--format", help="adapter name (data_contracts/adapters: ADAPTERS; docs/adapters.md)")
    how.add_argument("--mapping", help="YAML column mapping for the generic adapter (docs/adapters.md)")
    p.add_argument("--json", action="store_true", help="print rows_in, accepted, quarantined, reasons as JSON")
    p.add_argument("--show", type=int, default=0, metavar="N",
                   help="also list the first N quarantined rows: file, row, reason, field, raw record "
                        "(--json: under 'quarantine_sample')")
    p.set_defaults(func=cmd_ingest)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"persona: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
