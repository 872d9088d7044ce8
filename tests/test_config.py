"""Configuration: defaults < YAML file < SHOAL_* environment < keywords."""

from __future__ import annotations

import gc

from shoal import config


def test_precedence(tmp_path) -> None:
    path = tmp_path / "shoal.yaml"
    path.write_text("comm:\n  batch-interval: 0.5\nscheduler:\n  allowed-failures: 7\n")
    env = {"SHOAL_SCHEDULER__ALLOWED_FAILURES": "9", "SHOAL_COMM__MAX_FRAMES": "12"}
    settings = config.load(path, env=env, **{"comm.max-frames": 99})
    assert settings["comm.batch-interval"] == 0.5  # file over default
    assert settings["scheduler.allowed-failures"] == 9  # environment over file
    assert settings["comm.max-frames"] == 99  # keyword over environment
    assert settings["worker.heartbeat-interval"] == config.DEFAULTS["worker.heartbeat-interval"]


def test_tune_gc_only_raises(monkeypatch) -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        monkeypatch.setattr(config, "_cached", {"gc.threshold0": 5_000})
        config.tune_gc()
        assert gc.get_threshold() == (5_000, 20, 20)
        monkeypatch.setattr(config, "_cached", {"gc.threshold0": 100})
        config.tune_gc()
        assert gc.get_threshold() == (5_000, 20, 20)
    finally:
        gc.set_threshold(*before)
