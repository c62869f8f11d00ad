"""Stage 2, crafting: the adversarial set, batch by batch, each finished batch checkpointed in
the cell's store so an interrupted cell resumes; the attack's target classes for targeted cells."""
from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional

import torch

from flatbench.attacks.context import Paused
from flatbench.attacks.loop import NonFiniteError
from flatbench.attacks.packing import pack_size
from flatbench.cell.settings import CellSettings
from flatbench.cell.settings import Settings
from flatbench.data import ImageSet
from flatbench.cell.dist import World
from flatbench.core.quantize import quantize
from flatbench.cell.rates import craft_key, per_forward, record_rate
from flatbench.core.registry import ConfigError
from flatbench.cell.signals import StopRequest
from flatbench.cell.store import AdvStore

log = logging.getLogger("flatbench")


def choose_target_classes(s: CellSettings, data: ImageSet, surrogate: torch.nn.Module, device, batch_size: int) -> Optional[torch.Tensor]:
    """Target classes for a targeted cell, by ``target_rule``; None when untargeted."""
    if not s.targeted:
        return None
    if s.target_rule == "dataset":
        if data.target_classes is None:
            raise ConfigError(f"targeted=true with target_rule=dataset, but data set {data.name!r} has no target column; "
                              "use target_rule=random or target_rule=least_likely")
        return data.target_classes.clone()
    if s.target_rule == "random":
        gen = torch.Generator().manual_seed(s.seed)
        shift = torch.randint(1, data.num_classes, (len(data),), generator=gen)
        return (data.labels + shift) % data.num_classes
    with torch.inference_mode():
        logits = torch.cat([surrogate(data.floats(slice(i, i + batch_size)).to(device)).cpu()
                            for i in range(0, len(data), batch_size)])
    return logits.argmin(1)


class OutOfMemory(ConfigError):
    """The device ran out of memory; the message says which settings lower the need."""


def craft(attack, data: ImageSet, y_attack: torch.Tensor, device, batch_size: int, seed: int, progress: bool,
          store: Optional[AdvStore] = None, world: Optional[World] = None, force: bool = False,
          quantize_mode: str = "round", stop: Optional[StopRequest] = None,
          snapshots: Optional[Dict[int, AdvStore]] = None, final: Optional[torch.Tensor] = None,
          snap_sets: Optional[Dict[int, torch.Tensor]] = None) -> tuple:
    """Adversarial uint8 images for the batches this rank owns, batch by batch, with a progress bar.

    Each finished batch is checkpointed in ``store`` (when given), so an interrupted cell
    resumes from its last finished batch; ``stop`` is checked before each batch (a signal asked
    the cell to stop: :class:`~flatbench.cell.signals.Stop`). Returns (images, seconds, batches
    crafted now).

    ``snapshots`` (step -> its store): the examples after those steps are kept too, batch by batch
    in their stores, and put in ``snap_sets``; a batch is finished when every store has it.
    ``final``: the stored last step's set; the attack then runs only as far as the last snapshot.
    """
    from tqdm.auto import tqdm

    world = world or World()
    snapshots = dict(snapshots or {})
    snap_sets = {} if snap_sets is None else snap_sets
    snap_sets.update({t: torch.zeros_like(data.images) for t in snapshots})
    until = max(snapshots) if final is not None and snapshots else None
    out = torch.zeros_like(data.images) if final is None else final.clone()
    t0 = time.perf_counter()
    _pin_sizing(attack, data, device, batch_size, store, world, force)
    groups = _my_groups(attack, data, device, batch_size, world)
    mine = [b for g in groups for b in g]
    bar = tqdm(total=sum(hi - lo for lo, hi in mine), desc=f"craft {attack.label}", unit="img",
               disable=not progress or not world.main,
               bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} img [{elapsed}<{remaining}, {rate_fmt}]")
    crafted_now = []   # (lo, hi) of the batches crafted now: the log names them (per rank under DDP)
    who = f"rank {world.rank}/{world.size}: " if world.active else ""   # each rank's log says what it did
    if store is not None and not force and not store.full.exists():
        _log_resume(who, store, mine)
    settings_kept = store is None or (not force and store.settings_path.exists())
    have = _stored(mine, final, store, snapshots, force)
    for group in groups:
        rows = [(lo, hi) for lo, hi in group
                if have[lo, hi][0] is None or any(v is None for v in have[lo, hi][1].values())]
        shown = bar.n
        if rows:
            if stop is not None:
                stop.check(f"before batch {_named(rows)}")
            # The bar moves after every step, not only after every batch: a PGN batch of 64 can take a minute.
            per_step = sum(hi - lo for lo, hi in rows) / max(1, until or attack.steps)
            xs_of = _resumable_pack(attack, data, y_attack, rows, device, seed, tuple(snapshots), until,
                                    None if force else store, stop, world, settings_kept,
                                    tick=lambda: bar.update(per_step))
            for (lo, hi), xs in zip(rows, xs_of):
                settings_kept = _keep_batch(attack, data, lo, hi, xs, have, snapshots, store, final, quantize_mode,
                                            settings_kept, world)
                crafted_now.append((lo, hi))
        for lo, hi in group:
            out[lo:hi] = have[lo, hi][0]
            for t in snapshots:
                snap_sets[t][lo:hi] = have[lo, hi][1][t]
        bar.n = shown + sum(hi - lo for lo, hi in group)   # whole again: the group's images are done
        bar.refresh()
    bar.close()
    _log_crafted(who, crafted_now, len(mine))
    return out, time.perf_counter() - t0, len(crafted_now)


