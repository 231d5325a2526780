import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("PL_DISABLE_FORK", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# One intra-op thread: the suite runs in 2 xdist workers on 2 cores, and oversubscribed threads make
# small convolutions an order of magnitude slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _wandb_files_stay_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """W&B stages table media and caches under the home directory by default: keep them in tmp."""
    root = tmp_path_factory.mktemp("wandb_home")
    names = ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR")
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ[name] = str(root / name.lower())
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


# Markers (pyproject: ddp, slow, numerics) of test files whose owners mark them later; files mark
# themselves with `pytestmark` otherwise. Keys are paths under the repository root, or path::test.
_MARKS: dict[str, tuple[str, ...]] = {
    "tests/attribution/test_patterns.py": ("numerics",),
    "tests/callbacks/test_pattern_estimator.py": ("numerics",),
    "tests/callbacks/test_pattern_estimator_ddp.py": ("ddp", "slow", "numerics"),
    "tests/callbacks/test_prototypes.py": ("numerics",),
    "tests/callbacks/test_prototypes.py::test_ddp_spawn_push_reduces_over_ranks": ("ddp", "slow"),
    "tests/callbacks/test_tracin_steps.py::test_two_ddp_processes_equal_one": ("ddp", "slow", "numerics"),
    "tests/test_cli.py::test_console_script_prints_a_config_error_alone": ("slow",),  # a subprocess: 10 s
    "tests/concepts/test_tcav.py::test_demo_marker_and_shape_are_told_apart": ("slow",),  # 58 s
    "tests/concepts/test_tcav.py::test_whole_pipeline_agrees_with_captum_within_noise": ("slow",),  # 9-10 s each
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        path = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        for key in (path, f"{path}::{item.originalname if hasattr(item, 'originalname') else item.name}"):
            for name in _MARKS.get(key, ()):
                item.add_marker(getattr(pytest.mark, name))
