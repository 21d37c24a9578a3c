"""Render a run record as one self-contained HTML page (and its plots as PNG files).

Everything on the page comes from the :class:`~components.records.RunRecord` (no stage
re-derives what another recorded). The page needs no network: plots are inlined as PNG
data URIs, styles and the one small script are inline, and a Content-Security-Policy
forbids loading anything else. Figures carry ``data-*`` attributes (``data-metric``,
``data-side``, ``data-epoch``...) so a test or a scraper reads the exact number shown.

The script only marks each plot once the browser has decoded it (``data-loaded``) and
writes a console error for a plot that did not decode.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from components.records import RunRecord
from components.reporting import plots

REPORT_NAME = "report.html"
PLOTS_DIR = "plots"
GATE_ROW_METRICS = ("ndcg@10", "hr@10", "mrr", "coverage@10", "ndcg@5", "hr@5", "ndcg@20")

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;
max-width:980px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.badge{display:inline-block;padding:.15em .6em;border-radius:.3em;color:#fff;font-weight:600}
.ok{background:#2e7d32}.no{background:#c62828}.muted{color:#777}
img{max-width:100%;border:1px solid #eee}code{background:#f4f4f4;padding:0 .25em}
.lineage span{display:inline-block;padding:.3em .6em;border:1px solid #ccc;border-radius:.3em}
"""
SCRIPT = """
document.querySelectorAll('img.plot').forEach(function (img) {
  function mark() {
    if (img.naturalWidth > 0) { img.dataset.loaded = '1'; }
    else { console.error('plot did not decode: ' + img.alt); }
  }
  if (img.complete) { mark(); } else { img.addEventListener('load', mark);
    img.addEventListener('error', mark); }
});
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: float | None, digits: int = 4, signed: bool = False) -> str:
    """A number as the page shows it (``-`` when absent)."""
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Iterable[str], attrs: str = "") -> str:
    """A table; no header row when every header is empty (key/value tables)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    head_row = f"<tr>{head}</tr>" if any(headers) else ""
    return f"<table {attrs}>{head_row}{''.join(rows)}</table>"


def cell(text: str, **data: Any) -> str:
    attrs = "".join(f' data-{k.replace("_", "-")}="{esc(v)}"' for k, v in data.items())
    return f"<td{attrs}>{esc(text)}</td>"


def image(path: Path | None, alt: str) -> str:
    """The PNG at ``path`` inlined as a data URI (nothing when there is no plot)."""
    if path is None or not path.exists():
        return f'<p class="muted">no {esc(alt)} plot</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def file_link(path: str | None, text: str) -> str:
    if not path:
        return '<span class="muted">none</span>'
    return f'<a href="{esc(Path(path).resolve().as_uri())}">{esc(text)}</a>'


# --- sections -----------------------------------------------------------------------
def header(record: RunRecord) -> str:
    gate = record.gate or {}
    promoted = bool(gate.get("promote"))
    badge = (
        '<span class="badge ok" data-verdict="promote">PROMOTED</span>'
        if promoted
        else '<span class="badge no" data-verdict="reject">REJECTED</span>'
    )
    return (
        f"<h1>recops run <code data-key=run_id>{esc(record.run_id)}</code> {badge}</h1>"
        f'<p class="muted">{esc(record.created_at.isoformat(timespec="seconds"))} · model '
        f"<b data-key=model_name>{esc(record.model_name)}</b> · status "
        f"<b data-key=status>{esc(record.status)}</b> · code <code>{esc(record.code_rev)}</code>"
        f" · config <code>{esc(record.config_hash[:12])}</code></p>"
    )


def data_section(record: RunRecord) -> str:
    v = record.validation or {}
    rows = [
        f"<tr><td>data version</td>{cell(record.data_version or '-', key='data_version')}</tr>",
        f"<tr><td>events</td>{cell(v.get('n_rows', '-'), key='n_rows')}</tr>",
        f"<tr><td>validation</td>{cell(v.get('summary', 'already accepted (no new rows)'))}</tr>",
        f"<tr><td>Great Expectations Data Docs</td><td>"
        f"{file_link(v.get('data_docs_path'), 'validation page')}</td></tr>",
        f"<tr><td>split</td>{cell(_split_text(record.split))}</tr>",
    ]
    return "<h2>Data</h2>" + table(["", ""], rows, 'class="kv"')


