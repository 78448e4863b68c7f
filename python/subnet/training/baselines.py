"""`subnet baseline`: what an extracted subnetwork has to beat, in the same metrics.json format.

- `probe`: the full frozen encoder + the same head, no gates (a linear probe).
- `scratch`: the compact architecture of a reference artifact, randomly initialised, every
  weight trained (same number of steps by default, `--steps-factor` for a longer budget);
  it trains the small model itself, so a step costs what the compact model costs.
- `random`: random units with the reference's per-group counts; frozen encoder, head trained.
- `refit`: the reference's own units; frozen encoder, a new head trained like `random`'s, so
  that the two differ only in which units are kept (an extraction's head learns while its
  gates still change).
- `importance`: one-shot pruning to the reference's per-group counts by the first-order
  (gradient x activation) importance |sum dL/dg| at all gates on; head trained.

Every baseline reuses the extraction loop (`Extractor` with the gates fixed) and its
`finish`, so the artifact, metrics.json, latency and FLOP counts are measured the same way
as for `subnet extract`. Once `random`, `refit` and `importance` have chosen their units, the
others are frozen, so the head trains on a copy of the encoder shrunk to the kept units (the
same function, at the compact model's cost: a refit at 36% kept ran 1.7x faster on kws).
A baseline given a reference artifact takes its training config
(config.json: task, kinds, steps, batch size, head, seed) unless a flag overrides it.
"""
from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

import torch
from torch import nn

from ..core.artifact import read_info
from ..core.compact import compact
from ..core.gates import MaskedModel
from .loop import ExtractConfig, Extractor, run_loop

METHODS = ("probe", "scratch", "random", "refit", "importance")


# --- reference artifact ---------------------------------------------------------------------
def reference_config(artifact) -> ExtractConfig:
    """The ExtractConfig the artifact was trained with (its config.json), else the defaults."""
    file = Path(artifact) / "config.json"
    if not file.is_file():
        return ExtractConfig()
    known = {f.name for f in fields(ExtractConfig)}
    raw = {k: v for k, v in json.loads(file.read_text()).items() if k in known}
    if "kinds" in raw:
        raw["kinds"] = tuple(raw["kinds"])
    return ExtractConfig(**raw)


def kept_counts(info) -> dict[str, int]:
    return {name: len(idx) for name, idx in info.keep.items()}


def random_keep(info, seed: int = 0) -> dict[str, torch.Tensor]:
    """Uniformly random units with exactly the reference's kept count in every group."""
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for name, count in kept_counts(info).items():
        mask = torch.zeros(info.sizes[name], dtype=torch.bool)
        mask[torch.randperm(info.sizes[name], generator=g)[:count]] = True
        keep[name] = mask
    return keep


def top_keep(scores: dict[str, torch.Tensor], counts: dict[str, int]) -> dict[str, torch.Tensor]:
    """Per group, keep the `counts[name]` units with the highest score."""
    keep = {}
    for name, s in scores.items():
        mask = torch.zeros(s.numel(), dtype=torch.bool)
        mask[torch.topk(s, counts[name]).indices] = True
        keep[name] = mask
    return keep


def gate_importance(ex: Extractor, batches) -> dict[str, torch.Tensor]:
    """|sum over batches of dL/dg| per unit, all gates on: the first-order change of the task
    loss when the unit (gate 1 x its activation) is removed."""
    mm = ex.masked
    flags = [p.requires_grad for p in mm.logits]
    mm.logits.requires_grad_(True)
    ex.head.eval()
    total = [torch.zeros_like(p) for p in mm.logits]
    for b in batches:
        logits, frames = ex.pipeline(b.waves, b.lengths)
        loss = ex.task.loss(logits, frames, b.targets)
        grads = torch.autograd.grad(loss, list(mm.logits), allow_unused=True)
        for acc, gr in zip(total, grads):
            if gr is not None:
                acc += gr
    for p, f in zip(mm.logits, flags):
        p.requires_grad_(f)
    out = {}
    for name, p, acc in zip(mm.groups, mm.logits, total):
        s = torch.sigmoid(p.detach())
        out[name] = (acc / (s * (1 - s))).abs()  # straight-through: dL/dm = dL/dg * sigmoid'(m)
    return out


def random_init(model: nn.Module, seed: int) -> nn.Module:
    """Fresh random weights for every module whose parameters train (the default init of its
    layer type); frozen tables such as Whisper's sinusoidal positions stay as built."""
    torch.manual_seed(seed)
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if own and all(p.requires_grad for p in own) and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model


