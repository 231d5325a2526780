import io

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from lightning_xai.data import Probe, ShapesDataset, select_probe


def _data(n: int = 40, classes: int = 4, size: int = 8):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=gen)
    y = torch.arange(n) % classes
    mask = (torch.rand(n, 1, size, size, generator=gen) > 0.5).float()
    return x, y, mask


class DictDataset(Dataset):
    def __init__(self, x, y, mask, keys=("image", "label", "mask")):
        self.x, self.y, self.mask, self.keys = x, y, mask, keys

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {self.keys[0]: self.x[i], self.keys[1]: int(self.y[i]), self.keys[2]: self.mask[i, 0].bool()}


class CountingDataset(Dataset):
    def __init__(self, n: int = 10_000):
        self.n, self.calls = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.calls += 1
        return torch.full((1, 4, 4), float(i)), i % 4


class Stream(IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        yield from zip(self.x, self.y)


def _assert_balanced(probe: Probe, num_samples: int, classes: int):
    assert len(probe) == num_samples
    assert probe.targets is not None
    assert probe.targets.tolist() == [i % classes for i in range(num_samples)]


def test_tensor_tuple_is_balanced_and_seeded():
    x, y, mask = _data()
    probe = select_probe((x, y, mask), num_samples=8, num_classes=4, seed=0)
    _assert_balanced(probe, 8, 4)
    assert probe.inputs.shape == (8, 3, 8, 8) and probe.masks is not None and probe.masks.shape == (8, 1, 8, 8)
    # the rows are really the ones whose label they carry
    for i in range(8):
        row = (x == probe.inputs[i]).flatten(1).all(dim=1).nonzero().item()
        assert y[row] == probe.targets[i] and torch.equal(mask[row], probe.masks[i])
    again = select_probe((x, y, mask), num_samples=8, num_classes=4, seed=0)
    assert torch.equal(again.inputs, probe.inputs)
    other = select_probe((x, y, mask), num_samples=8, num_classes=4, seed=1)
    assert not torch.equal(other.inputs, probe.inputs)
    # without num_classes: the classes seen, sorted
    _assert_balanced(select_probe((x, y), num_samples=6), 6, 4)


def test_imbalanced_data_is_as_balanced_as_possible():
    x = torch.rand(20, 2)
    y = torch.tensor([0] * 10 + [1] * 9 + [2])
    probe = select_probe((x, y), num_samples=7, num_classes=3)
    assert probe.targets is not None
    assert sorted(probe.targets.tolist()) == [0, 0, 0, 1, 1, 1, 2]
    assert probe.targets.tolist()[:3] == [0, 1, 2]
    small = select_probe((x[:3], y[:3]), num_samples=8)  # fewer samples than asked
    assert len(small) == 3


@pytest.mark.parametrize("fmt", ["tuple2", "tuple3", "list3", "dict", "dict_alt", "tensor"])
def test_loader_batch_formats(fmt):
    x, y, mask = _data()
    if fmt == "tuple2":
        loader = DataLoader(TensorDataset(x, y), batch_size=8)
    elif fmt in ("tuple3", "list3"):
        loader = DataLoader(TensorDataset(x, y, mask), batch_size=8)  # default_collate gives lists
    elif fmt == "dict":
        loader = DataLoader(DictDataset(x, y, mask), batch_size=8)
    elif fmt == "dict_alt":
        loader = DataLoader(DictDataset(x, y, mask, keys=("input", "target", "segmentation")), batch_size=8)
    else:
        loader = DataLoader(x, batch_size=8)
    probe = select_probe(loader, num_samples=8, num_classes=None if fmt == "tensor" else 4)
    assert probe.inputs.shape == (8, 3, 8, 8)
    if fmt == "tensor":
        assert probe.targets is None and probe.masks is None
        assert torch.equal(probe.inputs, x[:8])
        return
    _assert_balanced(probe, 8, 4)
    if fmt == "tuple2":
        assert probe.masks is None
    else:
        assert probe.masks is not None and probe.masks.shape == (8, 1, 8, 8) and probe.masks.dtype == torch.float32
    # an unshuffled loader is read in order
    assert torch.equal(probe.inputs, x[:8])


def test_datasets_and_plain_iterables():
    ds = ShapesDataset(num_samples=64, image_size=16, num_classes=4)
    probe = select_probe(ds, num_samples=8, num_classes=4, seed=0)
    _assert_balanced(probe, 8, 4)
    assert probe.masks is not None and probe.masks.shape == (8, 1, 16, 16)
    assert torch.equal(select_probe(ds, 8, 4, seed=0).inputs, probe.inputs)
    assert not torch.equal(select_probe(ds, 8, 4, seed=5).inputs, probe.inputs)

    x, y, mask = _data()
    _assert_balanced(select_probe(DictDataset(x, y, mask), num_samples=4, num_classes=4), 4, 4)
    _assert_balanced(select_probe(Stream(x, y), num_samples=8), 8, 4)
    batches = [{"img": x[i : i + 5], "labels": y[i : i + 5]} for i in range(0, 40, 5)]
    _assert_balanced(select_probe(batches, num_samples=8, num_classes=4), 8, 4)
    assert select_probe(x, num_samples=3).targets is None


def test_unknown_dict_keys_are_listed():
    loader = [{"pixels": torch.rand(2, 3, 4, 4), "cls": torch.tensor([0, 1])}]
    with pytest.raises(ValueError, match=r"\['cls', 'pixels'\].*'image'"):
        select_probe(loader)


@pytest.mark.parametrize(
    ("source", "kwargs", "error", "match"),
    [
        ((torch.rand(4, 2), torch.tensor([0, 1, 2, 5])), {"num_classes": 4}, ValueError, "class index 5"),
        ((torch.rand(4, 2), torch.rand(4, 3, 3)), {}, ValueError, r"targets.*\(4, 3, 3\)"),
        ((torch.rand(4, 2), torch.tensor([0.5, 1, 2, 3])), {}, ValueError, "non-integral"),
        ((torch.rand(4, 2), torch.arange(4), torch.rand(4, 3, 5, 5)), {}, ValueError, r"masks.*\(4, 3, 5, 5\)"),
        ((torch.rand(4, 2),), {"num_samples": 0}, ValueError, "num_samples"),
        ((torch.rand(4, 2),), {"num_classes": 0}, ValueError, "num_classes"),
        (42, {}, TypeError, "int"),
        ([], {}, ValueError, "no samples"),
    ],
)
def test_bad_inputs(source, kwargs, error, match):
    with pytest.raises(error, match=match):
        select_probe(source, **kwargs)


def test_one_hot_targets_and_integer_masks():
    x = torch.rand(8, 1, 4, 4)
    y = torch.nn.functional.one_hot(torch.arange(8) % 2, 2).float()
    mask = (torch.arange(8 * 16).view(8, 4, 4) % 3).long()  # [B, H, W] integers
    probe = select_probe(DataLoader(TensorDataset(x, y, mask), batch_size=4), num_samples=4, num_classes=2)
    assert probe.targets is not None and probe.targets.tolist() == [0, 1, 0, 1]
    assert probe.masks is not None and set(probe.masks.unique().tolist()) <= {0.0, 1.0}


def test_stops_reading_early():
    ds = CountingDataset()
    loader = DataLoader(ds, batch_size=4)
    probe = select_probe(loader, num_samples=8, num_classes=4)
    _assert_balanced(probe, 8, 4)
    assert ds.calls == 8
    ds.calls = 0
    select_probe(ds, num_samples=8, num_classes=4)
    assert ds.calls < 100
    # without num_classes it reads a bounded number of samples, not the whole loader
    ds.calls = 0
    select_probe(DataLoader(ds, batch_size=16), num_samples=8)
    assert ds.calls <= 80

    def endless():
        i = 0
        while True:
            yield torch.rand(2, 3), torch.tensor([i % 2, (i + 1) % 2])
            i += 1

    assert len(select_probe(endless(), num_samples=4, num_classes=2)) == 4
    assert len(select_probe(endless(), num_samples=4)) == 4


def test_shuffled_loader_is_deterministic_and_leaves_global_rng_alone():
    x, y, _ = _data(200)
    loader = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=True)
    state = torch.get_rng_state()
    a = select_probe(loader, num_samples=8, num_classes=4, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(5)  # move the global generator: the probe must not depend on it
    b = select_probe(loader, num_samples=8, num_classes=4, seed=3)
    assert torch.equal(a.inputs, b.inputs)


def test_probe_state_dict_round_trip():
    x, y, mask = _data()
    probe = select_probe((x, y, mask), num_samples=8, num_classes=4)
    state = probe.state_dict()
    assert set(state) == {"inputs", "targets", "masks"}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = Probe.from_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.inputs, probe.inputs)
    assert torch.equal(restored.targets, probe.targets)
    assert torch.equal(restored.masks, probe.masks)
    bare = Probe.from_state_dict(Probe(torch.rand(2, 3)).state_dict())
    assert bare.targets is None and bare.masks is None and len(bare) == 2
    moved = probe.to("meta")
    assert moved.inputs.is_meta and moved.targets.is_meta and moved.masks.is_meta
    assert not probe.inputs.is_meta
    with pytest.raises(ValueError, match="inputs"):
        Probe.from_state_dict({"targets": None})


def test_probe_validates_fields():
    with pytest.raises(ValueError, match=r"targets.*\[3\]"):
        Probe(torch.rand(3, 2), torch.arange(4))
    with pytest.raises(ValueError, match=r"masks.*\[3, 1, H, W\]"):
        Probe(torch.rand(3, 2), None, torch.rand(3, 4, 4))
    with pytest.raises(TypeError, match="inputs"):
        Probe([1, 2, 3])  # type: ignore[arg-type]
