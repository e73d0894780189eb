"""Run records: schema and types, derived summary values, durable folders, machine info."""

from __future__ import annotations

import json
import math
import tomllib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stalesgd.machine import LIBRARIES, MACHINE_KEYS, git_state, machine_info
from stalesgd.records import (
    EVALS_SCHEMA,
    RUNS_SCHEMA,
    UPDATES_SCHEMA,
    RecordError,
    ResultsFolder,
    RunRecord,
    evals_table,
    load_results,
    read_tables,
    runs_table,
    summarize,
    updates_table,
)


def make_record(n: int = 40, workers: int = 2, seed: int = 0, n_dropped: int = 3,
                losses: list[float] | None = None) -> RunRecord:
    """A plausible record: n applied updates plus n_dropped dropped gradients."""
    rng = np.random.default_rng(seed)
    m = n + n_dropped
    t_read = np.sort(rng.uniform(0, 1, m))
    dropped = np.zeros(m, bool)
    dropped[rng.choice(m, n_dropped, replace=False)] = True
    k = np.full(m, -1)
    k[~dropped] = np.arange(n)
    losses = losses if losses is not None else list(np.linspace(0.7, 0.2, 6))
    ne = len(losses)
    return RunRecord(
        summary={"peak_param_bytes": 4096, "failed_publishes": int(rng.integers(0, 9))},
        updates={"k": k, "worker": rng.integers(0, workers, m), "t_read": t_read,
                 "t_apply": t_read + 0.01, "tau": rng.integers(0, 4, m),
                 "eta": np.full(m, 0.05), "attempts": rng.integers(1, 3, m), "dropped": dropped},
        evals={"t": np.linspace(0, 1, ne), "k": np.linspace(0, n, ne).astype(int),
               "loss": np.array(losses), "accuracy": np.linspace(0.5, 0.9, ne),
               "active_workers": np.full(ne, workers)},
    )


def test_tables_have_the_contract_types():
    rec = make_record()
    up = updates_table("r0", rec.updates)
    ev = evals_table("r0", rec.evals)
    assert up.schema.equals(UPDATES_SCHEMA) and ev.schema.equals(EVALS_SCHEMA)
    assert up.num_rows == 43 and set(up["run_id"].to_pylist()) == {"r0"}
    assert up["dropped"].to_pylist() == rec.updates["dropped"].tolist()


def test_optional_columns_default():
    rec = make_record()
    for key in ("attempts", "dropped"):
        del rec.updates[key]
    del rec.evals["accuracy"]
    up = updates_table("r0", rec.updates)
    ev = evals_table("r0", rec.evals)
    assert up["attempts"].to_pylist() == [1] * up.num_rows
    assert not any(up["dropped"].to_pylist())
    assert all(math.isnan(a) for a in ev["accuracy"].to_pylist())


def test_missing_column_and_length_mismatch_are_named():
    rec = make_record()
    del rec.updates["tau"]
    with pytest.raises(RecordError, match="updates column 'tau' is missing.*required: k"):
        updates_table("r0", rec.updates)
    rec = make_record()
    rec.evals["loss"] = rec.evals["loss"][:-1]
    with pytest.raises(RecordError, match="differ in length"):
        evals_table("r0", rec.evals)
    rec = make_record()
    rec.updates["tau"] = rec.updates["tau"] + 0.5  # fractional staleness cannot be int64
    with pytest.raises(RecordError, match="'tau'.*int64"):
        updates_table("r0", rec.updates)


