"""The extraction loop: train gate logits + a task head on a frozen encoder, then compact.

The data order is a pure function of (seed, step), and the optimiser, the gates, the head
and the RNG state are checkpointed atomically, so a killed run resumed from its checkpoint
ends exactly where an uninterrupted run would. Under `torchrun` every process takes its
share of each global batch and gradients are averaged (gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import distributed as dist
from torch import nn

from .encoder_cache import EncoderCache
from .front_end_cache import FrontEndCache
from ..families.front_ends import FrontEnd
from .pipeline import Pipeline
from ..core.gates import MaskedModel
from ..core.losses import SparsityLoss
from ..core.units import COST_ATTRS
from .distill import KINDS as DISTILL_LOSSES
from .distill import distill_loss, load_teacher_head
from .tasks import task_named
from ..data.augment import parse_augment


@dataclass
class ExtractConfig:
    task: str = "classify"  # classify | tag | ctc
    kinds: tuple = ("conv", "head", "ffn")
    loss: str = "budget"  # seed | mean | budget
    t: float = 0.5
    lam: float = 1.0
    cost: str = "params"
    steps: int = 300
    batch_size: int = 16
    lr_gates: float = 0.05
    lr_head: float = 1e-3
    layer: str | int = "weighted"
    head_dropout: float = 0.1
    eval_every: int = 50
    checkpoint_every: int = 25
    seed: int = 0
    train_gates: bool = True  # False: a linear probe of the full encoder (gates fixed on)
    coupled: bool = False  # True: lambda * L_s goes through Adam with the task loss (paper-style)
    warmup: float = 0.1  # fraction of the steps over which lambda ramps up from 0
    align: int = 1  # round kept conv/FFN units per group to a multiple of this at compaction
    cache_encoder: bool = True  # fixed gates + frozen encoder: compute each clip's hidden states once
    cache_front_end: bool = True  # no gate in the conv front end: compute its output once per clip
    freeze_dead: int = 0  # > 0: a unit whose gate stayed 0 this many steps is frozen and no longer computed
    settle: float = 0.0  # fraction of the steps, at the end, with every gate fixed: only the head trains
    device: str = "auto"  # auto (cuda when available) | cpu | cuda[:N]
    dtype: str = "fp32"  # fp32 | bf16 (autocast of the forward pass; gates and head stay fp32)
    compile: str = ""  # "" (eager) | default | reduce-overhead (CUDA graphs) | max-autotune: torch.compile of the encoder
    front_end: dict = field(default_factory=dict)  # settings of the family's front end to change, e.g. {"hop": 0.1}
    augment: str = ""  # waveform augmentation of training batches: a data.augment spec ("" = off)
    distill: float = 0.0  # weight of the loss pulling the gated encoder's states to the full encoder's (0 = off)
    distill_layers: str = "mix"  # "mix" (what the head reads), "all" (every hidden state) or comma-separated indices
    distill_loss: str = "mse"  # mse | l1cos (DPHuBERT's L1 + cosine distance)
    teacher: str = ""  # a probe of this encoder (artifact of `subnet extract --probe`): its head on the full encoder's
    # states; "" with kd: `extract` trains one first into OUT/teacher
    kd: float = 0.0  # weight of the loss pulling the head's predictions to the teacher's on the same batch (0 = off)
    kd_temperature: float = 2.0  # both predictions softened by this temperature (Hinton et al. 2015)
    teacher_input: str = "same"  # what the distillation teacher hears of an augmented clip: "same" (the
    # augmented clip) | "clean" (the clip before the room, channel, noise and gain; speed and pitch kept)
    unlabeled: str = ""  # clips without labels (folder tree or manifest[@split]; e.g. recordings of where the model
    # will be used): each step also distils the full encoder on a batch of them (distill / kd, same weights)


@dataclass
class Batch:
    waves: torch.Tensor  # (B, T) float, zero padded
    lengths: torch.Tensor  # (B,) samples
    targets: object  # LongTensor (B,), FloatTensor (B, C) multi-hot, or list[str]
    teacher_waves: torch.Tensor | None = None  # what the teacher hears (same lengths); None: `waves`
    unlabeled: tuple | None = None  # (waves, lengths) of clips without labels, for the distillation losses only


DTYPES = ("fp32", "bf16")
TEACHER_INPUTS = ("same", "clean")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when torch sees a GPU, else cpu; anything else as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: torch sees no CUDA device here (use --device cpu)")
    return device


def _distill_layers(text) -> str | list[int]:
    """ExtractConfig.distill_layers: "mix", "all" or comma-separated hidden-state indices."""
    if isinstance(text, (list, tuple)):
        return [int(i) for i in text]
    if str(text).strip() in ("mix", "all"):
        return str(text).strip()
    try:
        layers = [int(i) for i in str(text).split(",") if i.strip()]
    except ValueError:
        layers = []
    if not layers:
        raise ValueError(f"distill_layers must be 'mix', 'all' or comma-separated layer indices (e.g. 0,2,4), "
                         f"not {text!r}")
    return layers


def _to(value, device):
    return value.to(device) if torch.is_tensor(value) else value


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class RunState:
    step: int = 0
    best_metric: float = -math.inf
    best_step: int = -1
    best_kept: float = 1.0
    min_kept: float = 1.0
    history: list = field(default_factory=list)


class Extractor:
    """Owns the masked model, the head and the optimiser; `run` is the whole loop."""

    def __init__(self, backbone: nn.Module, n_out: int, cfg: ExtractConfig, out: Path,
                 labels: list[str] | None = None, front_end: FrontEnd | None = None):
        self.cfg, self.out, self.labels = cfg, Path(out), labels
        self.device = resolve_device(cfg.device)
        if cfg.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {cfg.dtype!r}")
        if not 0 <= cfg.settle < 1:
            raise ValueError(f"settle is the fraction of the steps with the gates fixed, in [0, 1), not {cfg.settle}")
        if cfg.compile and cfg.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be '' (eager) or one of {COMPILE_MODES}, not {cfg.compile!r}")
        parse_augment(cfg.augment)  # a bad spec fails here, before any work
        if cfg.distill < 0:
            raise ValueError(f"distill is a loss weight, >= 0, not {cfg.distill}")
        if cfg.distill and not cfg.train_gates:
            raise ValueError("distill pulls the gated encoder towards the full one: it needs gates to train "
                             "(a probe has none)")
        if cfg.distill_loss not in DISTILL_LOSSES:
            raise ValueError(f"distill_loss must be one of {DISTILL_LOSSES}, not {cfg.distill_loss!r}")
        if cfg.kd < 0:
            raise ValueError(f"kd is a loss weight, >= 0, not {cfg.kd}")
        if cfg.kd and not cfg.teacher:
            raise ValueError("kd pulls the predictions towards a teacher's: give teacher, the artifact of a probe "
                             "of this encoder (subnet extract --probe)")
        if cfg.kd and not cfg.train_gates:
            raise ValueError("kd trains an extraction towards its probe: it needs gates to train (a probe has none)")
        if not cfg.kd_temperature > 0:
            raise ValueError(f"kd_temperature must be > 0, not {cfg.kd_temperature}")
        if cfg.teacher_input not in TEACHER_INPUTS:
            raise ValueError(f"teacher_input must be one of {TEACHER_INPUTS}, not {cfg.teacher_input!r}")
        if cfg.teacher_input == "clean" and not (cfg.augment and (cfg.distill or cfg.kd)):
            raise ValueError("teacher_input 'clean' gives the teacher of distill or kd the clips before "
                             "augmentation: it needs augment and distill or kd")
        if cfg.unlabeled and not (cfg.distill or cfg.kd):
            raise ValueError(f"unlabeled clips ({cfg.unlabeled}) only enter the distillation losses: give distill "
                             "or kd")
        self.distill_layers = _distill_layers(cfg.distill_layers)
        torch.manual_seed(cfg.seed)
        self.masked: MaskedModel = self._attach(backbone).to(self.device)
        self.masked.backbone.eval()
        self.front_end = front_end or self.masked.family.front_end(backbone)
        width, n_states = self._probe_shapes()
        if self.distill_layers == "all":
            self.distill_layers = list(range(n_states))
        if self.distill_layers != "mix" and not all(-n_states <= i < n_states for i in self.distill_layers):
            raise ValueError(f"distill_layers {cfg.distill_layers!r}: the encoder has {n_states} hidden states "
                             f"(indices 0..{n_states - 1})")
        self.task = task_named(cfg.task)
        self.head = self.task.head(width, n_states, n_out, cfg.layer).to(self.device)
        for m in self.head.modules():
            if isinstance(m, nn.Dropout):
                m.p = cfg.head_dropout
        self.head_config = {"task": cfg.task, "width": width, "n_states": n_states, "n_out": n_out,
                            "layer": cfg.layer}
        self.teacher_head = None
        if cfg.kd:
            with self.masked.gates_removed() as base:
                self.teacher_head = load_teacher_head(cfg.teacher, base, self.head_config, labels).to(self.device)
        self.pipeline = Pipeline(self.masked, self.front_end, self.head, self.task, labels)
        # (augmented clips are new every step: a per-clip cache would only fill up)
        if cfg.cache_encoder and not cfg.train_gates and not cfg.augment:
            self.pipeline.cache = EncoderCache(self._gate_state)
        # the teacher's states are a fixed function of the clip unless it hears the augmented one
        # (a clean teacher's input changes only for the clips whose speed or pitch moved)
        self.teacher_cache = (EncoderCache(lambda: b"teacher")
                              if (cfg.distill or cfg.kd) and (not cfg.augment or cfg.teacher_input == "clean") else None)
        self.unlabeled_cache = EncoderCache(lambda: b"teacher") if cfg.unlabeled else None  # (never augmented)
        paths = self.masked.family.front_end_modules(self.masked.backbone)
        # (an encoder cache already serves everything after the front end; a compiled encoder
        # is one graph, which a per-clip lookup in the middle would break)
        if (cfg.cache_front_end and self.pipeline.cache is None and not cfg.compile and not cfg.augment
                and FrontEndCache.applies(self.masked.backbone, paths, self.masked.groups)):
            self.pipeline.front_end_cache = FrontEndCache()
            self.pipeline.front_end_cache.install(self.masked.backbone, paths)
        if cfg.compile:  # forward and backward compiled on first use (elementwise work fused;
            # reduce-overhead replays CUDA graphs); frozen units change the graph: a recompile
            self.pipeline.compile(cfg.compile)
        groups = [{"params": list(self.head.parameters()), "lr": cfg.lr_head}]
        if cfg.train_gates:
            groups.append({"params": list(self.masked.logits), "lr": cfg.lr_gates})
        else:
            self.masked.logits.requires_grad_(False)
        # one multi-tensor update for all parameters (bit-identical to the per-tensor loop, which
        # is PyTorch's CPU default, and a few times faster on these many small tensors)
        self.opt = torch.optim.Adam(groups, foreach=True)
        self.sparsity = SparsityLoss(cfg.loss, cfg.t, cfg.lam, cfg.cost)
        self.state = RunState()

    def _attach(self, backbone: nn.Module) -> MaskedModel:
        from .. import attach_masks
        return attach_masks(backbone, kinds=self.cfg.kinds)

    def _gate_state(self) -> bytes:
        """The gate decision as bytes: part of every EncoderCache key."""
        return b"".join(k.numpy().tobytes() for k in self.masked.keep().values())

    def autocast(self):
        """bf16 autocast of the forward pass when `dtype` is bf16 (a no-op context otherwise)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.dtype == "bf16")

    @torch.no_grad()
    def _probe_shapes(self):
        """(width, number) of the hidden states a head reads, from half a second of noise."""
        inputs = self.front_end.example_inputs(1, 0.5)
        states = self.masked.family.hidden_states(self.masked, {k: _to(v, self.device) for k, v in inputs.items()})
        return states[-1].shape[-1], len(states)

    # --- one step ---------------------------------------------------------------------
    def ramp(self) -> float:
        """Sparsity weight multiplier: 0 -> 1 over the warm-up, so the head learns first."""
        n = self.cfg.warmup * self.cfg.steps
        return 1.0 if n <= 0 else min(1.0, self.state.step / n)

    def settling(self) -> bool:
        """Whether this step is in the last `settle` fraction of the run (gates fixed)."""
        cfg = self.cfg
        return cfg.train_gates and cfg.settle > 0 and self.state.step >= cfg.steps - round(cfg.settle * cfg.steps)

    @torch.no_grad()
    def _settle(self) -> None:
        """Fix every gate where it is: the units off now are frozen (no longer computed), the
        others stay on, and the logits stop training. The head then trains on the units it will
        be shipped with, and a step needs no backward pass through the encoder."""
        self.masked.freeze_dead()
        self.masked.logits.requires_grad_(False)
        for m in self.masked.logits:
            m.grad = None  # (Adam moves a parameter with a zero gradient, not one without)

    def step(self, batch: Batch) -> dict:
        settling = self.settling()
        if settling and any(m.requires_grad for m in self.masked.logits):
            self._settle()  # (also where a run resumed after this point gets back to)
        self.head.train()
        gates = self.cfg.train_gates and not settling
        with self.autocast():
            logits, frames, states = self.pipeline.run(batch.waves, batch.lengths)
        loss_task = self.task.loss(logits.float(), frames, batch.targets)
        distill = gates and self.cfg.distill
        kd = self.cfg.kd and self.cfg.train_gates  # (the settling steps too: the head keeps matching the probe)
        teacher = self._teacher_states(batch) if distill or kd else None
        loss_distill = self._distill(states, teacher, frames) if distill else None
        loss_kd = self._kd(logits, teacher, frames) if kd else None
        loss_unlabeled = self._unlabeled(batch.unlabeled, distill, kd) if batch.unlabeled is not None else None
        loss_sparse = self.sparsity(self.masked) * self.ramp() if gates else logits.new_zeros(())
        # distillation is part of what the units are kept for: it goes through Adam with the task loss
        loss_kept = loss_task
        if loss_distill is not None:
            loss_kept = loss_kept + self.cfg.distill * loss_distill
        if loss_kd is not None:
            loss_kept = loss_kept + self.cfg.kd * loss_kd
        if loss_unlabeled is not None:
            loss_kept = loss_kept + loss_unlabeled
        loss = loss_kept + loss_sparse if self.cfg.coupled else loss_kept
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        if _is_dist():  # average gradients over processes (each saw its share of the batch)
            world = dist.get_world_size()
            for group in self.opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= world
        self.opt.step()
        if gates and not self.cfg.coupled:
            self._sparsity_step(loss_sparse)
        if gates and self.cfg.freeze_dead > 0:
            self.masked.update_dead(self.cfg.freeze_dead)
        self.state.step += 1
        rec = {"step": self.state.step, "loss": float(loss_task.detach()), "sparsity": float(loss_sparse.detach()),
               "kept": self.masked.kept_fraction("params")}
        if loss_distill is not None:
            rec["distill"] = float(loss_distill.detach())
        if loss_kd is not None:
            rec["kd"] = float(loss_kd.detach())
        if loss_unlabeled is not None:
            rec["unlabeled"] = float(loss_unlabeled.detach())
        return rec

    def _teacher_states(self, batch: Batch):
        """The full encoder's states (every gate 1) on what the teacher hears of the batch (the
        clean clips with teacher_input "clean"): one forward, no gradient, read from the
        per-clip cache when its input is not augmented."""
        waves = batch.waves
        if self.cfg.teacher_input == "clean":
            if batch.teacher_waves is None:
                raise ValueError("teacher_input 'clean': this batch carries no clean clips (make the batches with "
                                 "StepBatches(..., clean_teacher=True))")
            waves = batch.teacher_waves
        return self._full_states(waves, batch.lengths, self.teacher_cache)

    def _full_states(self, waves, lengths, cache: EncoderCache | None):
        encode = self.pipeline.teacher_states
        with torch.no_grad(), self.autocast():
            return (cache.states(encode, waves, lengths, not self.front_end.fixed_length)
                    if cache is not None else encode(waves, lengths))

    def _unlabeled(self, clips: tuple, distill: bool, kd: bool) -> torch.Tensor | None:
        """The distillation losses (their weights applied) on a batch of clips without labels:
        the kept units are asked to do what the full encoder does on the audio the model will
        meet (teacher-student domain adaptation, Li et al. Interspeech 2017), with no label."""
        if not (distill or kd):
            return None
        waves, lengths = clips
        with self.autocast():
            logits, frames, states = self.pipeline.run(waves, lengths)
        teacher = self._full_states(waves, lengths, self.unlabeled_cache)
        loss = logits.new_zeros(())
        if distill:
            loss = loss + self.cfg.distill * self._distill(states, teacher, frames)
        if kd:
            loss = loss + self.cfg.kd * self._kd(logits, teacher, frames)
        return loss

    def _kd(self, logits, teacher_states, frames) -> torch.Tensor:
        """Prediction distillation: the distance of the head's predictions to the probe's (the
        teacher head on the full encoder's states of the same batch). The probe is the
        reference an extraction is judged against, in domain and out of it: matching its
        predictions on every training clip (augmented ones too) asks the kept units for what
        the full encoder gives the probe, not only for what separates the training labels."""
        with torch.no_grad():
            teacher = self.teacher_head(teacher_states, frames)
        return self.task.match_loss(logits.float(), teacher.float(), frames, self.cfg.kd_temperature)

    def _distill(self, states, teacher, frames) -> torch.Tensor:
        """Distance of the gated encoder's states to the full encoder's on the same batch
        (`training.distill`); the head's layer mix (detached) says which states matter."""
        mix = self.head.mix
        if self.distill_layers != "mix":
            layers, weights = self.distill_layers, None
        elif mix.layer == "weighted":
            layers, weights = "mix", torch.softmax(mix.weights, 0)
        else:  # a head that reads one state: that state
            layers, weights = [int(mix.layer)], None
        return distill_loss(states, teacher, frames, layers, weights, self.cfg.distill_loss)

    @torch.no_grad()
    def _sparsity_step(self, loss_sparse: torch.Tensor) -> None:
        """Decoupled sparsity (as AdamW decouples weight decay): Adam sees only the task
        gradient, then m <- m - lr * N * dL_s/dm (N units), so a unit the task keeps asking
        for survives and the rest drift down at an O(lr) rate. For the budget loss the
        gradient is divided by the unit's relative cost: the cost decides when to stop
        (kept cost fraction = t), the task decides which units go, whatever their size."""
        logits = list(self.masked.logits)
        with torch.enable_grad():
            grads = torch.autograd.grad(loss_sparse, logits, allow_unused=True)
        n = sum(m.numel() for m in logits)
        rel = [1.0] * len(logits)
        if self.cfg.loss == "budget":
            attr = COST_ATTRS[self.cfg.cost]
            costs = [getattr(g, attr) for g in self.masked.groups.values()]
            mean = sum(c * m.numel() for c, m in zip(costs, logits)) / n
            rel = [c / mean if c > 0 else 1.0 for c in costs]
        for m, g, r in zip(logits, grads, rel):
            if g is not None:
                m.sub_(self.cfg.lr_gates * n * g / r)

    # --- evaluation -------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, batches, model: nn.Module | None = None) -> dict:
        """Task metric of `model` (default: the masked pipeline) on an iterable of Batches."""
        pipe = model or self.pipeline
        pipe.eval()
        outs, targets, frames_all = [], [], []
        for b in batches:
            with self.autocast():
                logits, frames = pipe(b.waves, b.lengths)
            outs.append(logits.float().cpu())
            targets.append(b.targets)
            frames_all.append(frames.cpu())
        return self.task.score(outs, targets, frames_all, self.labels)

    # --- checkpoints ------------------------------------------------------------------
    def checkpoint(self) -> dict:
        return {"step": self.state.step, "logits": [p.detach().clone() for p in self.masked.logits],
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                "frozen": [getattr(self.masked, f"frozen_{i}").clone() for i in range(len(self.masked.logits))],
                "dead_steps": [getattr(self.masked, f"dead_steps_{i}").clone() for i in range(len(self.masked.logits))],
                "live_build": self.masked.live_build(),
                "head": self.head.state_dict(), "opt": self.opt.state_dict(),
                "rng": torch.get_rng_state(), "state": asdict(self.state)}

    def restore(self, ck: dict) -> None:
        with torch.no_grad():
            for p, v in zip(self.masked.logits, ck["logits"]):
                p.copy_(v)
            for i, f in enumerate(ck["frozen"]):
                getattr(self.masked, f"frozen_{i}").copy_(f)
            for i, d in enumerate(ck.get("dead_steps", [])):
                getattr(self.masked, f"dead_steps_{i}").copy_(d)
        self.masked.restore_live_build(ck.get("live_build"))
        self.head.load_state_dict(ck["head"])
        self.opt.load_state_dict(ck["opt"])
        torch.set_rng_state(ck["rng"].cpu())
        if ck.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(ck["cuda_rng"].cpu(), self.device)
        self.state = RunState(**ck["state"])

    def save_checkpoint(self, name: str = "checkpoint.pt") -> None:
        if not _is_dist() or dist.get_rank() == 0:
            _atomic_save(self.checkpoint(), self.out / name)


