"""Training: the train state, the loss, the jitted data-parallel train step, and the loop around them.

The loop owns no cleverness of its own: data comes from `data.pipeline`, evaluation from `evaluator.Evaluator`,
saving and the stop signal from `checkpoint`, and everything it reports goes to `metrics.jsonl` through `RunLog`.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils

from streetseg_jax import checkpoint, losses, sharding
from streetseg_jax.data import pipeline
from streetseg_jax.evaluator import Evaluator
from streetseg_jax.metrics import confusion_matrix, metrics_from_confusion
from streetseg_jax.models.unet import build_model, model_dtype, preprocess
from streetseg_jax.run import RunSetup, prepare_run, finish_run
from streetseg_jax.runlog import RunLog, compile_seconds
from streetseg_jax.visualize import eval_rows, read_metrics, run_history


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    step: jax.Array              # int32 scalar: optimiser steps taken
    params: Any                  # pure dict of parameters
    model_state: Any             # pure dict of everything else the model holds (BatchNorm statistics)
    opt_state: Any
    rng: jax.Array               # uint32 key data; step keys are fold_in(rng, step), so no RNG state advances


# ---------------------------------------------------------------------------------------------------------------
# Model, optimiser, state
# ---------------------------------------------------------------------------------------------------------------
def split_model(model: nnx.Module):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def warmup_length(config) -> int:
    """The warm-up's steps: warmup_steps, at most half the run, so that a short run's rate still comes down."""
    return min(config.warmup_steps, config.num_train_steps // 2)


def make_schedule(config) -> optax.Schedule:
    """Linear warm-up (warmup_length), then cosine or polynomial decay to the end factor."""
    steps, warmup = config.num_train_steps, warmup_length(config)
    peak, end = config.learning_rate, config.learning_rate * config.end_learning_rate_factor
    if config.lr_schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, max(steps - warmup, 1), alpha=config.end_learning_rate_factor)
    elif config.lr_schedule == "polynomial":
        decay = optax.polynomial_schedule(peak, end, power=0.9, transition_steps=max(steps - warmup, 1))
    else:
        raise ValueError(f"lr_schedule must be 'cosine' or 'polynomial', got {config.lr_schedule!r}")
    warm = optax.linear_schedule(0.0, peak, max(warmup, 1))
    return optax.join_schedules([warm, decay], [warmup])


def make_optimizer(config) -> optax.GradientTransformation:
    schedule = make_schedule(config)
    if config.optimizer == "adamw":
        opt = optax.adamw(schedule, weight_decay=config.weight_decay)
    elif config.optimizer == "adam":
        opt = optax.adam(schedule)
    elif config.optimizer == "sgd":       # with momentum and L2 weight decay: the classic segmentation recipe
        opt = optax.chain(optax.add_decayed_weights(config.weight_decay),
                          optax.sgd(schedule, momentum=config.get("momentum", 0.9)))
    else:
        raise ValueError(f"optimizer must be 'adamw', 'adam' or 'sgd', got {config.optimizer!r}")
    clip = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm > 0 else []
    ema = [track_ema(config.ema_decay)] if config.get("ema_decay", 0.0) else []
    return optax.chain(*clip, opt, *ema)


class EmaState(NamedTuple):
    count: jax.Array
    ema: Any


def track_ema(decay: float) -> optax.GradientTransformation:
    """Keeps an exponential moving average of the updated parameters in the optimiser state; updates pass through.

    The decay ramps up as min(decay, (1 + t) / (10 + t)) over the first updates, so the average does not drag the
    random initialisation along for ~1 / (1 - decay) steps.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1) (0 switches it off), got {decay}")

    def init(params):
        return EmaState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.array, params))

    def update(updates, state, params):
        count = state.count + 1
        rate = 1.0 - jnp.minimum(decay, count / (count + 9.0))
        ema = optax.incremental_update(optax.apply_updates(params, updates), state.ema, rate)
        return updates, EmaState(count, ema)

    return optax.GradientTransformation(init, update)


