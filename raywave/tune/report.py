"""The sweep report: one self-contained HTML file (figures embedded as base64 PNG), the same as Markdown (figures
beside it as PNG), and every table as CSV. Plain matplotlib, no Ray."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from raywave.io import atomic_path, write_text_atomic
from raywave.tune.analysis import ALL, Analysis

INTRO = {
    "summary": "Final (last validation) and best (lowest validation {metric}) figures per arm and condition over "
               "seeds (trials stopped early enter with their last validation, a pessimistic value for them): "
               "mean, median and interquartile mean (IQM) with 95% intervals by stratified bootstrap over seeds "
               "(Agarwal et al., NeurIPS 2021; strata = conditions in the 'all conditions' rows).",
    "accuracy": "The fraction of validation pixels within 1, 3 and 5 px at the final and the best validation (higher "
                "is better), same method as above.",
    "efficiency": "Training efficiency: the first step (and sample count) at which validation {metric} reached each "
                  "target, median over seeds with a 95% bootstrap interval. Runs that never reached a target within "
                  "their budget are censored (counted as not reached, listed by name); a median or bound that "
                  "depends on them reads 'inf' (censored).",
    "generalisation": "Generalisation efficiency: final validation {metric} against the fraction of training data "
                      "(median and IQM over seeds with 95% bootstrap intervals).",
    "paired": "Paired comparison with the baseline on the same seed and condition: mean difference (arm - "
              "baseline; negative = lower {metric}) with a 95% stratified-bootstrap interval, and the probability "
              "of improvement P(arm better than baseline): the fraction of seeds on which the arm had the lower "
              "{metric} (ties count half), with its interval, and the exact two-sided sign test of the paired "
              "differences. Verdict: 'helped' when the difference's interval lies below 0, the probability's "
              "above 0.5 and the sign test gives p < 0.05 (so at least 6 paired seeds, all better); 'hurt' for "
              "the mirror image; otherwise 'indistinguishable' at these settings.",
    "learning_curves": "Learning curves: validation {metric} at every validation step, median over seeds and the "
                       "95% bootstrap interval of that median (n = seeds still running at that step).",
    "trials": "Every trial of the sweep, with its status.",
}  # fmt: skip


def write_report(a: Analysis, out: str | Path) -> dict[str, Path]:
    """Write report.html, report.md, the figures (PNG) and one CSV per table into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, rows in a.tables.items():
        written[f"{name}.csv"] = write_csv(rows, out / f"{name}.csv")
    figures = make_figures(a)
    for name, png in figures.items():
        with atomic_path(out / f"{name}.png") as tmp:
            tmp.write_bytes(png)
        written[f"{name}.png"] = out / f"{name}.png"
    blocks = build_blocks(a, figures)
    write_text_atomic(out / "report.md", to_markdown(blocks))
    write_text_atomic(out / "report.html", to_html(blocks, title=f"sweep {a.about.get('name')}"))
    written["report.md"], written["report.html"] = out / "report.md", out / "report.html"
    return written


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return path


def fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v).lower()
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return "-"
        if math.isinf(v):
            return "inf (censored)" if v > 0 else "-inf"
        return f"{v:.4g}"
    return str(v)


def _ci(row: dict, key: str, value_key: str | None = None) -> str:
    """`value [lo, hi]` from row[value_key or key] and row[key_lo], row[key_hi]."""
    return f"{fmt(row[value_key or key])} [{fmt(row[key + '_lo'])}, {fmt(row[key + '_hi'])}]"


