"""``hz-ray report RUN_DIR``: the readout text, its PNGs and ``report.html`` in one call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hz_ray.readout.folder import load_run
from hz_ray.readout.html import write_html
from hz_ray.readout.plots import write_pngs
from hz_ray.readout.text import pareto_lines, readout_text

__all__ = ["READOUT_TXT", "REPORT_DIR", "ReportFiles", "build_report"]

REPORT_DIR = "report"
READOUT_TXT = "readout.txt"


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`build_report` wrote.

    Attributes:
        text: The readout as text (also written to ``readout.txt``).
        pngs: The PNGs, in page order.
        html: The self-contained ``report.html``.
        text_file: ``readout.txt``.
    """

    text: str
    pngs: tuple[Path, ...]
    html: Path
    text_file: Path


def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> ReportFiles:
    """Write a job's launch readout from its run folder alone.

    Reads the folder without its lock (the job may still be running) and
    writes only into ``out_dir``. For a Pareto objective the front is read out
    of the posterior rebuilt from the log (:func:`~hz_ray.readout.replay.replayed`,
    from the job's checkpointed hyperparameters): its table is added to the text
    and the HTML, and ``pareto.png`` to the PNGs.

    Args:
        run_dir: The job's run folder.
        out_dir: Where to write (created if missing); default ``run_dir/report``.

    Returns:
        The :class:`ReportFiles` written.

    Raises:
        StateError: The folder holds no job, or its log cannot be read.
        ConfigError: Its config does not validate, or matplotlib is missing.
    """
    record = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    text = readout_text(record)
    pareto = None
    if record.config.objective.is_pareto:
        from hz_ray.readout.replay import replayed  # torch: only for a Pareto readout

        pareto = replayed(run_dir, use_checkpoint=True).pareto
        assert pareto is not None  # a Pareto objective always has one
        text = "\n".join([text, "", *pareto_lines(record.config, pareto, record.job_id)])
    text_file = out / READOUT_TXT
    text_file.write_text(text + "\n", encoding="utf-8")
    pngs = tuple(write_pngs(record, out, pareto=pareto))
    html = write_html(record, out, pngs, pareto=pareto)
    return ReportFiles(text=text, pngs=pngs, html=html, text_file=text_file)
