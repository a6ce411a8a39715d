"""Pseudonymous user ids: a keyed hash (HMAC-SHA256) applied at ingestion, and by serving to raw ids.

With `privacy.pseudonymize: true` every user id (and session id, which often embeds the visitor id) is
replaced by `HMAC-SHA256(key, "user:" + id)` (resp. `"session:" + id`), hex, 32 characters, before anything
is written: raw_events, and the user / session fields inside the quarantine's raw JSON. The same raw id
always gives the same pseudonym (profiles still work); without the key nobody can go back, or test a guessed
id, which a plain hash would allow.

The key: the environment variable `PERSONA_PSEUDONYM_KEY` when set, else the file `privacy.key_file`
(default `~/.config/persona/pseudonym.key`), created with 32 random bytes and owner-only permissions (0600)
on first use. It must live outside the warehouse folder (refused otherwise) and is never logged or written
anywhere else.

Serving applies the same hash to the shop's raw ids with `Pseudonymizer` (no torch, no Dagster):

    pseudo = Pseudonymizer.from_settings(settings)   # once, at startup: loads (or creates) the key
    pseudo.user_id("0824839726118485274")            # -> the user_id stored in the warehouse
    pseudo.session_id(raw_session)                   # -> the session_id stored in the warehouse

Each model version's manifest records the key's `fingerprint` (`pseudonym_key`); serving refuses a version made
under another key (its users would all look unknown), and the promotion gate lets a model trained under the
current key replace a champion made under another one.

With `privacy.pseudonymize: false` both are the identity, so callers need no branch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

ENV_KEY = "PERSONA_PSEUDONYM_KEY"
DEFAULT_KEY_FILE = "~/.config/persona/pseudonym.key"
DIGEST_CHARS = 32


class PrivacyError(ValueError):
    """The pseudonymization key is unusable (the message never contains the key)."""


def load_key(settings=None, *, key_file: str | os.PathLike | None = None,
             warehouse_dir: str | os.PathLike | None = None, environ: dict | None = None) -> bytes:
    """The HMAC key: $PERSONA_PSEUDONYM_KEY, else the key file (created 0600 on first use)."""
    return resolve_key(settings, key_file=key_file, warehouse_dir=warehouse_dir, environ=environ)[0]


def resolve_key(settings=None, *, key_file: str | os.PathLike | None = None,
                warehouse_dir: str | os.PathLike | None = None,
                environ: dict | None = None, create: bool = True) -> tuple[bytes, str, bool]:
    """(key, where it came from, whether the key file was created now). The origin names the variable or
    the file, never the key, so it can be logged. `create=False` (serving): a missing key file is an error,
    since a new key would match none of the stored pseudonyms."""
    env = os.environ if environ is None else environ
    if env.get(ENV_KEY):
        return env[ENV_KEY].encode("utf-8"), f"${ENV_KEY}", False
    if settings is not None:
        key_file = key_file or (settings.get("privacy.key_file") or DEFAULT_KEY_FILE)
        warehouse_dir = warehouse_dir or settings.warehouse_dir
        path = settings.path(key_file)
    else:
        path = Path(key_file or DEFAULT_KEY_FILE).expanduser()
    path = path.resolve()
    if warehouse_dir is not None:
        wh = Path(warehouse_dir).expanduser().resolve()
        if path == wh or wh in path.parents:
            raise PrivacyError(f"privacy.key_file {path} is inside the warehouse folder {wh}: keep the key apart "
                               "from the data it protects")
    created = False
    if not path.exists() and not create:
        raise PrivacyError(f"no pseudonymization key: {path} does not exist and ${ENV_KEY} is not set; serving needs "
                           "the key the warehouse was pseudonymized with (or privacy.pseudonymize: false)")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it in between: use theirs
            fd = None
        except OSError as exc:
            raise PrivacyError(f"cannot create key file {path}: {exc.strerror}; set ${ENV_KEY} or "
                               "privacy.key_file") from None
        if fd is not None:
            try:
                os.write(fd, secrets.token_hex(32).encode("ascii"))
                created = True
            finally:
                os.close(fd)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PrivacyError(f"key file {path} is readable by others (mode {mode:o}); chmod 600 it")
    key = path.read_bytes().strip()
    if len(key) < 16:
        raise PrivacyError(f"key file {path} holds fewer than 16 bytes")
    return key, str(path), created


@dataclass(frozen=True)
class Pseudonymizer:
    """Raw shop ids -> the ids stored in the warehouse. `key=None`: pseudonymization off (identity)."""

    key: bytes | None = field(default=None, repr=False)
    origin: str = "off"          # "$PERSONA_PSEUDONYM_KEY", the key file's path, or "off"
    created: bool = False        # the key file was created by this call

    @classmethod
    def from_settings(cls, settings, environ: dict | None = None, create: bool = True) -> "Pseudonymizer":
        """Per `privacy.pseudonymize`; loads the key (creating the key file on first use unless `create` is
        false) when on."""
        if not settings.get("privacy.pseudonymize"):
            return cls()
        key, origin, created = resolve_key(settings, environ=environ, create=create)
        return cls(key=key, origin=origin, created=created)

    @property
    def enabled(self) -> bool:
        return self.key is not None

    def user_id(self, raw: str | None) -> str | None:
        """The stored user id of the shop's raw user id (exactly as the adapter wrote it, before hashing)."""
        return raw if self.key is None or raw is None else pseudonymize_id(raw, self.key, "user")

    def session_id(self, raw: str | None) -> str | None:
        """The stored session id of a raw session id."""
        return raw if self.key is None or raw is None else pseudonymize_id(raw, self.key, "session")

    @property
    def fingerprint(self) -> str:
        """`off`, or a short keyed digest that tells keys apart without revealing them (stored in model manifests)."""
        return "off" if self.key is None else key_fingerprint(self.key)

    def describe(self) -> str:
        """One loggable line: where the key comes from (never the key)."""
        if self.key is None:
            return "user ids kept as given (privacy.pseudonymize: false)"
        return (f"user and session ids pseudonymized (HMAC-SHA256) with the key from {self.origin}"
                + (" (created now, mode 0600)" if self.created else ""))