def display_tables(a: Analysis) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The tables as they are shown: estimates with their intervals in one cell."""
    t = a.tables
    shown: dict[str, tuple[list[str], list[list[str]]]] = {}
    main = (f"final_{a.design.metric}", f"best_{a.design.metric}")
    shown["summary"] = (["arm", "condition", "measure", "n", "stopped early", "mean [95% CI]", "median [95% CI]",
                         "IQM [95% CI]"],
                        [[r["arm"], r["condition"], r["measure"], fmt(r["n"]), fmt(r["stopped_early"]),
                          _ci(r, "mean"), _ci(r, "median"), _ci(r, "iqm")]
                         for r in t["summary"] if r["measure"] in main])  # fmt: skip
    if a.design.extras:
        shown["accuracy"] = (["arm", "condition", "measure", "n", "mean [95% CI]", "IQM [95% CI]"],
                             [[r["arm"], r["condition"], r["measure"], fmt(r["n"]), _ci(r, "mean"), _ci(r, "iqm")]
                              for r in t["summary"] if r["measure"] not in main])  # fmt: skip
    if "efficiency" in t:
        shown["efficiency"] = (["arm", "condition", "target", "reached / n", "steps median [95% CI]",
                                "samples median [95% CI]", "censored trials"],
                               [[r["arm"], r["condition"], fmt(r["target"]), f"{r['reached']} / {r['n']}",
                                 _ci(r, "steps", "steps_median"), _ci(r, "samples", "samples_median"),
                                 r["censored_trials"] or "-"] for r in t["efficiency"]])  # fmt: skip
    if t.get("generalisation"):
        shown["generalisation"] = (["arm", "other settings", "data fraction", "n", "median [95% CI]", "IQM [95% CI]"],
                                   [[r["arm"], r["others"], fmt(r["data_fraction"]), fmt(r["n"]), _ci(r, "median"),
                                     _ci(r, "iqm")] for r in t["generalisation"]])  # fmt: skip
    shown["paired"] = (["arm", "condition", "measure", "pairs", "mean difference [95% CI]",
                        "P(better) [95% CI]", "sign test p", "verdict"],
                       [[r["arm"], r["condition"], r["measure"], fmt(r["pairs"]), _ci(r, "mean_diff"),
                         _ci(r, "p_improvement"), fmt(r["sign_test_p"]), r["verdict"]]
                        for r in t["paired"]])  # fmt: skip
    trial_cols = list(t["trials"][0]) if t["trials"] else []
    shown["trials"] = (trial_cols, [[fmt(r[c]) for c in trial_cols] for r in t["trials"]])
    return shown


METRIC_NAMES = {"val_epe": "EPE", "val_ratio": "MSE / repeat-I2 MSE"}


def metric_name(a: Analysis) -> str:
    return METRIC_NAMES.get(a.design.metric, a.design.metric)


def build_blocks(a: Analysis, figures: dict[str, bytes]) -> list[tuple]:
    ab, metric = a.about, metric_name(a)
    blocks: list[tuple] = [("h1", f"Sweep report: {ab.get('name')}")]
    blocks.append(("h2", "Verdicts"))
    blocks += [("p", s) for s in a.sentences] or [("p", f"No arm could be paired with {a.design.baseline}.")]
    blocks.append(("p", f"Seeds: {len(ab['seeds'])}. With few seeds the intervals are wide: 'indistinguishable' "
                        "means these runs cannot tell the arms apart, not that they are equal."))  # fmt: skip
    shown = display_tables(a)
    for name in ("summary", "accuracy", "paired", "efficiency", "generalisation"):
        if name not in shown:
            continue
        blocks += [("h2", name.replace("_", " ").capitalize()), ("p", INTRO[name].format(metric=metric))]
        blocks.append(("table", *shown[name], f"{'summary' if name == 'accuracy' else name}.csv"))
        if name in figures:
            blocks.append(("img", name, figures[name]))
    blocks += [("h2", "Learning curves"), ("p", INTRO["learning_curves"].format(metric=metric))]
    if "learning_curves" in figures:
        blocks.append(("img", "learning_curves", figures["learning_curves"]))
    blocks += [("h2", "What the sweep was"), ("table", ["item", "value"], about_rows(a), None)]
    if ab.get("config"):
        blocks += [("p", "The sweep file (resolved):"), ("pre", ab["config"])]
    blocks += [("h2", "Trials"), ("p", INTRO["trials"]), ("table", *shown["trials"], "trials.csv")]
    return blocks


def about_rows(a: Analysis) -> list[list[str]]:
    ab = a.about
    comp = ab["compute_s"]
    rows = [["kind", ab["kind"]], ["sweep fingerprint", fmt(ab.get("fingerprint"))],
            ["code version (driver)", _code(ab.get("code_version"))],
            ["code versions (trials)", "; ".join(ab["trial_code_versions"]) or "-"],
            ["data identity", "; ".join(ab["data_identity"]) or "-"],
            ["created / finished", f"{ab.get('created') or '-'} / {ab.get('finished') or '-'}"],
            ["trials", f"{ab['trials']} ({', '.join(f'{k} {v}' for k, v in sorted(ab['by_status'].items()))})"],
            ["stopped early (ASHA)", ", ".join(ab["stopped_early"]) or "none"],
            ["failed", ", ".join(ab["failed"]) or "none"],
            ["scheduler", fmt(ab.get("scheduler")) if ab.get("scheduler") else "none (every trial ran to the end)"],
            ["validation stage analysed", fmt(ab.get("stage"))],
            ["compute time", f"{comp['total'] / 3600:.3g} h ({comp['trials']:.0f} s trials + {comp['nfp']:.0f} s "
                             "NFP pretraining), summed over trials"]]  # fmt: skip
    for name, info in sorted((ab.get("nfp") or {}).items()):
        rows.append([f"NFP setting {name}", ", ".join(f"{k}={fmt(v)}" for k, v in info.items())])
    return rows


def _code(c: Any) -> str:
    if not isinstance(c, dict):
        return fmt(c)
    return f"raywave {c.get('raywave')} git {c.get('git_commit') or '?'}{' (dirty)' if c.get('git_dirty') else ''}"


def make_figures(a: Analysis) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    figs = {"learning_curves": _curves_figure(a), "summary": _forest(a, "summary"), "paired": _forest(a, "paired")}
    if a.tables.get("generalisation"):
        figs["generalisation"] = _generalisation_figure(a)
    return {k: v for k, v in figs.items() if v is not None}


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _colors(a: Analysis) -> dict[str, Any]:
    """One colour per arm, the same in every figure."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    return {arm: cmap(i % 10) for i, arm in enumerate(sorted({r["arm"] for r in a.tables["trials"]}))}


