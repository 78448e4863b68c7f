"""`subnet.extract`: data in, a trimmed specialist model (artifact + metrics) out."""
from __future__ import annotations

import copy
import json
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import distributed as dist
from torch import nn

from ..core.artifact import save
from subnet_kernels import measured_choices

from ..measure.flops import count_flops
from ..measure.timing import interleaved_latency
from ..core.compact import aligned_keep, compact
from ..data.dataset import AudioDataset
from ..data.batching import collate
from ..families import family_of
from ..families.front_ends import with_settings
from .pipeline import Pipeline
from .loop import Batch, ExtractConfig, Extractor, JsonlLog, _is_dist, run_loop
from .tasks import Task, task_named


def to_batch(raw: dict, task: Task, labels: list[str]) -> Batch:
    """A collated data batch -> the loop's Batch, with the task's targets."""
    return Batch(raw["waves"], raw["lengths"], task.targets(raw, labels))


class EpochBatches:
    """Collated batch number `step` of an endless, epoch-shuffled, length-bucketed stream of a
    dataset's clips: a pure function of (seed, step), so a resumed run sees exactly the batches
    it would have."""

    def __init__(self, ds: AudioDataset, batch_size: int, rank: int = 0, world: int = 1):
        from ..data.batching import BucketBatchSampler
        self.ds, self.rank = ds, rank
        self.sampler = BucketBatchSampler(ds.lengths(), batch_size, shuffle=True, seed=ds.seed, drop_last=True,
                                          num_replicas=world, rank=rank)
        if len(self.sampler) == 0:
            raise ValueError(f"{ds.name}: {len(ds)} clips is fewer than one batch of {batch_size * world}")
        self._epoch, self._batches = None, None

    def raw(self, step: int) -> dict:
        per_epoch = len(self.sampler)
        epoch = step // per_epoch
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self.ds.set_epoch(epoch)
            self._batches, self._epoch = list(iter(self.sampler)), epoch
        return collate([self.ds[i] for i in self._batches[step % per_epoch]])


class StepBatches(EpochBatches):
    """The training batch of step `step` (`EpochBatches`) with the task's targets.
    With `augment` (a data.augment spec) every clip is augmented, drawn from a generator
    seeded by (seed, step, rank): still a pure function of (seed, step); with `clean_teacher`
    the batch also carries the clips before the room, channel, noise and gain, for the teacher.
    With `unlabeled` (an EpochBatches of clips without labels) it carries that stream's batch
    of the same step too, for the distillation losses."""

    def __init__(self, ds: AudioDataset, batch_size: int, task: Task, labels: list[str], rank: int = 0,
                 world: int = 1, augment: str = "", clean_teacher: bool = False,
                 unlabeled: EpochBatches | None = None):
        from ..data.augment import parse_augment
        super().__init__(ds, batch_size, rank, world)
        self.task, self.labels, self.unlabeled = task, labels, unlabeled
        self.augment = parse_augment(augment) if augment else None
        self.clean_teacher = clean_teacher and self.augment is not None

    def __call__(self, step: int) -> Batch:
        raw = self.raw(step)
        clean = None
        if self.augment is not None:
            import numpy as np

            from ..data.augment import augment_batch
            seed = int(np.random.SeedSequence([self.ds.seed, step, self.rank]).generate_state(1, np.uint64)[0] >> 1)
            raw["waves"], raw["lengths"], *rest = augment_batch(
                raw["waves"], raw["lengths"], self.ds.sample_rate, self.augment, torch.Generator().manual_seed(seed),
                source=self.clean_teacher)
            clean = rest[0] if rest else None
        batch = to_batch(raw, self.task, self.labels)
        batch.teacher_waves = clean
        if self.unlabeled is not None:
            u = self.unlabeled.raw(step)
            batch.unlabeled = (u["waves"], u["lengths"])
        return batch


def eval_batches(ds: AudioDataset, batch_size: int, task: Task, labels: list[str]):
    loader = ds.loader(batch_size, shuffle=False)
    for raw in loader:
        if len(raw["lengths"]):
            yield to_batch(raw, task, labels)


