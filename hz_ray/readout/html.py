"""The readout as one self-contained HTML page (``report.html``).

The page makes no outside request: its CSS is inline and its PNGs are
embedded as base64 ``data:`` URIs, so it can be mailed or attached to a launch
review as one file. Every string from the folder is escaped
(:func:`html.escape`).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Iterable, Sequence
from pathlib import Path

from hz_ray.readout.folder import RunRecord
from hz_ray.readout.text import (
    Z95,
    arm_gain,
    metric_rows,
    objective_interval,
    objective_text,
    pareto_rows,
    pct,
    weight_rows,
)
from hz_ray.records import ParetoReadout, Recommendation

__all__ = ["REPORT_HTML", "render_html", "write_html"]

REPORT_HTML = "report.html"

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1180px; color: #1f2328; background: #ffffff; padding: 0 1.5em; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
.sub { color: #57606a; margin-top: 0; }
.pick { border: 2px solid #2da44e; background: #dafbe1; border-radius: 8px; padding: 0.8em 1.2em;
        margin: 1.2em 0; }
.pick.control { border-color: #bf8700; background: #fff8c5; }
.pick .arm { font-size: 1.5em; font-weight: 700; font-family: monospace; }
.alarm { border: 2px solid #cf222e; background: #ffebe9; padding: 0.6em 1em; border-radius: 8px; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 0.3em 0.7em; text-align: right; }
th { background: #f6f8fa; }
td.l, th.l { text-align: left; }
tr.picked td { background: #dafbe1; font-weight: 600; }
.ok { color: #1a7f37; } .bad { color: #cf222e; font-weight: 600; }
.stats { display: flex; flex-wrap: wrap; gap: 1em; }
.stat { background: #f6f8fa; border-radius: 8px; padding: 0.6em 1em; min-width: 9em; }
.stat b { display: block; font-size: 1.4em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: 0.85em; }
code { font-family: monospace; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, left: int = 1,
           classes: Sequence[str] | None = None) -> str:
    """An HTML table of already escaped cells; the first ``left`` columns align left."""
    head = "".join(f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{classes[k]}"' if classes and classes[k] else ""
        cells = "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _pick(record: RunRecord, rec: Recommendation | None) -> str:
    if rec is None:
        return '<div class="pick control">No readout logged yet: the job has not finished ' \
               "its first hour.</div>"
    needs = record.config.optimizer.feasibility_threshold
    low, high = objective_interval(rec)
    numbers = (f"Objective ({_e(objective_text(record.config))}): <b>{_e(pct(rec.objective_mean))}"
               f"</b> [95% {_e(pct(low))}, {_e(pct(high))}], P(feasible) "
               f"<b>{rec.p_feasible:.3f}</b> (needs &ge; {needs:g})")
    if rec.is_control:
        return ('<div class="pick control"><div>Recommendation</div>'
                '<div class="arm" id="recommended-arm">keep production weights (control)</div>'
                f"<div>No arm beats control with P(feasible) &ge; {needs:g} and enough hours "
                f"of data.</div><div>{numbers}</div></div>")
    arm = record.arm(rec.arm_id)
    ran = ""
    if arm is not None:
        ran = (f"<div>Ran in slot {_e(arm.slot)} from job hour {arm.launched_hour}"
               + (f" to {arm.stopped_hour} ({_e(arm.stop_reason)})"
                  if arm.stopped_hour is not None else " (live)")
               + f": {arm.hours_observed} hours of data, {arm.units:,} units.</div>")
    return ('<div class="pick"><div>Recommended arm</div>'
            f'<div class="arm" id="recommended-arm">{_e(rec.arm_id)}</div>'
            f"<div>{numbers}</div>{ran}</div>")


def _weights(record: RunRecord, rec: Recommendation) -> str:
    rows = [(f"<code>{_e(w.name)}</code>", f"{w.recommended:.4g}", f"{w.control:.4g}",
             f"&times;{w.ratio:.3f}" if w.ratio is not None else "-")
            for w in weight_rows(record.config, rec)]
    return _table(["weight", "recommended", "control (production)", "ratio"], rows)


def _metrics(record: RunRecord, rec: Recommendation) -> str:
    needs = record.config.optimizer.feasibility_threshold
    rows, classes = [], []
    for row in metric_rows(record.config, rec):
        p = "-"
        if row.p_feasible is not None:
            good = row.p_feasible >= needs
            p = f'<span class="{"ok" if good else "bad"}">{row.p_feasible:.3f}</span>'
        obs = row.observed
        own = f"{_e(pct(obs.mean))} &plusmn; {100 * Z95 * obs.sem:.2f}%" if obs else "-"
        rows.append((_e(row.metric), _e(row.role), _e(pct(row.mean)),
                     f"[{_e(pct(row.low))}, {_e(pct(row.high))}]", p, _e(row.threshold or "-"),
                     own, _e(obs.hours) if obs else "-"))
        classes.append("picked" if row.metric == "objective" else "")
    return _table(["metric", "role", "delta vs control", "95% interval", "P(feasible)",
                   "threshold", "arm's own data (95%)", "hours"], rows, left=2, classes=classes)


def _pareto(record: RunRecord, readout: ParetoReadout) -> str:
    """The Pareto front section's body: a note, the table, and which arm the preference picks."""
    needs = record.config.optimizer.feasibility_threshold
    note = (f'<p class="sub">{len(readout.front)} arms on the front of '
            f"{len(readout.qualified)} qualifying (enough hours of data and P(feasible) "
            f"&ge; {needs:g}). Objective: {_e(objective_text(record.config))}. Deltas are "
            "posterior means vs control with 95% intervals; the Chebyshev value is "
            "min<sub>i</sub> s<sub>i</sub>&middot;d<sub>i</sub> / (k&middot;&lambda;"
            "<sub>i</sub>) at the preference.</p>")
    if not readout.front:
        return note + ('<p id="pareto-empty">No arm qualifies for the Pareto front yet; the '
                       "preference keeps the control.</p>")
    rows, classes = [], []
    for row in pareto_rows(readout, record.job_id):
        cells = [f"{_e(pct(d[0]))} &plusmn; {100 * Z95 * d[1]:.2f}%" if d is not None else "-"
                 for d in row.deltas]
        label = ("&#9733; " if row.preferred else "") + f"<code>{_e(row.label)}</code>"
        rows.append((label, *cells, f"{row.p_feasible:.3f}", _e(pct(row.chebyshev))))
        classes.append("picked" if row.preferred else "")
    heads = [f"{m} ({'higher' if readout.signs.get(m, 1.0) > 0 else 'lower'} is better)"
             for m in readout.objectives]
    table = _table(["arm", *heads, "P(feasible)", "Chebyshev value"], rows, classes=classes)
    pick = readout.preferred
    which = ("the control: no arm on the front has a positive Chebyshev value at the "
             "preference" if pick.is_control
             else f"<code>{_e(pick.arm_id)}</code> (the largest Chebyshev value on the front)")
    return note + table + f'<p id="pareto-preferred">Preferred (&#9733;): {which}.</p>'