def _stored(mine, final, store, snapshots, force: bool) -> dict:
    """(lo, hi) -> (the stored last step or None, {step: the stored snapshot or None}) for each batch."""
    have = {}
    for lo, hi in mine:
        done = final[lo:hi] if final is not None else None if (store is None or force) else store.load_batch(lo, hi)
        have[lo, hi] = done, {t: None if force else st.load_batch(lo, hi) for t, st in snapshots.items()}
    return have


def _my_groups(attack, data: ImageSet, device, batch_size: int, world: World) -> List[List[tuple]]:
    """The batches this rank crafts, in groups crafted together (one call of the loop each): fixed
    runs of the pack size (:mod:`flatbench.attacks.packing`) over the whole set, so a group is the
    same on resume, and dealt to the ranks whole, so a data-parallel cell crafts the groups one
    process crafts (equal images, not only equal draws)."""
    bounds = [(lo, min(len(data), lo + batch_size)) for lo in range(0, len(data), batch_size)]
    size = _pack_size(attack, data, device, batch_size) if bounds else 1
    groups = [bounds[k:k + size] for k in range(0, len(bounds), size)]
    return [g for j, g in enumerate(groups) if world.mine(j)]


def _keep_batch(attack, data: ImageSet, lo: int, hi: int, xs, have: dict, snapshots, store, final, quantize_mode: str,
                settings_kept: bool, world: World) -> bool:
    """Quantize a crafted batch's images, checkpoint them in the store(s) and put them in ``have``;
    returns whether the crafting settings are kept (written with the first batch)."""
    kept = {t: quantize(xs[t], data.images[lo:hi], attack.eps, attack.norm, quantize_mode).cpu() for t in snapshots}
    for t, st in snapshots.items():
        st.save_batch(lo, hi, kept[t])
    done = have[lo, hi][0]
    if final is None:
        done = quantize(xs[attack.steps], data.images[lo:hi], attack.eps, attack.norm, quantize_mode).cpu()
    settings_kept = settings_kept or (store is not None and store.settings_path.exists())
    if store is not None:
        if not settings_kept and world.main:
            store.save_crafting_settings(attack.chunk, attack.memory_format)
            settings_kept = True
        if final is None:
            store.save_batch(lo, hi, done)
    have[lo, hi] = done, kept
    return settings_kept


def _log_resume(who: str, store: AdvStore, mine) -> None:
    have = sum(store.batch_path(lo, hi).exists() for lo, hi in mine)
    if have:
        log.info("%sresuming: %d of %d batches already finished (checkpoints in %s)", who, have, len(mine), store.batches)


def _log_crafted(who: str, crafted_now, n_mine: int) -> None:
    """What this rank crafted now and what came from checkpoints (the log names the batches)."""
    named = _named(crafted_now[:40]) + (f" ... ({len(crafted_now) - 40} more)" if len(crafted_now) > 40 else "")
    log.info("%scrafted %d of %d batches now, %d from checkpoints%s", who, len(crafted_now), n_mine,
             n_mine - len(crafted_now), f"; crafted batches {named}" if crafted_now else "")

def _pin_sizing(attack, data: ImageSet, device, batch_size: int, store: Optional[AdvStore], world: World,
                force: bool) -> None:
    """One chunk size and memory format for the whole set: a resumed cell keeps the ones its first
    batches were crafted with (chunking and memory format change the floating-point summation
    order), and under torchrun every rank takes rank 0's instead of measuring its own."""
    settings = store.crafting_settings() if store is not None and not force else None
    if settings is None and world.active:
        if world.main:
            x0 = data.floats(slice(0, min(len(data), batch_size))).to(device)
            settings = {"chunk": attack.resolved_chunk(x0), "memory_format": attack.memory_format}
        settings = world.broadcast(settings)
    if settings is not None:
        attack.pin(settings["chunk"], settings["memory_format"])
        log.info("crafting with chunk %s, %s (%s)", settings["chunk"], settings["memory_format"],
                 "as the finished batches were" if store is not None and store.settings_path.exists() else "rank 0's choice")


