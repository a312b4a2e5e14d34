"""Does self-supervised pretraining help? Fine-tuning from each method's pretrained encoder vs
from random initialisation, same model, same fine-tuning budget, several seeds, on the demo set.

    python -m benchmarks.ssl_transfer [--methods dpc arrow_of_time moco vtdl] [--seeds 0 1 2]
        [--variant demo|smoke] [--pretrain-steps 300] [--finetune-steps 100]
        [--background photo|plain] [--motion constant|accelerating] [--val-per-class N]
        [--unlabelled-per-class N] [--json PATH]

For each seed and method: pretrain (the method's `configs/pretrain_*.py:VARIANT`, seeded), then
fine-tune the whole network from it (the method's `configs/finetune_*.py:VARIANT` where it has
one, else the derived finetune stage); and, once per encoder architecture, fine-tune the same
config from random initialisation. Prints val top-1 per seed,
the mean and the mean difference to random init with its standard error over seeds.
`--unlabelled-per-class N` pretrains on more demo videos than fine-tuning labels: the first N
training videos of each class, of which the labelled split is the first 48 (16 for smoke).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from benchmarks import report
from configs import (
    finetune_dpc_ucf101,
    finetune_moco_ucf101,
    finetune_videomae_ucf101,
    finetune_vtdl_ucf101,
    pretrain_arrow_of_time,
    pretrain_dpc_ucf101,
    pretrain_moco_ucf101,
    pretrain_videomae_ucf101,
    pretrain_vtdl_ucf101,
    ssl,
)
from data_prep.demo import BACKGROUNDS, MOTIONS

PRETRAIN_CONFIGS = {
    "dpc": pretrain_dpc_ucf101.get_config,
    "arrow_of_time": pretrain_arrow_of_time.get_config,
    "moco": pretrain_moco_ucf101.get_config,
    "vtdl": pretrain_vtdl_ucf101.get_config,
    "videomae": pretrain_videomae_ucf101.get_config,
}
# A method's own fine-tuning recipe (VideoMAE's adds layer-wise lr decay and stochastic depth).
FINETUNE_CONFIGS = {
    "dpc": finetune_dpc_ucf101.get_config,
    "moco": finetune_moco_ucf101.get_config,
    "vtdl": finetune_vtdl_ucf101.get_config,
    "videomae": finetune_videomae_ucf101.get_config,
}


def _with(config, **values):
    with config.unlocked():
        for key, value in values.items():
            target = config
            *parents, leaf = key.split(".")
            for parent in parents:
                target = target[parent]
            target[leaf] = value
    return config


def _budget(config, steps: int, seed: int):
    return _with(
        config,
        seed=seed,
        num_train_steps=steps,
        checkpoint_every=steps,
        log_every=max(steps // 4, 1),
        **{"optimizer.warmup_steps": min(config.optimizer.warmup_steps, steps // 10)},
    )


def check_unlabelled_per_class(
    unlabelled_per_class: int | None, methods, variant: str, data_dir: str
) -> None:
    """Raises ValueError unless the unlabelled videos hold the labelled split fine-tuning uses."""
    if unlabelled_per_class is None:
        return
    if data_dir:
        raise ValueError("--unlabelled-per-class sizes the demo; it cannot apply to --data-dir")
    labelled = PRETRAIN_CONFIGS[methods[0]](variant).data.demo.train_per_class
    if unlabelled_per_class < labelled:
        raise ValueError(
            f"--unlabelled-per-class {unlabelled_per_class}: fewer than the {labelled} "
            f"labelled training videos per class of the {variant} variant, which it must hold"
        )


def run_comparison(
    methods,
    seeds,
    *,
    variant: str,
    pretrain_steps: int,
    finetune_steps: int,
    workdir: str,
    data_dir: str = "",
    background: str = "photo",
    motion: str = "constant",
    val_per_class: int | None = None,
    unlabelled_per_class: int | None = None,
) -> dict:
    """{"random": {encoder: [top1 per seed]}, method: [top1 per seed], "encoder": {method:
    encoder}, "seconds": {...}}. Runs everything in this process; `data_dir` replaces the
    variant's dataset (a converted folder with train and val splits); `background` and `motion`
    are the demo's (`data_prep.demo`: "plain" takes the photos out from behind the digits,
    "accelerating" gives time a direction); `val_per_class`, when given, sizes the demo's val
    split (a class's first videos stay the same, and so does the train split);
    `unlabelled_per_class`, when given, sizes the demo's train split for pretraining only, so
    the labelled videos fine-tuning sees are the first of a larger unlabelled set."""
    from vssl_jax import main

    check_unlabelled_per_class(unlabelled_per_class, methods, variant, data_dir)
    results: dict = {"random": {}, "encoder": {}, "seconds": {}}
    for method in methods:

        def on_data(config):
            _with(config, **{"data.demo.background": background, "data.demo.motion": motion})
            if val_per_class is not None:
                _with(config, **{"data.demo.val_per_class": val_per_class})
            if data_dir:
                _with(config, **{"data.builtin": "", "data.data_dir": data_dir})
            return config

        def get_finetune(method=method):
            if method in FINETUNE_CONFIGS:
                return on_data(FINETUNE_CONFIGS[method](variant))
            return on_data(ssl.derived_config(PRETRAIN_CONFIGS[method], variant))

        results[method] = []
        start = time.perf_counter()
        for seed in seeds:
            pretrain_dir = os.path.join(workdir, f"{method}-pretrain-{seed}")
            pretrain = on_data(PRETRAIN_CONFIGS[method](variant))
            if unlabelled_per_class is not None:
                _with(pretrain, **{"data.demo.train_per_class": unlabelled_per_class})
            main.run(_budget(pretrain, pretrain_steps, seed), pretrain_dir)
            finetune = _budget(get_finetune(), finetune_steps, seed)
            _with(finetune, init_from=pretrain_dir)
            out = main.run(finetune, os.path.join(workdir, f"{method}-finetune-{seed}"))
            results[method].append(out["top1"])
        results["seconds"][method] = time.perf_counter() - start
        # Random-init runs are shared by methods with the same model and fine-tuning recipe.
        encoder = repr((finetune.model.to_dict(), finetune.optimizer.to_dict()))
        results["encoder"][method] = encoder
        if encoder not in results["random"]:
            scores = []
            start = time.perf_counter()
            for seed in seeds:
                scratch = _budget(get_finetune(), finetune_steps, seed)
                _with(scratch, stage="train")
                directory = os.path.join(workdir, f"{method}-random-{seed}")
                scores.append(main.run(scratch, directory)["top1"])
            results["random"][encoder] = scores
            results["seconds"][f"random ({method}'s encoder)"] = time.perf_counter() - start
    return results


def summarise(results: dict, methods) -> list[list]:
    """Rows: method, top-1 per seed, mean, mean gain over random init, its standard error."""
    rows = []
    for method in methods:
        scores = results[method]
        random = results["random"][results["encoder"][method]]
        gains = [a - b for a, b in zip(scores, random, strict=True)]
        error = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
        rows.append(
            ["random init", " ".join(f"{s:.3f}" for s in random), statistics.mean(random), "", ""]
        )
        rows.append(
            [
                method,
                " ".join(f"{s:.3f}" for s in scores),
                statistics.mean(scores),
                statistics.mean(gains),
                error,
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--methods", nargs="+", default=["dpc", "arrow_of_time"], choices=sorted(PRETRAIN_CONFIGS)
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variant", default="demo", choices=ssl.VARIANTS)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--finetune-steps", type=int, default=100)
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--data-dir", default="", help="a converted dataset instead of the demo")
    parser.add_argument(
        "--background",
        default="photo",
        choices=BACKGROUNDS,
        help="the demo's: a photo per video (default) or a uniform grey (data_prep.demo)",
    )
    parser.add_argument(
        "--motion",
        default="constant",
        choices=MOTIONS,
        help="the demo's: constant speeds (default) or accelerating ones (data_prep.demo)",
    )
    parser.add_argument(
        "--val-per-class",
        type=int,
        help="the demo's val videos per class (default: the variant's, 16 for demo); more make "
        "the comparison less noisy",
    )
    parser.add_argument(
        "--unlabelled-per-class",
        type=int,
        help="pretrain on the demo's first N training videos per class (default: the labelled "
        "split fine-tuning uses, 48 for demo); pretraining reads labels only for its kNN score",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    from vssl_jax.main import configure_logging

    configure_logging()
    try:
        check_unlabelled_per_class(
            args.unlabelled_per_class, args.methods, args.variant, args.data_dir
        )
    except ValueError as error:
        parser.error(str(error))
    report.warn_if_busy()
    with tempfile.TemporaryDirectory() as tmp:
        results = run_comparison(
            args.methods,
            args.seeds,
            variant=args.variant,
            pretrain_steps=args.pretrain_steps,
            finetune_steps=args.finetune_steps,
            workdir=args.workdir or tmp,
            data_dir=args.data_dir,
            background=args.background,
            motion=args.motion,
            val_per_class=args.val_per_class,
            unlabelled_per_class=args.unlabelled_per_class,
        )
    report.print_table(
        f"val top-1 after {args.finetune_steps} fine-tuning steps ({args.variant}; pretraining "
        f"{args.pretrain_steps} steps, {args.background} background, {args.motion} motion"
        + (f", {args.val_per_class} val videos per class" if args.val_per_class else "")
        + (
            f", pretrained on {args.unlabelled_per_class} videos per class)"
            if args.unlabelled_per_class
            else ")"
        ),
        ["init", "per seed", "mean", "gain", "s.e. of gain"],
        summarise(results, args.methods),
    )
    report.write_json(args.json, {"args": vars(args), "results": results})


if __name__ == "__main__":
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain's workers read absl flags.
    main()
