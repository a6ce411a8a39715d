"""Privacy at the door: keyed pseudonyms for user/session ids, the key's handling, PII masking counted."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from data_contracts.adapters import load_source
from data_contracts.privacy import PrivacyError, load_key, pseudonymize_id
from persona.config import load_settings
from persona.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LINES = (FIXTURES / "shop_events.csv").read_text().splitlines()


def test_key_file_is_created_owner_only_outside_the_warehouse(tmp_path):
    key_file = tmp_path / "secrets" / "pseudonym.key"
    key = load_key(key_file=key_file, warehouse_dir=tmp_path / "warehouse", environ={})
    assert len(key) >= 32 and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_key(key_file=key_file, environ={}) == key                       # stable across loads
    assert load_key(key_file=key_file, environ={"PERSONA_PSEUDONYM_KEY": "from-env-0123456789"}) == \
        b"from-env-0123456789"
    with pytest.raises(PrivacyError, match="inside the warehouse"):
        load_key(key_file=tmp_path / "warehouse" / "k.key", warehouse_dir=tmp_path / "warehouse", environ={})
    os.chmod(key_file, 0o644)
    with pytest.raises(PrivacyError, match="readable by others") as err:
        load_key(key_file=key_file, environ={})
    assert key.decode() not in str(err.value)                                    # never in a message


def test_ids_are_pseudonymized_in_events_and_in_the_quarantine(tmp_path):
    path = tmp_path / "shop.csv"
    path.write_text("\n".join([*LINES, LINES[1]]) + "\n")                        # one duplicate -> quarantine
    key = b"k" * 32
    r = load_source(path, mapping=FIXTURES / "shop_mapping.yaml", pseudonym_key=key)
    ev = r.events.to_pandas()
    raw_user, raw_session = "4798058133221713505", "4798058133221713505-1475485800"
    assert raw_user not in set(ev["user_id"]) and ev["user_id"].dropna().str.fullmatch(r"[0-9a-f]{32}").all()
    assert pseudonymize_id(raw_user, key) in set(ev["user_id"])                  # serving applies the same hash
    assert ev["user_id"].isna().sum() == 2                                       # anonymous stays anonymous
    assert raw_user not in json.dumps(ev["session_id"].tolist())
    q = r.quarantine.to_pandas()
    assert raw_user not in q["raw"].iloc[0] and raw_session not in q["raw"].iloc[0]
    assert json.loads(q["raw"].iloc[0])["customer"] == pseudonymize_id(raw_user, key)
    other = load_source(path, mapping=FIXTURES / "shop_mapping.yaml", pseudonym_key=b"x" * 32)
    assert set(other.events.to_pandas()["user_id"].dropna()).isdisjoint(set(ev["user_id"].dropna()))


def test_cli_pseudonymizes_when_configured_and_never_prints_the_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PERSONA_PSEUDONYM_KEY", raising=False)
    cfg = tmp_path / "persona.yaml"
    cfg.write_text(f"privacy:\n  pseudonymize: true\n  key_file: {tmp_path / 'keys' / 'p.key'}\n"
                   f"paths:\n  warehouse_dir: {tmp_path / 'warehouse'}\n")
    code = main(["--config", str(cfg), "ingest", str(FIXTURES / "shop_events.csv"),
                 "--mapping", str(FIXTURES / "shop_mapping.yaml"), "--json"])
    out = capsys.readouterr()
    assert code == 0 and json.loads(out.out)["accepted"] == 12
    key = (tmp_path / "keys" / "p.key").read_text()
    assert key not in out.out + out.err
    assert load_settings(cfg).get("privacy.pseudonymize") is True


def test_pseudonymizer_maps_raw_ids_to_the_stored_ids_and_is_identity_when_off(tmp_path):
    """What serving uses: the shop's raw id -> the id ingestion stored (same key, same hash)."""
    from data_contracts.privacy import Pseudonymizer

    def settings(on: bool):
        cfg = tmp_path / f"persona_{on}.yaml"
        cfg.write_text(f"privacy:\n  pseudonymize: {str(on).lower()}\n  key_file: {tmp_path / 'keys' / 'p.key'}\n"
                       f"paths:\n  warehouse_dir: {tmp_path / 'warehouse'}\n")
        return load_settings(cfg)

    raw_user, raw_session = "4798058133221713505", "4798058133221713505-1475485800"
    off = Pseudonymizer.from_settings(settings(False), environ={})
    assert not off.enabled and off.user_id(raw_user) == raw_user and off.session_id(raw_session) == raw_session
    assert not (tmp_path / "keys").exists()                                      # off: no key file made

    first = Pseudonymizer.from_settings(settings(True), environ={})
    key = (tmp_path / "keys" / "p.key").read_bytes()
    assert first.created and first.origin == str(tmp_path / "keys" / "p.key")
    assert stat.S_IMODE((tmp_path / "keys" / "p.key").stat().st_mode) == 0o600
    again = Pseudonymizer.from_settings(settings(True), environ={})
    assert not again.created and again.key == first.key == key
    stored = load_source(FIXTURES / "shop_events.csv", mapping=FIXTURES / "shop_mapping.yaml",
                         pseudonym_key=key).events.to_pandas()
    assert again.user_id(raw_user) in set(stored["user_id"])
    assert again.session_id(raw_session) in set(stored["session_id"])
    assert again.user_id(None) is None
    for text in (repr(again), again.describe(), first.describe()):
        assert key.decode() not in text
    assert "created now" in first.describe() and str(tmp_path / "keys" / "p.key") in first.describe()

    env = Pseudonymizer.from_settings(settings(True), environ={"PERSONA_PSEUDONYM_KEY": "fixed-test-key-0123456789"})
    assert env.origin == "$PERSONA_PSEUDONYM_KEY" and not env.created
    assert env.user_id(raw_user) == pseudonymize_id(raw_user, b"fixed-test-key-0123456789")