def _pack_size(attack, data: ImageSet, device, batch_size: int) -> int:
    """Batches crafted together in one call of the loop (:mod:`flatbench.attacks.packing`: by rule,
    from the chunk the batches are crafted with)."""
    attack.chunk = attack.resolved_chunk(data.floats(slice(0, min(len(data), batch_size))).to(device))
    size = pack_size(attack, batch_size)
    if size > 1:
        log.info("packing %d batches of %d images per call (chunk %s)", size, batch_size, attack.chunk)
    return size


def _named(rows) -> str:
    return " ".join(f"{lo}:{hi}" for lo, hi in rows)


def _resumable_pack(attack, data: ImageSet, y_attack: torch.Tensor, rows, device, seed: int, at: tuple,
                    until: Optional[int], store: Optional[AdvStore], stop: Optional[StopRequest], world: World,
                    settings_kept: bool, tick=None) -> List[Dict[int, torch.Tensor]]:
    """The batches ``rows`` crafted in one call, continued from their paused state when the store has
    one; a stop signal pauses them after the current step, keeps that state in the store (under the
    first batch's start and the last one's end), and stops the cell (a requeue resumes it there)."""
    lo, hi = rows[0][0], rows[-1][1]
    resume = store.load_partial(lo, hi) if store is not None else None
    if resume is not None and [tuple(r) for r in resume.get("batches", [(lo, hi)])] != list(rows):
        log.info("batches %s: the paused state kept for %s is not theirs; crafting from the start", _named(rows),
                 _named(resume["batches"]))
        resume = None
    if resume is not None:
        log.info("batch %s: continuing from step %d (its state was kept when it paused)", _named(rows), resume["step"] + 1)
    asked = stop.requested if stop is not None and store is not None else None

    def pause() -> bool:   # asked after every step but the last: the progress bar moves, a signal pauses
        if tick is not None:
            tick()
        return bool(asked is not None and asked())

    if stop is not None:
        stop.crafting = True
    try:
        xs = _run_pack(attack, data, y_attack, rows, device, seed, at, until, pause, resume)
    except Paused as p:
        if not settings_kept and world.main:   # the state holds only for the chunk and format it was made with
            store.save_crafting_settings(attack.chunk, attack.memory_format)
        store.save_partial(lo, hi, {**p.state, "batches": [list(r) for r in rows]})
        stop.check(f"in batch {_named(rows)} after step {p.state['step']}; its state is kept and the batch continues "
                   "from there")
        raise
    finally:
        if stop is not None:
            stop.crafting = False
    if store is not None:
        store.drop_partial(lo, hi)
    return xs


def _run_pack(attack, data: ImageSet, y_attack: torch.Tensor, rows, device, seed: int, at: tuple,
              until: Optional[int], pause=None, resume=None) -> List[Dict[int, torch.Tensor]]:
    """The attack's trajectory on the batches ``rows`` (the steps ``at`` and the last), one dict per
    batch; its failures named by the batches' images."""
    lo, hi = rows[0][0], rows[-1][1]
    index = [i for a, b in rows for i in range(a, b)]
    x = data.floats(index).to(device)
    # Each batch is keyed by its first image index, so its noise does not depend on the rank, on
    # what ran before it, or on the batches packed with it.
    # A batch of one has no other image to mix with: mixing transforms draw from the data set.
    partners = None
    if len(index) == 1 and len(data) > 1 and any(hasattr(t, "with_partners") for t in attack.transforms):
        partners = data.floats([(lo + 1 + j) % len(data) for j in range(min(16, len(data) - 1))]).to(device)
    packed = [((seed, a), b - a) for a, b in rows] if len(rows) > 1 else None
    try:
        xs = attack.trajectory(x, y_attack[index].to(device), at, seed=(seed, lo), partners=partners, until=until,
                               pause=pause, resume=resume, packed=packed)
    except NonFiniteError as exc:
        where = f"batch of images {lo}..{hi - 1}" if len(rows) == 1 else f"batches {_named(rows)} (crafted together)"
        raise NonFiniteError(f"{exc} in {where} ({data.ids[lo]}..{data.ids[hi - 1]})") from None
    except torch.OutOfMemoryError:
        raise OutOfMemory(f"out of memory on {device} crafting images {_named(rows)} (chunk resolved to "
                          f"{attack.chunk_setting}); lower chunk or batch_size, set memory_budget_mb, or use "
                          "amp=bf16; finished batches are kept") from None
    sizes = [b - a for a, b in rows]
    parts = {t: v.split(sizes) for t, v in xs.items()}
    return [{t: parts[t][i] for t in xs} for i in range(len(rows))]