def evaluate_artifact(artifact, data, max_seconds: float | None = None, batch_size: int = 16,
                      skip_bad: bool = False) -> dict:
    """Task metric of a saved artifact (compact encoder + head; its directory, or the Pipeline
    loaded from it) on `data` (a folder tree or manifest[@split]): {"metric", "value", "clips",
    "skipped"}."""
    from ..data import load_dataset
    from .pipeline import load_pipeline
    pipe = artifact if isinstance(artifact, Pipeline) else load_pipeline(artifact)
    task, fe = pipe.task, pipe.front_end
    source, split = str(data).rsplit("@", 1) if "@" in str(data) else (str(data), None)
    ds = load_dataset(source, split=split, sample_rate=fe.sample_rate, vocab=task.vocab(pipe.labels),
                      max_seconds=max_seconds,
                      skip_bad=skip_bad, progress=False, min_seconds=fe.min_samples / fe.sample_rate)
    outs, targets, frames = [], [], []
    with torch.no_grad():
        for b in eval_batches(ds, batch_size, task, pipe.labels):
            logits, fr = pipe(b.waves, b.lengths)
            outs.append(logits), targets.append(b.targets), frames.append(fr)
    result = task.score(outs, targets, frames, pipe.labels)
    return {"metric": result["metric"], "value": result["value"], "clips": result["n"],
            "skipped": ds.summary.as_dict(), "data_notes": ds.notes}


def evaluate_extra(artifact, tests: dict, max_seconds: float | None = None, batch_size: int = 16,
                   skip_bad: bool = False, record: bool = True) -> dict:
    """Every named test set of `tests` ({name: data}) through `evaluate_artifact`: {name:
    {metric, value, clips, data}}; with `record`, also written into the artifact's metrics.json
    under "extra" (the reports show each beside the main test set)."""
    from .pipeline import load_pipeline
    extra, pipe = {}, load_pipeline(artifact)  # loaded once for every set
    for name, data in tests.items():
        r = evaluate_artifact(pipe, data, max_seconds, batch_size, skip_bad)
        extra[name] = {"metric": r["metric"], "value": r["value"], "clips": r["clips"], "data": str(data)}
    file = Path(artifact) / "metrics.json"
    if record and file.is_file() and extra:
        m = json.loads(file.read_text())
        m["extra"] = {**(m.get("extra") or {}), **extra}
        file.write_text(json.dumps(m, indent=1))
    return extra


def drop_unread_layers(backbone: nn.Module, layer) -> tuple[nn.Module, object]:
    """(backbone, head layer) with the layers above the one an index-reading head reads
    removed before training (they cost time and cannot change its input); the head then
    reads the new last state. "weighted" heads read every layer: nothing changes."""
    if layer == "weighted":
        return backbone, layer
    n_states = _count_states(backbone)
    index = int(layer) % n_states
    if index == n_states - 1:
        return backbone, layer
    cut = family_of(backbone).drop_layers_above(copy.deepcopy(backbone), index)
    return (cut, index) if cut is not None else (backbone, layer)


@torch.no_grad()
def _count_states(backbone: nn.Module) -> int:
    family = family_of(backbone)
    return len(family.hidden_states(backbone, family.example_inputs(backbone, 1, 0.5)))


def prepare_backbone(backbone: nn.Module, max_seconds: float | None) -> nn.Module:
    """The backbone fitted to clips of `max_seconds` by its family (Whisper and AST encoders
    take a fixed window: a copy cut to the clip length costs a fraction of the padding)."""
    return family_of(backbone).fit_seconds(backbone, max_seconds)


@dataclass
class Run:
    """Everything one training run needs: trainer, datasets, batch sources, log."""

    ex: Extractor
    train_ds: AudioDataset
    valid_ds: AudioDataset
    test_ds: AudioDataset | None
    labels: list[str]  # the head's outputs: class labels, tags or characters
    log: JsonlLog
    steps: StepBatches
    t0: float

    def valid(self):
        return eval_batches(self.valid_ds, self.ex.cfg.batch_size, self.ex.task, self.labels)


