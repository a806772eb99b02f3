from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from bookgen.stack.ports import HOST, free_port
from bookgen.stack.process import Component, ComponentError

# A parent that starts a child ignoring SIGTERM and then serves HTTP itself.
STUBBORN_TREE = (
    "import signal, subprocess, sys\n"
    "subprocess.Popen([sys.executable, '-c', "
    "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
    "import http.server as h\n"
    "h.HTTPServer(('127.0.0.1', {port}), h.SimpleHTTPRequestHandler).serve_forever()\n"
)


def test_stop_ends_the_whole_tree_even_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    port = free_port()
    component = Component(
        "tree",
        [sys.executable, "-c", STUBBORN_TREE.format(port=port)],
        tmp_path / "tree.log",
        f"http://127.0.0.1:{port}/",
    )
    component.start()
    try:
        component.wait_ready(20)
        deadline = time.monotonic() + 10
        while len(component.tree()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        processes = component.tree()
        assert len(processes) == 2
    finally:
        started = time.monotonic()
        component.stop(grace_s=1.0)
    assert time.monotonic() - started < 10
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    assert component.tree() == []


def test_a_component_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    component = Component(
        "broken",
        [sys.executable, "-c", "import sys; print('bad flag --x'); sys.exit(3)"],
        tmp_path / "broken.log",
        f"http://127.0.0.1:{free_port()}/",
    )
    component.start()
    with pytest.raises(ComponentError, match=r"broken exited with code 3(.|\n)*bad flag --x"):
        component.wait_ready(10)
    component.stop()


def test_a_component_that_never_answers_times_out(tmp_path: Path) -> None:
    component = Component(
        "silent",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        tmp_path / "silent.log",
        f"http://127.0.0.1:{free_port()}/",
    )
    component.start()
    try:
        with pytest.raises(ComponentError, match=r"silent not ready at .* after 1 s"):
            component.wait_ready(1.0)
    finally:
        component.stop(grace_s=1.0)
    assert not component.alive()


def tcp_server(port: int) -> list[str]:
    code = f"import socket, time\ns = socket.create_server(('127.0.0.1', {port}))\ntime.sleep(60)\n"
    return [sys.executable, "-c", code]


def test_ready_by_tcp_port_then_killed_and_restarted_on_the_same_port(tmp_path: Path) -> None:
    port = free_port()
    component = Component("tcp", tcp_server(port), tmp_path / "tcp.log", ready_tcp=(HOST, port))
    assert component.address == f"{HOST}:{port}"
    component.run(timeout_s=20)
    try:
        first = component.pid
        component.kill()
        assert not component.alive()
        assert component.process is not None and component.process.returncode == -signal.SIGKILL
        component.restart(timeout_s=20)
        assert component.alive() and component.pid != first
    finally:
        component.stop(grace_s=2)
    assert component.tree() == []


def test_send_pauses_and_resumes_and_stop_ends_a_paused_process(tmp_path: Path) -> None:
    component = Component(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "s.log"
    )
    component.run(timeout_s=5)
    assert component.pid is not None
    process = psutil.Process(component.pid)
    component.send(signal.SIGSTOP, group=True)
    deadline = time.monotonic() + 5
    while process.status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.status() == psutil.STATUS_STOPPED
    started = time.monotonic()
    assert component.stop(grace_s=5) == -signal.SIGTERM
    assert time.monotonic() - started < 5
    with pytest.raises(ComponentError, match="sleeper is not running"):
        component.send(signal.SIGCONT)


def test_without_inherit_env_the_child_sees_only_the_given_environment(tmp_path: Path) -> None:
    code = "import os; print(sorted(k for k in os.environ if k.startswith('BOOKGEN_')))"
    component = Component(
        "env",
        [sys.executable, "-c", code],
        tmp_path / "env.log",
        env={"PATH": os.environ["PATH"], "BOOKGEN_ONLY": "1"},
        inherit_env=False,
    )
    os.environ["BOOKGEN_LEAK"] = "1"
    try:
        component.start()
        assert component.process is not None
        assert component.process.wait(timeout=10) == 0
    finally:
        del os.environ["BOOKGEN_LEAK"]
    assert (tmp_path / "env.log").read_text().strip() == "['BOOKGEN_ONLY']"


def test_the_stop_signal_is_what_the_leader_gets_first(tmp_path: Path) -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *a: sys.exit(7))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    component = Component(
        "int", [sys.executable, "-c", code], tmp_path / "int.log", stop_signal=signal.SIGINT
    )
    component.start()
    deadline = time.monotonic() + 10
    while "ready" not in (tmp_path / "int.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert component.stop(grace_s=5) == 7


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can run a child as another user")
def test_a_component_run_as_another_user_still_dies_with_its_parent(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    folder.mkdir()
    # The supervisor is a child Python that starts `sleep` as `nobody`, then is SIGKILLed.
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from bookgen.stack.process import Component\n"
        "c = Component('s', ['sleep', '60'], Path(sys.argv[1]), user='nobody')\n"
        "c.start(); print(c.pid, flush=True); time.sleep(60)\n"
    )
    parent = Component(
        "parent", [sys.executable, "-c", code, str(folder / "sleep.log")], folder / "parent.log"
    )
    parent.start()
    try:
        deadline = time.monotonic() + 20
        while not (folder / "parent.log").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = psutil.Process(int((folder / "parent.log").read_text().split()[0]))
        assert child.username() == "nobody"
        assert parent.process is not None
        parent.process.send_signal(signal.SIGKILL)
        gone, _ = psutil.wait_procs([child], timeout=5)
        assert gone == [child] or child.status() == psutil.STATUS_ZOMBIE
    finally:
        parent.kill()