class JsonlLog:
    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict) -> None:
        if _is_dist() and dist.get_rank() != 0:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


def run_loop(ex: Extractor, train_batch, valid_batches, log: JsonlLog, progress: bool = True) -> RunState:
    """Train until `ex.cfg.steps`, validating every `eval_every` steps and keeping the best
    gates + head (by the task metric) in `best.pt`; checkpoints every `checkpoint_every`.

    `train_batch(step)` returns this process's share of global batch `step`;
    `valid_batches()` yields the validation Batches."""
    from tqdm import tqdm

    cfg = ex.cfg
    rank0 = not _is_dist() or dist.get_rank() == 0
    bar = tqdm(total=cfg.steps, initial=ex.state.step, disable=not (progress and rank0),
               desc="extract", unit="step", dynamic_ncols=True)
    with Prefetched(train_batch, last=cfg.steps - 1) as batches:
        _loop(ex, batches, valid_batches, log, bar)
    bar.close()
    return ex.state


class Prefetched:
    """`fn(step)` computed one step ahead on a background thread, so that reading and
    decoding the next batch overlaps the current step; calls stay in step order on that one
    thread, so the batches are exactly those of calling `fn` directly."""

    def __init__(self, fn, last: int):
        from concurrent.futures import ThreadPoolExecutor
        self.fn, self.last = fn, last
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="subnet-batches")
        self.pending = None  # (step, future)

    def __call__(self, step: int):
        if self.pending is not None and self.pending[0] == step:
            batch = self.pending[1].result()
        else:  # on the pool's one thread, after any pending call: never two calls of fn at once
            batch = self.pool.submit(self.fn, step).result()
        self.pending = (step + 1, self.pool.submit(self.fn, step + 1)) if step < self.last else None
        return batch

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True)  # the caller may call fn itself afterwards


