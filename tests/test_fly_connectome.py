"""The compiled connectome reproduces the published network's sizes; specs are validated; the lattice is right."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from raywave.errors import RaywaveError
from raywave.fly import connectome, hexlattice, source


def test_published_sizes(fly_connectome):
    s = fly_connectome.summary()
    assert s == {
        "columns": 721, "cell_types": 65, "neurons": 45_669, "edges": 1_513_231, "edge_types": 604,
        "count_groups": 2_355, "free_parameters": 734, "fixed_parameters": 2_959, "input_types": 8,
        "output_types": 34,
    }  # fmt: skip
    c = fly_connectome
    # Lawf1/Lawf2 live on the (3, 2) sub-lattice: 123 cells each; every other type has a cell per column
    counts = np.bincount(c.node_type)
    assert sorted(set(counts.tolist())) == [123, 721]
    assert [c.types[i] for i in np.flatnonzero(counts == 123)] == ["Lawf1", "Lawf2"]
    assert "Lawf1" in c.types and not any(
        c.types[s] == "Lawf1" and c.types[t] == "Lawf1" for s, t in zip(c.pair_src, c.pair_tar, strict=True)
    )
    # every edge connects its group's types at its group's offset
    g = c.edge_group
    assert (c.node_type[c.edge_src] == c.pair_src[c.group_pair[g]]).all()
    assert (c.node_type[c.edge_tar] == c.pair_tar[c.group_pair[g]]).all()
    assert (c.node_u[c.edge_tar] - c.node_u[c.edge_src] == c.group_du[g]).all()
    assert (c.node_v[c.edge_tar] - c.node_v[c.edge_src] == c.group_dv[g]).all()
    assert c.central_node("T4c") in c.nodes_of("T4c")


def test_provenance_recorded(fly_connectome):
    prov = fly_connectome.provenance
    assert prov["wheel_sha256"] == source.WHEEL_SHA256 and "MIT" in prov["licence"]
    spec = source.fetch_spec()
    assert hashlib.sha256(spec.read_bytes()).hexdigest() == prov["spec_sha256"]
    assert spec.stat().st_size == source.SPEC_BYTES


def test_corrupt_wheel_rejected(tmp_path):
    bad = tmp_path / source.WHEEL
    bad.write_bytes(b"not a wheel")
    with pytest.raises(RaywaveError, match="sha256"):
        source.fetch_spec(cache=tmp_path / "cache", wheel=bad)
    assert not (tmp_path / "cache" / "flyvis-1.2.0" / source.SPEC_NAME).exists()


def _spec(offsets: list) -> dict:
    return {
        "nodes": [{"name": "A", "pattern": ["stride", [1, 1]]}, {"name": "B", "pattern": ["stride", [1, 1]]}],
        "edges": [{"src": "A", "tar": "B", "alpha": 1, "offsets": offsets}],
        "input_units": ["A"], "output_units": ["B"],
    }  # fmt: skip


def test_hull_filling_and_boundaries():
    # a diamond of offsets: its interior lattice points get n_syn 1, reported ones keep theirs
    diamond = [[[-2, 0], 5.0], [[2, 0], 4.0], [[0, 2], 3.0], [[0, -2], 2.0]]
    pts = {tuple(o[0]): o[1] for o in connectome.fill_hull(diamond)}
    assert len(pts) == 13 and pts[(-2, 0)] == 5.0 and pts[(0, 0)] == 1 and pts[(1, -1)] == 1
    # a triangle: strictly interior points are filled, nothing outside the hull is added (points on the hull's
    # edges follow matplotlib's point-in-polygon convention, as in the published build)
    pts = {tuple(o[0]) for o in connectome.fill_hull([[[0, 0], 5.0], [[4, 0], 4.0], [[0, 4], 3.0]])}
    assert {(1, 1), (1, 2), (2, 1)} <= pts
    assert all(u >= 0 and v >= 0 and u + v <= 4 for u, v in pts)
    c = connectome.compile_spec(_spec([[[1, 0], 2.0]]), extent=2)
    # a shift by (1, 0) exists for every source whose target column lies inside the hexagon of radius 2
    u, v = hexlattice.columns(2)
    inside = (np.abs(u + 1) <= 2) & (np.abs(u + 1 + v) <= 2)
    assert c.n_edges == inside.sum() == 19 - 5
    assert c.summary()["free_parameters"] == 2 * 2 + 1


def test_user_spec_loader(tmp_path):
    good = tmp_path / "spec.json"
    good.write_text(json.dumps(_spec([[[0, 0], 3.0]])))
    c = connectome.load(good, extent=3)
    assert c.n_nodes == 2 * hexlattice.n_columns(3) and c.provenance["source"] == str(good)
    cases = {
        "missing.json": None,
        "bad.json": "{not json",
        "nokeys.json": json.dumps({"nodes": []}),
        "badtype.json": json.dumps({**_spec([[[0, 0], 3.0]]), "output_units": ["Z"]}),
        "badsign.json": json.dumps({**_spec([[[0, 0], 3.0]]), "edges": [
            {"src": "A", "tar": "B", "alpha": 2, "offsets": [[[0, 0], 1]]}]}),
    }  # fmt: skip
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(RaywaveError) as err:
            connectome.load(tmp_path / name)
        assert "\n" not in str(err.value) and name in str(err.value)


def test_lattice_symmetries():
    assert hexlattice.n_columns(15) == len(hexlattice.columns()[0]) == 721
    ident = np.arange(721)
    p = ident
    for _ in range(6):
        p = p[hexlattice.permutation(1)]
    assert (p == ident).all()  # six 60° rotations are the identity
    assert (hexlattice.permutation(1) == ident).sum() == 1  # the centre stays, every other column moves
    x = hexlattice.positions()
    for n_rot in range(6):
        for axis in range(4):
            perm, q = hexlattice.permutation(n_rot, axis), hexlattice.vector_matrix(n_rot, axis)
            assert sorted(perm) == list(ident)
            np.testing.assert_allclose(q @ q.T, np.eye(2), atol=1e-12)
            # the position field transformed is the position field: the permutation and matrix agree
            np.testing.assert_allclose(x[perm] @ q.T, x, atol=1e-9)
    assert np.degrees(np.arctan2(*hexlattice.vector_matrix(1)[::-1, 0])) == pytest.approx(60)
    for axis in (1, 2, 3):
        p = hexlattice.permutation(0, axis)
        assert (p[p] == ident).all()
