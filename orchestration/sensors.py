"""The retraining trigger: a sensor over the champion monitors' materializations.

Every time `champion_monitoring` materializes (hourly drift check, daily run, or by hand), the sensor reads
`feature_drift.drift_share` and `champion_performance.ndcg@10` / `champion_ndcg@10` from that materialization's
metadata and applies `ml.monitoring.retrain_decision` with the *current* configuration:

- drift share (the share of features drifted beyond their natural movement, `ml.monitoring.feature_drift`)
  >= `drift.share_threshold`, or
- NDCG@10 on the latest labelled window below the champion's training-time NDCG@10 by >= `drift.ndcg_drop`

-> one `persona_retrain` run. The cursor is the last materialization read, so each drift check is decided once;
the run key is the monitored data's fingerprint, so one state of the data never launches two retrainings (a new
champion trained on drifted data is not retrained again until new data arrives).
"""

from __future__ import annotations

import json

from dagster import (AssetKey, DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason,
                     sensor)

from ml.monitoring import retrain_decision
from orchestration.jobs import retrain_job
from persona.config import load_settings

FEATURE_DRIFT = AssetKey("feature_drift")
PERFORMANCE = AssetKey("champion_performance")


def _metadata(record) -> dict:
    return {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}


def _latest(instance, key: AssetKey):
    records = instance.fetch_materializations(key, limit=1).records
    return records[0] if records else None


def evaluate(instance, cursor: str | None, settings=None) -> tuple[list[RunRequest], str | None, str]:
    """(run requests, new cursor, explanation) for the latest monitor materialization after `cursor`."""
    settings = settings or load_settings()
    drift_rec = _latest(instance, FEATURE_DRIFT)
    if drift_rec is None:
        return [], cursor, "no feature_drift materialization yet (run the hourly_drift_check schedule)"
    if cursor is not None and drift_rec.storage_id <= int(cursor):
        return [], cursor, f"no new drift check since materialization {cursor}"
    drift = _metadata(drift_rec)
    perf_rec = _latest(instance, PERFORMANCE)
    perf = _metadata(perf_rec) if perf_rec is not None and perf_rec.run_id == drift_rec.run_id else {}
    d = settings["drift"]
    decision = retrain_decision(drift.get("drift_share"), perf.get("ndcg@10"), perf.get("champion_ndcg@10"),
                                share_threshold=float(d["share_threshold"]), ndcg_drop=float(d["ndcg_drop"]))
    new_cursor = str(drift_rec.storage_id)
    if not decision.retrain:
        return [], new_cursor, (f"no retraining: drift share {drift.get('drift_share', float('nan')):.2f} < "
                                f"{float(d['share_threshold']):.2f} and NDCG@10 drop within {d['ndcg_drop']}")
    fingerprint = drift.get("data_fingerprint") or drift_rec.run_id
    tags = {"persona/trigger": "drift_retrain_sensor", "persona/champion": str(drift.get("champion")),
            "persona/drift_share": f"{drift.get('drift_share', float('nan')):.4f}",
            "persona/reasons": json.dumps(decision.reasons)[:1000]}
    request = RunRequest(run_key=f"retrain-{fingerprint}", tags=tags)
    return [request], new_cursor, "; ".join(decision.reasons)


@sensor(job=retrain_job, minimum_interval_seconds=300,
        default_status=DefaultSensorStatus.RUNNING,
        description="Launches persona_retrain when the latest champion monitors show a share of features drifted "
                    "beyond their natural movement at or above drift.share_threshold, or an NDCG@10 drop of "
                    "drift.ndcg_drop or more on the latest labelled window.")
def drift_retrain_sensor(context: SensorEvaluationContext):
    requests, cursor, why = evaluate(context.instance, context.cursor)
    context.log.info(why)
    if not requests:
        return SensorResult(skip_reason=SkipReason(why), cursor=cursor)
    return SensorResult(run_requests=requests, cursor=cursor)