def _split_text(split: Mapping[str, Any]) -> str:
    keys = ("strategy", "train_users", "test_users", "n_items", "max_len")
    return ", ".join(f"{k} {split[k]}" for k in keys if k in split) or "-"


def training_section(record: RunRecord, curves: Path | None, k: int) -> str:
    rows = [
        "<tr>"
        + cell(num(h.get("epoch"), 0), epoch=int(h.get("epoch") or 0))
        + cell(num(h.get("train_loss")), key="train_loss", epoch=int(h.get("epoch") or 0))
        + cell(num(h.get(f"ndcg@{k}")), key=f"ndcg@{k}", epoch=int(h.get("epoch") or 0))
        + cell(num(h.get(f"hr@{k}")), key=f"hr@{k}", epoch=int(h.get("epoch") or 0))
        + cell(num(h.get("elapsed_s"), 1))
        + "</tr>"
        for h in record.history
    ]
    seconds = "-" if record.train_seconds is None else f"{record.train_seconds:.1f}"
    body = (
        f"<p>{esc(record.epochs or 0)} epochs, {seconds} s of training; the best validation "
        "was restored before evaluation.</p>"
    )
    if not rows:
        return "<h2>Training</h2>" + body + '<p class="muted">no epochs (not a neural model)</p>'
    return (
        "<h2>Training</h2>"
        + body
        + image(curves, "training curves")
        + table(
            ["epoch", "train loss", f"valid NDCG@{k}", f"valid HR@{k}", "elapsed s"],
            rows,
            'id="history"',
        )
    )


def gate_section(record: RunRecord, bars: Path | None) -> str:
    gate = record.gate or {}
    if not gate:
        return "<h2>Gate</h2><p class='muted'>no gate decision recorded</p>"
    ref_name = gate.get("reference") or "reference"
    reference = gate.get("champion") if ref_name == "champion" else gate.get("baseline")
    challenger = gate.get("challenger") or {}
    metrics = [m for m in GATE_ROW_METRICS if m in challenger]
    rows = []
    for m in metrics:
        r = (reference or {}).get(m)
        c = challenger[m]
        rows.append(
            "<tr>"
            + cell(m)
            + cell(num(c), metric=m, side="challenger")
            + cell(num(r), metric=m, side="reference")
            + cell(num(None if r is None else c - r, signed=True), metric=m, side="delta")
            + "</tr>"
        )
    ci = gate.get("delta_ci")
    ci_text = "-" if not ci else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"
    p = gate.get("p_value")
    label = "champion (re-scored on this split)" if ref_name == "champion" else f"{ref_name}"
    stats = table(
        ["", ""],
        [
            f"<tr><td>reference</td>{cell(label, key='reference')}</tr>",
            f"<tr><td>paired {esc(gate.get('test', ''))} p-value</td>"
            f"{cell(num(p), key='p_value')}</tr>",
            f"<tr><td>95% CI of the {esc(gate.get('primary_metric'))} difference</td>"
            f"{cell(ci_text, key='delta_ci')}</tr>",
            f"<tr><td>test users</td>{cell(gate.get('n_users', '-'), key='n_users')}</tr>",
        ],
    )
    checks = "".join(
        f"<li data-check='{esc(c['name'])}' data-passed='{int(c['passed'])}'>"
        f"{'✔' if c['passed'] else '✘'} {esc(c['detail'])}</li>"
        for c in gate.get("checks", [])
    )
    return (
        "<h2>Gate</h2>"
        + image(bars, "gate comparison")
        + table(["metric", "challenger", esc(label), "delta"], rows, 'id="gate"')
        + stats
        + f"<ul>{checks}</ul>"
    )