class FullTrainer(Extractor):
    """An Extractor that trains the encoder's weights too (no gates: the encoder given is
    already the architecture to train) and checkpoints them."""

    def __init__(self, backbone: nn.Module, *args, lr_encoder: float = 5e-4, **kw):
        trainable = [p for p in backbone.parameters() if p.requires_grad]
        super().__init__(backbone, *args, **kw)  # the MaskedModel freezes the backbone
        for p in trainable:
            p.requires_grad_(True)
        self.opt.add_param_group({"params": trainable, "lr": lr_encoder})

    def _attach(self, backbone: nn.Module) -> MaskedModel:
        from ..families import family_of
        return MaskedModel(backbone, family_of(backbone), {})  # no gates, nothing to prune

    def checkpoint(self) -> dict:
        return {**super().checkpoint(),
                "encoder": {k: v.detach().clone() for k, v in self.masked.backbone.state_dict().items()}}

    def restore(self, ck: dict) -> None:
        self.masked.backbone.load_state_dict(ck["encoder"])
        super().restore(ck)


# --- the shared run ---------------------------------------------------------------------------
def _setup(backbone: nn.Module, train, valid, test, cfg: ExtractConfig, out: Path, max_seconds,
           progress: bool, trainer=Extractor, **trainer_kw):
    from .extract import setup_run
    return setup_run(backbone, train, valid, test, cfg, out, max_seconds, progress, trainer=trainer, **trainer_kw)


def _finish(run, out: Path, measure_latency: bool, small=None, full=None, **fields_) -> dict:
    """extract's finish (compact, verify, save, evaluate, measure) + what the baseline was."""
    from .extract import finish
    m = finish(run, out, measure_latency, small=small, full=full)
    m.update(fields_, seed=run.ex.cfg.seed, steps=run.ex.cfg.steps)
    (out / "metrics.json").write_text(json.dumps(m, indent=1))
    return m


def _prepared(backbone, max_seconds, layer="weighted"):
    from .. import load_backbone
    from .extract import drop_unread_layers, prepare_backbone
    return drop_unread_layers(prepare_backbone(load_backbone(backbone), max_seconds), layer)[0]


def _fixed(cfg: ExtractConfig, info) -> ExtractConfig:
    """Gates fixed, and the same unit kinds as the reference (so the groups line up); the
    reference's distillation options go (they steer which units the gates keep)."""
    return replace(cfg, train_gates=False, kinds=tuple(sorted(set(info.kinds.values()))), distill=0.0, kd=0.0,
                   teacher_input="same", unlabeled="")


def _check_base(backbone: nn.Module, info, artifact) -> None:
    from ..core.hashing import weights_hash
    if info.base_hash and weights_hash(backbone) != info.base_hash:
        raise ValueError(f"{artifact} was extracted from other base weights than --backbone (or with "
                         "another --max-seconds, which changes Whisper's positional table); give the same")


# --- the four baselines ---------------------------------------------------------------------
def probe(backbone, train, valid, test=None, cfg: ExtractConfig | None = None, out="probe-out",
          max_seconds: float | None = 2.0, progress: bool = True, measure_latency: bool = True) -> dict:
    """The full frozen encoder + the same head, all gates on (the paper's reference)."""
    from .extract import extract
    out = Path(out)
    m = extract(backbone, train, valid, test, replace(cfg or ExtractConfig(), train_gates=False), out,
                max_seconds=max_seconds, progress=progress, measure_latency=measure_latency)
    m.update(method="probe", backbone=str(backbone), train_set=str(train), seed=(cfg or ExtractConfig()).seed,
             steps=(cfg or ExtractConfig()).steps)
    (out / "metrics.json").write_text(json.dumps(m, indent=1))
    return m


def random_units(backbone, artifact, train, valid, test=None, cfg: ExtractConfig | None = None,
                 out="random-out", max_seconds: float | None = 2.0, progress: bool = True,
                 measure_latency: bool = True) -> dict:
    """Random units, the artifact's per-group counts (seeded by cfg.seed); head trained."""
    return _fixed_units("random", backbone, artifact, train, valid, test, cfg, out, max_seconds, progress,
                        measure_latency)


def refit(backbone, artifact, train, valid, test=None, cfg: ExtractConfig | None = None,
          out="refit-out", max_seconds: float | None = 2.0, progress: bool = True,
          measure_latency: bool = True) -> dict:
    """The artifact's own units, a new head trained exactly as `random_units` trains its head."""
    return _fixed_units("refit", backbone, artifact, train, valid, test, cfg, out, max_seconds, progress,
                        measure_latency)


def refit_extraction(backbone, extraction, train, valid, test=None, seed: int | None = None,
                     max_seconds: float | None = 2.0, progress: bool = True, measure_latency: bool = True,
                     rerun: bool = False) -> dict:
    """`refit` on an extraction just made (`subnet extract --refit`, `subnet sweep --refit`): its
    units, a new head trained with its own config (steps, lr, batch; `seed`: the same unless
    given) and the gates fixed, into EXTRACTION/refit. A finished refit is read back unless `rerun`."""
    extraction = Path(extraction)
    done = extraction / "refit" / "metrics.json"
    if done.is_file() and not rerun:
        return json.loads(done.read_text())
    cfg = reference_config(extraction)
    cfg = replace(cfg, seed=cfg.seed if seed is None else seed)
    return refit(backbone, extraction, train, valid, test, cfg, out=extraction / "refit", max_seconds=max_seconds,
                 progress=progress, measure_latency=measure_latency)


