"""Resuming a sweep in its results folder (``stalesgd run FILE --resume FOLDER``).

The folder's ``config.toml`` must be the resolved experiment being run (the same runs, so
the same run ids).  A run already complete is kept and skipped; a run cut short, whether
kept with ``interrupted = true`` or never committed, is run again in the same folder.  A data
file that changed since the folder's runs read it is refused (one sweep, one data set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stalesgd.data import file_identity
from stalesgd.experiment import Experiment, ExperimentError, RunSpec, load_experiment
from stalesgd.records import RecordError, ResultsFolder
from stalesgd.validation import OptionError

__all__ = ["check_resumable", "open_for_resume"]

_ALLOWED = "a results folder of the same experiment, written by `stalesgd run`"


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """The dotted keys where two plain nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in list(dict.fromkeys([*a, *b])):
            out += _differences(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        return out
    return [] if a == b else [path or "(everything)"]


def check_resumable(folder: str | Path, exp: Experiment, runs: list[RunSpec],
                    key: str = "resume") -> dict[str, dict[str, Any]]:
    """The runs ``runs`` of ``exp`` already complete in ``folder`` (run id -> runs row).

    Refuses (:class:`~stalesgd.validation.OptionError` naming ``key``) a folder that is not
    a results folder, holds another experiment, or cannot be read.  Writes nothing.
    """
    path = Path(folder)
    text = str(folder)
    if not (path / "config.toml").is_file():
        raise OptionError(key, text, _ALLOWED, "is not a results folder (it has no "
                          "config.toml)")
    try:
        before = load_experiment(path / "config.toml")
    except ExperimentError as exc:
        raise OptionError(key, text, _ALLOWED, f"has a config.toml that cannot be read "
                          f"({exc})") from None
    if before != exp:
        diff = _differences(before.to_dict(), exp.to_dict())
        shown = ", ".join(diff[:5]) + (f" and {len(diff) - 5} more" if len(diff) > 5 else "")
        raise OptionError(key, text, _ALLOWED, f"holds another experiment (its config.toml "
                          f"differs in {shown})")
    try:
        stored = ResultsFolder(path).completed()
    except RecordError as exc:
        raise OptionError(key, text, _ALLOWED, f"cannot be read ({exc})") from None
    planned = {spec.run_id for spec in runs}
    strange = sorted(set(stored) - planned)
    if strange:
        raise OptionError(key, text, _ALLOWED, f"holds runs this experiment does not plan "
                          f"({', '.join(strange[:5])})")
    done = {run_id: row for run_id, row in stored.items() if not row.get("interrupted")}
    _check_same_data(done, key, text)
    return done


def _check_same_data(done: dict[str, dict[str, Any]], key: str, text: str) -> None:
    """Refuse to add runs on a data file that changed since the folder's runs read it (their
    rows record its path and SHA-256): one sweep would mix two data sets."""
    seen: dict[str, str] = {}
    for run_id, row in sorted(done.items()):
        path, digest = row.get("data_file"), row.get("data_sha256")
        if not isinstance(path, str) or not isinstance(digest, str):
            continue
        if path not in seen:
            try:
                seen[path] = file_identity(path)[1]
            except OSError:  # (gone: the data checks before the run say so)
                continue
        if seen[path] != digest:
            raise OptionError(key, text, _ALLOWED, f"holds runs of another version of the "
                              f"data file {path} (run {run_id} read SHA-256 {digest[:12]}…, "
                              f"the file is now {seen[path][:12]}…); put that file back, or "
                              f"run into a new folder")


def open_for_resume(folder: str | Path, done: dict[str, dict[str, Any]]) -> ResultsFolder:
    """The results folder to add runs to, its runs cut short forgotten (they run again)."""
    results = ResultsFolder.open(folder)
    for run_id in results.completed():
        if run_id not in done:
            results.discard(run_id)
    return results
