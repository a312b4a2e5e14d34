"""The training loop: data -> mesh -> model/state -> jitted step -> checkpoints -> evals.

Reads top to bottom. The train state is a plain dict of arrays
    {"params", "model_state" (BatchNorm statistics), "opt_state", "step", "rng"}
sharded by `config.sharding_rules`; `train_step` is a pure function of (state, batch).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from vssl_jax import (
    checkpoint,
    datasets,
    evaluate,
    knn,
    objectives,
    optimizers,
    plots,
    sharding,
)
from vssl_jax.data import pipeline
from vssl_jax.metric_writer import MetricWriter
from vssl_jax.state import StateSpec, initial_state, load_pretrained, make_state_spec, normalized


def micro_batches(batch: dict, num: int) -> dict:
    """`[batch, ...]` arrays -> `[num, batch // num, ...]`; micro-batch k takes rows k, k + num,
    k + 2 num...: every device holds an equal part of each micro-batch (the batch axis is split
    over the devices in contiguous blocks), so accumulation moves no data between devices."""

    def split(x):
        x = x.reshape(x.shape[0] // num, num, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return jax.tree.map(split, batch)


def train_step(state: dict, batch: dict, *, spec: StateSpec, config, objective, schedule):
    """One update on a global batch. Returns (new state, scalar metrics).

    With `config.grad_accum_steps` K > 1 the batch is cut into K micro-batches that run one
    after another (a `lax.scan`, compiled once); their gradients are averaged before the single
    update, so the update is that of the whole batch, except that BatchNorm normalises each
    micro-batch by its own statistics (as K times more devices with per-device BatchNorm would)
    and its running averages advance once per micro-batch. Metrics are micro-batch means.
    """
    dropout_rng, augment_rng = jax.random.split(jax.random.fold_in(state["rng"], state["step"]))
    batch = normalized(batch, config)

    def loss_fn(params, model_state, batch, dropout_rng, augment_rng):
        model = nnx.merge(spec.graphdef, params, model_state, copy=True)
        rngs = nnx.Rngs(dropout=dropout_rng, augment=augment_rng)
        loss, metrics = objective(model, batch, train=True, rngs=rngs, config=config.objective)
        return loss, (metrics, nnx.split(model, nnx.Param, ...)[2])

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    num_micro = config.grad_accum_steps
    if num_micro == 1:
        (_, (metrics, model_state)), grads = grad_fn(
            state["params"], state["model_state"], batch, dropout_rng, augment_rng
        )
    else:

        def accumulate(carry, micro):
            model_state, grad_sum = carry
            micro_batch, index = micro
            (_, (metrics, model_state)), grads = grad_fn(
                state["params"],
                model_state,
                micro_batch,
                jax.random.fold_in(dropout_rng, index),
                jax.random.fold_in(augment_rng, index),
            )
            return (model_state, jax.tree.map(jnp.add, grad_sum, grads)), metrics

        zeros = jax.tree.map(jnp.zeros_like, state["params"])
        (model_state, grad_sum), metrics = jax.lax.scan(
            accumulate,
            (state["model_state"], zeros),
            (micro_batches(batch, num_micro), jnp.arange(num_micro)),
        )
        grads = jax.tree.map(lambda g: g / num_micro, grad_sum)
        metrics = jax.tree.map(lambda m: m.mean(axis=0), metrics)
    updates, opt_state = spec.tx.update(grads, state["opt_state"], state["params"])
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    metrics = {
        **metrics,
        "grad_norm": grad_norm,
        "learning_rate": schedule(state["step"]),
        "nonfinite": 1.0 - finite.astype(jnp.float32),
    }
    updated = {
        "params": optax.apply_updates(state["params"], updates),
        "model_state": model_state,
        "opt_state": opt_state,
    }
    if config.skip_nonfinite:
        # Keep the previous weights, statistics and optimizer moments; the data moves on.
        updated = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old),
            updated,
            {k: state[k] for k in updated},
        )
    return {**updated, "step": state["step"] + 1, "rng": state["rng"]}, metrics


def jit_train_step(spec: StateSpec, config, mesh, objective: objectives.Objective):
    """`train_step` jitted for `mesh`: state sharded by the rules, batch over the devices,
    metrics replicated; the old state's buffers are donated to the new one."""
    schedule = optimizers.learning_rate_schedule(config.optimizer, config.num_train_steps)
    return jax.jit(
        functools.partial(
            train_step, spec=spec, config=config, objective=objective.loss, schedule=schedule
        ),
        in_shardings=(spec.shardings, sharding.batch_sharding(mesh)),
        out_shardings=(spec.shardings, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )


def _window_metrics(history: list[dict], first_step: int, skip_nonfinite: bool) -> dict:
    """Means of the steps since the last log; a non-finite step stops the run (names it) unless
    `skip_nonfinite`, where such steps are counted and left out of the means."""
    fetched = jax.device_get(history)
    bad = [first_step + i for i, m in enumerate(fetched) if m["nonfinite"] > 0]
    if bad and not skip_nonfinite:
        loss = fetched[bad[0] - first_step]["loss"]
        raise FloatingPointError(
            f"step {bad[0]}: training loss is {loss} (or its gradient is not finite); stopped "
            "before saving, earlier checkpoints are intact. Lower the learning rate, or set "
            "config.skip_nonfinite=True to skip such steps"
        )
    good = [m for m in fetched if m["nonfinite"] == 0] or fetched
    scalars = {k: float(np.mean([m[k] for m in good])) for k in fetched[0] if k != "nonfinite"}
    scalars["skipped_steps"] = float(len(bad))
    return scalars


def _format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def compiled_flops(compiled) -> float | None:
    """FLOPs of a compiled executable by XLA's cost analysis (a loop body counts once)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return (cost or {}).get("flops")


def _log_compiled(compiled) -> None:
    memory = compiled.memory_analysis()
    flops = compiled_flops(compiled)
    logging.info(
        "train_step compiled: %.2f GFLOP per step, %.1f MiB temp + %.1f MiB arguments per device",
        (float("nan") if flops is None else flops) / 1e9,
        getattr(memory, "temp_size_in_bytes", 0) / 2**20,
        getattr(memory, "argument_size_in_bytes", 0) / 2**20,
    )


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config.num_train_steps` steps (resuming from `workdir`), then evaluates: the
    encoder's classifier (`top1`...) or, after self-supervised pretraining, kNN retrieval.

    Serves the stages `train`, `pretrain`, `finetune` and `linear_probe`, which differ only in
    their config (objective, `init_from`, `optimizer.trainable`). Returns the final eval
    results (also written to `workdir/eval_results.json`).
    """
    objective = objectives.get(config.objective.name)
    # ---------------------------------------------------------------- Input
    data_dir = datasets.prepare(
        config.data, splits=(config.data.train_split, config.data.eval_split)
    )
    label_names = pipeline.load_label_names(data_dir)
    spec_clip = pipeline.clip_spec(config.data)

    # ---------------------------------------------------------------- Mesh
    mesh = sharding.make_mesh(config.mesh)
    accumulation = config.grad_accum_steps
    if accumulation < 1 or config.batch_size % (mesh.size * accumulation):
        raise ValueError(
            f"batch_size {config.batch_size} (the global batch) is not divisible by the "
            f"{mesh.size} devices x {accumulation} grad_accum_steps; make it a multiple of "
            f"{mesh.size * max(accumulation, 1)}"
        )
    if accumulation > 1 and objective.negatives_from_batch:
        raise ValueError(
            f"objective {config.objective.name} takes its negatives from the batch: "
            f"grad_accum_steps {accumulation} would shrink them to one micro-batch's, a "
            "different objective. Use more devices, a smaller batch, or a queue of negatives "
            "(objective moco)"
        )
    batch_sharding = sharding.batch_sharding(mesh)

    # ---------------------------------------------------------------- Model and state
    spec = make_state_spec(config, len(label_names), mesh)
    step_fn = jit_train_step(spec, config, mesh, objective)

    if objective.final_eval == "knn":
        eval_step = evaluate.make_eval_step(spec, config, mesh, step=evaluate.features_step)
    else:
        eval_step = evaluate.make_eval_step(spec, config, mesh)

    def run_eval(state) -> tuple[dict, dict | None]:
        if objective.final_eval == "knn":
            return knn.evaluate_knn(eval_step, config, state, mesh, data_dir), None
        return evaluate.evaluate(eval_step, config, state, mesh, data_dir, label_names)

    # ---------------------------------------------------------------- Checkpoint / resume
    train_data = pipeline.train_dataset(
        data_dir,
        config.data.train_split,
        spec_clip,
        global_batch_size=config.batch_size,
        seed=config.seed,
        num_workers=config.data.num_workers,
        make_example=objective.train_example(spec_clip, config.objective),
    )
    train_iter = iter(train_data)
    checkpointer = checkpoint.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    if checkpointer.latest_step() is not None:
        state = checkpointer.restore(spec.abstract, train_iter)
        logging.info("Resumed from %s at step %d", checkpointer.directory, state["step"])
    else:
        state = initial_state(spec)
        if config.init_from:
            state = load_pretrained(state, config.init_from, config.model.name)
        elif config.stage in ("finetune", "linear_probe"):
            raise ValueError(
                f"stage {config.stage} starts from a pretrained encoder: set "
                "--config.init_from=PRETRAIN_WORKDIR (or an imported model's folder)"
            )
    step = int(jax.device_get(state["step"]))

    # ---------------------------------------------------------------- Loop
    writer = MetricWriter(workdir)
    # Whatever stops the loop, the saves already started (all of finite states) complete.
    try:
        total = config.num_train_steps
        history: list[dict] = []
        compiled = None
        window_start, window_steps = time.perf_counter(), 0
        while step < total:
            batch = pipeline.global_batch(next(train_iter), batch_sharding)
            if compiled is None:
                compiled = step_fn.lower(state, batch).compile()
                _log_compiled(compiled)
                window_start = time.perf_counter()  # Throughput excludes compilation.
            with jax.transfer_guard("disallow"):
                state, metrics = compiled(state, batch)
            step += 1
            window_steps += 1
            history.append(metrics)

            save_now = step % config.checkpoint_every == 0 or step == total
            if step % config.log_every == 0 or save_now:
                scalars = _window_metrics(history, step - len(history) + 1, config.skip_nonfinite)
                history = []
                if scalars["skipped_steps"]:
                    logging.warning("skipped %d non-finite steps", scalars["skipped_steps"])
                elapsed = time.perf_counter() - window_start
                seconds_per_step = elapsed / window_steps
                scalars["clips_per_second"] = window_steps * config.batch_size / elapsed
                writer.write_scalars(step, scalars, "train")
                logging.info(
                    "step %d/%d | loss %.4f | acc %.3f | lr %.4g | %.1f clips/s | ETA %s",
                    step,
                    total,
                    scalars["loss"],
                    scalars.get("accuracy", float("nan")),
                    scalars["learning_rate"],
                    scalars["clips_per_second"],
                    _format_duration(seconds_per_step * (total - step)),
                )
                window_start, window_steps = time.perf_counter(), 0
            if save_now:
                checkpointer.save(step, state, train_iter)
            if config.eval_every and step % config.eval_every == 0 and step < total:
                results, _ = run_eval(state)
                writer.write_scalars(step, evaluate.scalar_results(results), "eval")
                window_start, window_steps = time.perf_counter(), 0
    finally:
        checkpointer.close()
        # Stops grain's worker processes and frees the batches they prefetched into shared
        # memory, which would otherwise sit there through the final eval.
        train_iter.close()

    # ---------------------------------------------------------------- Final eval
    results, outputs = run_eval(state)
    evaluate.write_results(workdir, results)
    writer.write_scalars(step, evaluate.scalar_results(results), "eval")
    writer.close()
    if outputs is not None:
        plots.write_eval_plots(workdir, outputs, label_names, data_dir, config)
    plots.write_objective_pictures(spec, config, state, mesh, data_dir, workdir)
    return results