def eval_params(state: TrainState, config) -> Any:
    """The weights to evaluate, save as best and predict with: the moving average with `ema_decay`, else params.

    The BatchNorm statistics stay the live ones (themselves a moving average of the batches): close enough to the
    averaged weights' at the decays that help here (0.99-0.999), and what the measured EMA figures used."""
    return state.opt_state[-1].ema if config.get("ema_decay", 0.0) else state.params


def init_state(config, num_classes: int, tx, mesh):
    """(graphdef, TrainState) with parameters created directly in their (replicated) sharding."""
    abstract = nnx.eval_shape(lambda: build_model(config.model, num_classes, seed=config.seed))
    graphdef, _, _ = nnx.split(abstract, nnx.Param, ...)
    state = jax.jit(_initial_state(config, num_classes, tx), out_shardings=sharding.replicated(mesh))()
    return graphdef, state


def _initial_state(config, num_classes: int, tx):
    def init() -> TrainState:
        _, params, rest = split_model(build_model(config.model, num_classes, seed=config.seed))
        rng = jax.random.key_data(jax.random.PRNGKey(config.seed))
        return TrainState(jnp.zeros((), jnp.int32), params, rest, tx.init(params), rng)
    return init


def memory_problem(config, num_classes: int, mesh, free: Callable[[Any], int | None] | None = None) -> str | None:
    """Why the train state cannot fit in this machine's memory, or None. Each device holds the weights, optimiser
    state and BatchNorm statistics, and a step adds one set of gradients (activations come on top): a lower bound,
    computed without allocating anything, against the memory free on the host (CPU devices share it) or on a GPU.
    The process was killed without a word instead (model.depth 9: 24 GB and more)."""
    abstract = jax.eval_shape(_initial_state(config, num_classes, make_optimizer(config)))
    count = sum(leaf.size for leaf in jax.tree.leaves(abstract.params))
    per_device = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(abstract)) + 4 * count
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    on_host = local[0].platform == "cpu"
    need = per_device * (len(local) if on_host else 1)
    available = (free or free_memory)(local[0])
    if available is None or need <= available:
        return None
    where = "this machine has" if on_host else f"a {local[0].device_kind} has"
    each = f" on each of {len(local)} devices" if len(local) > 1 else ""
    return (f"the model does not fit in memory: training needs {need / 2**30:.1f} GiB at least (weights, optimiser "
            f"state and gradients of {count / 1e6:.0f} M parameters{each}) where {where} {available / 2**30:.1f} GiB "
            f"free; make model.depth ({config.model.depth}) or model.base_width ({config.model.base_width}) smaller")


def free_memory(device) -> int | None:
    """Bytes free for `device`: the host's available memory for a CPU device (Linux), else the device's own."""
    if device.platform == "cpu":
        try:
            with open("/proc/meminfo") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        except (OSError, StopIteration, ValueError, IndexError):
            return None
    stats = device.memory_stats() or {}
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0) if "bytes_limit" in stats else None


# ---------------------------------------------------------------------------------------------------------------
# Loss and step
# ---------------------------------------------------------------------------------------------------------------
def make_train_step(graphdef, tx, class_weights, ignore_id: int, mesh, loss: str = "cross_entropy"):
    """The jitted `(state, batch) -> (state, metrics)`; the state is donated, the batch sharded over `data`.

    `loss` is one of losses.LOSSES, with `class_weights` weighting its cross-entropy term."""
    num_classes = len(class_weights)
    objective = losses.loss_fn(loss, class_weights, ignore_id)

    def loss_fn(params, state: TrainState, batch):
        model = nnx.merge(graphdef, params, state.model_state)
        model.train()
        logits = model(preprocess(batch["image"], model_dtype(model)))
        _, _, rest = split_model(model)
        return objective(logits, batch["label"]), (logits, rest)

    def step(state: TrainState, batch):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        # The mesh tells our kernels, which see whole arrays, how the batch is split (native.py, per_device).
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            (loss, (logits, rest)), grads = grad_fn(state.params, state, batch)
            preds = jnp.argmax(logits, axis=-1)
            metrics = {"loss": loss, "confusion": confusion_matrix(batch["label"], preds, num_classes, ignore_id)}
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(state.step + 1, params, rest, opt_state, state.rng), metrics

    replicated, batched = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    return jax.jit(step, donate_argnums=0, in_shardings=(replicated, batched),
                   out_shardings=(replicated, replicated))


