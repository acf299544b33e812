"""Arm backends: the port to an experiment platform.

- :class:`ArmBackend` / :class:`GroundTruth`: the protocols (``base.py``).
- :class:`FileDropBackend`: a real-platform adapter through a shared folder.
- :class:`RecordedBackend`: replays recorded :class:`Publication` s.
- :class:`JournalBackend` (``journal.py``): wraps any backend and journals every call
  (audits: :func:`audit_journal` counts orphaned arms), with optional injected faults.
- :func:`build_backend` (``factory.py``): the backend a config names.

The simulated platforms live in :mod:`hz_ray.sim`; their names are re-exported
here lazily (PEP 562), so importing the protocol loads no simulator.
"""

from __future__ import annotations

from hz_ray.backends.base import ArmBackend, GroundTruth
from hz_ray.backends.recorded import Publication, RecordedBackend, RecordedFactory
from hz_ray.lazy import lazy_exports

_SIMULATED = ("WORLD_NAMES", "BenchmarkProblem", "Optimum", "RealismConfig", "SimulatedBackend",
              "SimulatedFactory", "SmoothWorld", "TestFunctionWorld", "ValueModelWorld", "World",
              "find_optimum", "make_world", "paper_world")
_LAZY = {"FileDropBackend": "hz_ray.backends.file_drop", "build_backend": "hz_ray.backends.factory",
         "JournalBackend": "hz_ray.backends.journal", "audit_journal": "hz_ray.backends.journal",
         **dict.fromkeys(_SIMULATED, "hz_ray.sim")}

__all__ = [  # noqa: RUF022 - the eager names first, then the lazy ones
    "ArmBackend", "GroundTruth", "Publication", "RecordedBackend", "RecordedFactory",
    "FileDropBackend", "JournalBackend", "audit_journal", "build_backend", *_SIMULATED,
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
