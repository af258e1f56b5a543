"""Compile a connectome spec (the published JSON format) into the hex-lattice network's node and edge tables.

Each cell type is a population on the column lattice (stride pattern), each type pair a convolution: a source at
(u, v) reaches the target-type node at (u + du, v + dv) when it exists, with the offset's synapse count. Offsets of a
type pair with three or more entries have their convex hull filled (lattice points inside the hull that the data
did not report get `n_syn_fill` synapses), exactly as in the published network.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raywave.errors import RaywaveError
from raywave.fly import hexlattice

ROLES = ("input", "intermediate", "output")
MAX_EXTENT = 64  # largest lattice radius a spec's strides are checked against


@dataclass(frozen=True)
class Connectome:
    """Node and edge tables of a compiled network (numpy, no torch)."""

    types: list[str]  # cell types in spec order
    roles: list[str]  # "input" | "intermediate" | "output" per type
    input_types: list[str]
    output_types: list[str]
    extent: int
    node_type: np.ndarray  # (N,) type index
    node_u: np.ndarray
    node_v: np.ndarray
    edge_src: np.ndarray  # (E,) node indices
    edge_tar: np.ndarray
    edge_type: np.ndarray  # (E,) index into pair_src/pair_tar (instantiated type pairs)
    edge_group: np.ndarray  # (E,) index into group_* ((type pair, du, dv) groups)
    pair_src: np.ndarray  # (P,) source type index per instantiated type pair
    pair_tar: np.ndarray
    pair_sign: np.ndarray  # (P,) ±1
    group_pair: np.ndarray  # (G,) type-pair index
    group_du: np.ndarray
    group_dv: np.ndarray
    group_n_syn: np.ndarray  # (G,) mean synapse count of the group
    provenance: dict = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return len(self.node_type)

    @property
    def n_edges(self) -> int:
        return len(self.edge_src)

    @property
    def edge_n_syn(self) -> np.ndarray:
        return self.group_n_syn[self.edge_group]

    @property
    def edge_sign(self) -> np.ndarray:
        return self.pair_sign[self.edge_type]

    def type_index(self, name: str) -> int:
        try:
            return self.types.index(name)
        except ValueError:
            raise RaywaveError(f"unknown cell type {name!r}; known types: {', '.join(self.types)}") from None

    def nodes_of(self, name: str) -> np.ndarray:
        """Node indices of a cell type, in column order."""
        return np.flatnonzero(self.node_type == self.type_index(name))

    def central_node(self, name: str) -> int:
        """Node index of a type's cell in the central column (u = v = 0)."""
        idx = self.nodes_of(name)
        hit = idx[(self.node_u[idx] == 0) & (self.node_v[idx] == 0)]
        return int(hit[0])

    @property
    def central_nodes(self) -> np.ndarray:
        """Node index of the central cell of every type, in type order."""
        return np.array([self.central_node(t) for t in self.types])

    def summary(self) -> dict:
        """The sizes a correct build reproduces (see docs): columns, types, neurons, edges, parameters."""
        n_types, n_pairs, n_groups = len(self.types), len(self.pair_src), len(self.group_pair)
        return {
            "columns": hexlattice.n_columns(self.extent),
            "cell_types": n_types,
            "neurons": self.n_nodes,
            "edges": self.n_edges,
            "edge_types": n_pairs,
            "count_groups": n_groups,
            "free_parameters": 2 * n_types + n_pairs,
            "fixed_parameters": n_pairs + n_groups,
            "input_types": len(self.input_types),
            "output_types": len(self.output_types),
        }


def _fail(source: str, what: str) -> RaywaveError:
    return RaywaveError(
        f"{source}: {what}; the file must be a connectome spec in the published flyvis JSON format "
        "(nodes, edges, input_units, output_units)"
    )


def load_spec(path: str | Path) -> dict:
    """Read and validate a connectome spec JSON (the published format); one clear error when it is not."""
    path = Path(path)
    if not path.is_file():
        raise RaywaveError(
            f"connectome file {path} does not exist; pass a spec JSON in the flyvis format, or omit "
            "--connectome to use the published one"
        )
    try:
        spec = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise _fail(str(path), f"not valid UTF-8 JSON ({type(exc).__name__})") from None
    except OSError as exc:
        raise RaywaveError(f"cannot read connectome file {path} ({exc.strerror or exc})") from None
    validate_spec(spec, str(path))
    return spec


