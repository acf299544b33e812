"""Rebuild a job's posterior from its event log alone, and print that readout.

``hz-ray replay RUN_DIR`` checks that the log is the source of truth: a fresh
:class:`~hz_ray.optimizer.Optimizer` with the folder's config gets every arm,
retirement and accepted delta of the log (:func:`hz_ray.storage.replay_into`),
fits its GPs and gives the launch readout as of the log's last hour. It
never writes into the folder and never takes its lock.

The GP hyperparameters are refitted on the whole log, whereas the job refits
them only now and then (``optimizer.refit_*``), so the rebuilt posterior can
differ a little from the one the job logged; ``use_checkpoint=True`` starts
from the job's checkpointed hyperparameters instead (when the checkpoint is
this job's), which reproduces the job's own readout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hz_ray.errors import StateError
from hz_ray.readout.folder import FolderSnapshot, read_folder, record_of
from hz_ray.readout.text import arm_label, pct, readout_text
from hz_ray.records import ParetoReadout, Recommendation
from hz_ray.run_folder import CHECKPOINT_NAME
from hz_ray.storage import load_checkpoint

__all__ = ["Replayed", "replay_readout", "replay_run", "replayed"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Replayed:
    """A readout rebuilt from the log.

    Attributes:
        recommendation: The rebuilt readout.
        last_hour: The log's newest job hour (of any event with an hour; -1: none).
        log_seq: The last event ``seq`` replayed (-1: empty log).
        arms: Arms in the rebuilt ledger.
        records: Accepted hourly deltas in it.
        from_checkpoint: Whether the GP started from the job's checkpointed
            hyperparameters.
        pareto: The Pareto readout of the rebuilt posterior, for a Pareto
            objective (else None).
    """

    recommendation: Recommendation
    last_hour: int
    log_seq: int
    arms: int
    records: int
    from_checkpoint: bool
    pareto: ParetoReadout | None = None


def replayed(run_dir: str | Path, *, use_checkpoint: bool = False) -> Replayed:
    """Rebuild the posterior from the folder's event log; the readout with its provenance.

    Args:
        run_dir: A job's run folder.
        use_checkpoint: Start the GPs from ``checkpoint.json``'s hyperparameters
            when it is this job's and was written with this config (else refit).

    Returns:
        The :class:`Replayed` readout.

    Raises:
        StateError: The folder holds no job, or its log cannot be replayed.
        ConfigError: The folder's config does not validate.
    """
    return _replay(read_folder(run_dir), use_checkpoint)


def _replay(snap: FolderSnapshot, use_checkpoint: bool) -> Replayed:
    from hz_ray.optimizer import Optimizer  # torch: only when a posterior is rebuilt
    from hz_ray.torch_threads import torch_threads

    with torch_threads(1):
        optimizer = Optimizer(snap.config)
        seq = snap.replay_into(optimizer.ledger)
        loaded = False
        surrogate = _checkpointed_surrogate(snap) if use_checkpoint else None
        if surrogate is not None:
            try:
                optimizer.surrogate.load_state_dict(surrogate)
                loaded = True
            except (StateError, KeyError, TypeError, ValueError, AttributeError) as exc:
                logger.warning("Ignoring the checkpoint's GP state: %s", exc)
                optimizer = Optimizer(snap.config)  # nothing half-loaded
                seq = snap.replay_into(optimizer.ledger)
        optimizer.refresh()
        rec = optimizer.recommend()
        pareto = optimizer.pareto_readout() if snap.config.objective.is_pareto else None
    hours = [h for h in snap.table.column("hour").to_pylist() if h is not None]
    return Replayed(rec, max(hours, default=-1), seq, len(optimizer.ledger.arms),
                    optimizer.ledger.num_records, loaded, pareto)


def replay_run(run_dir: str | Path, *, use_checkpoint: bool = False) -> Recommendation:
    """The launch readout of a posterior rebuilt from the folder's event log alone.

    Args:
        run_dir: A job's run folder (read-only; the job may still be running).
        use_checkpoint: See :func:`replayed`.

    Returns:
        The rebuilt :class:`~hz_ray.records.Recommendation`.

    Raises:
        StateError: The folder holds no job, or its log cannot be replayed.
        ConfigError: The folder's config does not validate.
    """
    return replayed(run_dir, use_checkpoint=use_checkpoint).recommendation


def replay_readout(run_dir: str | Path, *, use_checkpoint: bool = False) -> str:
    """The rebuilt readout as text, with how it compares to the job's own last readout.

    Args:
        run_dir: A job's run folder.
        use_checkpoint: See :func:`replayed`.

    Returns:
        :func:`~hz_ray.readout.text.readout_text` of the rebuilt readout,
        then one line comparing it with the newest readout the job logged.
    """
    snap = read_folder(run_dir)  # one read: the rebuilt and the logged readout see one log
    result = _replay(snap, use_checkpoint)
    record = record_of(snap)
    rec = result.recommendation
    text = readout_text(record, rec, heading="hz-ray replay (posterior rebuilt from the log)")
    source = "the checkpoint's GP hyperparameters" if result.from_checkpoint else "a fresh GP fit"
    lines = [text, "", f"Rebuilt from {result.records} accepted deltas of {result.arms} arms "
             f"(log up to seq {result.log_seq}, job hour {result.last_hour}) with {source}."]
    logged = record.recommendation
    if logged is None:
        lines.append("The job logged no readout to compare with.")
    else:
        hour = record.recommendations[-1][0]
        same = "the same pick" if logged.arm_id == rec.arm_id else "a DIFFERENT pick"
        lines.append(
            f"Logged readout at job hour {hour}: {arm_label(logged.arm_id, record.job_id)} "
            f"{pct(logged.objective_mean)}; rebuilt: {arm_label(rec.arm_id, record.job_id)} "
            f"{pct(rec.objective_mean)} ({same}).")
    return "\n".join(lines)


def _checkpointed_surrogate(snap: FolderSnapshot) -> dict[str, Any] | None:
    """The checkpoint's GP state when the checkpoint belongs to this job's log (as on resume)."""
    from hz_ray.service.posterior import checkpoint_problem

    try:
        state = load_checkpoint(snap.run_dir / CHECKPOINT_NAME)
    except StateError as exc:
        logger.warning("Ignoring the checkpoint: %s", exc)
        return None
    if not state:
        return None
    seqs = snap.table.column("seq").to_pylist()
    problem = checkpoint_problem(state, snap.identity.job_id, snap.config, max(seqs, default=-1))
    if problem is not None:
        logger.warning("Ignoring the checkpoint: %s", problem)
        return None
    return state["surrogate"]