def test_runs_table_types_nulls_and_declared_columns():
    rows = [{"run_id": "a", "workers": np.int64(2), "updates_to_target": math.nan,
             "lr": 0.1, "converged": np.bool_(True), "cores": 2,
             "problem.options.hidden": [8, 8]},
            {"run_id": "b", "workers": 4, "updates_to_target": 17, "cores": 3.0,
             "stop_reason": "updates"}]
    t = runs_table(rows)
    assert t.schema.names[: len(RUNS_SCHEMA)] == RUNS_SCHEMA.names
    for fld in RUNS_SCHEMA:
        assert t.schema.field(fld.name).type == fld.type
    assert t["updates_to_target"].to_pylist() == [None, 17]
    assert t["peak_rss_bytes"].to_pylist() == [None, None]
    assert all(math.isnan(x) for x in t["target_loss"].to_pylist())
    # declared optional columns: only those given, in declared order, with declared types
    assert t.schema.names[len(RUNS_SCHEMA):] == ["stop_reason", "cores",
                                                  "problem.options.hidden"]
    assert t["cores"].type == pa.int64() and t["cores"].to_pylist() == [2, 3]
    assert t["stop_reason"].to_pylist() == [None, "updates"]
    # swept keys keep their dotted names; lists as JSON text
    assert json.loads(t["problem.options.hidden"][0].as_py()) == [8, 8]


def test_runs_table_refuses_undeclared_and_mistyped_columns():
    with pytest.raises(RecordError, match="'mystery' is not declared"):
        runs_table([{"run_id": "a", "mystery": 1}])
    with pytest.raises(RecordError, match="'cores'.*int64"):
        runs_table([{"run_id": "a", "cores": 2.5}])
    with pytest.raises(RecordError, match="'seed'.*int64"):
        runs_table([{"run_id": "a", "seed": 2**64}])


def test_every_declared_column_is_documented_and_typed():
    from stalesgd.records import COLUMNS

    for table, cols in COLUMNS.items():
        names = [c.name for c in cols]
        assert len(set(names)) == len(names), table
        for c in cols:
            assert c.doc.strip() and c.type in ("string", "int64", "int32", "float64", "bool")


def test_summarize_derives_values_from_the_logs():
    losses = [0.7, 0.5, 0.44, 0.46, 0.3, 0.25]
    rec = make_record(n=50, n_dropped=4, losses=losses)
    s = summarize(rec, target_loss=0.45)
    assert s["updates"] == 50  # dropped gradients are not applied updates
    expected_seconds = max(rec.updates["t_apply"].max(), rec.evals["t"].max())
    assert s["seconds"] == pytest.approx(expected_seconds)
    assert s["updates_per_s"] == pytest.approx(50 / expected_seconds)
    first = losses.index(0.44)
    assert s["time_to_target"] == pytest.approx(rec.evals["t"][first])
    assert s["updates_to_target"] == rec.evals["k"][first]
    assert s["final_loss"] == 0.25
    assert s["converged"] and not s["diverged"] and not s["interrupted"]
    assert s["peak_param_bytes"] == 4096 and s["peak_rss_bytes"] is None
    # not reached
    s = summarize(rec, target_loss=0.1)
    assert math.isnan(s["time_to_target"]) and s["updates_to_target"] is None
    assert not s["converged"]


def test_summarize_flags_divergence_and_keeps_engine_values():
    rec = make_record(losses=[0.7, 3.0, 1e200, math.inf, math.nan])
    s = summarize(rec, target_loss=0.5)
    assert s["diverged"] and not s["converged"] and math.isnan(s["final_loss"])
    rec.summary.update(updates=999, diverged=False)
    s = summarize(rec)
    assert s["updates"] == 999 and s["diverged"] is False


def _finish(folder, run_id, rec, **extra):
    s = summarize(rec, 0.45)
    s.update(run_id=run_id, engine="fake", algorithm="lock", workers=2, **extra)
    folder.write_run(s, rec)
    return s


