"""An edit of what a memoized function runs is never served an old result; a no-op edit hits.

An edit fuzz: every case of ``version_edit_cases`` (a small program around ``@memo def f(x)``
and one edit of it) runs through each workflow in fresh interpreters:

- restart: compute, edit, compute in a new process, with the files settled (older than the
  2 s a stat needs to vouch for them) or hot (the edit just made);
- stale_pyc: a same-size edit with the mtime restored, so that Python runs the old bytecode;
  then ``__pycache__`` deleted, and the new code runs;
- reload: compute, edit, ``importlib.reload`` the edited modules, compute, in one process;
  then a new process on the edited files;
- exec: the main module's text run with ``exec(compile(text, 'fake.py', 'exec'))``.

At every step the memoized call must return what the unmemoized one (``f.__wrapped__``)
returns in the same process, and after a no-op edit a new process must hit. Cases share
interpreters in batches (their modules have unique names, each batch has its own store);
batches run in parallel.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import run_python
from version_edit_cases import CASES, MAIN, Case, module_name

BATCH = 60
# persistmemo trusts the stat of a file changed more than 2 s before the process started.
SETTLED = 2.1
WORKFLOWS = ("restart", "restart_hot", "stale_pyc", "reload", "exec")

RUNNER = """
import importlib, json, sys, traceback
from pathlib import Path

X = 7


def observe(f):
    memo = f(X)
    info = f.cache_info()
    plain = f.__wrapped__(X)
    return {"memo": repr(memo), "plain": repr(plain), "hits": info.hits,
            "misses": info.misses, "version": f.version()}


def call(case):
    sys.path.insert(0, case["directory"])
    return observe(importlib.import_module(case["main"]).f)


def exec_call(case):
    sys.path.insert(0, case["directory"])
    namespace = {"__name__": case["main"]}
    exec(compile(case["text"], "fake.py", "exec"), namespace)
    return observe(namespace["f"])


def reload_call(case):
    before = call(case)
    for path, text in case["edited"].items():
        Path(case["directory"], path).write_text(text)
    for name in case["reload"]:
        importlib.reload(sys.modules[name])
    return {"before": before, "after": observe(sys.modules[case["main"]].f)}


spec = json.loads(Path(sys.argv[1]).read_text())
outcomes = {}
for case in spec["cases"]:
    try:
        outcomes[case["id"]] = globals()[case["action"]](case)
    except BaseException:
        outcomes[case["id"]] = {"error": traceback.format_exc()}