def craft_cell(cell, st: Settings, w: World, surrogate, stop: Optional[StopRequest] = None) -> None:
    """The stage: choose the attack's labels, then craft what is missing (resuming from the
    store's finished batches) and store the whole set, or take the set the plan found.
    ``surrogate()`` builds the surrogate on first use (a reused set may never need it)."""
    s, data, run = cell.settings, cell.data, st.run
    cell.y_attack = choose_target_classes(s, data, surrogate() if s.targeted and s.target_rule == "least_likely" else None,
                                   cell.device, run.batch_size)
    if cell.stored is not None:
        cell.adv = cell.stored[0]
        cell.craft_meta = cell.store.crafted() or {"craft_seconds": float("nan"), "grad_evals": -1}
        log.info("cell %s: reusing the stored adversarial set (%d images)", cell.cell_id, len(cell.adv))
        if cell.snap_todo:   # the steps it lacks: the run again, as far as the last of them
            log.info("cell %s: crafting again up to step %d for the snapshots %s it lacks", cell.cell_id,
                     max(cell.snap_todo), cell.snap_todo)
            craft(cell.attack, data, cell.y_craft, cell.device, run.batch_size, s.seed, run.progress,
                  store=cell.store, world=w, force=cell.force, quantize_mode=run.quantize, stop=stop,
                  snapshots={t: cell.snapshots[t] for t in cell.snap_todo}, final=cell.adv, snap_sets=cell.snaps)
            log.info("cell %s: the snapshots cost %d gradient evaluations (%s)", cell.cell_id,
                     int(w.sum(cell.attack.grad_evals)), "all ranks" if w.active else "images through forward+backward")
            _store_snapshots(cell, w, run.batch_size, cell.snap_todo)
        cell.snaps.update({t: snap.load()[0] for t, snap in cell.snapshots.items() if t not in cell.snap_todo})
        return
    attack, store = cell.attack, cell.store
    adv, seconds, _ = craft(attack, data, cell.y_craft, cell.device, run.batch_size, s.seed, run.progress,
                            store=store, world=w, force=cell.force, quantize_mode=run.quantize, stop=stop,
                            snapshots=cell.snapshots, snap_sets=cell.snaps)
    grad_evals = int(w.sum(attack.grad_evals))
    seconds = w.max(seconds)
    if w.main and not w.active and grad_evals and seconds > 0:   # the rate `flatbench plan` projects from
        shape = tuple(data.floats(slice(0, 1)).shape[1:])
        record_rate(st.paths.cache_dir, craft_key(s.surrogate, shape, cell.device.type, attack.amp,
                                                   per_forward(attack, run.batch_size, len(data))),
                    grad_evals / seconds, f"cell {cell.cell_id}")
    cell.craft_meta = {"craft_seconds": seconds, "grad_evals": grad_evals, "chunk": attack.chunk,
                       "memory_format": attack.memory_format}
    w.barrier()
    if w.main:
        parts = [store.load_batch(lo, min(len(data), lo + run.batch_size)) for lo in range(0, len(data), run.batch_size)]
        adv = torch.cat(parts)
        store.save(adv, data.ids, {"cell_id": cell.cell_id, **cell.craft_meta, "semantic": cell.semantic})
        log.info("wrote the adversarial set (%d images) to %s", len(adv), store.full)
    w.barrier()
    cell.adv = store.load()[0] if w.active else adv
    _store_snapshots(cell, w, run.batch_size, list(cell.snapshots))


def _store_snapshots(cell, w: World, batch_size: int, steps) -> None:
    """Each snapshot step's whole set from its batches (every rank's), as the last step's is stored."""
    n = len(cell.data)
    for t in steps:
        st = cell.snapshots[t]
        w.barrier()
        if w.main:
            adv = torch.cat([st.load_batch(lo, min(n, lo + batch_size)) for lo in range(0, n, batch_size)])
            st.save(adv, cell.data.ids, {"cell_id": cell.cell_id, "step": t,
                                         "grad_evals": cell.attack.predicted_grad_evals(n, t)})
        w.barrier()
        cell.snaps[t] = st.load()[0] if w.active else adv