def setup_run(backbone: nn.Module, train, valid, test, cfg: ExtractConfig, out: Path, max_seconds,
              progress: bool = True, skip_bad: bool = False, resume: bool = False, trainer=Extractor,
              **trainer_kw) -> Run:
    """Datasets (validated up front), the trainer (`Extractor` or a subclass), the step batches;
    resumes from `out/checkpoint.pt` when asked and present."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if _is_dist() else (0, 1)
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    fe = with_settings(family_of(backbone).front_end(backbone), cfg.front_end)
    if cfg.front_end:  # the compact model and the costs measured on the backbone read clips this way too
        backbone.subnet_front_end = fe
    train_ds = _dataset(train, fe, None, max_seconds, True, cfg.seed, skip_bad, progress and rank == 0)
    vocab = train_ds.vocab
    valid_ds = _dataset(valid, fe, vocab, max_seconds, False, cfg.seed, skip_bad, False)
    test_ds = _dataset(test, fe, vocab, max_seconds, False, cfg.seed, skip_bad, False) if test else None
    labels = task_named(cfg.task).labels(train_ds)
    ex = trainer(backbone, len(labels), cfg, out, labels=labels, front_end=fe, **trainer_kw)
    if cfg.cost == "latency" and cfg.train_gates:  # per-unit costs of this machine, kept for a resume
        from .latency_costs import load_or_measure
        n = int(max(train_ds.lengths()))
        load_or_measure(ex.masked, fe.inputs(torch.randn(1, n), torch.tensor([n])), out / "latency_costs.json",
                        progress and rank == 0)
    if resume and (out / "checkpoint.pt").is_file():
        ex.restore(torch.load(out / "checkpoint.pt", weights_only=True))
    elif rank == 0:
        (out / "log.jsonl").write_text("")
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    unlabeled = None
    if cfg.unlabeled:  # centre crops: a clip is the same every epoch, so the teacher's states are cached
        u_ds = _dataset(cfg.unlabeled, fe, None, max_seconds, False, cfg.seed, skip_bad, False)
        unlabeled = EpochBatches(u_ds, cfg.batch_size, rank, world)
    steps = StepBatches(train_ds, cfg.batch_size, ex.task, labels, rank, world, cfg.augment,
                        clean_teacher=cfg.teacher_input == "clean", unlabeled=unlabeled)
    return Run(ex, train_ds, valid_ds, test_ds, labels, JsonlLog(out / "log.jsonl"), steps, t0)


def extract(backbone, train, valid, test=None, cfg: ExtractConfig | None = None, out="subnet-out",
            max_seconds: float | None = 2.0, skip_bad: bool = False, resume: bool = False,
            progress: bool = True, measure_latency: bool = True, extra_tests: dict | None = None) -> dict:
    """Train gates + head on `train`, keep the best by `valid`, compact, save, evaluate on `test`.

    `backbone`: anything `subnet.load_backbone` accepts. `train`/`valid`/`test`: folder trees
    or manifests (`path@split` selects a split of a manifest). `extra_tests`: {name: data} of
    more test sets (other domains, degraded copies), each evaluated on the compact model and
    reported under "extra" in metrics.json. Writes to `out`: the artifact
    (model.safetensors, subnet.json, head.safetensors), log.jsonl, checkpoint.pt, best.pt and
    metrics.json, whose content is also returned.
    """
    from .. import load_backbone
    cfg = cfg or ExtractConfig()
    if cfg.kd and not cfg.teacher:
        teacher = train_teacher(backbone, train, valid, cfg, Path(out) / "teacher", max_seconds, skip_bad, progress)
        cfg = replace(cfg, teacher=str(teacher))
    backbone = prepare_backbone(load_backbone(backbone), max_seconds)
    backbone, layer = drop_unread_layers(backbone, cfg.layer)
    cfg = replace(cfg, layer=layer)
    run = setup_run(backbone, train, valid, test, cfg, Path(out), max_seconds, progress, skip_bad, resume)
    run_loop(run.ex, run.steps, run.valid, run.log, progress)
    if _is_dist() and dist.get_rank() != 0:
        return {}
    metrics = finish(run, Path(out), measure_latency)
    if extra_tests:
        metrics["extra"] = evaluate_extra(out, extra_tests, max_seconds, cfg.batch_size, skip_bad)
    return metrics


def train_teacher(backbone, train, valid, cfg: ExtractConfig, out: Path, max_seconds: float | None,
                  skip_bad: bool = False, progress: bool = True) -> Path:
    """The probe that `kd` distils when no `teacher` is given: the full frozen encoder and the
    same head, trained on the same clips with `cfg`'s steps, batch, head learning rate and seed
    (not augmented: the reference an extraction is judged against), into `out`; a finished one
    there is reused."""
    if (out / "metrics.json").is_file():
        return out
    if _is_dist():
        raise ValueError("kd under torchrun needs a teacher: train the probe first (subnet extract --probe) and "
                         "give it as teacher")
    probe_cfg = replace(cfg, train_gates=False, kd=0.0, teacher="", distill=0.0, augment="", teacher_input="same",
                        unlabeled="")
    source = copy.deepcopy(backbone) if isinstance(backbone, nn.Module) else backbone  # (gates go on a copy)
    extract(source, train, valid, None, probe_cfg, out, max_seconds=max_seconds, skip_bad=skip_bad, resume=True,
            progress=progress, measure_latency=False)
    return out


def _dataset(source, fe, vocab, max_seconds, train, seed, skip_bad, progress):
    """`source` (folder tree or manifest[@split]) read at the front end's rate; clips too short
    for the front end are bad inputs."""
    source = str(source)
    split = None
    if "@" in source:
        source, split = source.rsplit("@", 1)
    return AudioDataset.from_source(source, sample_rate=fe.sample_rate, split=split, vocab=vocab,
                                    max_seconds=max_seconds, train=train, seed=seed, skip_bad=skip_bad,
                                    progress=progress, min_seconds=fe.min_samples / fe.sample_rate)


def finish(run: Run, out: Path, measure_latency: bool = True, small: nn.Module | None = None,
           full: nn.Module | None = None) -> dict:
    """Restore the best gates + head, compact, verify, save, evaluate and write metrics.json.

    `small` / `full`: a model that already is compact (it carries `subnet_info`; e.g. a compact
    architecture trained from scratch) and the full-size model its costs are compared with."""
    ex, valid_ds, test_ds, t0, train_ds = run.ex, run.valid_ds, run.test_ds, run.t0, run.train_ds
    cfg = ex.cfg
    best = torch.load(out / "best.pt", weights_only=True)
    ex.restore(best)
    if ex.pipeline.front_end_cache is not None:  # training is over: the compact copy must not carry it
        ex.pipeline.front_end_cache.remove()
        ex.pipeline.front_end_cache = None
    masked = ex.masked
    if cfg.align > 1:  # the masked model is evaluated with the aligned decision too
        masked.set_keep(aligned_keep(masked, cfg.align))
    small = small if small is not None else compact(masked)
    fe, head = ex.front_end, ex.head
    eval_set = test_ds or valid_ds
    batches = list(eval_batches(eval_set, cfg.batch_size, ex.task, run.labels))
    m_masked = ex.evaluate(batches)
    compact_pipe = Pipeline(small, fe, head, ex.task, ex.labels)
    m_compact = ex.evaluate(batches, compact_pipe)
    extra = {"head": ex.head_config, "labels": ex.labels, "front_end": fe.describe(),
             "metrics": {"masked": m_masked["value"], "compact": m_compact["value"], "name": m_masked["metric"]}}
    small = small.cpu()  # artifacts, FLOPs and latency: on the CPU, wherever training ran
    save(small, out, extra=extra)
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(out / "head.safetensors"))
    with masked.gates_removed() as base:
        base = full if full is not None else base
        if any(p.device.type != "cpu" for p in base.parameters()):
            base = copy.deepcopy(base).cpu()
        n_base = sum(p.numel() for p in base.parameters())
        probe_len = int(max(train_ds.lengths()))
        inputs = fe.inputs(torch.randn(1, probe_len), torch.tensor([probe_len]))
        flops_base, flops_small = count_flops(base, inputs), count_flops(small, inputs)
        latency = interleaved_latency({"full": base, "compact": small}, inputs) if measure_latency else None
    n_small = sum(p.numel() for p in small.parameters())
    info = small.subnet_info
    kinds = {}
    for name, kind in info.kinds.items():
        k = kinds.setdefault(kind, [0, 0])
        k[0] += len(info.keep[name])
        k[1] += info.sizes[name]
    metrics = {
        "task": cfg.task, "metric": m_masked["metric"], "eval_set": eval_set.name, "eval_clips": m_masked["n"],
        "masked": m_masked["value"], "compact": m_compact["value"],
        "best_step": ex.state.best_step, "valid_at_best": ex.state.best_metric, "align": cfg.align,
        "kept_fraction": {k: v[0] / v[1] for k, v in kinds.items()},
        "params": {"full": n_base, "compact": n_small, "kept_fraction": n_small / n_base},
        "flops_per_clip": {"full": flops_base, "compact": flops_small, "clip_seconds": probe_len / fe.sample_rate},
        "file_bytes": (out / "model.safetensors").stat().st_size,
        "latency_batch1": latency, "seconds": round(time.time() - t0, 1),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "skipped": {"train": train_ds.summary.as_dict(), "eval": eval_set.summary.as_dict()},
        "data_notes": {"train": train_ds.notes, "eval": eval_set.notes},
        # which kernel backend ran each fused op and shape, and why (measured on CUDA; empty on the CPU)
        "kernel_choices": measured_choices(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def format_table(m: dict) -> str:
    """The end-of-run summary: task metric, then full vs compact costs."""
    lat = m.get("latency_batch1")
    lines = [f"test {m['metric']} on {m['eval_clips']} clips of {m['eval_set']}: masked model {m['masked']:.3f}, "
             f"compact model {m['compact']:.3f}"]
    lines += [f"  {name} ({e['data']}, {e['clips']} clips): compact model {e['value']:.3f}"
              for name, e in (m.get("extra") or {}).items()]
    rows = [("", "full encoder", "compact"),
            ("parameters", f"{m['params']['full']:,}", f"{m['params']['compact']:,} ({100 * m['params']['kept_fraction']:.1f}%)"),
            ("GFLOPs / clip", f"{m['flops_per_clip']['full'] / 1e9:.2f}", f"{m['flops_per_clip']['compact'] / 1e9:.2f}")]
    if lat:
        f, c = lat["full"]["median_s"], lat["compact"]["median_s"]
        rows.append(("latency (batch 1, median)", f"{1e3 * f:.1f} ms", f"{1e3 * c:.1f} ms ({f / c:.2f}x)"))
    rows.append(("file size", "", f"{m['file_bytes'] / 1e6:.1f} MB"))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(lines + ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows])
