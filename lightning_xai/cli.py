"""Command line: ``lightning-xai demo``, ``lightning-xai report`` and ``lightning-xai fit|validate ...`` (LightningCLI).

``lightning-xai report LOG_DIR -o report.html`` builds the end-of-fit HTML report
(:class:`~lightning_xai.callbacks.XAIReport`'s page) afterwards from a run's TensorBoard event files.

``lightning-xai demo`` trains the small demo CNN on the generated shapes data with the monitors
attached and writes TensorBoard (or W&B) logs. ``lightning-xai fit --config config.yaml`` is
Lightning's own CLI over any LightningModule and data module (``class_path``; by default the demo's
:class:`~lightning_xai.demo.ShapesClassifier` and :class:`~lightning_xai.data.ShapesDataModule`), so
callbacks are configured in YAML::

    trainer:
      callbacks:
        - class_path: lightning_xai.callbacks.SaliencyMonitor
          init_args:
            explainers:
              - class_path: lightning_xai.attribution.GradCAM
              - class_path: lightning_xai.attribution.IntegratedGradients
                init_args: {n_steps: 16}
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CLIConfigError", "main", "run_demo", "run_report", "lightning_cli"]


def _demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-xai demo",
        description="Train a small CNN on generated shapes with lightning_xai monitors attached and log the "
        "explanations to TensorBoard (default) or Weights & Biases.",
    )
    parser.add_argument("--epochs", type=int, default=6, help="training epochs (default: 6)")
    parser.add_argument("--logger", choices=["tensorboard", "wandb"], default="tensorboard")
    parser.add_argument("--log-dir", default="demo_logs", help="where logs and the summary PNG go (default: demo_logs)")
    parser.add_argument(
        "--shortcut",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add a spurious marker correlated with the label in training (a 'Clever Hans' shortcut; default: on)",
    )
    parser.add_argument("--num-train", type=int, default=12288, help="training images (default: 12288)")
    parser.add_argument("--image-size", type=int, default=48, help="image side in pixels (default: 48)")
    parser.add_argument("--num-samples", type=int, default=8, help="probe images explained every epoch")
    parser.add_argument("--no-monitors", action="store_true", help="train without any monitor (for timing)")
    parser.add_argument(
        "--explainers",
        default="grad_cam,integrated_gradients",
        help="comma-separated registered explainer names, or smoothgrad (default: grad_cam,integrated_gradients; "
        "IG and SmoothGrad use 16 steps/samples)",
    )
    parser.add_argument(
        "--tcav",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="attach TCAVMonitor: is the first class learned from its corner marker or its shape? (default: on)",
    )
    parser.add_argument(
        "--quality",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="attach MetricsMonitor (deletion AUC, pointing game, mask AUPR of Grad-CAM and IG) and "
        "SanityCheckMonitor (cascading randomisation every 2 epochs) (default: on)",
    )
    parser.add_argument(
        "--max-overhead",
        type=float,
        default=None,
        help="time budget of each monitor as a fraction of training time, e.g. 0.05 (default: none for "
        "SaliencyMonitor, 0.02 for each of the TCAV, metrics and sanity-check monitors)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run_demo(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Run the demo; returns a dict with the log directory, timings and final metrics."""
    args = _demo_parser().parse_args(argv)
    os.environ.setdefault("PL_DISABLE_FORK", "1")
    import pytorch_lightning as pl
    import torch

    from lightning_xai.data import ShapesDataModule, ShapesDataset
    from lightning_xai.demo import ShapesClassifier

    pl.seed_everything(args.seed, workers=True, verbose=False)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    dm = ShapesDataModule(
        batch_size=64,
        num_train=args.num_train,
        num_val=256,
        image_size=args.image_size,
        shortcut=args.shortcut,
        seed=args.seed,
    )
    model = ShapesClassifier(num_classes=dm.num_classes)
    callbacks: list[pl.Callback] = []
    monitor = None
    if not args.no_monitors:
        from lightning_xai.attribution import get_explainer
        from lightning_xai.callbacks import SaliencyMonitor

        probe = None
        if args.shortcut:
            # Explain images that carry the marker as in training, so the maps can show it.
            shortcut_set = ShapesDataset(
                num_samples=64,
                image_size=args.image_size,
                num_classes=dm.num_classes,
                shortcut=True,
                seed=args.seed + 1000,
            )
            probe = (shortcut_set.images, shortcut_set.labels, shortcut_set.masks)
        presets = {  # demo-sized settings; any other registered name gets its defaults
            "integrated_gradients": lambda: get_explainer("integrated_gradients", n_steps=16),
            "smoothgrad": lambda: get_explainer("noise_tunnel", explainer="saliency", n_samples=16),
        }
        names = [n.strip() for n in args.explainers.split(",") if n.strip()]
        explainers = [presets[n]() if n in presets else get_explainer(n) for n in names]
        monitor = SaliencyMonitor(
            explainers,
            num_samples=args.num_samples,
            probe=probe,
            class_names=None,
            max_overhead=args.max_overhead,
        )
        callbacks.append(monitor)
        # the concept and quality monitors each keep to a share of the training time (skips are logged)
        extra_budget = args.max_overhead if args.max_overhead is not None else 0.02
        if args.tcav:
            from lightning_xai.demo import tcav_demo_monitor

            callbacks.append(
                tcav_demo_monitor(
                    image_size=args.image_size,
                    num_classes=dm.num_classes,
                    shortcut_class=0,
                    seed=args.seed,
                    max_overhead=extra_budget,
                )
            )
        if args.quality:
            from lightning_xai.callbacks import MetricsMonitor, SanityCheckMonitor

            callbacks.append(
                MetricsMonitor(
                    ["grad_cam", presets["integrated_gradients"]()],
                    metrics=["deletion_auc", "pointing_game", "mask_aupr"],
                    metric_kwargs={"deletion_auc": {"steps": 10}},
                    num_samples=args.num_samples,
                    probe=probe,
                    max_overhead=extra_budget,
                )
            )
            callbacks.append(
                SanityCheckMonitor(
                    ["saliency", "grad_cam", "guided_backprop"],
                    num_samples=args.num_samples,
                    every_n_epochs=2,
                    probe=probe,
                    max_overhead=extra_budget,
                )
            )
    if args.logger == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        logger = WandbLogger(
            project="lightning-xai-demo", save_dir=str(log_dir), offline=os.environ.get("WANDB_MODE") != "online"
        )
    else:
        from pytorch_lightning.loggers import TensorBoardLogger

        logger = TensorBoardLogger(str(log_dir), name="shapes")
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="auto",
        devices=1,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        deterministic=True,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - start
    logger.finalize("success")
    result: dict[str, object] = {
        "log_dir": str(Path(logger.log_dir) if getattr(logger, "log_dir", None) else log_dir),
        "seconds": seconds,
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }
    if monitor is not None:
        summary = log_dir / "saliency_evolution.png"
        monitor.save_evolution_png(summary, name=monitor.names[0], max_images=4)
        result["summary_png"] = str(summary)
    print(
        f"\nTrained {args.epochs} epochs in {seconds:.1f} s; val/acc = {result['metrics'].get('val/acc', float('nan')):.3f}"
    )
    if args.logger == "tensorboard":
        print(f"TensorBoard logs: {result['log_dir']}")
        print(f"Open them with:   tensorboard --logdir {log_dir}")
    else:
        print(f"W&B run files under {log_dir}/wandb (sync with `wandb sync {log_dir}/wandb/offline-run-*`)")
    if "summary_png" in result:
        print(f"Summary picture:  {result['summary_png']}")
    return result


