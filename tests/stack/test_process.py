from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil
import pytest

from bookgen.stack.ports import free_port
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