# ---------------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------------
class NonFiniteLoss(RuntimeError):
    pass


class TrainMetrics:
    """Per-step metrics kept on the device and fetched only when logged (no per-step host round trip)."""

    def __init__(self, first_step: int):
        self.losses, self.confusion, self.first_step = [], None, first_step
        self.clock_start = time.time()
        self.untimed = 0        # steps at the start that images/second leaves out

    def exclude_so_far(self) -> None:
        """Images/second counts the steps from now on (when there are any by the summary)."""
        self.untimed, self.clock_start = len(self.losses), time.time()

    def add(self, metrics: dict) -> None:
        self.losses.append(metrics["loss"])
        self.confusion = metrics["confusion"] if self.confusion is None else self.confusion + metrics["confusion"]

    def summary(self, class_names, batch_size: int) -> dict:
        losses = np.asarray(jax.device_get(jnp.stack(self.losses)))
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            raise NonFiniteLoss(f"loss became {losses[bad[0]]} at step {self.first_step + bad[0] + 1}")
        scores = metrics_from_confusion(np.asarray(jax.device_get(self.confusion)), class_names)
        row = {"train/loss": float(losses.mean()), "train/miou": scores["miou"]}
        timed = len(losses) - self.untimed
        if timed:           # a window of the compiling step alone (a resume logged at once) measures no speed
            row["train/images_per_second"] = timed * batch_size / max(time.time() - self.clock_start, 1e-9)
        return row


def train_and_evaluate(config, workdir: str | Path, overrides: list[str] | None = None,
                       same_data: bool = False) -> dict:
    """Train `config` in `workdir`, resuming from its latest checkpoint; returns the last eval metrics.
    `overrides`: the config keys a command line set; `same_data`: resume on a rebuild of the data the run trained
    on, whose files differ (run.prepare_run)."""
    setup: RunSetup = prepare_run(config, workdir, overrides, same_data)
    try:
        return _run(config, setup)
    finally:        # the work directory is free again (in a notebook the setup outlives a failed run)
        setup.release()


def _run(config, setup: RunSetup) -> dict:
    mesh, label_map = setup.mesh, setup.label_map
    tx = make_optimizer(config)
    graphdef, state = init_state(config, label_map.num_classes, tx, mesh)
    train_iter = pipeline.train_batches(
        setup.train_source, global_batch=config.batch_size, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
        augment_cfg=setup.augment_cfg, ignore_id=label_map.ignore_id, num_threads=config.input_threads)
    state = setup.restore_or_init(state, train_iter)
    train_step = make_train_step(graphdef, tx, setup.class_weights, label_map.ignore_id, mesh,
                                 config.get("loss", "cross_entropy"))
    evaluator = Evaluator(graphdef, mesh, label_map, config)
    return _loop(config, setup, state, train_iter, train_step, evaluator)