def _curves_figure(a: Analysis) -> bytes | None:
    import matplotlib.pyplot as plt

    if not a.curves:
        return None
    conds = sorted({c for _, c in a.curves})
    colors = _colors(a)
    fig, axes = plt.subplots(1, len(conds), figsize=(5 * len(conds), 3.6), squeeze=False, sharey=True)
    for ax, cond in zip(axes[0], conds, strict=True):
        for (arm, c), cur in sorted(a.curves.items()):
            if c != cond or not cur["step"].size:
                continue
            ax.plot(cur["step"], cur["median"], color=colors[arm], label=arm, lw=1.5)
            ax.fill_between(cur["step"], cur["lo"], cur["hi"], color=colors[arm], alpha=0.2, lw=0)
        ax.set_title(cond if cond != "-" else "all trials", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"validation {metric_name(a)} (median, 95% CI)")
    axes[0][-1].legend(fontsize=8)
    return _png(fig)


def _forest(a: Analysis, table: str) -> bytes | None:
    """Point estimates with their intervals, one line per arm and condition (the final metric only)."""
    import matplotlib.pyplot as plt

    key, label = (("iqm", f"final validation {metric_name(a)}: IQM, 95% CI") if table == "summary"
                  else ("mean_diff", f"final validation {metric_name(a)}: arm - baseline, mean, 95% CI"))  # fmt: skip
    rows = [r for r in a.tables.get(table, []) if r["measure"] == f"final_{a.design.metric}"]
    if not rows:
        return None
    colors = _colors(a)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        lo, hi = r[f"{key}_lo"], r[f"{key}_hi"]
        if not (math.isnan(lo) or math.isnan(hi)):
            ax.plot([lo, hi], [y, y], color=colors[r["arm"]], lw=2)
        ax.plot(r[key], y, "o", color=colors[r["arm"]], mec="k" if r["condition"] == ALL else "none")
    ax.set_yticks(range(len(rows)), [f"{r['arm']} | {r['condition']}" for r in reversed(rows)], fontsize=8)
    if table == "paired":
        ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(label)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _generalisation_figure(a: Analysis) -> bytes | None:
    import matplotlib.pyplot as plt

    rows = a.tables["generalisation"]
    others = sorted({r["others"] for r in rows})
    colors = _colors(a)
    fig, axes = plt.subplots(1, len(others), figsize=(5 * len(others), 3.6), squeeze=False, sharey=True)
    for ax, oth in zip(axes[0], others, strict=True):
        for arm in sorted({r["arm"] for r in rows}):
            rs = sorted((r for r in rows if r["arm"] == arm and r["others"] == oth), key=lambda r: r["data_fraction"])
            if not rs:
                continue
            x = [r["data_fraction"] for r in rs]
            ax.plot(x, [r["median"] for r in rs], "o-", color=colors[arm], label=arm)
            ax.fill_between(x, [r["median_lo"] for r in rs], [r["median_hi"] for r in rs], color=colors[arm],
                            alpha=0.2, lw=0)  # fmt: skip
        ax.set_xlabel("data fraction")
        ax.set_title(oth if oth != "-" else "", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"final validation {metric_name(a)} (median, 95% CI)")
    axes[0][-1].legend(fontsize=8)
    return _png(fig)


def to_markdown(blocks: list[tuple]) -> str:
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind == "h1":
            out.append(f"# {b[1]}\n")
        elif kind == "h2":
            out.append(f"## {b[1]}\n")
        elif kind == "p":
            out.append(f"{b[1]}\n")
        elif kind == "pre":
            out.append(f"```yaml\n{b[1].rstrip()}\n```\n")
        elif kind == "img":
            out.append(f"![{b[1]}]({b[1]}.png)\n")
        elif kind == "table":
            cols, rows, csv_name = b[1], b[2], b[3]
            cell = lambda x: str(x).replace("|", "\\|")  # noqa: E731
            out.append("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
            out += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
            out.append(f"\n(also `{csv_name}`)\n" if csv_name else "")
    return "\n".join(out) + "\n"


def to_html(blocks: list[tuple], title: str) -> str:
    e = html.escape
    body: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{e(b[1])}</{kind}>")
        elif kind == "pre":
            body.append(f"<pre>{e(b[1])}</pre>")
        elif kind == "img":
            data = base64.b64encode(b[2]).decode()
            body.append(f'<figure><img alt="{e(b[1])}" src="data:image/png;base64,{data}"></figure>')
        elif kind == "table":
            head = "".join(f"<th>{e(str(c))}</th>" for c in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(str(x))}</td>" for x in r) + "</tr>" for r in b[2])
            note = f'<p class="csv">also <code>{e(b[3])}</code></p>' if b[3] else ""
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{note}")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;"
             "padding:2px 6px;text-align:left}th{background:#f4f4f4}img{max-width:100%}.csv{font-size:11px;color:#666}"
             "pre{background:#f8f8f8;padding:.5em;overflow:auto}")  # fmt: skip
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(title)}</title><style>{style}</style>"
            f"</head><body>\n" + "\n".join(body) + "\n</body></html>\n")
