"""No result is lost after a fork: a forked child's results survive its parent closing the
store, exiting or being killed, and the database stays sound. Real processes throughout."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import run_python

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

# The work every scenario runs: a module, so that the scenario and the checking process name
# the function alike. Each call is logged with its process id.
WORK = """
import os, sys, time
from persistmemo import Store, memo

store = Store(os.environ["STORE"])

@memo(store=store, lock=False)
def double(x):
    with open(os.environ["CALL_LOG"], "a") as log:
        log.write(f"{x} {os.getpid()}\\n")
    return 2 * x

@memo(store=store)
def slow_or_failing(x):
    if x == 0:
        time.sleep(0.3)  # the others are handed to the workers before it fails
        raise ValueError("item 0 fails")
    time.sleep(1.0)
    return 10 * x
"""


def start(tmp_path: Path, code: str) -> subprocess.Popen[str]:
    """Start ``code`` in a fresh interpreter that can import the work module."""
    env = {
        **os.environ,
        "STORE": str(tmp_path / "store"),
        "CALL_LOG": str(tmp_path / "calls.log"),
        "PYTHONPATH": str(tmp_path),
    }
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(tmp_path: Path, code: str) -> str:
    """Run ``code`` as ``start`` does, to its end; its output."""
    process = start(tmp_path, code)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    return stdout


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "work.py").write_text(WORK)
    return tmp_path


def wait_for_child(pid_file: Path, timeout: float = 30) -> None:
    """Wait until the process whose id the scenario wrote to ``pid_file`` has ended."""
    deadline = time.monotonic() + timeout
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.02)
    pid = int(pid_file.read_text())
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{pid}/stat").exists():
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                return  # ended, not reaped yet (its parent was killed: init reaps it)
        assert time.monotonic() < deadline, "the child did not finish"
        time.sleep(0.02)


def stored_in_a_fresh_process(work: Path, xs: list[int], function: str = "double") -> int:
    """How many of ``function(x)`` a fresh process finds stored (hits)."""
    done = run(
        work,
        f"""
        import work
        from persistmemo.stores.base import MISSING
        print(sum(work.store.read(work.{function}.key(x)) is not MISSING for x in {xs!r}))
        """,
    )
    return int(done.strip())


def assert_sound(store: Path) -> None:
    """The database passes SQLite's own integrity check (a fresh connection, after all
    processes that used it have ended)."""
    connection = sqlite3.connect(store / "cache.db")
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        connection.close()


# The child works in steps while its parent closes, exits or is killed between them, and
# writes its id first, so that the test can wait for it.
CHILD_STORES_NINE = """
        import os, time, work
        work.double(0)                      # the parent has used the store: connections open
        pid = os.fork()
        if pid == 0:
            quiet = os.open(os.devnull, os.O_WRONLY)  # the test waits for the parent's
            os.dup2(quiet, 1)                          # output, not the child's
            os.dup2(quiet, 2)
            with open("child.pid", "w") as f:
                f.write(str(os.getpid()))
            for x in range(1, 10):
                work.double(x)
                time.sleep(0.15)
            os._exit(0)
