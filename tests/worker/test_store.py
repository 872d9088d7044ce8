"""SpillStore on plain data: LRU spilling, unspilling, files, failures."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from shoal.comm import shared_memory
from shoal.worker import store as store_module
from shoal.worker.store import SpillStore


def blob(n: int, fill: int = 0) -> bytes:
    """A value of exactly ``n`` bytes (as nbytes_of counts it)."""
    return bytes([fill]) * n


def files(store: SpillStore) -> list[str]:
    assert store.directory is not None
    return sorted(os.listdir(store.directory))


def test_below_target_everything_stays_in_memory(tmp_path: Path) -> None:
    s = SpillStore(target=100, local_directory=str(tmp_path))
    s["a"] = blob(40)
    s["b"] = blob(40)
    assert s.memory_keys() == {"a", "b"}
    assert s.spilled_keys() == set()
    assert s.fast_nbytes == 80
    assert s.directory is None  # made only when something is spilled
    assert dict(s) == {"a": blob(40), "b": blob(40)}


def test_least_recently_used_values_spill_first(tmp_path: Path) -> None:
    s = SpillStore(target=100, local_directory=str(tmp_path))
    s["a"] = blob(40, 1)
    s["b"] = blob(40, 2)
    assert s["a"] == blob(40, 1)  # a is now more recent than b
    s["c"] = blob(40, 3)
    assert s.spilled_keys() == {"b"}
    assert s.memory_keys() == {"a", "c"}
    assert (s.fast_nbytes, s.slow_nbytes) == (80, 40)
    assert len(files(s)) == 1
    assert len(s) == 3
    assert set(s) == {"a", "b", "c"}
    assert "b" in s
    assert s.nbytes_by_key() == {"a": 40, "b": 40, "c": 40}


def test_reading_a_spilled_key_brings_it_back_and_spills_another(tmp_path: Path) -> None:
    s = SpillStore(target=100, local_directory=str(tmp_path))
    for i, key in enumerate("abc"):
        s[key] = blob(40, i)
    assert s.spilled_keys() == {"a"}
    assert s["a"] == blob(40, 0)
    assert s.spilled_keys() == {"b"}
    assert s.memory_keys() == {"a", "c"}
    stats = s.stats()
    assert stats["spill_count"] == 2
    assert stats["unspill_count"] == 1
    assert stats["unspill_bytes"] == 40
    assert len(files(s)) == 1  # a's file went when it came back


def test_delete_removes_the_file(tmp_path: Path) -> None:
    s = SpillStore(target=50, local_directory=str(tmp_path))
    s["a"] = blob(40)
    s["b"] = blob(40)
    assert s.spilled_keys() == {"a"}
    assert len(files(s)) == 1
    del s["a"]
    assert files(s) == []
    assert "a" not in s
    assert s.slow_nbytes == s.disk_nbytes == 0
    with pytest.raises(KeyError):
        del s["a"]
    s.discard("a")  # no error
    s.discard("b")
    assert len(s) == 0
    assert s.fast_nbytes == 0


def test_overwriting_a_spilled_key_replaces_its_file(tmp_path: Path) -> None:
    s = SpillStore(target=45, local_directory=str(tmp_path))
    s["a"] = blob(40, 1)
    s["b"] = blob(40, 2)
    assert s.spilled_keys() == {"a"}
    s["a"] = blob(10, 3)
    assert s.spilled_keys() == {"b"}
    assert s["a"] == blob(10, 3)
    assert len(files(s)) == 1


def test_a_value_bigger_than_the_target_goes_straight_to_disk(tmp_path: Path) -> None:
    s = SpillStore(target=100, local_directory=str(tmp_path))
    s["small"] = blob(10)
    s["big"] = blob(500, 7)
    assert s.spilled_keys() == {"big"}
    assert s.memory_keys() == {"small"}
    # reading it does not evict the rest, nor keep it in memory
    assert s["big"] == blob(500, 7)
    assert s.spilled_keys() == {"big"}
    assert s.memory_keys() == {"small"}


def test_numpy_arrays_round_trip(tmp_path: Path) -> None:
    s = SpillStore(target=1000, local_directory=str(tmp_path))
    x = np.arange(1000, dtype="f8").reshape(10, 100)
    y = np.arange(1000, dtype="i4")[::3]  # not contiguous
    s["x"] = x
    s["y"] = y
    s[("t", 1)] = {"nested": np.ones(300, dtype="u1"), "n": 3}
    while s.evict():
        pass
    assert s.spilled_keys() == {"x", "y", ("t", 1)}
    x2 = s["x"]
    np.testing.assert_array_equal(x2, x)
    assert x2.dtype == x.dtype
    assert x2.flags.writeable
    assert x2.ctypes.data % 16 == 0  # frames are aligned in the file and the buffer
    np.testing.assert_array_equal(s["y"], y)
    t = s[("t", 1)]
    assert t["n"] == 3
    np.testing.assert_array_equal(t["nested"], np.ones(300, dtype="u1"))


def test_an_unpicklable_value_stays_in_memory_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = SpillStore(target=100, local_directory=str(tmp_path))
    lock = threading.Lock()
    with caplog.at_level(logging.WARNING, logger="shoal.worker.store"):
        s.put("lock", lock, nbytes=60)
        s["a"] = blob(60)
        assert s.spilled_keys() == {"a"}  # the lock was older, but cannot go
        s["b"] = blob(30)
        assert s.evict() == 30
        assert s.evict() == 0  # nothing left that can be spilled
    assert s.memory_keys() == {"lock"}
    assert s.spilled_keys() == {"a", "b"}
    assert s["lock"] is lock
    warnings = [r for r in caplog.records if "cannot be pickled" in r.getMessage()]
    assert len(warnings) == 1
    assert s.fast_nbytes == 60


def test_an_unpicklable_value_bigger_than_the_target_stays_in_memory(tmp_path: Path) -> None:
    s = SpillStore(target=10, local_directory=str(tmp_path))
    lock = threading.Lock()
    s.put("lock", lock, nbytes=100)
    assert s["lock"] is lock
    assert s.memory_keys() == {"lock"}


def test_evict_spills_the_least_recently_used(tmp_path: Path) -> None:
    s = SpillStore(target=None, local_directory=str(tmp_path))
    s["a"] = blob(10)
    s["b"] = blob(20)
    assert s.evict() == 10
    assert s.evict() == 20
    assert s.evict() == 0
    assert s.spilled_keys() == {"a", "b"}
    # without a target, a value read back stays in memory
    assert s["a"] == blob(10)
    assert s.memory_keys() == {"a"}


def test_a_disk_error_keeps_the_value_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = SpillStore(target=50, local_directory=str(tmp_path))

    def full(path: str, frames: object) -> int:
        with open(path, "xb"):
            pass  # a partial file, left behind by a failed write
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "_write_frames", full)
    with caplog.at_level(logging.ERROR, logger="shoal.worker.store"):
        s["a"] = blob(40, 1)
        s["b"] = blob(40, 2)
        s["c"] = blob(40, 3)
    assert s.memory_keys() == {"a", "b", "c"}
    assert s.spilled_keys() == set()
    assert files(s) == []  # the partial file was removed
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "No space left" in errors[0].getMessage()
    assert s.evict() == 0
    # the disk works again (after a short pause): spilling resumes
    monkeypatch.undo()
    monkeypatch.setattr(store_module, "_DISK_RETRY", 0.0)
    s._disk_retry_at = 0.0
    assert s.evict() == 40
    s["d"] = blob(10)
    assert s.fast_nbytes <= 50
    assert [s[k] for k in "abcd"] == [blob(40, 1), blob(40, 2), blob(40, 3), blob(10)]


def test_an_unwritable_directory_keeps_values_in_memory(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    s = SpillStore(target=50, local_directory=str(not_a_dir))
    s["a"] = blob(40)
    s["b"] = blob(40)
    assert s.memory_keys() == {"a", "b"}
    assert s["a"] == blob(40)


def test_close_removes_the_directory(tmp_path: Path) -> None:
    s = SpillStore(target=10, local_directory=str(tmp_path))
    s["a"] = blob(40)
    directory = s.directory
    assert directory is not None
    assert Path(directory).parent == tmp_path
    assert os.listdir(directory)
    s.close()
    assert not os.path.exists(directory)
    assert len(s) == 0
    assert s.slow_nbytes == s.disk_nbytes == 0
    assert tmp_path.exists()  # only the store's own directory goes


def test_default_directory_is_a_fresh_temporary_one() -> None:
    s = SpillStore(target=10)
    s["a"] = blob(40)
    directory = s.directory
    assert directory is not None
    assert os.path.basename(directory).startswith("shoal-worker-")
    s.close()
    assert not os.path.exists(directory)


def test_clear_does_not_read_values_back(tmp_path: Path) -> None:
    s = SpillStore(target=50, local_directory=str(tmp_path))
    s["a"] = blob(40)
    s["b"] = blob(40)
    s.clear()
    assert s.stats()["unspill_count"] == 0
    assert files(s) == []
    assert len(s) == 0


def test_big_values_come_back_in_memory_maps(tmp_path: Path) -> None:
    s = SpillStore(target=None, local_directory=str(tmp_path))
    x = np.arange(2**18, dtype="f8")  # 2 MiB: read back into an anonymous memory map
    s["x"] = x
    assert s.evict() == x.nbytes
    y = s["x"]
    np.testing.assert_array_equal(x, y)
    assert y.flags.writeable
    y[0] = -1.0  # its own memory: nothing else changes
    assert x[0] == 0.0
    assert s.memory_keys() == {"x"}
    assert s.evict() == x.nbytes  # spilled again from the mapped buffer
    np.testing.assert_array_equal(s["x"], y)


@pytest.mark.skipif(not shared_memory.supported(), reason="no memory files on this system")
def test_memory_files_are_closed_when_their_keys_leave_memory(tmp_path: Path) -> None:
    def shared(n: int) -> tuple[object, shared_memory.SharedValue]:
        out = shared_memory.share(np.ones(n), 1)
        assert out is not None
        return out

    store = SpillStore(target=None, local_directory=str(tmp_path))
    files = {}
    for key in "abcd":
        value, files[key] = shared(1000)
        store.put(key, value, 8000, files[key])
    assert store.file("a") is files["a"] and store.file_nbytes == 4 * files["a"].size
    del store["a"]  # freed
    store.put("b", np.zeros(3))  # replaced by a value without a file
    assert store.evict() > 0  # "c", the least recently used, spilled
    assert [files[k].fd for k in "abc"] == [-1, -1, -1]
    assert store.file("d") is files["d"] and store.file_nbytes == files["d"].size
    np.testing.assert_array_equal(store["c"], np.ones(1000))  # read back from disk
    store.close()
    assert files["d"].fd == -1 and store.file_nbytes == 0

    # past the store's budget of open files, a file is closed at once (the value stays)
    store = SpillStore(target=None, local_directory=str(tmp_path))
    store.max_files = 0
    value, file = shared(1000)
    store.put("e", value, 8000, file)
    assert file.fd == -1 and store.file("e") is None
    np.testing.assert_array_equal(store["e"], np.ones(1000))
    store.close()
