import os
import signal
import subprocess
import sys
import time

import pytest

from integrationhub.processes import HubProcess, run_together

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_when_one_process_exits_the_others_are_stopped_and_its_code_returned():
    # given a long-running process and one that fails at once
    lines: list[str] = []
    processes = [HubProcess("web", SLEEPER), HubProcess("worker", [sys.executable, "-c", "raise SystemExit(3)"])]
    # when they run together
    started = time.monotonic()
    code = run_together(processes, write=lines.append, grace_seconds=5)
    # then the failure stops everything and its exit code is returned
    assert code == 3
    assert time.monotonic() - started < 15
    assert any("worker exited with code 3" in line for line in lines)
    assert lines[-1] == "all stopped"


@pytest.mark.slow
def test_ctrl_c_stops_all_children_cleanly(tmp_path):
    # given a supervisor running three long processes in its own process
    script = tmp_path / "supervise.py"
    script.write_text(
        "import sys\n"
        "from integrationhub.processes import HubProcess, run_together\n"
        f"argv = {SLEEPER!r}\n"
        "def write(line):\n    print(line, flush=True)\n"
        "sys.exit(run_together([HubProcess(n, argv) for n in ('web', 'worker', 'beat')], write=write))\n"
    )
    supervisor = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    pids = []
    while len(pids) < 3:
        line = supervisor.stdout.readline()
        assert line, "supervisor ended before starting its children"
        if line.startswith("started"):
            pids.append(int(line.rsplit("pid ", 1)[1].rstrip(")\n")))
    # when Ctrl-C arrives
    supervisor.send_signal(signal.SIGINT)
    out, _ = supervisor.communicate(timeout=30)
    # then every child is gone and the supervisor says so
    assert supervisor.returncode == 0
    assert "all stopped" in out
    assert not any(_alive(pid) for pid in pids)