def _loop(config, setup: RunSetup, state, train_iter, train_step, evaluator) -> dict:
    log: RunLog = setup.log
    step = int(jax.device_get(state.step))
    stop = checkpoint.StopSignal()
    window, last_eval = TrainMetrics(step), {}
    if step < config.num_train_steps:
        log.start(step, config.num_train_steps)
    else:
        log.say(f"already at step {step}, num_train_steps is {config.num_train_steps}: nothing to train")
    try:
        # A checkpoint is saved before the evaluation due with it, so an evaluation that fails (out of memory, a
        # kill) loses no training: one metrics.jsonl lacks is run again here (else the last step's never was, and
        # the run's final score was an older one).
        logged = _logged_miou(setup, step)
        if logged is None and step > 0 and "eval" in _due(step, config):
            log.say(f"step {step}: metrics.jsonl holds no evaluation of it (cut short when the run stopped?); "
                    "evaluating it now")
            if step >= config.num_train_steps:
                log.restarted(step)
            last_eval = _evaluate(config, setup, state, train_iter, evaluator, step)
        elif logged is not None:
            setup.save_best(step, state, train_iter, logged)    # where the run stopped before it was whole
        while step < config.num_train_steps:
            if stop.should_stop(step):
                setup.save(step, state, train_iter)
                setup.stop(step, stop.received)
            batch = sharding.global_batch(next(train_iter), setup.mesh)
            state, metrics = train_step(state, batch)
            step += 1
            window.add(metrics)
            if not log.compiled:     # the first step of a start compiles: its time counts in neither speed nor ETA
                jax.block_until_ready(metrics["loss"])
                window.exclude_so_far()
                log.first_step_done(step)
            due = _due(step, config)
            if due:
                # A failed save is found here, not at the next save (650 steps later in the default config): waiting
                # for the one under way, since orbax reports only on finished saves (one started a log interval ago
                # has long finished when all is well); on one process, it stops every process.
                sharding.all_succeed(setup.checkpoints.wait)
                row = window.summary(setup.label_map.names, config.batch_size)
                row["train/learning_rate"] = float(make_schedule(config)(step - 1))
                log.write(step, row)
            if "checkpoint" in due:     # first: an evaluation that fails (out of memory) loses no training
                setup.save(step, state, train_iter)
            if "eval" in due:
                last_eval = _evaluate(config, setup, state, train_iter, evaluator, step)
            if due:     # after evaluating and saving, so train/images_per_second times training alone
                window = TrainMetrics(step)
    except NonFiniteLoss as e:
        kept = setup.checkpoints.latest_step()
        setup.fail(f"{e}; stopped. " + (f"The last good checkpoint is kept (step {kept})." if kept is not None else
                                        "No checkpoint was saved before it."))
    finally:
        setup.checkpoints.wait()    # before the handlers go back: a SIGTERM then abandoned the last step's saves
        stop.restore_handlers()
    if stop.received and jax.process_count() == 1:    # during the last step's evaluation or saves, which are kept
        setup.stop(step, stop.received)     # the closing pictures wait for the same command (nothing to train)
    finish_run(config, setup, evaluator, eval_params(state, config), state.model_state, step)
    return last_eval


def _evaluate(config, setup: RunSetup, state, train_iter, evaluator, step: int) -> dict:
    """Evaluate the state of `step`, log it, redraw the curves, keep it as the best checkpoint if it is."""
    started, compiled = time.time(), compile_seconds()
    scores = evaluator.run(eval_params(state, config), state.model_state, setup.eval_source)
    setup.log.evaluated(time.time() - started, compile_seconds() - compiled)
    setup.save_best(step, state, train_iter, scores["eval/miou"])  # first: a stop before the row is written redoes both
    setup.log.write(step, scores)
    setup.draw_curves()
    return scores


def _logged_miou(setup: RunSetup, step: int) -> float | None:
    """The eval mIoU metrics.jsonl holds for `step`, or None (none: a due evaluation cut short, _loop runs it). A
    run that stopped after logging it and before its best checkpoint was whole (a full disk) kept an older, worse
    best checkpoint, which evaluate and predict then took while the run's summary and compare named this step.
    Process 0 reads it, and every process gets its answer."""
    rows = [row for row in eval_rows(run_history(read_metrics(setup.log.path))) if row["step"] == step] \
        if step > 0 and setup.log.primary else []
    miou = float(rows[-1]["eval/miou"]) if rows else float("nan")
    if jax.process_count() > 1:
        miou = float(multihost_utils.broadcast_one_to_all(np.float32(miou)))
    return None if np.isnan(miou) else miou


def _due(step: int, config) -> set[str]:
    """What happens after `step`: logging, evaluation, saving (always all three at the last step)."""
    last = step == config.num_train_steps
    due = set()
    if last or step % config.log_every_steps == 0:
        due.add("log")
    if last or (config.eval_every_steps and step % config.eval_every_steps == 0):
        due.add("eval")
    if last or (config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0):
        due.add("checkpoint")
    return due
