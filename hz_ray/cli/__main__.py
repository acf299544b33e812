"""``python -m hz_ray.cli``: the same as the ``hz-ray`` command."""

from hz_ray.cli import main

raise SystemExit(main())