def _check_pattern(source: str, name: str, pattern: object) -> None:
    """`["stride", [su, sv]]` with positive integer strides, `["tile", n]` with n >= 1, or `["single", ...]`."""
    try:
        kind, args = pattern  # type: ignore[misc]
    except (TypeError, ValueError):
        raise _fail(source, f"node {name!r} needs 'pattern' [kind, args]") from None
    if kind not in ("stride", "tile", "single"):
        raise _fail(source, f"node {name!r} has unknown pattern {kind!r} (stride, tile or single)")
    values = args if kind == "stride" else [args] if kind == "tile" else [1]
    ok = isinstance(values, list) and len(values) == (2 if kind == "stride" else 1)
    ok = ok and all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 2 * MAX_EXTENT + 1 for x in values)
    if not ok:
        what = "[su, sv], two integers >= 1" if kind == "stride" else "an integer >= 1"
        raise _fail(source, f"node {name!r} has pattern {kind} {args!r}; its argument must be {what}")


def _check_offsets(source: str, src: str, tar: str, offsets: object) -> None:
    try:
        ok = isinstance(offsets, list) and len(offsets) > 0
        ok = ok and all(
            len(o[0]) == 2 and all(isinstance(d, int) and not isinstance(d, bool) for d in o[0])
            and math.isfinite(float(o[1])) and float(o[1]) > 0 for o in offsets
        )  # fmt: skip
    except (TypeError, ValueError, IndexError):
        ok = False
    if not ok:
        raise _fail(source, f"edge {src} -> {tar} needs offsets [[[du, dv], n_syn > 0], ...] with integer du, dv")


def validate_spec(spec: object, source: str = "connectome spec") -> None:
    """Every structural requirement of the compiler, checked up front so a bad spec is one line, not a crash."""
    if not isinstance(spec, dict):
        raise _fail(source, "top level is not an object")
    for key in ("nodes", "edges", "input_units", "output_units"):
        if key not in spec:
            raise _fail(source, f"missing {key!r}")
        if not isinstance(spec[key], list) or not spec[key]:
            raise _fail(source, f"{key!r} must be a non-empty list (got {type(spec[key]).__name__} "
                                f"{str(spec[key])[:40]})")  # fmt: skip
    names = []
    for i, n in enumerate(spec["nodes"]):
        if not isinstance(n, dict) or not isinstance(n.get("name"), str) or not n["name"] or "pattern" not in n:
            raise _fail(source, f"node {i} needs a 'name' (text) and a 'pattern' [kind, args]")
        _check_pattern(source, n["name"], n["pattern"])
        names.append(n["name"])
    if len(set(names)) != len(names):
        raise _fail(source, "cell type names repeat")
    known = set(names)
    for i, e in enumerate(spec["edges"]):
        try:
            src, tar, alpha, offsets = e["src"], e["tar"], e["alpha"], e["offsets"]
        except (KeyError, TypeError):
            raise _fail(source, f"edge {i} needs 'src', 'tar', 'alpha' and 'offsets'") from None
        if not isinstance(src, str) or not isinstance(tar, str) or src not in known or tar not in known:
            raise _fail(source, f"edge {i} ({src} -> {tar}) names an unknown cell type")
        if alpha not in (1, -1) or isinstance(alpha, bool):
            raise _fail(source, f"edge {src} -> {tar} has sign {alpha!r}, expected 1 or -1")
        _check_offsets(source, src, tar, offsets)
    for key in ("input_units", "output_units"):
        unknown = [t for t in spec[key] if not isinstance(t, str) or t not in known]
        if unknown:
            raise _fail(source, f"{key} names unknown cell types {unknown}")


def fill_hull(offsets: list, n_syn_fill: float = 1.0) -> list:
    """Offsets plus every lattice point inside the convex hull of the reported ones (n_syn = n_syn_fill).

    Uses the published network's construction (qhull with joggle, matplotlib's point-in-polygon) so that
    the compiled edge count matches it to the edge.
    """
    import matplotlib.path as mpath
    import scipy.spatial as ss

    pts = np.array([o[0] for o in offsets])
    known = set(map(tuple, pts.tolist()))
    hull = ss.ConvexHull((1 + 1e-6) * pts, False, "QJ")
    grid = np.mgrid[pts[:, 0].min() : pts[:, 0].max() + 1, pts[:, 1].min() : pts[:, 1].max() + 1]
    grid = grid.reshape(2, -1).T
    inside = grid[mpath.Path(pts[hull.vertices]).contains_points(grid)]
    return list(offsets) + [[[int(u), int(v)], n_syn_fill] for u, v in inside.tolist() if (u, v) not in known]


def _pattern_stride(pattern: list, extent: int) -> tuple[int, tuple[int, int]]:
    kind, args = pattern
    if kind == "stride":
        return extent, (int(args[0]), int(args[1]))
    if kind == "tile":
        return extent, (int(args), int(args))
    return 0, (1, 1)  # single