def test_folder_round_trip_preserves_types(tmp_path):
    folder = ResultsFolder.create("demo", tmp_path, config_toml='name = "demo"\n',
                                  machine={"cpu_model": "x"})
    assert folder.path.parent == tmp_path and folder.path.name.startswith("demo-")
    recs = {f"r{i:04d}": make_record(seed=i, n=20 + i) for i in range(3)}
    with folder:
        for rid, rec in recs.items():
            i = int(rid[1:])
            _finish(folder, rid, rec, **{"problem.options.scale": i if i else 1.5})
    assert not (folder.path / "parts").exists()
    for kind, schema in (("updates", UPDATES_SCHEMA), ("evals", EVALS_SCHEMA)):
        assert pq.read_schema(folder.path / f"{kind}.parquet").equals(schema)
    runs_schema = pq.read_schema(folder.path / "runs.parquet")
    for fld in RUNS_SCHEMA:
        assert runs_schema.field(fld.name).type == fld.type
    res = load_results(folder.path)
    assert list(res.runs["run_id"]) == list(recs)
    assert res.config == {"name": "demo"} and res.machine == {"cpu_model": "x"}
    assert list(res.runs["updates"]) == [20, 21, 22]
    assert len(res.updates) == sum(len(r.updates["k"]) for r in recs.values())
    assert str(res.updates["worker"].dtype) == "int32" and res.updates["dropped"].dtype == bool
    # swept values of int and float promoted to float
    assert res.runs["problem.options.scale"].tolist() == [1.5, 1.0, 2.0]
    got = res.updates[res.updates.run_id == "r0001"]["tau"].to_numpy()
    assert np.array_equal(got, recs["r0001"].updates["tau"])


def test_unmerged_folder_is_readable_and_merge_is_idempotent(tmp_path):
    folder = ResultsFolder.create("demo", tmp_path)
    _finish(folder, "r0000", make_record(seed=1))
    _finish(folder, "r0001", make_record(seed=2))
    # a run cut off while writing: updates part present, no runs part -> ignored
    pq.write_table(updates_table("r0002", make_record().updates),
                   folder.parts / "r0002.updates.parquet")
    (folder.parts / "r0003.runs.parquet.tmp").write_bytes(b"partial")
    res = load_results(folder.path)
    assert list(res.runs["run_id"]) == ["r0000", "r0001"]
    assert set(res.updates["run_id"]) == {"r0000", "r0001"}
    folder.close()
    folder.close()
    again = load_results(folder.path)
    assert again.runs.equals(res.runs) and again.updates.equals(res.updates)
    # a part that reappears after a merge (crash between merge and cleanup) replaces its row
    folder.parts.mkdir()
    s = _finish(folder, "r0001", make_record(seed=5, n=7, n_dropped=0))
    tables = read_tables(folder.path)
    assert tables["runs"].num_rows == 2
    assert tables["updates"].filter(pa.compute.equal(tables["updates"]["run_id"], "r0001")
                                    ).num_rows == s["updates"] == 7


def test_closing_a_one_run_folder_keeps_exactly_the_merged_tables(tmp_path):
    """One run and no merged table: close copies the parts; a later run is merged in."""
    folder = ResultsFolder.create("one", tmp_path)
    _finish(folder, "r0000", make_record(seed=3))
    before = read_tables(folder.path)
    folder.close()
    assert not folder.parts.exists()
    after = read_tables(folder.path)
    for kind in before:
        assert after[kind].equals(before[kind]), kind
        assert pq.read_table(folder.path / f"{kind}.parquet").equals(before[kind])
    folder.parts.mkdir()
    _finish(folder, "r0001", make_record(seed=4, n=5, n_dropped=0))
    folder.close()
    res = load_results(folder.path)
    assert list(res.runs["run_id"]) == ["r0000", "r0001"]
    assert (res.updates["run_id"] == "r0001").sum() == 5


def test_empty_folder_reads_as_empty_tables(tmp_path):
    folder = ResultsFolder.create("empty", tmp_path)
    folder.close()
    res = load_results(folder.path)
    assert len(res.runs) == 0 and list(res.updates.columns) == UPDATES_SCHEMA.names
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "nope")


def test_folder_names_do_not_collide(tmp_path):
    a = ResultsFolder.create("same", tmp_path)
    b = ResultsFolder.create("same", tmp_path)
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir()


