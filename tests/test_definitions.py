"""The code location loads and holds the whole graph, its checks and the daily schedule."""

from dagster import AssetKey

from orchestration.definitions import defs

EXPECTED_ASSETS = {
    "raw_events", "raw_items", "quarantine_events",
    "stg_events", "stg_items", "fct_events", "fct_sessions", "fct_user_item_interactions", "dim_users", "dim_items",
    "fct_item_covisitation",
    "item_embeddings", "user_profiles", "ranker_model", "promoted_model", "drift_report", "run_summary",
    "feature_drift", "prediction_drift", "target_drift", "champion_performance",
}


def test_definitions_list_every_asset_check_and_the_daily_schedule():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert EXPECTED_ASSETS <= keys
    checks = {c.name for c in graph.asset_check_keys}
    assert {"raw_events_contract", "raw_items_contract", "quarantine_rate", "onnx_parity"} <= checks
    schedule = defs.resolve_schedule_def("daily_full_materialization")
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.job_name == "persona_full"


def test_dbt_staging_reads_the_python_raw_assets():
    graph = defs.resolve_asset_graph()
    assert AssetKey("raw_events") in graph.get(AssetKey("stg_events")).parent_keys
    assert AssetKey("raw_items") in graph.get(AssetKey("stg_items")).parent_keys


def test_blocking_checks_guard_the_raw_tables():
    graph = defs.resolve_asset_graph()
    blocking = {c.name for c in graph.asset_check_keys if graph.get_check_spec(c).blocking}
    assert {"raw_events_contract", "raw_items_contract", "quarantine_rate", "onnx_parity"} <= blocking


def test_drift_check_schedule_retrain_job_and_sensor():
    hourly = defs.resolve_schedule_def("hourly_drift_check")
    assert hourly.cron_schedule == "15 * * * *" and hourly.job_name == "persona_drift_check"
    check = defs.resolve_job_def("persona_drift_check")
    keys = {k.to_user_string() for k in check.asset_layer.executable_asset_keys}
    assert {"raw_events", "fct_events", "dim_items", "item_embeddings", "feature_drift", "champion_performance"} <= keys
    assert not {"ranker_model", "promoted_model", "user_profiles"} & keys  # a drift check never trains
    retrain = defs.resolve_job_def("persona_retrain")
    assert {k.to_user_string() for k in retrain.asset_layer.executable_asset_keys} == {
        "ranker_model", "promoted_model", "drift_report", "run_summary"}
    sensor = defs.resolve_sensor_def("drift_retrain_sensor")
    assert sensor.job_name == "persona_retrain"
    assert sensor.default_status.value == "RUNNING"