def run_report(argv: Sequence[str] | None = None) -> Path:
    """``lightning-xai report LOG_DIR [-o FILE]``: write a run's HTML report from its TensorBoard event files.

    The page is the one :class:`~lightning_xai.callbacks.XAIReport` writes at the end of fit from the
    same logs (:func:`~lightning_xai.callbacks.report.build_report`). Returns the path written.
    """
    parser = argparse.ArgumentParser(
        prog="lightning-xai report",
        description="Build the self-contained HTML report of a run from its TensorBoard event files.",
    )
    parser.add_argument("log_dir", help="the run's TensorBoard directory (e.g. demo_logs/shapes/version_0)")
    parser.add_argument("-o", "--output", default=None, help="the HTML file (default: LOG_DIR/xai_report.html)")
    parser.add_argument("--title", default=None, help="the page title")
    args = parser.parse_args(argv)
    from lightning_xai.callbacks.report import build_report

    output = Path(args.output) if args.output else Path(args.log_dir) / "xai_report.html"
    path = build_report(args.log_dir, output, title=args.title)
    print(f"Report: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return path


class CLIConfigError(ValueError):
    """A configuration the CLI could not instantiate; the message is the root cause's, on one line."""


def _root_cause(err: BaseException) -> BaseException:
    """The innermost exception of ``err``'s chain that was raised outside jsonargparse and Lightning.

    jsonargparse wraps a constructor's error twice ("Does not validate against any of the Union
    subtypes"); the error the user needs is the one the configured class raised.
    """
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or err.__context__
    for candidate in chain:
        frames = traceback.extract_tb(candidate.__traceback__)
        origin = frames[-1].filename.replace(os.sep, "/") if frames else ""
        if not any(f"/{pkg}/" in origin for pkg in ("jsonargparse", "pytorch_lightning", "lightning")):
            return candidate
    return chain[-1]


def lightning_cli(args: Sequence[str] | None = None) -> object:
    """Lightning's ``LightningCLI`` over any LightningModule and data module.

    ``model`` and ``data`` take any ``class_path`` (any ``LightningModule`` / ``LightningDataModule``
    subclass, with its ``init_args``); when a config names neither, they default to the demo's
    :class:`~lightning_xai.demo.ShapesClassifier` and :class:`~lightning_xai.data.ShapesDataModule`,
    so a config holding only ``trainer.callbacks`` runs as written. A class the config names gets its
    own defaults for every argument the config leaves out, never the demo's. Parsing costs one
    extra pass when a config names its own model or data class.

    Args:
        args: The command line after the program name; ``None`` reads ``sys.argv[1:]`` (as the console
            script does, so Lightning does not warn about both being given).

    Raises:
        CLIConfigError: When a class in the configuration cannot be built (an unknown explainer name,
            say); the message is the root cause's.
    """
    from pytorch_lightning.cli import LightningCLI

    from lightning_xai.data import ShapesDataModule
    from lightning_xai.demo import ShapesClassifier

    demo = {"model": ShapesClassifier, "data": ShapesDataModule}

    class _CLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
            from jsonargparse import lazy_instance

            parser.set_defaults({key: lazy_instance(cls) for key, cls in demo.items()})

        def parse_arguments(self, parser, args) -> None:  # type: ignore[no-untyped-def]
            # jsonargparse keeps a default's init_args that the named class also accepts when a config
            # switches class_path (the demo's num_classes/lr/batch_size leaked into a user's classes).
            # So a first pass learns which classes were named, each defaults to its own class, the second parses.
            # (--print_config prints and exits while parsing: the first pass leaves it out.)
            argv = list(sys.argv[1:] if args is None else args)
            first = [a for a in argv if a != "--print_config" and not a.startswith("--print_config=")]
            config = parser.parse_args(first)
            sub = config.get("subcommand")
            config = config[sub] if sub else config
            target = self._parser(sub)  # the subcommand's parser holds the model/data defaults
            named = {}
            for key, cls in demo.items():
                path = config.get(f"{key}.class_path")
                if path and path != f"{cls.__module__}.{cls.__qualname__}":
                    named[key] = {"class_path": path}
            if named:
                target.set_defaults(named)
            super().parse_arguments(parser, args)

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except Exception as err:
                cause = _root_cause(err)
                message = " ".join(str(cause).split())
                raise CLIConfigError(f"{type(cause).__name__}: {message}") from err

    return _CLI(
        None,
        None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=list(args) if args is not None else None,
        save_config_kwargs={"overwrite": True},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightning-xai`` console script.

    Args:
        argv: The arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0, or 2 when the configuration cannot be built (the error is printed alone,
        on one line, to stderr).
    """
    from_sys_argv = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: lightning-xai demo [options]    train the demo with monitors, log to TensorBoard/W&B\n"
            "       lightning-xai report LOG_DIR [-o FILE]  the HTML report of a run, from its TensorBoard logs\n"
            "       lightning-xai fit|validate ...  LightningCLI over the demo model/data (see --help of each)"
        )
        return 0
    if argv[0] == "demo":
        run_demo(argv[1:])
        return 0
    if argv[0] == "report":
        try:
            run_report(argv[1:])
        except (FileNotFoundError, ValueError) as err:
            print(f"lightning-xai report: error: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        lightning_cli(None if from_sys_argv else argv)  # None: Lightning reads sys.argv itself, as its own entry does
    except CLIConfigError as err:
        print(f"lightning-xai: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