Path(spec["out"]).write_text(json.dumps(outcomes))
"""


@dataclass(frozen=True)
class Run:
    """One case through one workflow, in its own directory with its own module names."""

    case: Case
    workflow: str
    number: int

    @property
    def id(self) -> str:
        return f"{self.case.name}-{self.workflow}"

    @property
    def prefix(self) -> str:
        return f"c{self.number:04d}_"

    @property
    def main(self) -> str:
        return module_name(MAIN.replace("pfx_", self.prefix))

    def edited(self) -> dict[str, str]:
        return self.case.edited(self.prefix)

    def touches_main(self) -> bool:
        return MAIN.replace("pfx_", self.prefix) in self.edited()


def _applies(case: Case, workflow: str) -> bool:
    edited = case.edited("p_")
    if workflow == "restart_hot":
        return case.edit.kind == "changes"
    if workflow == "stale_pyc":
        # Python takes a __pycache__ file as current by the source's mtime and size only.
        files = case.files("p_")
        return all(len(text) == len(files[path]) for path, text in edited.items())
    if workflow == "reload":
        return set(edited) != {MAIN.replace("pfx_", "p_")}  # a helper module is edited
    return True


RUNS = [
    Run(case, workflow, number)
    for number, (workflow, case) in enumerate(
        (workflow, case) for workflow in WORKFLOWS for case in CASES if _applies(case, workflow)
    )
]


def _runs_of(workflow: str) -> list[Any]:
    return [pytest.param(run, id=run.id) for run in RUNS if run.workflow == workflow]


# --- the harness ------------------------------------------------------------------------

# What each interpreter does with a run, per step of its workflow.
STEPS = {
    "restart": ("call", "call"),
    "restart_hot": ("call", "call"),
    "stale_pyc": ("call", "call", "call"),
    "reload": ("reload_call", "call"),
    "exec": ("exec_call", "exec_call"),
}


class Harness:
    """Writes every selected run's files and drives its steps in batched interpreters."""

    def __init__(self, root: Path, runs: list[Run]) -> None:
        self.root = root
        self.outcomes: dict[str, list[dict[str, Any]]] = {run.id: [] for run in runs}
        self.batches: list[tuple[str, list[Run]]] = []
        for workflow in WORKFLOWS:
            group = [run for run in runs if run.workflow == workflow]
            self.batches += [
                (f"{workflow}-{start}", group[start : start + BATCH])
                for start in range(0, len(group), BATCH)
            ]

    def run_all(self) -> dict[str, list[dict[str, Any]]]:
        runs = [run for _, batch in self.batches for run in batch]
        for run in runs:
            self._write(run, run.case.files(run.prefix))
        time.sleep(SETTLED)
        self._step(0)
        for run in runs:
            if run.workflow in ("restart", "exec"):
                self._write(run, run.edited())
            elif run.workflow == "stale_pyc":
                self._write_keeping_times(run)
        time.sleep(SETTLED)
        self._step(1)
        for run in runs:
            if run.workflow == "stale_pyc":
                for cache in list(self.directory(run).rglob("__pycache__")):
                    shutil.rmtree(cache)
        self._step(2)
        return self.outcomes

    def directory(self, run: Run) -> Path:
        return self.root / "cases" / run.id

    def _write(self, run: Run, files: dict[str, str]) -> None:
        for path, text in files.items():
            if run.workflow == "exec" and module_name(path) == run.main:
                continue  # exec'd from its text, never imported
            target = self.directory(run) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)

    def _write_keeping_times(self, run: Run) -> None:
        for path, text in run.edited().items():
            target = self.directory(run) / path
            before = target.stat()
            target.write_text(text)
            os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))

    def _step(self, step: int) -> None:
        jobs = [
            (name, batch) for name, batch in self.batches if len(STEPS[batch[0].workflow]) > step
        ]
        # The hot restarts edit right before they run: first in line, on a fresh mtime.
        jobs.sort(key=lambda job: not (step == 1 and job[1][0].workflow == "restart_hot"))
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            for future in [pool.submit(self._batch, name, batch, step) for name, batch in jobs]:
                future.result()

    def _batch(self, name: str, batch: list[Run], step: int) -> None:
        work = self.root / "batches" / f"{name}-{step}"
        work.mkdir(parents=True)
        specs = []
        for run in batch:
            if run.workflow == "restart_hot" and step == 1:
                self._write(run, run.edited())
            action = STEPS[run.workflow][step]
            spec = {
                "id": run.id,
                "action": action,
                "directory": str(self.directory(run)),
                "main": run.main,
            }
            if action == "exec_call":
                main = MAIN.replace("pfx_", run.prefix)
                source = run.case.files(run.prefix)[main]
                spec["text"] = run.edited().get(main, source) if step else source
            elif action == "reload_call":
                spec["edited"] = run.edited()
                spec["reload"] = [module_name(path) for path in run.edited()]
            specs.append(spec)
        (work / "spec.json").write_text(json.dumps({"cases": specs, "out": str(work / "out.json")}))
        # Python writes __pycache__ only for stale_pyc: elsewhere a same-size edit within the
        # second of the first run's .pyc would run stale too. An empty value is unset.
        writes = batch[0].workflow == "stale_pyc"
        env = {
            "PERSISTMEMO_DIR": str(self.root / "stores" / name),
            "PYTHONDONTWRITEBYTECODE": "" if writes else "1",
            "PYTHONPYCACHEPREFIX": "",
        }
        run_python(RUNNER, cwd=work, env=env, args=(str(work / "spec.json"),))
        for run_id, outcome in json.loads((work / "out.json").read_text()).items():
            self.outcomes[run_id].append(outcome)


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[dict[str, Any]]]:
    """Every run selected in this session, driven at once: run id -> outcome of each step."""
    selected = {
        item.callspec.params["run"].id
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    }
    root = tmp_path_factory.mktemp("edit-fuzz")
    with pytest.MonkeyPatch.context() as patch:
        for name in (
            "PERSISTMEMO_DISABLE",
            "PERSISTMEMO_SECRET",
            "PYTHONDONTWRITEBYTECODE",
            "PYTHONPYCACHEPREFIX",
        ):
            patch.delenv(name, raising=False)
        patch.setenv("XDG_CONFIG_HOME", str(root / "config"))
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        return Harness(root, [run for run in RUNS if run.id in selected]).run_all()


