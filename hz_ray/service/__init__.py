"""The job's control plane: plain, thread-safe classes that every driver runs; no Ray.

- :mod:`hz_ray.service.posterior`: :class:`PosteriorService`, the central
  posterior (ledger, event log, refreshes, published plan, readout, checkpoint).
- :mod:`hz_ray.service.slot`: :class:`ArmSlotRunner`, one arm slot's loop.
- :mod:`hz_ray.service.messages`: what passes between them and the drivers.

Import the modules themselves: ``hz_ray.service.slot`` (what an arm worker
needs) imports no torch, ``hz_ray.service.posterior`` does.
"""
