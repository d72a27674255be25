"""The training loop: the optimiser with a per-step schedule, per-epoch checkpoints, exact resume, the kNN monitor.

The loop drives any registered method through its spec and its narrow contract (:class:`invprop.methods.Method`):
it builds the method with everything it needs (:class:`invprop.methods.BuildContext`), feeds it
:class:`invprop.methods.Batch` objects, hands each step's output back to ``after_step``, and records whatever terms
the method reports -- it knows none of them by name.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from invprop.config import (
    Config,
    build_method,
    data_for,
    from_dict,
    from_saved,
    setting_changes,
    to_dict,
    validate,
)
from invprop.data import DataSplits
from invprop.data.image_sequences import file_names_digest
from invprop.data.loader import MIN_PROCESS_BATCH, epoch_plan
from invprop.distributed.collectives import all_gather_objects
from invprop.engine.batches import BatchPipeline
from invprop.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from invprop.engine.device import autocast, autocast_dtype, resolve_device
from invprop.engine.estimate import RunEstimate
from invprop.engine.history import History
from invprop.engine.initial_weights import ENCODER, initial_weights, load_matching, log_loaded, own_state
from invprop.engine.monitor import extract, knn_monitor, rank_monitor, raw_pixel_baseline, warn_if_collapsed
from invprop.engine.online_probe import OnlineProbe
from invprop.engine.optimizer import gathered_state_dict, load_split_state_dict
from invprop.engine.process_group import (
    SINGLE_PROCESS,
    DistributedContext,
    agree_to_stop,
    barrier,
    device_for,
    main_process_first,
)
from invprop.engine.rng import epoch_seed, restore_rng_state, rng_state, seed_everything, seed_process_draws
from invprop.engine.run_lock import check_still_held
from invprop.engine.run_optimizers import load_part_states, part_states, run_optimizers, stage_plan
from invprop.engine.run_settings import (
    CONFIG_NAME,
    HISTORY_CHANGES_KEY,
    Change,
    changes_at,
    read_run_settings,
    record_changes,
    write_run_settings,
)
from invprop.engine.signals import StopRequested, StopSignals, TrainingInterrupted
from invprop.engine.terms import LOSS, NonFinite, TermSums
from invprop.errors import (
    ChangesInsideEpoch,
    CheckpointError,
    ConfigError,
    DivergedError,
    ResumeChangesRefused,
    first_line,
)
from invprop.files import make_folder, remove_leftovers, write_text_atomically
from invprop.methods import MAIN, Batch, Method, StepOutput
from invprop.models import Encoder, encoder_from
from invprop.models.heads import IDENTITY
from invprop.trackers import FAILED, STOPPED, Tracker, open_tracker

logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    finished: bool


class Trainer:
    """Trains one run in ``run_dir`` from ``cfg``; ``fit`` resumes from ``run_dir/last.pt`` when asked.

    Args:
        cfg: the resolved configuration (validated here).
        run_dir: the run's folder (created).
        progress: show tqdm progress bars (None: only on a terminal).
        context: this process's place in a distributed run (see :mod:`invprop.engine.process_group`). With several
            processes the encoder trains under DistributedDataParallel, ``optim.batch_size`` is the global batch
            (split evenly), only the main process logs, evaluates and writes files, and checkpoints hold the whole
            state, so a run resumes with any number of processes.
        changes: the story of settings changed on resume (:mod:`invprop.engine.run_settings`, from
            :func:`config_for_resume`), written into the run's ``config.yaml`` and into ``history.jsonl`` at the
            epochs where they took effect; None keeps the story that the run's ``config.yaml`` holds.
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        progress: bool | None = None,
        context: DistributedContext = SINGLE_PROCESS,
        changes: Sequence[Change] | None = None,
        resuming: bool = False,
    ) -> None:
        self.cfg = validate(cfg)
        #: Built to resume from the run's checkpoint: ``model.init_from`` is not read (the checkpoint holds the
        #: weights it gave, and its source may be gone by then).
        self.resuming = resuming
        self._changes = None if changes is None else list(changes)
        self.run_dir = Path(run_dir)
        self.context = context
        self.progress = progress if context.is_main else False
        self.device = resolve_device(device_for(context, cfg.device))
        self.amp_dtype = autocast_dtype(cfg.precision, self.device)
        self.spec = cfg.spec
        self._check_distributed_settings()
        #: The run's stages and the optimisers each steps.
        self.stages = stage_plan(cfg)
        refusal = self.spec.accumulation_refusal(cfg.method_settings)
        if cfg.optim.accumulate > 1 and refusal is not None:
            raise ConfigError(
                f"method {cfg.method} does not accumulate gradients ({refusal}); set optim.accumulate=1 and raise "
                "optim.batch_size instead"
            )
        if cfg.model.head == IDENTITY and self.spec.trains_head:
            raise ConfigError(f"model.head={IDENTITY} gives method {cfg.method} no head to train (it is for measuring "
                              "off-the-shelf encoders, pretrained:timm:NAME); choose another model.head")  # fmt: skip
        if self.spec.preflight is not None:
            self.spec.preflight(self.spec.own(cfg.method_settings))
        with main_process_first(context):  # the main process fills the decode caches, the others read them
            self.data: DataSplits = data_for(cfg)
        self.spec.check_images(self.data.in_channels)
        n = len(self.data.train)
        if cfg.optim.batch_size > n:
            raise ConfigError(f"optim.batch_size={cfg.optim.batch_size} exceeds the dataset size {n}; lower it")
        seed_everything(cfg.seed)
        encoder: Encoder = encoder_from(
            cfg.model, self.data.in_channels, self.data.image_size, (self.data.mean, self.data.std)
        ).to(self.device)
        source = initial_weights(cfg.model.init_from) if cfg.model.init_from and not resuming else None
        encoder_loaded = load_matching(encoder, source.state, ENCODER) if source is not None else None
        self.spec.freeze_unused(encoder)
        if context.enabled and cfg.distributed.sync_bn:
            encoder = nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
        if cfg.channels_last and self.device.type == "cuda":
            encoder = encoder.to(memory_format=torch.channels_last)
        if cfg.compile:
            encoder.compile()
        #: The encoder the method trains (with its ``features`` for the kNN monitor).
        self.encoder = encoder
        #: The global batches of an epoch (a final batch too small for BatchNorm on every process is dropped), and the
        #: optimiser steps they make (``optim.accumulate`` batches each).
        self.batches_per_epoch = len(epoch_plan(n, cfg.optim.batch_size, context.world_size))
        self.steps_per_epoch = -(-self.batches_per_epoch // cfg.optim.accumulate)
        data = self.data
        labels = data.train.labels
        self.method: Method = build_method(
            cfg, encoder, n, distributed=context.enabled, in_channels=data.in_channels, mean=tuple(data.mean),
            std=tuple(data.std), image_size=data.image_size, total_steps=self.steps_per_epoch * cfg.epochs,
            labels=labels.to(self.device) if bool((labels >= 0).any()) else None,
            features=self._training_embeddings, forward=self._data_parallel(encoder),
        ).to(self.device)  # fmt: skip
        if source is not None and encoder_loaded is not None:
            own = own_state(source, cfg.method, cfg.data.name)
            log_loaded(source, encoder_loaded, load_matching(self.method, own, skip=ENCODER))
        #: The online linear probe (``eval.online_probe``), or None.
        self.probe = self._online_probe()
        #: The run's optimisers by name: the main one, and one per part of the method.
        self.optimizers = run_optimizers(cfg, self.method, self.stages, self._fixed_lr_modules())
        self.optimizer = self.optimizers[MAIN].optimizer
        self.batches = BatchPipeline(
            self.data, cfg.optim.batch_size, self.device, self.method.views, cfg.data.num_workers,
            context.world_size, context.rank, self.method.epoch_order, cfg.data.strict,
        )  # fmt: skip
        assert self.batches.steps_per_epoch == self.batches_per_epoch
        #: The main optimiser's learning rate: its peak after scaling with the batch, the warm-up the run gets, the
        #: schedule's floor.
        self.lr_plan = self.optimizers[MAIN].plan
        self.warmup_epochs = self.lr_plan.warmup_epochs
        self.epoch = 0
        self.global_step = 0
        self.seconds = 0.0
        self.baseline: dict[str, float] | None = None
        #: Progress inside an interrupted epoch: {"epoch", "step", "sums", "counts", "count", "started"} (None
        #: between epochs).
        self._partial: dict[str, Any] | None = None
        #: The last finished epoch's history line, saved in the checkpoint (a resume writes it if the history lacks it).
        self._last_record: dict[str, Any] | None = None
        #: A fingerprint of the training files' names, when they are files read per image (checked on resume).
        self._train_files = file_names_digest(self.data.train.source)
        self._stop = StopSignals()
        self._estimate: RunEstimate | None = None  # set by fit(): said once after the first steps
        #: Per optimiser, the run's steps before the current epoch that did not step it (set by each epoch).
        self._steps_skipped: dict[str, int] = dict.fromkeys(self.optimizers, 0)

    def _fixed_lr_modules(self) -> list[nn.Module]:
        """The method's modules named by ``optim.fixed_lr_modules``; a one-line error for a name it has not."""
        modules = []
        for name in self.cfg.optim.fixed_lr_modules:
            module = getattr(self.method, name, None)
            if not isinstance(module, nn.Module):
                owned = sorted(n for n, m in self.method.named_children() if n != "encoder")
                raise ConfigError(f"optim.fixed_lr_modules names {name!r}, which method {self.cfg.method} does not have; "
                                  f"its modules: {', '.join(owned) or 'none besides the encoder'}")  # fmt: skip
            modules.append(module)
        return modules

    def _data_parallel(self, encoder: nn.Module) -> nn.Module | None:
        """The encoder's training forward in a distributed run: DistributedDataParallel around it (None alone)."""
        if not self.context.enabled:
            return None
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(encoder, device_ids=device_ids)

    def _training_embeddings(self, encoder: nn.Module) -> torch.Tensor:
        """(N, D) embeddings through ``encoder`` (an :class:`Encoder`) of every training image, not augmented, in eval
        mode, on the training device (each process computes all of them, so every process clusters the same
        rows)."""
        plain = self.data.train_plain
        if plain is None:
            raise ConfigError(f"method {self.cfg.method} needs the training images without augmentation")
        assert isinstance(encoder, Encoder)
        return extract(encoder, plain, self.device, self.cfg.data.num_workers, keep_on_device=True).embeddings

    def _memory_format(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` in channels_last on CUDA when ``channels_last`` is set; as they are otherwise."""
        if self.cfg.channels_last and self.device.type == "cuda":
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def _check_distributed_settings(self) -> None:
        cfg, world = self.cfg, self.context.world_size
        if not self.context.enabled:
            return
        self.spec.check_torchrun(True)
        if cfg.optim.batch_size % world or cfg.optim.batch_size // world < MIN_PROCESS_BATCH:
            raise ConfigError(
                f"optim.batch_size={cfg.optim.batch_size} is the global batch: it must be a multiple of the "
                f"{world} processes with at least {MIN_PROCESS_BATCH} images each"
            )
        if cfg.distributed.sync_bn and self.device.type != "cuda":
            raise ConfigError(
                "distributed.sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel); set it to false"
            )

    # ----------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The whole training state. A collective in every distributed run (each process's generator states are
        gathered, and a split bank): every process must call it."""
        return {
            "model": self.method.state_dict(),
            "optimizer": gathered_state_dict(self.optimizer, self.method.sharded_parameters()),
            "part_optimizers": part_states(self.optimizers),
            "scheduler": {"global_step": self.global_step, "steps_per_epoch": self.steps_per_epoch},
            "epoch": self.epoch,
            "seconds": self.seconds,
            "baseline": self.baseline,
            "config": to_dict(self.cfg),
            "input": {
                "in_channels": self.data.in_channels,
                "image_size": self.data.image_size,
                "mean": [float(v) for v in self.data.mean],
                "std": [float(v) for v in self.data.std],
            },
            "data": {"train_images": len(self.data.train), "train_files": self._train_files},
            "rng": rng_state(),
            **({"rng_processes": all_gather_objects(rng_state())} if self.context.enabled else {}),
            "partial": self._partial,
            "record": self._last_record,
            **({"online_probe": self.probe.full_state()} if self.probe is not None else {}),
        }

    def _check_same_dataset(self, state: dict[str, Any]) -> None:
        """A one-line error when the training images differ from the checkpoint's while the data settings are the
        same (files added, removed or unreadable since): the bank's rows and the epoch order would not match."""
        saved = state.get("data")
        settings = ("name", "subset", "holdout")
        same_settings = all(state["config"].get("data", {}).get(k) == getattr(self.cfg.data, k) for k in settings)
        if not saved or not same_settings:  # an earlier version's checkpoint, or data settings changed on purpose
            return
        images = len(self.data.train)
        if saved["train_images"] != images:
            raise CheckpointError(
                f"the dataset changed since the checkpoint was written: {saved['train_images']:,} training images "
                f"then, {images:,} now (files added, removed or unreadable); restore them to resume, or start a new run"
            )
        if None not in (saved.get("train_files"), self._train_files) and saved["train_files"] != self._train_files:
            raise CheckpointError(
                f"the dataset changed since the checkpoint was written: {images:,} training images then and now, but "
                "not the same files; restore them to resume, or start a new run"
            )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_same_dataset(state)
        try:
            self.method.load_state_dict(state["model"])
        except RuntimeError as err:
            first = first_line(err)
            raise CheckpointError(
                f"the checkpoint's weights do not fit the settings ({first[:160]}): resume with the settings the "
                "run was trained with"
            ) from None
        load_split_state_dict(self.optimizer, state["optimizer"], self.method.sharded_parameters())
        load_part_states(self.optimizers, state.get("part_optimizers") or {})
        self.global_step = int(state["scheduler"]["global_step"])
        self.epoch = int(state["epoch"])
        self.seconds = float(state["seconds"])
        self.baseline = state.get("baseline")
        self._partial = state.get("partial")
        self._last_record = state.get("record")
        if self.probe is not None and state.get("online_probe") is not None:
            self.probe.load_full_state(state["online_probe"])
        elif self.probe is not None:
            logger.info("the checkpoint has no online probe (eval.online_probe was off): a new one starts")
        restore_rng_state(state["rng"])
        self._restore_process_draws(state.get("rng_processes"))

    def _restore_process_draws(self, states: list[dict[str, Any]] | None) -> None:
        """In a distributed run, each process's own generator states, as the checkpoint holds them; inside an epoch
        of a checkpoint from another number of processes, fresh per-process streams (said once: the resumed run then
        draws other masks and noise than an uninterrupted one would)."""
        context = self.context
        if not context.enabled:
            return
        if states is not None and len(states) == context.world_size:
            restore_rng_state(states[context.rank])
            return
        if self._partial is not None:
            if context.is_main:
                logger.warning(
                    "the checkpoint holds the generator states of %d process(es), this run has %d: inside epoch %d "
                    "each process draws its masks and noise from a fresh seed, not as the interrupted run would have",
                    len(states) if states is not None else 1, context.world_size, self._partial["epoch"],
                )  # fmt: skip
            seed_process_draws(self.cfg.seed, int(self._partial["epoch"]), context.rank)

    # ----------------------------------------------------------------------------------------------- loop
    def train_epoch(
        self, epoch: int, max_steps: int | None = None, resume_from: dict[str, Any] | None = None
    ) -> dict[str, float]:
        """One epoch (or its first ``max_steps`` steps, for benchmarks); returns the epoch means of the logged terms
        and the method's epoch metrics.

        ``resume_from`` continues an interrupted epoch (its saved step and running sums; the RNG states come from
        the checkpoint). When a stop signal arrives, the epoch ends after the current step (under torchrun: at the
        next sync, ``log.every_steps``) by raising :class:`~invprop.engine.signals.StopRequested` with the progress
        to save.
        """
        cfg = self.cfg
        if resume_from is None:
            torch.manual_seed(epoch_seed(cfg.seed, epoch))  # augmentation draws: a function of (seed, epoch) only
            started = self.method.on_epoch_start(epoch)
            for parameter in self.method.reinitialised_parameters():
                for run in self.optimizers.values():
                    run.optimizer.state.pop(parameter, None)
            seed_process_draws(cfg.seed, epoch, self.context.rank)  # after the epoch's shared start
        else:
            started = dict(resume_from.get("started") or {})
        self.method.train()
        stage = self.stages.stage_of(epoch)
        self.method.on_stage(stage.name)
        self._steps_skipped = {
            name: self.steps_per_epoch * (epoch - 1 - self.stages.epochs_before(name, epoch))
            for name in self.optimizers
        }
        first = int(resume_from["step"]) if resume_from else 0
        terms = TermSums(self.device, first, resume_from, holds_saved=self.context.is_main)
        every = cfg.log.every_steps
        # tqdm's disable=None shows the bar on a terminal only.
        hide = None if self.progress is None else not self.progress
        batches = self.batches.epoch(epoch_seed(cfg.seed, epoch), skip=first)
        bar = tqdm(
            batches,
            total=self.batches_per_epoch,
            initial=first,
            desc=f"epoch {epoch}/{cfg.epochs}",
            leave=False,
            disable=hide,
        )
        unsynced = 0
        accumulated: list[StepOutput] = []  # the outputs of the current optimiser step's batches
        for step, (indices, images) in enumerate(bar, start=first):
            if max_steps is not None and step >= max_steps:
                break
            groups = tuple(self._memory_format(x) for x in (images if isinstance(images, list) else [images]))
            batch = Batch(indices, groups, epoch, self.global_step)
            if self.probe is not None:
                self._probe_step(batch)
            if len(self.optimizers) > 1:
                self._step_optimizers(batch, stage.steps, terms)
            else:
                if not accumulated:
                    self.optimizers[MAIN].set_schedules(self._optimizer_step(MAIN), self.steps_per_epoch)
                    self.optimizer.zero_grad(set_to_none=True)
                chunks = self._chunks_of_step(step)
                with autocast(self.device, self.amp_dtype):
                    out = self.method.training_step(batch)
                (out.loss if chunks == 1 else out.loss / chunks).backward()
                terms.add(out.loss, out.terms)
                accumulated.append(out)
                if len(accumulated) < chunks:
                    continue
                self.method.before_optimizer_step()
                self.optimizers[MAIN].clip_gradients()
                self.optimizer.step()
                self.method.after_step(accumulated)
                accumulated = []
            self.global_step += 1
            unsynced += 1
            said = self._estimate.step() if self._estimate is not None else None
            if said:
                logger.info("%s", said)
            asked = self._stop.received is not None
            last = step + 1 == self.batches_per_epoch
            if not (unsynced >= every or last or (asked and not self.context.enabled)):
                continue
            stop = self._sync(terms, asked, epoch, bar)
            unsynced = 0
            if stop:
                self._stop.request()  # (another process may have been the one asked to stop)
            if stop and not last:
                bar.close()
                raise StopRequested({"epoch": epoch, "step": step + 1, **terms.state(), "started": started})
        if unsynced:  # (a benchmark's max_steps ended the epoch early)
            self._sync(terms, self._stop.received is not None, epoch, bar)
        ended = self.method.on_epoch_end(epoch)
        means = {**terms.means(), **started, **ended, **(self.probe.epoch_scores() if self.probe is not None else {})}
        means["lr"] = self.optimizers[MAIN].lr
        means.update({f"lr_{name}": run.lr for name, run in self.optimizers.items() if name != MAIN})
        return means

    def _online_probe(self) -> OnlineProbe | None:
        """The online probe when ``eval.online_probe`` asks for one; a one-line error where it cannot run."""
        if not self.cfg.eval.online_probe:
            return None
        if self.context.enabled:
            raise ConfigError("eval.online_probe does not run under torchrun yet; train with one process, or leave "
                              "it off and score the run with invprop eval linear")  # fmt: skip
        if not self.data.labelled:
            raise ConfigError(f"eval.online_probe needs labelled data (an image folder: class folders in train/ and "
                              f"test/), and {self.cfg.data.name} is not; leave it off (the label-free monitor, "
                              "RankMe, runs without it)")  # fmt: skip
        self._probe_labels = self.data.train.labels.to(self.device)
        probe = OnlineProbe(self.encoder.feature_dim, self.data.num_classes, self.cfg.eval.online_probe_lr)
        return probe.to(self.device)

    def _probe_step(self, batch: Batch) -> None:
        """The probe's step on the batch's first view (its features computed as the method's are, under autocast)."""
        assert self.probe is not None
        first = batch.groups[0][: len(batch.indices)]
        with autocast(self.device, self.amp_dtype):
            features = OnlineProbe.features(self.encoder, first)
        self.probe.step(features, self._probe_labels[batch.indices.to(self.device)])

    def _optimizer_step(self, name: str) -> int:
        """The step the optimiser ``name`` is about to take, counting only its own steps over the run (the run's steps
        less those of the epochs whose stage does not step it)."""
        return self.global_step - self._steps_skipped[name]

    def _step_optimizers(self, batch: Batch, steps: tuple[str, ...], terms: TermSums) -> None:
        """One batch of a method with several optimisers: for each of the stage's ``steps`` in order, that
        optimiser's loss (the main one's ``training_step``, a part's ``part_step``), its backward pass and its step
        alone; then ``after_step`` with every output. The logged loss is the sum of theirs, each also as
        ``loss_<name>``."""
        outputs: list[StepOutput] = []
        logged: dict[str, Tensor | float] = {}
        for name in steps:
            run = self.optimizers[name]
            run.set_schedules(self._optimizer_step(name), self.steps_per_epoch)
            run.optimizer.zero_grad(set_to_none=True)
            with autocast(self.device, self.amp_dtype):
                out = self.method.training_step(batch) if name == MAIN else self.method.part_step(name, batch)
            out.loss.backward()
            self.method.before_optimizer_step()
            run.clip_gradients()
            run.optimizer.step()
            outputs.append(out)
            logged.update({f"loss_{name}": out.loss.detach(), **out.terms})
        terms.add(torch.stack([out.loss.detach().float() for out in outputs]).sum(), logged)
        self.method.after_step(outputs)

    def _chunks_of_step(self, step: int) -> int:
        """How many batches the optimiser step that batch ``step`` of the epoch belongs to accumulates: ``optim.
        accumulate``, fewer for the epoch's last step when the batches do not divide."""
        n = self.cfg.optim.accumulate
        return min(n, self.batches_per_epoch - step // n * n)

    def _sync(self, terms: TermSums, asked: bool, epoch: int, bar: Any) -> bool:
        """Copy the logged terms to the host (all-reduced over processes) and agree on stopping; raises
        :class:`DivergedError` when a loss was not finite since the epoch began."""
        stop, failed = terms.sync(self.context, asked)
        if failed is not None:  # (in a distributed run the launcher then stops the other processes)
            raise self._diverged(epoch, failed)
        if LOSS in terms.counts and terms.counts[LOSS]:
            bar.set_postfix(loss=f"{terms.sums[LOSS] / terms.counts[LOSS]:.3f}")
        return stop

    def _diverged(self, epoch: int, failed: NonFinite) -> DivergedError:
        checkpoint = self.run_dir / CHECKPOINT_NAME
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint.is_file() else "no checkpoint yet"
        what = (
            f"a non-finite loss on another process, reported at epoch {epoch}, step {failed.step}"
            if failed.elsewhere
            else f"non-finite loss ({failed.value}) at epoch {epoch}, step {failed.step}"
        )
        return DivergedError(
            f"{what}; {kept} -- lower optim.lr or warm up over more epochs (optim.warmup_epochs)", epoch, failed.step
        )

    @property
    def estimated_epoch_seconds(self) -> float | None:
        """The seconds of an epoch's steps as estimated after the first steps of :meth:`fit` (None before)."""
        return None if self._estimate is None else self._estimate.epoch_seconds

    def evaluate(self) -> dict[str, float]:
        """The monitor: kNN and RankMe on the held-out split; RankMe alone on an unlabelled dataset's held-out images
        (empty without any, and on processes other than the main one)."""
        if not self.context.is_main:
            return {}
        if not self.data.labelled:
            held_out = self.data.holdout
            if held_out is None:
                return {}
            return rank_monitor(self.encoder, held_out, self.device, self.cfg.data.num_workers)
        assert self.data.memory is not None and self.data.test is not None
        return knn_monitor(
            self.encoder,
            self.data.memory,
            self.data.test,
            self.data.num_classes,
            self.device,
            self.cfg.eval.knn_k,
            self.cfg.eval.knn_sigma,
            self.cfg.data.num_workers,
            probe=self.probe.top1 if self.probe is not None else None,
        )

    def fit(self, resume: bool = False, stop_after: int | None = None) -> RunResult:
        """Train until ``cfg.epochs`` (or until epoch ``stop_after``, keeping the schedule of the full run).

        In a distributed run every process calls this; only the main one writes files and returns the metrics.
        """
        cfg = self.cfg
        main = self.context.is_main
        ckpt_path = self.run_dir / CHECKPOINT_NAME
        if not resume and self._changes is None:
            self._changes = []  # a new run: whatever settings file a failed start left is not its story
        if self.resuming and not resume and cfg.model.init_from:
            raise ValueError("a Trainer built with resuming=True left model.init_from unread; fit(resume=True) or "
                             "build it with resuming=False")  # fmt: skip
        if resume:
            # CPU first: a split bank's process keeps only its rows of the whole saved bank.
            self.load_state_dict(load_checkpoint(ckpt_path, "cpu"))
            if self._partial is not None:
                logger.info("resumed %s inside epoch %d/%d, after step %d", self.run_dir, self._partial["epoch"],
                            cfg.epochs, self._partial["step"])  # fmt: skip
            else:
                logger.info("resumed %s after epoch %d/%d", self.run_dir, self.epoch, cfg.epochs)
        end = cfg.epochs if stop_after is None else min(stop_after, cfg.epochs)
        if resume and self.epoch >= end:  # nothing to train: no file changes, unless the last writes were cut short
            logger.info("nothing to train: %s is at epoch %d, the end asked for is %d", self.run_dir, self.epoch, end)
            if main:
                self._complete_records()
            return RunResult(self.run_dir, self._saved_metrics() if main else {}, self.epoch >= cfg.epochs)
        if main:
            check_still_held(self.run_dir)
            make_folder(self.run_dir)
            count, size = remove_leftovers(self.run_dir)
            if count:
                logger.info("removed %d temporary file(s) of %.1f MB that a killed write left in %s", count,
                            size / 2**20, self.run_dir)  # fmt: skip
        history = History(self.run_dir, self._tracker(resume)) if main else None
        try:
            if history is not None and resume:
                history.truncate_after(self.epoch)
                self._restore_last_line(history)
            if main:
                logger.info("%s: %s", cfg.method, self.lr_plan.describe(cfg.optim))
                derived = {
                    "optim.peak_lr": self.lr_plan.peak,
                    "optim.warmup_epochs_of_the_run": self.lr_plan.warmup_epochs,
                }
                write_run_settings(cfg, self.changes, self.run_dir / CONFIG_NAME, derived)
            if main and self.baseline is None and self.data.labelled:
                assert self.data.memory is not None and self.data.test is not None
                self.baseline = raw_pixel_baseline(
                    self.data.memory, self.data.test, self.data.num_classes, cfg.eval.knn_k, cfg.eval.knn_sigma,
                    cfg.data.num_workers, self.device,
                ) or {}  # fmt: skip
            if self.epoch == 0 and self._partial is None:
                self.method.before_training(self.batches.plain_epoch(epoch_seed(cfg.seed, 0)))
            if main:
                monitored = self.data.labelled or self.data.holdout is not None
                extras = f"the monitor every {cfg.eval.every} epoch(s)" if monitored else ""
                self._estimate = RunEstimate(self.steps_per_epoch, end - self.epoch, extras)
            with self._stop:
                self._train_until(end, ckpt_path, history)
        except BaseException as err:
            if history is not None:  # the error on its way out is the one to report
                history.close(STOPPED if isinstance(err, TrainingInterrupted) else FAILED, quiet=True)
            raise
        if history is None:
            return RunResult(self.run_dir, {}, finished=self.epoch >= cfg.epochs)
        metrics = self._metrics(history.read())
        write_text_atomically(self.run_dir / METRICS_NAME, json.dumps(metrics, indent=2) + "\n")
        if self.epoch >= cfg.epochs:
            history.finish(metrics, [self.run_dir / METRICS_NAME, self.run_dir / CONFIG_NAME])
        else:
            history.close(STOPPED)  # stopped at --stop-after: a resume continues the tracker's run
        return RunResult(self.run_dir, metrics, finished=self.epoch >= cfg.epochs)

    def _tracker(self, resume: bool) -> Tracker:
        """The run's tracker (``log.tracker``), started (a resumed run continues its tracker run): a missing package
        or an unreachable tracker is an error before any training."""
        log = self.cfg.log
        tracker = open_tracker(log.tracker, self.run_dir, log.project, log.tracker_uri)
        tracker.start(to_dict(self.cfg), resume=resume)
        return tracker

    def _restore_last_line(self, history: History) -> bool:
        """Write the checkpoint's last epoch line into ``history`` when it lacks it; True when it did."""
        restored = history.restore(self._last_record)
        if restored:
            logger.info("history.jsonl lacked epoch %d, saved in the checkpoint: written again", self.epoch)
        return restored

    def _complete_records(self) -> None:
        """Write what a process stopped right after its last checkpoint left unwritten: that epoch's history line
        (kept in the checkpoint) and, for a finished run, ``metrics.json``."""
        history = History(self.run_dir)
        restored = self._restore_last_line(history)
        if self.epoch >= self.cfg.epochs and (restored or not (self.run_dir / METRICS_NAME).is_file()):
            metrics = self._metrics(history.read())
            write_text_atomically(self.run_dir / METRICS_NAME, json.dumps(metrics, indent=2) + "\n")

    def _train_until(self, end: int, ckpt_path: Path, history: History | None) -> None:
        """Train, evaluate, record and checkpoint epoch by epoch up to epoch ``end``; a stop request saves and raises
        :class:`~invprop.engine.signals.TrainingInterrupted`."""
        cfg = self.cfg
        while self.epoch < end:
            epoch = self.epoch + 1
            start = time.perf_counter()
            partial = self._partial if self._partial and self._partial["epoch"] == epoch else None
            try:
                means = self.train_epoch(epoch, resume_from=partial)
            except StopRequested as stop:
                self.seconds += time.perf_counter() - start
                self._partial = stop.progress
                if self.context.is_main:
                    check_still_held(self.run_dir)
                self._save(ckpt_path)
                raise self._interrupted(stop.progress["step"]) from None
            self._partial = None
            record: dict[str, Any] = {"epoch": epoch, **means}
            if self.stages.staged:
                record["stage"] = self.stages.stage_of(epoch).name
            changed = changes_at(self.changes, epoch)
            if changed:
                record[HISTORY_CHANGES_KEY] = changed
            if epoch % cfg.eval.every == 0 or epoch == cfg.epochs or epoch == end:
                record.update(self.evaluate())
            self.seconds += time.perf_counter() - start
            record["seconds"] = round(self.seconds, 3)
            self.epoch = epoch
            self._last_record = record
            if self.context.is_main:
                check_still_held(self.run_dir)  # never re-create a removed run directory without its lock
            # The checkpoint first: the history never names an epoch that last.pt lacks. A process stopped between
            # the two writes leaves the epoch's line in the checkpoint, and a resume writes it (History.restore).
            self._save(ckpt_path)
            if history is not None:
                history.append(record)
            summary = "  ".join(f"{k}={v:.4f}" for k, v in record.items() if k.startswith(("loss", "knn_top1")))
            logger.info("epoch %d/%d  %s  (%.1fs)", epoch, cfg.epochs, summary, self.seconds)
            warn_if_collapsed(record)
            asked = agree_to_stop(self.context, self._stop.received is not None, self.device)
            if asked and self.epoch < end:
                self._stop.request()
                raise self._interrupted(None)

    def _save(self, path: Path) -> None:
        """Checkpoint: every process builds the state (a split bank is gathered), the main process writes it."""
        state = self.state_dict()
        if self.context.is_main:
            save_checkpoint(state, path)
        barrier(self.context)

    def _interrupted(self, step: int | None) -> TrainingInterrupted:
        assert self._stop.received is not None
        where = (
            f"epoch {self.epoch + 1}, step {step}/{self.batches_per_epoch}"
            if step is not None
            else f"the end of epoch {self.epoch}"
        )
        return TrainingInterrupted(self._stop.received, self.run_dir, self.run_dir / CHECKPOINT_NAME, where)

    @property
    def changes(self) -> list[Change]:
        """The story of settings changed on resume (given, or read from the run's ``config.yaml``)."""
        if self._changes is None:
            saved = read_run_settings(self.run_dir)
            self._changes = saved.changes if saved is not None else []
        return self._changes

    def _saved_metrics(self) -> dict[str, Any]:
        """The run's ``metrics.json`` (rebuilt from its history when it has none), read without writing."""
        path = self.run_dir / METRICS_NAME
        if path.is_file():
            try:
                saved: dict[str, Any] = json.loads(path.read_text())
                return saved
            except (OSError, ValueError):
                logger.warning("%s cannot be read; rebuilding the metrics from the history", path)
        return self._metrics(History(self.run_dir).read())

    def _metrics(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """The run's summary: its loss and the last-epoch values of the terms its method's spec keeps, the latest
        kNN scores, its time, and the raw-pixel baseline."""
        last = records[-1] if records else {}
        latest_eval: dict[str, Any] = next((r for r in reversed(records) if "knn_top1" in r), {})
        latest_rank: dict[str, Any] = next((r for r in reversed(records) if "rankme" in r), {})
        metrics: dict[str, Any] = {
            "method": self.cfg.method,
            "dataset": self.cfg.data.name,
            "epochs": self.epoch,
            "epochs_planned": self.cfg.epochs,
            LOSS: last.get(LOSS),
            **{key: last[key] for key in self.spec.terms if key in last},
            "seconds": round(self.seconds, 3),
            "knn_top1": latest_eval.get("knn_top1"),
            "knn_top5": latest_eval.get("knn_top5"),
            "knn_backbone_top1": latest_eval.get("knn_backbone_top1"),
            "knn_backbone_top5": latest_eval.get("knn_backbone_top5"),
            **({"online_probe_top1": latest_eval.get("online_probe_top1")} if self.probe is not None else {}),
            "rankme": latest_rank.get("rankme"),
            "rankme_backbone": latest_rank.get("rankme_backbone"),
        }
        metrics["skipped_files"] = len(self.data.skipped_files)
        if self.data.skipped_files:
            metrics["skipped_file_examples"] = self.data.skipped_files[:20]
        if self.batches.unreadable:  # files that became unreadable while this process trained
            metrics["unreadable_during_training"] = len(self.batches.unreadable)
            metrics["unreadable_during_training_examples"] = sorted(self.batches.unreadable)[:20]
        metrics.update(self.baseline or {})
        return metrics


@dataclass
class ResumePlan:
    """How a run continues: its settings, and the story of changes to write once training goes on."""

    cfg: Config
    changes: list[Change]
    #: No checkpoint yet (the run was stopped before its first one was written): it starts again from epoch 0 with
    #: its saved settings, replacing what it wrote.
    from_start: bool = False


def config_for_resume(run_dir: Path, overrides: dict[str, Any], allow_changes: bool = False) -> ResumePlan:
    """The saved settings of ``run_dir`` with ``overrides`` applied, and the story of changes to record.

    Keys that may change on resume (:func:`invprop.settings.is_resumable`: ``epochs``, evaluation, workers,
    device, ...) are always accepted. Any other difference from the saved settings raises
    :class:`~invprop.errors.ResumeChangesRefused` listing each key with its saved and its new value, unless
    ``allow_changes``; even then settings change only between epochs, not inside an interrupted one
    (:class:`~invprop.errors.ChangesInsideEpoch`). Every accepted change is recorded at the next epoch.
    """
    if (run_dir / CHECKPOINT_NAME).is_dir():
        raise CheckpointError(f"cannot resume {run_dir}: its {CHECKPOINT_NAME} is a folder, not a checkpoint")
    settings = read_run_settings(run_dir)
    if not (run_dir / CHECKPOINT_NAME).is_file():
        if settings is None:
            raise CheckpointError(
                f"nothing to resume in {run_dir}: no {CHECKPOINT_NAME} and no {CONFIG_NAME} there (start a run there "
                "without --resume)"
            )
        trained = len(History(run_dir).read())
        if trained or (run_dir / METRICS_NAME).is_file():
            raise CheckpointError(
                f"cannot resume {run_dir}: its {CHECKPOINT_NAME} is gone, but its history holds {trained} epoch(s) "
                f"(the checkpoint was removed); restore {CHECKPOINT_NAME}, or train the run again with --overwrite"
            )
        saved = from_saved(settings.values)
        cfg = from_dict(overrides, base=saved)
        return ResumePlan(cfg, [], from_start=True)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    saved = from_saved(settings.values if settings is not None else state["config"], state["model"])
    cfg = from_dict(overrides, base=saved)
    made = setting_changes(saved, cfg)
    fixed = [change for change in made if not change.resumable]
    epoch = int(state["epoch"]) + 1
    if fixed and not allow_changes:
        raise ResumeChangesRefused(run_dir, [c.describe() for c in fixed], epoch)
    partial = state.get("partial")
    if fixed and partial:
        raise ChangesInsideEpoch(run_dir, int(partial["epoch"]), int(partial["step"]))
    story = record_changes(settings.changes if settings is not None else [], epoch, made)
    return ResumePlan(cfg, story)
