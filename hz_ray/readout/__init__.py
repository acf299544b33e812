"""The launch readout of a run folder: text, PNGs and one self-contained HTML page.

Everything here works from the run folder alone (read-only, without the
job's lock), so it reports on a job that ended, was killed, or is still running:

- :func:`~hz_ray.readout.folder.load_run` reads the folder into a
  :class:`~hz_ray.readout.folder.RunRecord`;
- :func:`~hz_ray.readout.text.readout_text` prints the readout;
- :func:`~hz_ray.readout.plots.write_pngs` and
  :func:`~hz_ray.readout.html.write_html` draw it (matplotlib, the ``plots`` extra);
- :func:`~hz_ray.readout.report.build_report` does all of it (``hz-ray report``);
- :func:`~hz_ray.readout.replay.replay_run` rebuilds the posterior from the
  log alone (``hz-ray replay``).
"""

from __future__ import annotations

from hz_ray.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, globals(), {
    "ArmRow": "hz_ray.readout.folder", "RunRecord": "hz_ray.readout.folder",
    "RunTotals": "hz_ray.readout.folder", "load_run": "hz_ray.readout.folder",
    "readout_text": "hz_ray.readout.text",
    "write_pngs": "hz_ray.readout.plots", "write_html": "hz_ray.readout.html",
    "ReportFiles": "hz_ray.readout.report", "build_report": "hz_ray.readout.report",
    "replay_run": "hz_ray.readout.replay", "replay_readout": "hz_ray.readout.replay",
})