# --- the promises -----------------------------------------------------------------------


def _steps(run: Run, outcomes: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    steps = outcomes[run.id]
    assert len(steps) == len(STEPS[run.workflow]), f"{run.id}: steps missing: {steps}"
    for number, step in enumerate(steps, 1):
        assert "error" not in step, f"{_about(run)} step {number} raised:\n{step['error']}"
    return steps


def _about(run: Run, *steps: dict[str, Any]) -> str:
    lines = [
        f"case {run.case.name}: edit {run.case.edit.name} ({run.case.edit.kind}), "
        f"workflow {run.workflow}"
    ]
    lines += [f"  step {number}: {step}" for number, step in enumerate(steps, 1)]
    return "\n".join(lines)


def _not_stale(run: Run, step: dict[str, Any], *steps: dict[str, Any]) -> None:
    assert step["memo"] == step["plain"], (
        f"served {step['memo']} where the code that runs computes {step['plain']}\n"
        + _about(run, *steps)
    )


def _edit_shows(run: Run, old: dict[str, Any], new: dict[str, Any], *steps: dict[str, Any]) -> None:
    """The harness's own check: a changing edit changes f(7), a no-op one does not."""
    changed = old["plain"] != new["plain"]
    assert changed == (run.case.edit.kind == "changes"), (
        "harness: the edit does not do what its kind says\n" + _about(run, *steps)
    )


def _hit(run: Run, step: dict[str, Any], *steps: dict[str, Any]) -> None:
    assert (step["hits"], step["misses"]) == (1, 0), (
        "a no-op edit missed the stored result\n" + _about(run, *steps)
    )


@pytest.mark.parametrize("run", _runs_of("restart") + _runs_of("restart_hot"))
def test_a_new_process_after_an_edit_is_never_served_stale_and_hits_after_a_noop(
    run: Run, outcomes: dict[str, list[dict[str, Any]]]
) -> None:
    first, second = steps = _steps(run, outcomes)
    _not_stale(run, first, *steps)
    _edit_shows(run, first, second, *steps)
    _not_stale(run, second, *steps)
    if run.case.edit.kind == "noop":
        _hit(run, second, *steps)


@pytest.mark.parametrize("run", _runs_of("stale_pyc"))
def test_a_process_running_stale_bytecode_is_served_what_that_bytecode_computes(
    run: Run, outcomes: dict[str, list[dict[str, Any]]]
) -> None:
    first, stale, fresh = steps = _steps(run, outcomes)
    assert stale["plain"] == first["plain"], "harness: the old bytecode did not run\n" + _about(
        run, *steps
    )
    _not_stale(run, stale, *steps)
    _edit_shows(run, first, fresh, *steps)
    _not_stale(run, fresh, *steps)
    if run.case.edit.kind == "noop":
        _hit(run, fresh, *steps)


@pytest.mark.parametrize("run", _runs_of("reload"))
def test_a_reloaded_edit_is_never_served_stale_in_the_process_or_after(
    run: Run, outcomes: dict[str, list[dict[str, Any]]]
) -> None:
    reloaded, fresh = _steps(run, outcomes)
    steps = (reloaded["before"], reloaded["after"], fresh)
    _not_stale(run, reloaded["before"], *steps)
    _not_stale(run, reloaded["after"], *steps)
    _edit_shows(run, reloaded["before"], fresh, *steps)
    _not_stale(run, fresh, *steps)
    if run.case.edit.kind == "noop":
        _hit(run, fresh, *steps)


@pytest.mark.parametrize("run", _runs_of("exec"))
def test_code_run_by_exec_is_never_served_stale_after_an_edit(
    run: Run, outcomes: dict[str, list[dict[str, Any]]]
) -> None:
    first, second = steps = _steps(run, outcomes)
    _not_stale(run, first, *steps)
    _edit_shows(run, first, second, *steps)
    _not_stale(run, second, *steps)
    # Code without a source file is versioned by its bytecode: only a no-op edit of the
    # modules it imports must hit.
    if run.case.edit.kind == "noop" and not run.touches_main():
        _hit(run, second, *steps)