def test_bad_run_id_is_rejected(tmp_path):
    folder = ResultsFolder.create("x", tmp_path)
    with pytest.raises(RecordError, match="run_id"):
        folder.write_run({"run_id": "../evil"}, make_record())


def test_machine_info_has_the_documented_keys_and_is_json():
    info = machine_info()
    assert set(info) == set(MACHINE_KEYS)
    assert set(info["libraries"]) == set(LIBRARIES)
    import numpy
    import pyarrow

    assert info["libraries"]["numpy"] == numpy.__version__
    assert info["libraries"]["pyarrow"] == pyarrow.__version__
    assert isinstance(info["logical_cores"], int) and info["logical_cores"] >= 1
    assert info["memory_bytes"] is None or info["memory_bytes"] > 0
    text = json.dumps(info)
    import os
    from pathlib import Path

    home = str(Path.home())
    assert home == "/" or home not in text  # no user paths
    assert os.getcwd() not in text or os.getcwd() == "/"


def test_git_state_outside_a_checkout_is_none(tmp_path):
    pkg = tmp_path / "stalesgd"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    assert git_state(pkg) == (None, None)


def test_config_written_is_the_resolved_toml(tmp_path):
    from stalesgd.experiment import default_experiment, loads_experiment, to_toml

    exp = default_experiment()
    folder = ResultsFolder.create(exp.name, tmp_path, config_toml=to_toml(exp),
                                  machine=machine_info())
    folder.close()
    text = (folder.path / "config.toml").read_text()
    assert loads_experiment(text) == exp
    assert tomllib.loads(text)["name"] == "default"
    assert set(json.loads((folder.path / "machine.json").read_text())) == set(MACHINE_KEYS)


# ---------------------------------------------------------------------------------------------
# The update log: exact counts of every update, the kept rows in chunks
# ---------------------------------------------------------------------------------------------


