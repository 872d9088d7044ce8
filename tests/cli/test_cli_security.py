"""``shoal scheduler --auth-token-file`` as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import Proc

from shoal import Client, Security
from shoal.errors import AuthenticationFailed


def test_a_world_readable_token_file_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret")
    os.chmod(token, 0o644)
    out = subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", "scheduler", "--auth-token-file", str(token)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "chmod 600" in out.stderr


def test_a_scheduler_with_a_token_file_admits_only_clients_with_the_secret(
    tmp_path: Path,
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    os.chmod(token, 0o600)
    proc = Proc("scheduler", "--port", "0", "--host", "127.0.0.1", "--auth-token-file", str(token))
    try:
        address = proc.wait_for(r"Scheduler at: (\S+)")
        with pytest.raises(AuthenticationFailed, match="requires an authentication token"):
            Client(address, timeout=10, set_as_default=False)
        with Client(address, security=Security(token="s3cret"), set_as_default=False) as c:
            assert c.scheduler_info()["address"] == address
    finally:
        proc.popen.send_signal(signal.SIGTERM)
        proc.popen.wait(timeout=15)
