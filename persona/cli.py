"""`persona` command: run the whole graph, open the Dagster UI, serve the promoted model."""

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


def print_summary(summary: dict) -> None:
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
    print(f"drift share         {summary['drift_share']:.2%}   report {summary['drift_report']}")
    print(f"model               {summary['model_dir']}")
    print(f"warehouse           {summary['warehouse']}")
    print()


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    prepare_environment(settings)
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
    print_summary(summary)
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
    import uvicorn

    host = args.host or settings["serving"]["host"]
    port = args.port or int(settings["serving"]["port"])
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, log_level="info")
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
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"persona: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
