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