def compile_spec(
    spec: dict, extent: int = hexlattice.EXTENT, n_syn_fill: float = 1.0, provenance: dict | None = None
) -> Connectome:
    """Build the node and edge tables of the network described by `spec` on a lattice of radius `extent`."""
    validate_spec(spec)
    types = [n["name"] for n in spec["nodes"]]
    tix = {t: i for i, t in enumerate(types)}
    inputs, outputs = list(spec["input_units"]), list(spec["output_units"])
    roles = ["input" if t in inputs else "output" if t in outputs else "intermediate" for t in types]

    size = 2 * extent + 1
    node_type, node_u, node_v, lookup = [], [], [], []
    start = 0
    for i, n in enumerate(spec["nodes"]):
        ext, stride = _pattern_stride(n["pattern"], extent)
        u, v = hexlattice.columns(ext, stride)
        grid = np.full((size, size), -1, dtype=np.int64)
        grid[u + extent, v + extent] = start + np.arange(len(u))
        lookup.append(grid)
        node_type.append(np.full(len(u), i))
        node_u.append(u)
        node_v.append(v)
        start += len(u)
    node_u_all, node_v_all = np.concatenate(node_u), np.concatenate(node_v)

    src_l, tar_l, group_l = [], [], []
    pair_src, pair_tar, pair_sign = [], [], []
    group_pair, group_du, group_dv, group_n = [], [], [], []
    for e in spec["edges"]:
        offsets = fill_hull(e["offsets"], n_syn_fill) if n_syn_fill > 0 and len(e["offsets"]) >= 3 else e["offsets"]
        s, t = tix[e["src"]], tix[e["tar"]]
        su, sv = node_u[s], node_v[s]
        src_idx = lookup[s][su + extent, sv + extent]
        by_offset: dict[tuple[int, int], list[float]] = {}
        for (du, dv), n_syn in offsets:
            by_offset.setdefault((int(du), int(dv)), []).append(float(n_syn))
        pair = len(pair_src)
        made = False
        for (du, dv), counts in by_offset.items():
            tu, tv = su + du, sv + dv
            ok = (np.abs(tu) <= extent) & (np.abs(tv) <= extent)
            tar_idx = np.full(len(su), -1)
            tar_idx[ok] = lookup[t][tu[ok] + extent, tv[ok] + extent]
            hit = tar_idx >= 0
            if not hit.any():
                continue
            made = True
            g = len(group_pair)
            group_pair.append(pair)
            group_du.append(du)
            group_dv.append(dv)
            group_n.append(float(np.mean(counts)))
            for _ in counts:  # a repeated offset in the data is a repeated edge, as in the published build
                src_l.append(src_idx[hit])
                tar_l.append(tar_idx[hit])
                group_l.append(np.full(int(hit.sum()), g))
        if made:
            pair_src.append(s)
            pair_tar.append(t)
            pair_sign.append(float(e["alpha"]))
    if not src_l:
        raise _fail("connectome spec", f"no edge reaches a target cell on a lattice of extent {extent}")
    edge_group = np.concatenate(group_l).astype(np.int64)
    group_pair_arr = np.array(group_pair, dtype=np.int64)
    return Connectome(
        types=types,
        roles=roles,
        input_types=inputs,
        output_types=outputs,
        extent=extent,
        node_type=np.concatenate(node_type).astype(np.int64),
        node_u=node_u_all,
        node_v=node_v_all,
        edge_src=np.concatenate(src_l).astype(np.int64),
        edge_tar=np.concatenate(tar_l).astype(np.int64),
        edge_type=group_pair_arr[edge_group],
        edge_group=edge_group,
        pair_src=np.array(pair_src, dtype=np.int64),
        pair_tar=np.array(pair_tar, dtype=np.int64),
        pair_sign=np.array(pair_sign, dtype=np.float32),
        group_pair=group_pair_arr,
        group_du=np.array(group_du, dtype=np.int64),
        group_dv=np.array(group_dv, dtype=np.int64),
        group_n_syn=np.array(group_n, dtype=np.float32),
        provenance=provenance or {},
    )


def load(path: str | Path | None = None, extent: int = hexlattice.EXTENT) -> Connectome:
    """The compiled published connectome (fetched from the flyvis wheel and cached), or a user-supplied spec."""
    from raywave.fly import source

    spec_path = Path(path) if path else source.fetch_spec()
    return compile_spec(load_spec(spec_path), extent=extent, provenance=source.provenance(spec_path))