def _rows(k0: int, n: int, seed: int = 0, drop_every: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = np.arange(k0, k0 + n)
    dropped = (k % drop_every == 0) if drop_every else np.zeros(n, bool)
    return {"k": np.where(dropped, -1, k), "worker": k % 3, "t_read": k * 1e-3,
            "t_apply": k * 1e-3 + 5e-4, "tau": rng.integers(0, 9, n),
            "eta": np.where(rng.random(n) < 0.1, 0.0, 0.05), "dropped": dropped}


def test_update_log_counts_every_update_and_keeps_every_nth_row(tmp_path):
    from stalesgd.records import UpdateLog

    chunks = [_rows(i * 1000, 1000, seed=i, drop_every=17) for i in range(5)]
    full = {c: np.concatenate([ch[c] for ch in chunks]) for c in chunks[0]}
    applied = ~full["dropped"]
    for rows, every in (("all", 1), ("every:7", 7), ("none", 0)):
        log = UpdateLog(rows, folder=tmp_path, run_id=f"r{every}", chunk_rows=1500)
        for ch in chunks:
            log.add(ch)
        stats = log.close()
        assert stats.applied == applied.sum() and stats.dropped == (~applied).sum()
        assert np.array_equal(stats.tau_counts, np.bincount(full["tau"][applied]))
        assert stats.zero_steps == int(np.sum(full["eta"][applied] == 0.0))
        assert stats.mean_tau == pytest.approx(full["tau"][applied].mean())
        assert stats.t_last == full["t_apply"].max()
        if every == 0:
            assert stats.rows_kept == 0 and log.files == [] and len(log["k"]) == 0
            continue
        drop_index = np.cumsum(~applied) - 1
        keep = (applied & (full["k"] % every == 0)) | (~applied & (drop_index % every == 0))
        assert stats.rows_kept == keep.sum()
        for col in ("k", "tau", "eta", "dropped"):
            assert np.array_equal(log[col], full[col][keep]), (rows, col)
        # a chunk file as soon as 1500 rows wait (2 adds of 1000), the rest at close
        assert len(log.files) == {1: 3, 7: 1}[every]


def test_update_log_refuses_bad_rows_and_adding_after_close(tmp_path):
    from stalesgd.records import RecordError, UpdateLog

    log = UpdateLog()
    bad = _rows(0, 10)
    bad["tau"][3] = -1
    with pytest.raises(RecordError, match="'tau' holds -1"):
        log.add(bad)
    with pytest.raises(RecordError, match="'eta' is missing"):
        log.add({k: v for k, v in _rows(0, 3).items() if k != "eta"})
    with pytest.raises(RecordError, match="'colour' is not declared"):
        log.add({**_rows(0, 3), "colour": np.zeros(3)})
    assert log.stats.applied == 0  # nothing of a refused chunk was counted
    log.close()
    with pytest.raises(RecordError, match="closed"):
        log.add(_rows(0, 3))
    with pytest.raises(ValueError, match="every:N"):
        UpdateLog("every:0")


def test_folder_streams_a_long_run_in_chunks_and_merges_them(tmp_path, monkeypatch):
    """A run's rows arrive in many chunk files; the merge writes them row group by row group,
    and the staleness table holds the exact counts even of a sampled run."""
    folder = ResultsFolder.create("long", tmp_path)
    for rid, rows in (("r0000", "all"), ("r0001", "every:10")):
        log = folder.update_log(rid, rows)
        log.chunk_rows = 800
        for i in range(6):
            log.add(_rows(i * 500, 500, seed=i))
        rec = RunRecord(summary={"run_id": rid}, updates=log,
                        evals={"t": np.zeros(1), "k": np.zeros(1, np.int64),
                               "loss": np.ones(1), "active_workers": np.ones(1, np.int32)})
        _finish(folder, rid, rec)
    assert len(list(folder.parts.glob("r0000.updates.*.parquet"))) == 3  # every 1000 rows
    folder.close()
    res = load_results(folder.path)
    per_run = res.updates.groupby("run_id").size().to_dict()
    assert per_run == {"r0000": 3000, "r0001": 300}
    assert list(res.updates[res.updates.run_id == "r0000"]["k"]) == list(range(3000))
    st = res.staleness.set_index(["run_id", "tau"])["count"]
    assert st.loc["r0000"].equals(st.loc["r0001"])  # same rows given: same exact counts
    assert int(st.loc["r0001"].sum()) == 3000
    assert pq.ParquetFile(folder.path / "updates.parquet").num_row_groups == 4  # 3 + 1 chunks


def test_resuming_a_folder_replaces_a_discarded_run(tmp_path):
    folder = ResultsFolder.create("again", tmp_path, config_toml='name = "again"\n')
    _finish(folder, "r0000", make_record(seed=1, n=10, n_dropped=0))
    _finish(folder, "r0001", make_record(seed=2, n=10, n_dropped=0))
    folder.close()
    again = ResultsFolder.open(folder.path)
    assert set(again.completed()) == {"r0000", "r0001"}
    again.discard("r0001")
    _finish(again, "r0001", make_record(seed=3, n=4, n_dropped=0))
    again.close()
    res = load_results(folder.path)
    assert res.runs["run_id"].tolist() == ["r0000", "r0001"]
    assert (res.updates["run_id"] == "r0001").sum() == 4
    with pytest.raises(FileNotFoundError, match="not a results folder"):
        ResultsFolder.open(tmp_path)


def test_old_folders_without_a_staleness_table_get_it_counted(tmp_path):
    folder = ResultsFolder.create("old", tmp_path)
    rec = make_record(seed=4, n=30, n_dropped=2)
    _finish(folder, "r0000", rec)
    folder.close()
    (folder.path / "staleness.parquet").unlink()
    res = load_results(folder.path)
    applied = ~rec.updates["dropped"]
    want = np.bincount(rec.updates["tau"][applied])
    got = res.staleness.set_index("tau")["count"]
    assert all(got.get(t, 0) == c for t, c in enumerate(want))
