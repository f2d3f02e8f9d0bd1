"""Opening an MLflow store safely, and the facts every avnbench run records in it.

A store is opened through MLflow's own client. What goes wrong on the way is turned into one line
that says what to do: a file that is not an MLflow SQLite database, a URI scheme MLflow does not
know, a folder that does not exist. A new SQLite store is created (and migrated) by the first
client that touches it; two first runs at once would race on that migration, so store creation and
experiment creation happen under an exclusive lock on ``<db>.lock`` beside the database.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from avnbench import __version__
from avnbench.errors import ConfigError, DataError
from avnbench.jobs import avnbench_commit

DEFAULT_TRACKING_FILE = "mlflow.db"
SQLITE_PREFIX = "sqlite:///"
# The schemes MLflow's tracking client opens (``dialect+driver`` database URIs count by dialect);
# a path without a scheme is a local file store.
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")
# MLflow 3's UI shows an experiment tagged with this kind as classic model development (runs table,
# metrics, charts) instead of inferring a GenAI one (overview, traces) from an untagged experiment.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# MLflow's dataset table holds a digest of at most 36 characters (VARCHAR(36) on SQL stores).
DIGEST_CHARS = 36


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite file in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"{SQLITE_PREFIX}{Path.cwd() / DEFAULT_TRACKING_FILE}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri[len(SQLITE_PREFIX):]) if uri.startswith(SQLITE_PREFIX) else None


def _scheme(uri: str) -> str:
    if "://" not in uri:
        return "" if ":" not in uri.split("/")[0] else uri.split(":")[0]
    return uri.split("://")[0].split("+")[0].lower()


def _quiet_mlflow() -> None:
    # MLflow logs database migrations at INFO on every new store; keep the CLI's output clean.
    import logging

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # noqa: F401  (configures its loggers on import; adjust them afterwards)

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Exclusive across processes for a SQLite store (``flock`` on ``<db>.lock``); no-op for others."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _store_error(uri: str, error: Exception) -> Exception:
    """One line for a store that could not be opened."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    db = sqlite_path(uri)
    if db is not None and ("not a database" in text or "file is encrypted" in text or "malformed" in text):
        return DataError(
            f"{db}: is not an MLflow SQLite store; move it away or pass --tracking-uri with another store"
        )
    if db is not None and "out-of-date database schema" in text:
        return DataError(f"{db}: made by an older MLflow; run 'mlflow db upgrade {uri}' or pass --tracking-uri")
    return ConfigError(f"MLflow store {uri} could not be opened ({text}); check --tracking-uri or MLFLOW_TRACKING_URI")


def _is_race(error: Exception) -> bool:
    # What a concurrent first use looks like from the loser's side: a table or an experiment
    # created by the other process in between, or the database locked by its migration.
    text = str(error).lower()
    return "already exists" in text or "database is locked" in text or type(error).__name__ == "OperationalError"


def _has_sqlite_header(db: Path) -> bool:
    with open(db, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def client_for(uri: str):
    """An ``MlflowClient`` on ``uri``, checked to open (a new SQLite store is created safely).

    Raises ConfigError for an unknown scheme or a store that cannot be reached, DataError for a
    file that is not an MLflow database.
    """
    scheme = _scheme(uri)
    if scheme and scheme not in SUPPORTED_SCHEMES:
        raise ConfigError(
            f"tracking URI {uri!r}: MLflow cannot open scheme {scheme!r}. Supported: "
            f"{', '.join(SUPPORTED_SCHEMES)} (e.g. sqlite:///mlflow.db or http://host:5000)"
        )
    db = sqlite_path(uri)
    if db is not None and not db.parent.is_dir():
        raise ConfigError(f"tracking URI {uri!r}: folder {db.parent} does not exist; create it or pass another --tracking-uri")
    if db is not None and db.is_file() and db.stat().st_size and not _has_sqlite_header(db):
        # refused before the store lock or MLflow touch anything beside it
        raise DataError(f"{db}: is not an MLflow SQLite store; move it away or pass --tracking-uri with another store")
    _quiet_mlflow()
    from mlflow import MlflowClient

    for attempt in (1, 2):
        try:
            with store_lock(uri):
                client = MlflowClient(tracking_uri=uri)
                client.search_experiments(max_results=1)  # creates and migrates a new SQLite store
            return client
        except Exception as e:
            if attempt == 1 and _is_race(e):
                continue
            raise _store_error(uri, e) from e
    raise AssertionError("unreachable")


def artifact_root_for(uri: str) -> str | None:
    """For a SQLite store, artifacts live beside the database file (not in the cwd)."""
    db = sqlite_path(uri)
    return (db.parent / "mlartifacts").resolve().as_uri() if db is not None else None


def ensure_experiment(client, name: str, uri: str, tags: dict[str, str] | None = None) -> str:
    """The id of the experiment named after the dataset, created if needed (safe when two runs race).

    The experiment is tagged ``mlflow.experimentKind = custom_model_development`` (an existing
    one too, unless it has a kind already), so MLflow's UI opens it on the runs table, and with
    ``tags`` (set on an existing one too, e.g. a test experiment's datasets).
    """
    from mlflow.exceptions import MlflowException

    with store_lock(uri):
        for attempt in (1, 2):
            exp = client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    client.restore_experiment(exp.experiment_id)
                if EXPERIMENT_KIND_TAG not in exp.tags:
                    client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
                for key, value in (tags or {}).items():
                    if exp.tags.get(key) != value:
                        client.set_experiment_tag(exp.experiment_id, key, value)
                return exp.experiment_id
            root = artifact_root_for(uri)
            try:
                return client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None,
                                                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **(tags or {})})
            except MlflowException as e:  # another process (on a server store) created it first
                if attempt == 2 or not _is_race(e):
                    raise
    raise AssertionError("unreachable")


def dataset_input(name: str, fingerprint: str, root: Path, synthetic: bool, context: str):
    """An MLflow ``DatasetInput`` for an avnbench dataset folder: its name, digest (the first
    :data:`DIGEST_CHARS` hex digits of the dataset fingerprint, whole in the profile), source (the
    folder, as a local source) and ``mlflow.data.context`` (e.g. ``evaluation``)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(  # the entity MLflow's own local-folder source makes: type "local", {"uri": path}
        name=name,
        digest=fingerprint[:DIGEST_CHARS],
        source_type="local",
        source=json.dumps({"uri": str(root)}),
        profile=json.dumps({"fingerprint_sha256": fingerprint, "synthetic": synthetic}),
    )
    return DatasetInput(dataset=dataset, tags=[InputTag(key="mlflow.data.context", value=context)])


def environment_tags(device: str) -> dict[str, str]:
    """Versions and machine facts recorded on every run."""
    return dict(_environment_tags(device))


@functools.lru_cache(maxsize=4)  # one git call and torch lookup per process, not per child run
def _environment_tags(device: str) -> dict[str, str]:
    tags = {
        "avnbench.version": __version__,
        "device": device,
        "python": platform.python_version(),
        "host.platform": platform.platform(),
    }
    try:
        import torch

        tags["torch.version"] = torch.__version__
        tags["cuda.version"] = str(torch.version.cuda)
        if device == "cuda" and torch.cuda.is_available():
            tags["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        tags["torch.version"] = "not installed"
    commit = avnbench_commit()  # only avnbench's own checkout, never a repository it is installed in
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def flatten_params(prefix: str, value: Any, out: dict[str, str]) -> None:
    """Nested config → ``prefix.key.sub`` string params (lists as JSON)."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten_params(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
