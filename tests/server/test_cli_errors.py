"""Every way a user's `steplog trigger` / `tail` / `runs` can go wrong: one line, its exit code.

The exit codes are the ones `stream/cli/errors.py` documents: 1 refused, 2 cancelled
(or usage), 3 unreachable, 4 no such run or function, 5 no key or a refused one.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from stream.cli import errors
from tests.server.cli import STEPLOG, error_lines, steplog, user_env
from tests.support.api import start_run
from tests.support.launcher import ServerProcess, free_port
from tests.support.wait import wait_until


def test_an_unreachable_server_is_one_line_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens here
    env = user_env(tmp_path / "config", STEPLOG_API_KEY="slk_anything", STEPLOG_URL=url)
    for args in (("trigger", "ticker"), ("runs",), ("trigger", "ticker", "--follow")):
        done = steplog(*args, env=env)
        assert done.returncode == errors.UNREACHABLE, (args, done.stderr)
        [line] = error_lines(done)
        assert f"cannot reach steplog at {url}" in line
        assert "`steplog serve` running?" in line and "STEPLOG_URL" in line


def test_tail_shows_its_attempts_and_gives_up_when_told(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = user_env(tmp_path / "config", STEPLOG_API_KEY="slk_anything")
    started = time.monotonic()
    done = steplog("tail", "0" * 28, "--url", url, "--give-up", "1.5", env=env, timeout=30)
    assert time.monotonic() - started < 20  # it gave up; it did not hang
    assert done.returncode == errors.UNREACHABLE
    lines = error_lines(done)
    assert lines[0].startswith("reconnecting (attempt 2, last event id 0): ")
    assert lines[-1].startswith(f"error: cannot reach steplog at {url} for 1.5 s")
    assert f"steplog tail {'0' * 28} --from 0" in lines[-1]


def test_tail_follows_a_run_across_a_server_restart(server: ServerProcess, tmp_path: Path) -> None:
    run = start_run(server, count=40, interval_ms=100)
    env = user_env(tmp_path / "config", STEPLOG_API_KEY=server.api_key)
    follower = subprocess.Popen(
        [str(STEPLOG), "tail", run["run_id"], "--url", server.url, "--json", "--give-up", "30"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # unbuffered: communicate() below reads the fd, so nothing may sit in a
        # buffer readline() filled (the replayed lines after the first arrive in one chunk)
    )
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        assert first["seq"] == 1
        server.stop()  # graceful: the run is handed back and resumes after the restart
        server.start()
        out_bytes, err_bytes = follower.communicate(timeout=60)
        out, err = out_bytes.decode(), err_bytes.decode()
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert "Traceback" not in err
    assert "reconnecting (attempt" in err  # the outage was shown, not hidden
    seqs = [first["seq"]] + [json.loads(line)["seq"] for line in out.splitlines()]
    assert seqs == list(range(1, len(seqs) + 1))  # nothing lost, nothing twice


def test_an_unknown_run_or_function_is_not_found(server: ServerProcess, tmp_path: Path) -> None:
    env = user_env(tmp_path / "config", STEPLOG_API_KEY=server.api_key, STEPLOG_URL=server.url)
    missing = "0" * 28
    for args in (("tail", missing), ("tail", missing, "--json")):
        done = steplog(*args, env=env)
        assert done.returncode == errors.NOT_FOUND
        assert error_lines(done) == [f"error: run {missing} not found at {server.url}"]
    done = steplog("trigger", "no-such-function", env=env)
    assert done.returncode == errors.NOT_FOUND
    assert "no-such-function" in done.stderr and "ticker" in done.stderr


def test_invalid_params_name_each_field_and_reason(server: ServerProcess, tmp_path: Path) -> None:
    env = user_env(tmp_path / "config", STEPLOG_API_KEY=server.api_key, STEPLOG_URL=server.url)
    done = steplog("trigger", "ticker", "-p", "count=-1", "-p", "interval_ms=soon", env=env)
    assert done.returncode == errors.FAILED
    lines = error_lines(done)
    assert lines[0].startswith("error: Invalid params: ")
    assert any(line.strip().startswith("count: ") and "greater than" in line for line in lines)
    assert any(line.strip().startswith("interval_ms: ") for line in lines)
    bad = steplog("trigger", "ticker", "-p", "count", env=env)
    assert bad.returncode == 2 and "expected key=value" in bad.stderr


def test_a_refused_key_says_where_it_came_from(server: ServerProcess, tmp_path: Path) -> None:
    env = user_env(tmp_path / "config", STEPLOG_API_KEY="slk_wrong", STEPLOG_URL=server.url)
    for args in (("runs",), ("trigger", "ticker"), ("tail", "0" * 28)):
        done = steplog(*args, env=env)
        assert done.returncode == errors.NO_KEY, (args, done.stderr)
        [line] = error_lines(done)
        assert f"the server at {server.url} refused the API key from STEPLOG_API_KEY" in line


def test_no_key_anywhere_lists_every_place_looked(tmp_path: Path) -> None:
    home = tmp_path / "somewhere"
    home.mkdir()
    env = user_env(tmp_path / "config")
    for args in (("runs",), ("trigger", "ticker"), ("tail", "x")):
        done = steplog(*args, env=env, cwd=home)
        assert done.returncode == errors.NO_KEY
        [line] = error_lines(done)
        assert "STEPLOG_API_KEY (unset)" in line
        assert str(home / "data" / "api-key") in line
        assert str(tmp_path / "config" / "steplog" / "config.json") in line
    assert not (home / "data").exists()  # looking created nothing


def test_a_bad_url_or_a_broken_config_file_is_one_line(tmp_path: Path) -> None:
    env = user_env(tmp_path / "config", STEPLOG_API_KEY="slk_anything")
    done = steplog("runs", "--url", "localhost:8000", env=env)
    assert done.returncode == 2 and "not an http(s) URL" in done.stderr
    config = tmp_path / "config" / "steplog" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text("{not json")
    broken = steplog("runs", env=user_env(tmp_path / "config"), cwd=tmp_path)
    assert broken.returncode == errors.NO_KEY
    assert error_lines(broken)[0].startswith(f"error: cannot read {config}: ")


def test_interrupting_tail_says_how_to_resume(server: ServerProcess, tmp_path: Path) -> None:
    run = start_run(server, count=200, interval_ms=100)
    env = user_env(tmp_path / "config", STEPLOG_API_KEY=server.api_key, STEPLOG_URL=server.url)
    follower = subprocess.Popen(
        [str(STEPLOG), "tail", run["run_id"]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    wait_until(lambda: "step.progress" in follower.stdout.readline(), 20, what="a progress line")
    follower.send_signal(2)  # Ctrl-C
    _, err = follower.communicate(timeout=20)
    assert follower.returncode == 130
    assert "Traceback" not in err
    assert f"resume with `steplog tail {run['run_id']} --from " in err