def _stats(record: RunRecord) -> str:
    t = record.totals
    hours = f"{t.first_hour}&ndash;{t.last_hour}" if t.last_hour is not None else "none"
    items = [("job hours run", f"{t.hours_run}", f"hours {hours}"),
             ("traffic used", f"{t.units:,}", "test units over all arms"),
             ("arms launched", f"{t.arms_launched}", f"{t.arms_live} live now"),
             ("deltas accepted", f"{t.deltas_accepted:,}", "hourly, per arm and metric"),
             ("records rejected", f"{t.deltas_rejected:,}", "kept in the log")]
    return '<div class="stats">' + "".join(
        f'<div class="stat">{_e(name)}<b>{value}</b>{note}</div>'
        for name, value, note in items) + "</div>"


def _arms(record: RunRecord, rec: Recommendation | None) -> str:
    metrics = record.config.metrics
    rows, classes = [], []
    for arm in record.arms:
        gain = arm_gain(record.config, arm.estimates)
        own = [f"{_e(pct(arm.estimates[m].mean))}" if m in arm.estimates else "-"
               for m in metrics]
        weights = ", ".join(f"{_e(k)}={v:.3g}" for k, v in arm.params.items())
        rows.append((f"<code>{_e(arm.arm_id)}</code>", _e("-" if arm.slot is None else arm.slot),
                     f"{arm.launched_hour}",
                     "-" if arm.stopped_hour is None else f"{arm.stopped_hour}",
                     _e(arm.stop_reason or "live"), _e(arm.state), f"{arm.hours_observed}",
                     f"{arm.units:,}",
                     f"{_e(pct(gain[0]))} &plusmn; {100 * Z95 * gain[1]:.2f}%" if gain else "-",
                     *own, f'<span style="font-size:0.85em">{weights}</span>'))
        classes.append("picked" if rec is not None and arm.arm_id == rec.arm_id else "")
    headers = ["arm", "slot", "launched", "stopped", "why it stopped", "state", "hours",
               "units", "objective (own data, 95%)", *(f"{m} (own)" for m in metrics),
               "weights"]
    return _table(headers, rows, classes=classes)


