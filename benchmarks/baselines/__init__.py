"""Baselines and ablation helpers for ``benchmarks/quality.py``.

Every optimiser here subclasses :class:`hz_ray.optimizer.Optimizer` and is
driven by ``hz_ray.local.run_local(..., optimizer_factory=...)`` unchanged.

- :mod:`.random_search`: uniform random arms, best observed readout.
- :mod:`.botorch_bo`: qLogNEI, unconstrained / penalized / constrained.
- :mod:`.ax_client`: Ax's ``Client`` (optional; needs ``ax-platform``).
- :mod:`.raw_means`: backend wrapper for the "raw means instead of deltas" ablation.
"""