def breakdown_section(record: RunRecord, bars: Path | None) -> str:
    if not record.breakdowns:
        return ""
    parts = ["<h2>Test metrics by user group</h2>", image(bars, "metrics by group")]
    for name, rows in record.breakdowns.items():
        metrics = list(rows[0]["metrics"]) if rows else []
        body = [
            "<tr>"
            + cell(r["bucket"])
            + cell(r["n_users"], breakdown=name, bucket=r["bucket"], key="n_users")
            + "".join(
                cell(num(r["metrics"][m]), breakdown=name, bucket=r["bucket"], key=m)
                for m in metrics
            )
            + "</tr>"
            for r in rows
        ]
        parts.append(f"<h3>by {esc(name.replace('_', ' '))}</h3>")
        parts.append(table(["bucket", "users", *metrics], body, f'id="by-{esc(name)}"'))
    return "".join(parts)


def lineage_section(record: RunRecord) -> str:
    deployed = record.deployed_at.isoformat(timespec="seconds") if record.deployed_at else None
    steps = [
        ("data version", record.data_version, "data_version"),
        ("model version", record.model_version, "model_version"),
        ("bento", record.bento_tag, "bento_tag"),
        ("deployed at", deployed, "deployed_at"),
    ]
    chips = " → ".join(
        f"<span>{esc(label)}<br><code data-key='{key}'>{esc(value or 'not deployed')}</code></span>"
        for label, value, key in steps
    )
    offset = (
        "this model learns no seen-item offset"
        if record.seen_offset is None
        else f"<b data-key=seen_offset>{record.seen_offset:+.2f}</b> logits added to items "
        "already in the user's history (negative: the model learned not to repeat them)"
    )
    return f"<h2>Lineage</h2><p class=lineage>{chips}</p><h2>Seen-item offset</h2><p>{offset}</p>"


def extra_images(run_dir: Path) -> str:
    """Other engineers' plots in the run folder (e.g. influence), inlined when present."""
    found = sorted(p for p in run_dir.glob("*.png"))
    if not found:
        return ""
    return "<h2>More</h2>" + "".join(
        f"<h3>{esc(p.stem.replace('_', ' '))}</h3>{image(p, p.stem)}" for p in found
    )


# --- the page -----------------------------------------------------------------------
def draw_plots(record: RunRecord, run_dir: Path) -> dict[str, Path | None]:
    """Write the PNGs under ``run_dir/plots`` (the terminal user's copy) and return them."""
    out = run_dir / PLOTS_DIR
    k = _monitor_k(record)
    gate = record.gate or {}
    ref_name = gate.get("reference") or "reference"
    reference = gate.get("champion") if ref_name == "champion" else gate.get("baseline")
    return {
        "curves": plots.training_curves(record.history, k, out / "training_curves.png"),
        "gate": plots.gate_bars(
            gate.get("challenger") or record.metrics_test, reference, ref_name, out / "gate.png"
        ),
        "groups": plots.breakdown_bars(record.breakdowns, "ndcg@10", out / "by_group.png"),
    }


def _monitor_k(record: RunRecord) -> int:
    return int((record.config.get("train") or {}).get("monitor_k", 10))


def render(record: RunRecord, run_dir: Path, images: Mapping[str, Path | None]) -> str:
    """The whole page as a string."""
    k = _monitor_k(record)
    body = "".join(
        [
            header(record),
            data_section(record),
            training_section(record, images.get("curves"), k),
            gate_section(record, images.get("gate")),
            breakdown_section(record, images.get("groups")),
            lineage_section(record),
            extra_images(run_dir),
        ]
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>recops run {esc(record.run_id)}</title><style>{STYLE}</style></head>"
        f"<body>{body}<script>{SCRIPT}</script></body></html>"
    )


def write_report(record: RunRecord, run_dir: Path) -> Path:
    """Draw the plots, render the page, write ``run_dir/report.html``; return its path."""
    run_dir = Path(run_dir)
    images = draw_plots(record, run_dir)
    path = run_dir / REPORT_NAME
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render(record, run_dir, images), encoding="utf-8")
    tmp.replace(path)
    return path