"""


def test_a_childs_results_survive_its_parent_closing_the_store(work: Path) -> None:
    run(
        work,
        CHILD_STORES_NINE
        + """
        time.sleep(0.2)
        work.store.close()                  # the parent's last connections close
        os.waitpid(pid, 0)
        """,
    )
    assert stored_in_a_fresh_process(work, list(range(1, 10))) == 9
    assert_sound(work / "store")


def test_a_childs_results_survive_its_parent_being_killed(work: Path) -> None:
    parent = start(
        work,
        CHILD_STORES_NINE
        + """
        time.sleep(60)                      # killed here
        """,
    )
    wait_for_child_start(work / "child.pid")
    time.sleep(0.2)
    parent.send_signal(signal.SIGKILL)
    parent.communicate(timeout=30)
    # Another process opens and closes the store while the orphan goes on.
    run(work, "import work; work.double(100); work.store.close()")
    wait_for_child(work / "child.pid")
    assert stored_in_a_fresh_process(work, list(range(1, 10))) == 9
    assert_sound(work / "store")


def test_a_childs_results_survive_its_parent_exiting_while_others_write(work: Path) -> None:
    run(
        work,
        """
        import os, time, work
        work.double(0)
        pid = os.fork()
        if pid == 0:
            quiet = os.open(os.devnull, os.O_WRONLY)  # the test waits for the parent's
            os.dup2(quiet, 1)                          # output, not the child's
            os.dup2(quiet, 2)
            with open("child.pid", "w") as f:
                f.write(str(os.getpid()))
            time.sleep(0.3)                 # the parent has exited by now
            deadline = time.monotonic() + 30  # never outlive a failed test for long
            for x in range(1, 7):
                work.double(x)
                open(f"child-{x}", "w").close()
                while not os.path.exists(f"other-{x}"):  # writers take turns
                    if time.monotonic() > deadline:
                        os._exit(1)
                    time.sleep(0.01)
            os._exit(0)
        """,
    )
    other = start(
        work,
        """
        import os, time, work
        deadline = time.monotonic() + 30
        for x in range(1, 7):
            while not os.path.exists(f"child-{x}"):
                assert time.monotonic() < deadline, f"the child did not store {x}"
                time.sleep(0.01)
            work.double(100 + x)
            open(f"other-{x}", "w").close()
        """,
    )
    _, stderr = other.communicate(timeout=60)
    assert other.returncode == 0, stderr
    wait_for_child(work / "child.pid")
    assert stored_in_a_fresh_process(work, list(range(1, 7))) == 6
    assert stored_in_a_fresh_process(work, list(range(101, 107))) == 6
    assert_sound(work / "store")


def test_results_finished_in_map_workers_after_a_failure_are_kept(work: Path) -> None:
    run(
        work,
        """
        import work
        from persistmemo import Store
        with work.store:
            try:
                work.slow_or_failing.map([0, 1, 2, 3], workers=4)
            except ValueError:
                pass
        """,
    )
    # The three other items were running when item 0 failed: they finish and are stored
    # after the mapping process has closed its store.
    deadline = time.monotonic() + 30
    while stored_in_a_fresh_process(work, [1, 2, 3], "slow_or_failing") < 3:
        assert time.monotonic() < deadline, "the workers' results were lost"
        time.sleep(0.3)
    assert_sound(work / "store")


def test_a_child_forked_while_threads_hold_connections_keeps_its_results(work: Path) -> None:
    run(
        work,
        """
        import os, threading, time, work
        ready = threading.Barrier(4)
        release = threading.Event()

        def hold(x):
            work.double(x)                  # this thread's own connections
            ready.wait()
            release.wait()

        threads = [threading.Thread(target=hold, args=(x,)) for x in (-1, -2, -3)]
        for thread in threads:
            thread.start()
        ready.wait()
        pid = os.fork()
        if pid == 0:
            for x in range(1, 10):
                work.double(x)
                time.sleep(0.03)
            os._exit(0)
        time.sleep(0.1)
        release.set()
        for thread in threads:
            thread.join()                   # their connections close as the threads end
        work.store.close()
        os.waitpid(pid, 0)
        """,
    )
    assert stored_in_a_fresh_process(work, list(range(1, 10))) == 9
    assert_sound(work / "store")


def test_a_forked_child_holds_real_locks_on_the_database(work: Path) -> None:
    done = run(
        work,
        """
        import os, work
        work.double(0)
        pid = os.fork()
        if pid == 0:
            work.double(1)                  # opens the child's own connections
            me = os.getpid()
            database = os.stat(os.path.join(os.environ["STORE"], "cache.db"))
            device = f"{os.major(database.st_dev):02x}:{os.minor(database.st_dev):02x}"
            inode = f"{device}:{database.st_ino}"
            with open("/proc/locks") as locks:
                mine = [line for line in locks if f" {me} " in line and inode in line]
            print(len(mine), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        """,
    )
    assert int(done.strip()) >= 1  # SQLite's read lock in WAL mode, the child's own


def wait_for_child_start(pid_file: Path) -> None:
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.02)


def test_map_workers_started_by_a_forkserver_keep_working(tmp_path: Path) -> None:
    # A forkserver's workers are the server's children: a watch on getppid() took that for
    # the mapping process's death and ended every worker at once.
    done = run(
        tmp_path,
        """
        import multiprocessing, os
        from concurrent.futures import ProcessPoolExecutor
        from persistmemo._memo.mapping import _exit_with_parent

        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(
            1, mp_context=context, initializer=_exit_with_parent, initargs=(os.getpid(),)
        ) as pool:
            total = pool.submit(sum, [1, 2]).result()
            print(total, pool.submit(os.getppid).result() != os.getpid())
        """,
    )
    assert done.split() == ["3", "True"]


def test_a_child_that_never_uses_a_store_never_waits_on_sqlite(work: Path) -> None:
    # Threads read hits while the main thread forks children that exit at once (what a
    # subprocess's preexec_fn or another library's worker does): closing the inherited
    # connections in the fork hook called into SQLite, whose mutexes a reading thread of
    # the parent could hold, and some children hung for good.
    done = run(
        work,
        """
        import os, threading, time, work
        for x in range(4):
            work.double(x)
        stop = False

        def hits(x):
            while not stop:
                work.double(x)

        readers = [threading.Thread(target=hits, args=(x,)) for x in range(4)]
        for reader in readers:
            reader.start()
        hung = 0
        for _ in range(60):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    break
                time.sleep(0.002)
            else:
                hung += 1
                os.kill(pid, 9)
                os.waitpid(pid, 0)
        stop = True
        for reader in readers:
            reader.join()
        print(hung)
        """,
    )
    assert done.strip() == "0"


def test_map_workers_start_the_way_the_program_chose(work: Path) -> None:
    (work / "where.py").write_text(
        "import sys\nfrom persistmemo import Store, memo\n\n"
        "@memo(store=Store(__import__('os').environ['STORE']))\n"
        "def main_module(x):\n    return sys.modules['__main__'].__name__\n"
    )
    (work / "chooser.py").write_text(
        "import multiprocessing, where\n\n"
        "if __name__ == '__main__':\n"
        "    multiprocessing.set_start_method('spawn')\n"
        "    print(*set(where.main_module.map(range(4), workers=2)))\n"
    )
    process = subprocess.run(
        [sys.executable, str(work / "chooser.py")],
        cwd=work,
        env={**os.environ, "STORE": str(work / "store"), "PYTHONPATH": str(work)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    assert process.stdout.split() == ["__mp_main__"]  # spawned, as chosen: not forked


def test_a_fork_during_another_threads_version_derivation_leaves_the_child_deriving(
    tmp_path: Path,
) -> None:
    # The thread holds the derivation lock as a long derivation would; the child, forked
    # meanwhile, derives a version of its own at its first call.
    code = f"""
        import os, threading, time
        from persistmemo import Store, memo
        from persistmemo._versioning import basis

        @memo(store=Store({str(tmp_path / "store")!r}))
        def triple(x):
            return 3 * x

        held = threading.Event()

        def derive_slowly():
            with basis._lock:
                held.set()
                time.sleep(0.5)

        thread = threading.Thread(target=derive_slowly)
        thread.start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            import signal
            signal.alarm(20)  # a deadlocked child dies rather than hang the test
            os._exit(0 if triple(2) == 6 else 1)
        _, status = os.waitpid(pid, 0)
        thread.join()
        print(os.waitstatus_to_exitcode(status))
    """
    assert run_python(code).stdout.strip() == "0"


FORK_DURING_A_FIRST_MISS = """
import importlib.abc, os, sys, threading, time
from persistmemo import Store, memo

store = Store(sys.argv[1])
f = memo(store=store, name="fork.f", version="1")(lambda x: [x])
assert f(0) == [0]  # this process has only hit since it started (a miss in a child, below)


class SlowDisk(importlib.abc.MetaPathFinder):
    # The miss's machinery, loaded at the first miss, found slowly: a cold disk.
    def find_spec(self, name, path, target=None):
        if name == "persistmemo._codec.encoding" and threading.current_thread().name == "miss":
            time.sleep(0.5)
        return None


sys.meta_path.insert(0, SlowDisk())
thread = threading.Thread(target=f, args=(7,), name="miss")
thread.start()
time.sleep(0.2)  # the thread is importing now
child = os.fork()
if child == 0:
    os.write(1, repr(f(1)).encode())
    os._exit(0)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    done, status = os.waitpid(child, os.WNOHANG)
    if done:
        break
    time.sleep(0.05)
else:
    os.kill(child, 9)
    print(" hung")
thread.join()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_fork_while_another_thread_loads_the_miss_machinery_leaves_the_child_working(
    tmp_path: Path,
) -> None:
    """Modules loaded at a first miss are loaded before a fork too: one that another thread
    was importing when the process forked would stay locked in the child forever."""
    store = str(tmp_path / "store")
    first_run = "from persistmemo import Store, memo\n" + (
        f"memo(store=Store({store!r}), name='fork.f', version='1')(lambda x: [x])(0)"
    )
    run_python(first_run)
    done = run_python(FORK_DURING_A_FIRST_MISS, args=(store,), timeout=60)
    assert done.stdout.strip() == "[1]"