def _fixed_units(method, backbone, artifact, train, valid, test, cfg, out, max_seconds, progress,
                 measure_latency) -> dict:
    info = read_info(artifact)
    cfg = _fixed(cfg or reference_config(artifact), info)
    bb = _prepared(backbone, max_seconds, cfg.layer)
    _check_base(bb, info, artifact)
    run = _setup(bb, train, valid, test, cfg, Path(out), max_seconds, progress)
    run.ex.masked.set_keep(random_keep(info, cfg.seed) if method == "random" else info.keep_masks())
    run.ex.masked.freeze_dead()  # the removed units are not computed: the encoder runs at the kept size
    run_loop(run.ex, run.steps, run.valid, run.log, progress)
    return _finish(run, Path(out), measure_latency, method=method, reference=str(artifact),
                   backbone=str(backbone), train_set=str(train))


def importance(backbone, artifact, train, valid, test=None, cfg: ExtractConfig | None = None,
               out="importance-out", max_seconds: float | None = 2.0, progress: bool = True,
               measure_latency: bool = True, prune_at: float = 0.3, score_batches: int = 8) -> dict:
    """Head trained on the full encoder for the first `prune_at` of the steps; gate gradients
    summed over `score_batches` training batches; each group pruned to the artifact's count by
    |sum dL/dg|; the head trained on for the remaining steps."""
    info = read_info(artifact)
    cfg = _fixed(cfg or reference_config(artifact), info)
    bb = _prepared(backbone, max_seconds, cfg.layer)
    _check_base(bb, info, artifact)
    run = _setup(bb, train, valid, test, cfg, Path(out), max_seconds, progress)
    ex, first = run.ex, int(round(prune_at * cfg.steps))
    if first > 0:  # a random head's gradients say little about the units: train it first
        ex.cfg = replace(cfg, steps=first)
        run_loop(ex, run.steps, run.valid, run.log, progress)
        ex.cfg = cfg
    scores = gate_importance(ex, (run.steps(i) for i in range(score_batches)))
    ex.masked.set_keep(top_keep(scores, kept_counts(info)))
    ex.masked.freeze_dead()  # the pruned units are not computed from here on
    # the best state is picked among validations at the pruned size (run_loop's kept tolerance)
    run_loop(ex, run.steps, run.valid, run.log, progress)
    torch.save({n: s for n, s in scores.items()}, Path(out) / "importance.pt")
    return _finish(run, Path(out), measure_latency, method="importance", reference=str(artifact),
                   backbone=str(backbone), train_set=str(train), prune_at=prune_at, score_batches=score_batches)


def scratch(artifact, train, valid, test=None, cfg: ExtractConfig | None = None, out="scratch-out",
            max_seconds: float | None = 2.0, progress: bool = True, measure_latency: bool = True,
            steps_factor: float = 1.0, lr_encoder: float = 5e-4) -> dict:
    """The artifact's compact architecture, randomly initialised, all weights + head trained for
    `steps_factor` x the reference's steps. The full architecture is built, cut to the
    artifact's units and re-initialised at its new sizes, so each step costs what the compact
    model costs; the saved artifact describes it like any extraction's (same kept units)."""
    from .. import attach_masks
    from ..families import family_named
    info = read_info(artifact)
    base_cfg = _fixed(cfg or reference_config(artifact), info)
    cfg = replace(base_cfg, steps=max(1, int(round(base_cfg.steps * steps_factor))))
    torch.manual_seed(cfg.seed)
    full = _prepared(random_init(family_named(info.family).build(info.base).eval(), cfg.seed), max_seconds)
    trains = {n for n, p in full.named_parameters() if p.requires_grad}  # not e.g. sinusoidal positions
    mm = attach_masks(full, kinds=tuple(sorted(set(info.kinds.values()))))
    small = compact(mm, info.keep_masks())
    full = mm.detach_backbone()
    for n, p in small.named_parameters():
        p.requires_grad_(n in trains)
    random_init(small, cfg.seed)  # initialised for its own (smaller) fan-in, as a small model would be
    run = _setup(small, train, valid, test, cfg, Path(out), max_seconds, progress, trainer=FullTrainer,
                 lr_encoder=lr_encoder)
    run_loop(run.ex, run.steps, run.valid, run.log, progress)
    method = "scratch" if steps_factor == 1 else f"scratch-{steps_factor:g}x"  # a longer budget is its own series
    return _finish(run, Path(out), measure_latency, small=small, full=full, method=method,
                   reference=str(artifact), backbone=f"{info.family} (random init)", train_set=str(train),
                   steps_factor=steps_factor, lr_encoder=lr_encoder)


# --- command line -----------------------------------------------------------------------------
