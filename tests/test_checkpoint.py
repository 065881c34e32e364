"""Checkpoint files: atomic saves, weights_only loads, clear errors for missing, corrupt or unsafe files."""
import pickle

import pytest
import torch

from minidiff import checkpoint
from minidiff.checkpoint import CorruptCheckpointError, UnsafeCheckpointError, load_checkpoint, save_checkpoint


def _state(value: float) -> dict:
    return {"step": 3, "weights": {"w": torch.full((4, 4), value)}, "rng": torch.get_rng_state(),
            "history": [(1, 0.5), (2, float("nan"))], "config": {"name": "tiny", "mults": [1, 2], "y": None}}


def test_round_trip_of_plain_data(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _state(1.0))
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["weights"]["w"], torch.ones(4, 4))
    assert torch.equal(loaded["rng"], _state(1.0)["rng"])
    assert loaded["config"] == {"name": "tiny", "mults": [1, 2], "y": None}
    assert loaded["history"][0] == (1, 0.5)


def test_load_uses_weights_only(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _state(1.0))
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(path)
    assert seen["weights_only"] is True


def test_crash_while_saving_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _state(1.0))
    before = path.read_bytes()
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)     # bytes are in the temporary file ...
        f.truncate(100)                        # ... then the "machine" dies halfway
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _state(2.0))
    assert path.read_bytes() == before
    assert torch.equal(load_checkpoint(path)["weights"]["w"], torch.ones(4, 4))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_save_replaces_and_creates_folders(tmp_path):
    path = tmp_path / "a" / "b" / "ckpt.pt"
    save_checkpoint(path, _state(1.0))
    save_checkpoint(path, _state(2.0))
    assert torch.equal(load_checkpoint(path)["weights"]["w"], torch.full((4, 4), 2.0))
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _state(1.0))
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 20, "empty": b""}[damage])
    with pytest.raises(CorruptCheckpointError, match="corrupt") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_non_dict_file_is_refused(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CorruptCheckpointError, match="not a minidiff checkpoint"):
        load_checkpoint(path)


class Payload:
    """Stands for any pickled object: weights_only loading must refuse to rebuild it."""

    def __reduce__(self):
        return (print, ("this would run on load",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        torch.save({"x": torch.zeros(1), "payload": Payload()}, f, pickle_module=pickle)
    with pytest.raises(UnsafeCheckpointError, match="weights_only") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_state_must_be_a_dict(tmp_path):
    with pytest.raises(TypeError, match="state must be a dict"):
        save_checkpoint(tmp_path / "x.pt", [1, 2])
    assert not list(tmp_path.iterdir())


def test_every_file_carries_its_checksum_and_a_changed_byte_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"w": torch.arange(6, dtype=torch.float32), "step": 3})
    raw = torch.load(path, weights_only=True)
    assert raw["sha256"] == checkpoint.state_digest({"w": torch.arange(6, dtype=torch.float32), "step": 3})
    assert "sha256" not in load_checkpoint(path)              # verified, then removed
    raw["w"][2] = -1.4e37                                     # one weight, as a flipped exponent bit makes it
    torch.save(raw, path)
    with pytest.raises(CorruptCheckpointError, match="do not match the SHA-256 stored in it"):
        load_checkpoint(path)


def test_a_full_disk_is_reported_in_words_and_the_old_file_stays(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1})

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(checkpoint.DiskFullError, match="no space left on device while writing"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]    # no temporary file left behind
