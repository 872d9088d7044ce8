"""The dashboard reads the scheduler; nothing imports tornado until a dashboard starts."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import shoal.dashboard

PACKAGE = Path(shoal.dashboard.__file__).parent


def test_dashboard_imports_neither_client_nor_worker() -> None:
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("shoal.client", "shoal.worker", "shoal.deploy")), (
                    f"{path.name} imports {name}"
                )


def _run(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_scheduler_without_dashboard_never_imports_tornado() -> None:
    _run(
        "import asyncio, sys\n"
        "from shoal.scheduler.server import Scheduler\n"
        "async def main():\n"
        "    async with Scheduler(host='127.0.0.1', dashboard_address=None):\n"
        "        pass\n"
        "asyncio.run(main())\n"
        "assert 'tornado' not in sys.modules, 'tornado imported'\n"
        "assert 'plotly' not in sys.modules, 'plotly imported'\n"
    )


def test_a_dashboard_serves_plotly_without_importing_it() -> None:
    _run(
        "import asyncio, sys\n"
        "from shoal.scheduler.server import Scheduler\n"
        "async def main():\n"
        "    async with Scheduler(host='127.0.0.1', dashboard_address=':0') as s:\n"
        "        assert s.http_server is not None\n"
        "asyncio.run(main())\n"
        "assert 'tornado' in sys.modules\n"
        "assert 'plotly' not in sys.modules, 'plotly imported'\n"
    )