def _loop(ex: Extractor, train_batch, valid_batches, log: JsonlLog, bar) -> None:
    while ex.state.step < ex.cfg.steps:
        loop_step(ex, train_batch(ex.state.step), valid_batches, log, bar)


def loop_step(ex: Extractor, batch: Batch, valid_batches, log: JsonlLog, bar=None) -> dict:
    """One step of `run_loop`: train on `batch`; validate when due (saving the best state to
    `best.pt`), log, checkpoint when due. Returns the step's log record."""
    cfg = ex.cfg
    rec = ex.step(batch)
    s = ex.state.step
    if s % cfg.eval_every == 0 or s == cfg.steps:
        val = ex.evaluate(valid_batches())
        rec["valid"] = val["value"]
        if _is_best(ex.state, ex.task, val["value"], rec["kept"]):
            ex.state.best_metric, ex.state.best_step, ex.state.best_kept = val["value"], s, rec["kept"]
            ex.save_checkpoint("best.pt")
    log.write(rec)
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", kept=f"{rec['kept']:.2f}",
                        **({"valid": f"{rec['valid']:.3f}"} if "valid" in rec else {}))
    if s % cfg.checkpoint_every == 0 or s == cfg.steps:
        ex.save_checkpoint()
    return rec


KEPT_TOLERANCE = 0.02


def _is_best(state: RunState, task, value: float, kept: float) -> bool:
    """Best = best metric among validations whose kept fraction is within 2 points of the
    smallest reached so far: an early, barely pruned state never wins by being early."""
    state.min_kept = min(state.min_kept, kept)
    if kept > state.min_kept + KEPT_TOLERANCE:
        return False
    if state.best_step < 0 or state.best_kept > state.min_kept + KEPT_TOLERANCE:
        return True
    return task.better(value, state.best_metric)
