"""Run the real command line in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        lines = [ln for ln in self.stdout.splitlines() if ln.startswith("{")]
        assert lines, f"no JSON on stdout; stderr:\n{self.stderr}"
        out: dict[str, Any] = json.loads(lines[-1])
        return out


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Run:
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PARALLELSYNC_", "SLOTNAME"))
    }
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "parallelsync", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def copy_args(pg_dsn: str, table: str, mongo_uri: str, db: str, *extra: str) -> list[str]:
    return ["copy", "--source", pg_dsn, "--table", table, "--target", mongo_uri, "--db", db, *extra]
