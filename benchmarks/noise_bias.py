"""The GP's bias at the arms of a finished soak, with the arms' own or pooled variances.

``python benchmarks/noise_bias.py FOLDER [FOLDER...]`` takes soak run folders
(``benchmarks/soak.py --root ROOT`` leaves ``ROOT/seedN-clean`` and ``ROOT/seedN-faults``),
rebuilds the posterior from each log twice (``optimizer.pooled_noise`` false, then true; GP
hyperparameters refitted on the whole log, as ``hz-ray replay`` does) and prints, per metric,
the z of the posterior at every arm against the value-model world's true deltas
(``(mean - truth) / sd``), the mean posterior error in percentage points, and the readout each
posterior gives with its true gain. The raw per-arm estimates' z is printed beside them: if the
data are unbiased and the GP is not, the bias comes from the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.soak_report import gain, soak_world  # noqa: E402
from hz_ray.optimizer import Optimizer  # noqa: E402
from hz_ray.readout.folder import read_folder  # noqa: E402
from hz_ray.records import CONTROL_ARM_ID  # noqa: E402
from hz_ray.torch_threads import torch_threads  # noqa: E402


def posterior_bias(folder: Path, pooled: bool) -> dict:
    """Per-metric z of the GP posterior at the arms, and the readout, for one soak folder."""
    snap = read_folder(folder / "run")
    optimizer_spec = dataclasses.replace(snap.config.optimizer, pooled_noise=pooled)
    config = dataclasses.replace(snap.config, optimizer=optimizer_spec)
    world = soak_world()
    with torch_threads(1):
        opt = Optimizer(config)
        snap.replay_into(opt.ledger)
        opt.refresh(force_refit=True)
        view = opt.view()
        mean, var = opt.snapshot().mean_and_var(view.X[1:])
        rec = opt.recommend()
    truth = torch.tensor([[world.true_deltas(dict(opt.ledger.arms[a].params))[m]
                           for m in opt.metrics] for a in view.train_ids[1:]],
                         dtype=torch.float64)
    z = (mean - truth) / var.sqrt()
    raw_z = (view.Y[1:] - truth) / torch.tensor(
        [[opt.ledger.estimate(a, m).sem for m in opt.metrics] for a in view.train_ids[1:]],
        dtype=torch.float64)
    params = None if rec.arm_id == CONTROL_ARM_ID else rec.params
    return {
        "folder": folder.name, "pooled_noise": pooled, "arms": len(view.train_ids) - 1,
        "metrics": {m: {"gp_z_mean": round(float(z[:, j].mean()), 2),
                        "gp_z_sd": round(float(z[:, j].std()), 2),
                        "gp_error_pp": round(100 * float((mean - truth)[:, j].mean()), 3),
                        "raw_z_mean": round(float(raw_z[:, j].mean()), 2)}
                    for j, m in enumerate(opt.metrics)},
        "recommended": rec.arm_id, "true_gain_pct": round(gain(params), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", type=Path, nargs="+", help="soak run folders (ROOT/seedN-*)")
    args = p.parse_args(argv)
    for folder in args.folders:
        if not (folder / "run" / "log").exists():
            p.error(f"{folder} is not a soak run folder (no run/log in it)")
        for pooled in (False, True):
            print(json.dumps(posterior_bias(folder, pooled)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
