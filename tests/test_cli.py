"""The console script: LightningCLI YAML configuration, the demo, and a real TensorBoard server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lightning_xai.cli import lightning_cli, main, run_demo
from tests.helpers.logs import read_tensorboard

CONFIG = """
seed_everything: 0
trainer:
  max_epochs: 1
  accelerator: cpu
  devices: 1
  enable_checkpointing: false
  enable_progress_bar: false
  logger:
    class_path: pytorch_lightning.loggers.TensorBoardLogger
    init_args:
      save_dir: {root}
      name: yaml
  callbacks:
    - class_path: lightning_xai.callbacks.SaliencyMonitor
      init_args:
        num_samples: 3
        target: label
        explainers:
          - class_path: lightning_xai.attribution.GradCAM
            init_args:
              layer: features.7
          - class_path: lightning_xai.attribution.IntegratedGradients
            init_args:
              n_steps: 4
              baseline: blur
          - saliency
model:
  class_path: lightning_xai.demo.ShapesClassifier
  init_args:
    num_classes: 3
    width: 4
data:
  class_path: lightning_xai.data.ShapesDataModule
  init_args:
    batch_size: 16
    num_train: 48
    num_val: 24
    image_size: 16
    num_classes: 3
"""


def test_lightning_cli_yaml_configures_the_monitor(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(root=tmp_path))
    cli = lightning_cli(["fit", "--config", str(config)])
    monitor = next(c for c in cli.trainer.callbacks if type(c).__name__ == "SaliencyMonitor")
    assert [type(e).__name__ for e in monitor.explainers] == ["GradCAM", "IntegratedGradients", "Saliency"]
    assert monitor.explainers[0].layer == "features.7"
    assert monitor.explainers[1].baseline == "blur"
    assert monitor.target == "label"
    tags = {t for acc in read_tensorboard(tmp_path / "yaml") for t in acc.Tags()["images"]}
    assert {"xai/saliency/grad_cam/overlays", "xai/saliency/integrated_gradients/overlays", "xai/saliency/saliency/overlays"} <= tags


def _readme_yaml() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### From a LightningCLI YAML") :]
    return section[section.index("```yaml\n") + len("```yaml\n") : section.index("```\n", section.index("```yaml"))]


def test_readme_cli_config_runs_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text(_readme_yaml())
    cli = lightning_cli(["fit", "--config", "config.yaml"])  # the README's command, as written
    assert type(cli.model).__name__ == "ShapesClassifier"  # the demo model by default
    monitor = next(c for c in cli.trainer.callbacks if type(c).__name__ == "SaliencyMonitor")
    tags = {t for acc in read_tensorboard(tmp_path) for t in acc.Tags()["images"]}
    assert {f"xai/saliency/{name}/overlays" for name in monitor.names} <= tags


def test_lightning_cli_takes_any_lightning_module(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        CONFIG.format(root=tmp_path)
        .replace("lightning_xai.demo.ShapesClassifier", "tests.helpers.lightning_modules.PlainCNN")
        .replace("    width: 4\n", "")
        .replace("layer: features.7", "layer: body.0")
    )
    cli = lightning_cli(["fit", "--config", str(config)])
    assert type(cli.model).__name__ == "PlainCNN"
    tags = {t for acc in read_tensorboard(tmp_path / "yaml") for t in acc.Tags()["images"]}
    assert "xai/saliency/grad_cam/overlays" in tags


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_demo_logs_and_tensorboard_server_lists_them(tmp_path: Path) -> None:
    result = run_demo(
        ["--epochs", "2", "--num-train", "128", "--image-size", "24", "--num-samples", "4", "--log-dir", str(tmp_path)]
    )
    assert Path(result["summary_png"]).stat().st_size > 1000
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(tmp_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, tags = time.time() + 90, None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/images/tags", timeout=5) as r:
                    tags = json.loads(r.read())
                if tags:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert tags, "TensorBoard did not answer"
        listed = {tag for run in tags.values() for tag in run}
        assert {"xai/saliency/grad_cam/overlays", "xai/saliency/integrated_gradients/overlays", "xai/saliency/grad_cam/evolution/00"} <= listed
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_main_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "lightning-xai demo" in out and "lightning-xai report" in out


USER_CONFIG = """
seed_everything: 0
trainer: {max_epochs: 1, accelerator: cpu, devices: 1, logger: false, enable_checkpointing: false,
          enable_progress_bar: false, enable_model_summary: false}
model:
  class_path: tests.helpers.cli_modules.UserCNN
  init_args: {hidden: 3}
data:
  class_path: tests.helpers.cli_modules.UserData
"""


def test_cli_keeps_a_user_modules_own_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user's classes get their own defaults and init_args, never the demo's (num_classes 4, lr 3e-3, batch 32)."""
    import yaml

    config = tmp_path / "config.yaml"
    config.write_text(USER_CONFIG)
    with pytest.raises(SystemExit):
        lightning_cli(["fit", "--config", str(config), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"] == {"num_classes": 2, "lr": 0.125, "hidden": 3}
    assert printed["data"]["init_args"] == {"batch_size": 6, "num_classes": 2, "size": 24}

    cli = lightning_cli(  # a real tiny fit; its saved config goes to tmp_path, not the working directory
        ["fit", "--config", str(config), "--model.init_args.lr", "0.5", "--trainer.default_root_dir", str(tmp_path)]
    )
    assert type(cli.model).__name__ == "UserCNN" and cli.trainer.current_epoch == 1
    assert (cli.model.head.out_features, cli.model.hparams.lr, cli.model.hparams.hidden) == (2, 0.5, 3)
    assert (cli.datamodule.batch_size, cli.datamodule.num_classes) == (6, 2)


def test_console_script_prints_a_config_error_alone(tmp_path: Path) -> None:
    """An unknown explainer in the YAML: one line on stderr, exit status 2, no traceback, no Lightning
    warning about ``args`` (the console script lets LightningCLI read sys.argv itself)."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "trainer:\n  logger: false\n  callbacks:\n    - class_path: lightning_xai.callbacks.SaliencyMonitor\n"
        "      init_args: {explainers: [salency]}\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "lightning_xai.cli", "fit", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=root,
        env={**__import__("os").environ, "PYTHONPATH": str(root)},
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("lightning-xai: error: ValueError: Unknown explainer 'salency'")
    assert "Did you mean 'saliency'?" in errors[0]
    assert "Traceback" not in done.stderr and "args parameter is intended" not in done.stderr
    assert len(done.stderr) < 1500