def _figures(pngs: Sequence[Path]) -> str:
    captions = {"objective.png": "The recommendation's objective delta by job hour, with its "
                "95% band.", "guardrails.png": "Each guardrail metric's posterior at the "
                "recommendation by hour, against its threshold.", "arms.png": "Every arm from "
                "launch to stop, coloured by why it stopped.",
                "pareto.png": "The Pareto front: every qualifying arm's posterior mean deltas "
                "(grey), the front with 95% intervals, the control at the origin, the "
                "preference ray and the preferred arm (star)."}
    out = []
    for path in pngs:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        caption = captions.get(Path(path).name, Path(path).name)
        out.append(f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
                   f"<figcaption>{_e(caption)}</figcaption></figure>")
    return "".join(out)


def render_html(record: RunRecord, pngs: Sequence[Path] = (),
                recommendation: Recommendation | None = None, *,
                pareto: ParetoReadout | None = None) -> str:
    """The readout page as an HTML string.

    Args:
        record: The run folder, from :func:`~hz_ray.readout.folder.load_run`.
        pngs: PNGs to embed (:func:`~hz_ray.readout.plots.write_pngs`).
        recommendation: Show this readout instead of the newest logged one.
        pareto: The Pareto readout of a Pareto objective, shown as a "Pareto
            front" section; ``None`` shows none.

    Returns:
        A complete, self-contained HTML5 document.
    """
    rec = recommendation if recommendation is not None else record.recommendation
    t = record.totals
    created = dt.datetime.fromtimestamp(record.created_s, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    as_of = f"as of job hour {t.last_hour}" if t.last_hour is not None else "no hour run yet"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>hz-ray readout: {_e(record.name)} ({_e(record.job_id)})</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>hz-ray readout: {_e(record.name)}</h1>",
        f'<p class="sub">Job <code>{_e(record.job_id)}</code>, created {_e(created)}, '
        f"{_e(as_of)}. Objective: {_e(objective_text(record.config))}.</p>",
    ]
    if record.alarm:
        parts.append(f'<div class="alarm">Alarm: {_e(record.alarm)} (the job stopped '
                     "launching arms)</div>")
    parts.append(_pick(record, rec))
    if rec is not None:
        parts += ["<h2>Weights: recommended against control</h2>", _weights(record, rec),
                  "<h2>Metrics at the recommendation</h2>", _metrics(record, rec),
                  '<p class="sub">Deltas are relative to control (posterior of the GPs); '
                  "intervals are two-sided 95%; P(feasible) is the posterior probability "
                  "that the metric's guardrail holds (the objective row: all of them).</p>"]
    if pareto is not None:
        parts += ['<h2 id="pareto-front">Pareto front</h2>', _pareto(record, pareto)]
    parts += ["<h2>Hours and traffic used</h2>", _stats(record)]
    if pngs:
        parts += ["<h2>Charts</h2>", _figures(pngs)]
    parts += [f"<h2>Arms ({len(record.arms)})</h2>", _arms(record, rec),
              f'<p class="sub">Generated by hz-ray from the run folder '
              f"<code>{_e(record.run_dir.name)}</code> (event log up to seq "
              f"{record.log_seq}).</p>", "</body></html>"]
    return "\n".join(parts)


def write_html(record: RunRecord, out_dir: str | Path, pngs: Sequence[Path] = (),
               recommendation: Recommendation | None = None, *,
               pareto: ParetoReadout | None = None) -> Path:
    """Write ``report.html`` into ``out_dir`` (created if missing).

    Args:
        record: The run folder, from :func:`~hz_ray.readout.folder.load_run`.
        out_dir: Where to write it.
        pngs: PNGs to embed as data URIs.
        recommendation: Show this readout instead of the newest logged one.
        pareto: The Pareto readout of a Pareto objective, shown as a "Pareto
            front" section; ``None`` shows none.

    Returns:
        The page's path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_HTML
    tmp = out / f".{REPORT_HTML}.tmp"
    tmp.write_text(render_html(record, pngs, recommendation, pareto=pareto), encoding="utf-8")
    tmp.replace(path)
    return path
