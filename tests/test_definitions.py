"""The code location loads and holds the whole graph, its checks and the daily schedule."""

from dagster import AssetKey

from orchestration.definitions import defs

EXPECTED_ASSETS = {
    "raw_events", "raw_items", "quarantine_events",
    "stg_events", "stg_items", "fct_events", "fct_sessions", "fct_user_item_interactions", "dim_users", "dim_items",
    "fct_item_covisitation",
    "item_embeddings", "user_profiles", "ranker_model", "promoted_model", "drift_report", "run_summary",
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
