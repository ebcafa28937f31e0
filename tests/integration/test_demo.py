"""`parallelsync demo`: the README's third command, end to end on its own throwaway servers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
from pymongo import MongoClient


def demo(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")}
    env["PARALLELSYNC_DEMO_STATE"] = str(state)
    return subprocess.run(
        [sys.executable, "-m", "parallelsync", "demo", *args],
        capture_output=True, text=True, timeout=900, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def data_dirs(output: str) -> list[Path]:
    return [Path(p) for p in re.findall(r"data in (/\S+?)\)", output)]


def test_demo_runs_the_main_job_and_cleans_up(tmp_path: Path) -> None:
    run = demo("--rows", "3000", "--workers", "2", state=tmp_path / "state.json")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    # The real commands ran, in order, with the outcomes a user should see.
    for expected in (
        "$ parallelsync plan --source postgresql://",
        "$ parallelsync copy --source postgresql://",
        "status            FINISHED",
        "rows              3,000",
        "consistent LSN    ",
        "$ parallelsync status --target mongodb://",
        "EQUAL: public.esim_profiles -> shop.esim_profiles",
        "DIFFERENT: public.esim_profiles -> shop.esim_profiles",
        "different [5]",
        "missing [99]",
        "extra [12]",
        "$ parallelsync follow --source postgresql://",
        "FINISHED: 3 transactions, 3 changes applied",
        "3,000 rows copied into shop.esim_profiles",
    ):
        assert expected in out, f"{expected!r} missing from the demo's output:\n{out}"
    assert out.count("EQUAL: public.esim_profiles") == 2  # before the changes and after follow
    dirs = data_dirs(out)
    assert len(dirs) == 2 and not any(d.exists() for d in dirs)  # both servers cleaned up


def test_demo_keep_leaves_the_servers_up_until_stop(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    run = demo("--rows", "500", "--keep", state=state)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    pg_uri = re.search(r"export PG='([^']+)'", out)
    mongo_uri = re.search(r"export MONGO='([^']+)'", out)
    assert pg_uri and mongo_uri, out
    try:
        with psycopg.connect(pg_uri.group(1), connect_timeout=10) as conn:
            row = conn.execute("SELECT count(*) FROM esim_profiles").fetchone()
        assert row == (500,)
        client: MongoClient[dict[str, object]] = MongoClient(
            mongo_uri.group(1), serverSelectionTimeoutMS=10_000
        )
        with client:
            assert client["shop"]["esim_profiles"].count_documents({}) == 500
    finally:
        stopped = demo("--stop", state=state)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped the demo's servers" in stopped.stdout
    assert not state.exists()
    assert not any(d.exists() for d in data_dirs(out))
    again = demo("--stop", state=state)
    assert again.returncode == 2 and "no demo servers to stop" in again.stderr
