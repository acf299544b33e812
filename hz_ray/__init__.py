"""hz-ray: asynchronous HyperZero tuning of recommender value-model weights.

Public names are imported lazily (PEP 562), so that light modules such as
``hz_ray.records`` or ``hz_ray.delta`` can be used by Ray arm workers without
pulling in torch. Nothing here imports ``ray``.
"""

from __future__ import annotations

from hz_ray.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "hz_ray.config",
    "config_from_mapping": "hz_ray.config",
    "TuningConfig": "hz_ray.config",
    "run_local": "hz_ray.local",
    "RunResult": "hz_ray.result",
    "HourProgress": "hz_ray.service.messages",
    "RunFolder": "hz_ray.run_folder",
    "Optimizer": "hz_ray.optimizer",
    "SimClock": "hz_ray.clock",
    "AcceleratedClock": "hz_ray.clock",
    "WallClock": "hz_ray.clock",
    "GroupStats": "hz_ray.records",
    "HourlyReading": "hz_ray.records",
    "HourlyDelta": "hz_ray.records",
    "Recommendation": "hz_ray.records",
    "HzRayError": "hz_ray.errors",
    "ConfigError": "hz_ray.errors",
    "InputDataError": "hz_ray.errors",
    "StateError": "hz_ray.errors",
    "TransientError": "hz_ray.errors",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
