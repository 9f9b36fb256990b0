import os

import pytest
import torch

from nas20k.core.data import (
    MEAN,
    RAW_MD5,
    STD,
    DataError,
    augment,
    batches,
    check_files,
    default_data_dir,
    load_mnist,
)


def test_loads_real_mnist_with_a_seeded_validation_split(data_dir):
    a = load_mnist(data_dir, val_size=5000, download=False)
    assert (len(a.train), len(a.val), len(a.test)) == (55_000, 5_000, 10_000)
    assert a.train.x.shape[1:] == (1, 28, 28) and a.train.x.dtype == torch.float32
    assert a.test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the test set is the real one, in order
    all_train = torch.cat([a.train.x, a.val.x])
    assert abs(all_train.mean().item()) < 1e-3 and abs(all_train.std().item() - 1) < 1e-3  # normalized by MEAN/STD
    b = load_mnist(data_dir, val_size=5000, download=False)
    assert torch.equal(a.val.x, b.val.x)  # deterministic
    c = load_mnist(data_dir, val_size=5000, split_seed=1, download=False)
    assert not torch.equal(a.val.y, c.val.y)
    # validation images are not training images: no val image occurs in train
    train_keys = {hash(x.numpy().tobytes()) for x in a.train.x[:, 0]}
    overlap = sum(hash(x.numpy().tobytes()) in train_keys for x in a.val.x[:500, 0])
    assert overlap <= 2  # MNIST has a handful of exact duplicate images; a leak would give ~500


def test_limit_keeps_a_small_subset(mnist):
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (2000, 500, 2000)


def test_default_data_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("NAS20K_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("NAS20K_DATA_DIR")
    assert default_data_dir().name == "nas20k"


def _copy_raw(data_dir, dst):
    raw = dst / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in RAW_MD5:
        os.symlink(data_dir / "MNIST" / "raw" / name, raw / name)
    return raw


def test_missing_file_names_the_path_and_the_fix(data_dir, tmp_path):
    raw = _copy_raw(data_dir, tmp_path)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*--data-dir") as e:
        check_files(tmp_path, download=False)
    assert "\n" not in str(e.value)


def test_corrupt_file_is_caught_by_md5(data_dir, tmp_path):
    raw = _copy_raw(data_dir, tmp_path)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    good = (data_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(DataError, match="corrupt.*t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path, download=False)


def test_batches_are_a_seeded_permutation():
    g = torch.Generator().manual_seed(0)
    idx = torch.cat(list(batches(1000, 128, g)))
    assert len(idx) == 896 and len(set(idx.tolist())) == 896  # full batches only, no repeats
    again = torch.cat(list(batches(1000, 128, torch.Generator().manual_seed(0))))
    assert torch.equal(idx, again)
    assert torch.equal(torch.cat(list(batches(10, 4))), torch.arange(10))  # unshuffled: every item, in order


def test_augment_is_per_sample_and_keeps_the_background(mnist):
    x = mnist.train.x[:64]
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, 0, 0, g), x)
    y = augment(x, 15, 2, g)
    assert y.shape == x.shape and not torch.allclose(y, x)
    background = -MEAN / STD
    assert torch.allclose(y[:, :, 0, 0], torch.full_like(y[:, :, 0, 0], background), atol=1e-4)  # corners stay black
    # the same image augmented twice in one batch gets different transforms
    twice = augment(torch.cat([x[:1], x[:1]]), 15, 2, g)
    assert not torch.allclose(twice[0], twice[1])
    # a tiny rotation changes little: the transform is a real rotation, not noise
    small = augment(x, 1, 0, g)
    assert (small - x).abs().mean() < 0.1 * (y - x).abs().mean() + 0.05


@pytest.mark.parametrize("kwargs, message", [
    ({"limit": 0}, "--limit must be at least 1 image, got 0"),
    ({"limit": -5}, "--limit must be at least 1 image"),
    ({"val_size": 0}, "--val-size must be between 1 and 59999"),
    ({"val_size": 60_000}, "--val-size must be between 1 and 59999"),
])
def test_bad_sizes_are_user_errors(data_dir, kwargs, message):
    from nas20k.base.errors import UserError

    with pytest.raises(DataError, match=message) as e:
        load_mnist(data_dir, download=False, **kwargs)
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)  # the CLI prints it as one `error:` line


def test_a_limit_of_one_image_is_one_image(data_dir):
    tiny = load_mnist(data_dir, val_size=10, limit=1, download=False)
    assert (len(tiny.train), len(tiny.val), len(tiny.test)) == (1, 10, 1)
