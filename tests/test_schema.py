"""The store format's one home (hdrprep.schema): every writer uses its schemas, every reader conforms to them."""

import dataclasses
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hdrprep import build, camera, schema, store, summary
from hdrprep.config import load_preset
from hdrprep.errors import StoreError
from hdrprep.verify import verify


def _schema(path):
    return pq.read_schema(path).remove_metadata()


def test_camera_columns_are_camera_params_fields():
    assert schema.CAMERA_COLUMNS == tuple(f.name for f in dataclasses.fields(camera.CameraParams))
    for table in (schema.INDEX_SCHEMA, schema.CANDIDATES_SCHEMA, schema.WORK_SCHEMA):
        assert set(schema.CAMERA_COLUMNS) <= set(table.names)
    # None-able parameters are nullable columns, the others are required
    assert schema.INDEX_SCHEMA.field("curve_gamma").nullable
    assert not schema.INDEX_SCHEMA.field("exposure").nullable


def test_a_build_writes_the_schemas(smoke_store):
    assert _schema(smoke_store / schema.INDEX_NAME).equals(schema.INDEX_SCHEMA)
    assert _schema(smoke_store / schema.CANDIDATES_NAME).equals(schema.CANDIDATES_SCHEMA)
    st = store.open_store(smoke_store)
    assert st.index.schema.equals(schema.INDEX_SCHEMA) and st.n_pairs > 0
    attrs = json.loads((smoke_store / "zarr.json").read_text())["attributes"][schema.ATTR]
    assert set(attrs) == set(schema.ATTR_KEYS)


def test_an_empty_store_has_every_column(smoke_frames, tmp_path):
    out = tmp_path / "empty.zarr"
    config = load_preset("smoke").override(**{"select.threshold": 1e9})
    report = build.build(smoke_frames, out, config, scheduler="synchronous", progress=False)
    assert report["counts"]["kept"] == 0
    assert _schema(out / schema.INDEX_NAME).equals(schema.INDEX_SCHEMA)
    cand = pq.read_table(out / schema.CANDIDATES_NAME)
    assert cand.schema.remove_metadata().equals(schema.CANDIDATES_SCHEMA)
    assert cand.num_rows == report["counts"]["candidates"] > 0 and not any(cand["kept"].to_pylist())
    assert verify(out) == []
    assert store.open_store(out).n_pairs == 0


def _write(path, table):
    pq.write_table(table, path)


def test_stores_written_before_the_schemas_are_read(smoke_store, tmp_path):
    """Version-1 stores from before explicit schemas: inferred null types, no 'rendered', a bare empty index."""
    old = tmp_path / "old.zarr"
    shutil.copytree(smoke_store, old)
    index = pq.read_table(old / schema.INDEX_NAME)
    inferred = pa.table({name: index[name].to_pylist() for name in index.column_names})  # null-typed columns
    assert any(pa.types.is_null(f.type) for f in inferred.schema)
    _write(old / schema.INDEX_NAME, inferred)
    cand = pq.read_table(old / schema.CANDIDATES_NAME).drop_columns(["rendered"])
    _write(old / schema.CANDIDATES_NAME, cand)
    st = store.open_store(old)
    assert st.index.schema.equals(schema.INDEX_SCHEMA)
    assert st.index.to_pylist() == store.open_store(smoke_store).index.to_pylist()
    assert st.candidates()["rendered"].null_count == cand.num_rows
    assert summary.summarize(old)["rendered"] is None
    assert verify(old) == []

    # an empty store as they were written: a one-column index, candidates without 'kept'
    empty = tmp_path / "empty.zarr"
    shutil.copytree(old, empty)
    _write(empty / schema.INDEX_NAME, pa.table({"pair": pa.array([], pa.int64())}))
    _write(empty / schema.CANDIDATES_NAME, cand.slice(0, 0))
    for name in ("ldr", "hdr"):
        shutil.rmtree(empty / name)
    store.create_arrays(empty, 0, 128, 4)
    meta = json.loads((empty / "zarr.json").read_text())
    meta["attributes"][schema.ATTR] = {**store.read_attrs(old), "counts": {**store.read_attrs(old)["counts"],
                                                                             "kept": 0}}
    (empty / "zarr.json").write_text(json.dumps(meta))
    st = store.open_store(empty)
    assert st.n_pairs == 0 and st.index.schema.equals(schema.INDEX_SCHEMA)
    assert st.candidates().schema.equals(schema.CANDIDATES_SCHEMA)


def test_a_missing_column_is_damage(smoke_store, tmp_path):
    copy = tmp_path / "s.zarr"
    shutil.copytree(smoke_store, copy)
    _write(copy / schema.INDEX_NAME, pq.read_table(copy / schema.INDEX_NAME).drop_columns(["exposure"]))
    with pytest.raises(StoreError, match="columns exposure are missing"):
        store.open_store(copy)
    (problem,) = [p for p in verify(copy) if p.where == schema.INDEX_NAME]
    assert "exposure" in problem.what and "missing" in problem.what


def test_conform_orders_casts_and_drops():
    fields = [schema.INDEX_SCHEMA.field(n) for n in ("pair", "curve_gamma")]
    table = pa.table({"curve_gamma": pa.nulls(2), "extra": [1, 2], "pair": np.arange(2)})
    out = schema.conform(table, pa.schema(fields))
    assert out.column_names == ["pair", "curve_gamma"] and out.schema.field("curve_gamma").type == pa.float64()