def key_fingerprint(key: bytes) -> str:
    """16 hex characters of HMAC(key, a fixed label): equal for equal keys, useless for recovering the key or ids."""
    return hmac.new(key, b"persona:key-fingerprint", hashlib.sha256).hexdigest()[:16]


def pseudonymize_id(raw_id, key: bytes, kind: str = "user") -> str | None:
    """The pseudonym of one raw id (None stays None)."""
    if raw_id is None or (isinstance(raw_id, float) and np.isnan(raw_id)):
        return None
    return hmac.new(key, f"{kind}:{raw_id}".encode("utf-8"), hashlib.sha256).hexdigest()[:DIGEST_CHARS]


def pseudonymize_array(values: pa.ChunkedArray | pa.Array, key: bytes, kind: str = "user") -> pa.Array:
    """Vectorised over the distinct values (a log has far fewer users than rows)."""
    s = pd.Series(values.to_pandas() if hasattr(values, "to_pandas") else values, dtype=object)
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    mapped = np.array([pseudonymize_id(u, key, kind) for u in uniques] + [None], dtype=object)
    return pa.array(mapped[codes], type=pa.string())


def pseudonymize_result(result, key: bytes):
    """Replace user and session ids in the events and in the quarantine's raw JSON, in place."""
    ev = result.events
    for col, kind in (("user_id", "user"), ("session_id", "session")):
        i = ev.schema.get_field_index(col)
        ev = ev.set_column(i, ev.schema.field(i), pseudonymize_array(ev.column(col), key, kind))
    result.events = ev
    fields = {f: k for f, k in (getattr(result, "id_fields", None) or {}).items()}
    if fields and result.quarantine.num_rows:
        q = result.quarantine
        raw = q.column("raw").to_pylist()
        out = []
        for text in raw:
            try:
                rec = json.loads(text)
            except (TypeError, ValueError):
                out.append(text)
                continue
            if isinstance(rec, dict):
                for f, kind in fields.items():
                    if f in rec and rec[f] not in (None, ""):
                        rec[f] = pseudonymize_id(rec[f] if kind != "user" else _user_text(rec[f]), key, kind)
                if "_text" in rec:  # an unparsable line: the ids cannot be located, so the text is withheld
                    rec["_text"] = "[withheld: unparsable line, may hold ids]"
                out.append(json.dumps(rec, ensure_ascii=False, default=str))
            else:
                out.append(text)
        i = q.schema.get_field_index("raw")
        result.quarantine = q.set_column(i, q.schema.field(i), pa.array(out, type=pa.string()))
    result.pseudonymized = True
    return result


def _user_text(value) -> str:
    """The raw id as the adapters store it (UCI's `17850.0` -> `17850`)."""
    s = str(value).strip()
    return s[:-2] if s.endswith(".0") and s[:-2].isdigit() else s
