"""persistmemo against an in-memory dict, raw diskcache and SQLite, and the memoizers users
would pick instead. The systems of a scenario take turns within every round; every figure
is a median over the rounds, given with its spread.

    python benchmarks/run.py            # full run: writes benchmarks/results/latest.{md,png,json}
    python benchmarks/run.py --quick    # about a minute, smaller sizes: benchmarks/results/quick/
    python benchmarks/run.py --only data,cold   # some scenarios: benchmarks/results/partial/
    python benchmarks/run.py --only data --merge   # rerun some, keep the other rows in results/

Only a full run of every scenario, or ``--merge`` into them, writes the published results;
the results are written again as each scenario finishes, so a crash keeps what ran.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import measure
import report
import systems

from persistmemo import Store, memo
from persistmemo._codec.encoding import encode_value
from persistmemo._sealing import Sealer

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parent.parent
Row = dict[str, Any]


class Settings:
    """Sizes of a run: ``full`` for the published figures, ``quick`` for a look, ``smoke``
    for the test suite (it checks the code runs, not its speed)."""

    def __init__(self, mode: str = "full") -> None:
        quick = mode != "full"
        self.mode = mode
        self.quick = quick
        self.repeats = 5 if quick else 9
        self.misses = 600 if quick else 3_000
        self.claimed_misses = 8 if quick else 20  # per round, of a function of CLAIMING_SECONDS
        self.store_sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
        self.big = 10 * 1024 * 1024
        self.cold_runs = 7 if quick else 21
        self.disk_entries = 2_000 if quick else 10_000
        self.concurrent_seconds = 0.5 if quick else 1.0  # one round, per process count
        self.concurrent_rounds = 3 if quick else 5
        self.concurrent_start = 1.0  # seconds for the processes to start and open the store
        self.key_sizes = (100 * 1024 * 1024, 10 * 1024 * 1024, 1_000_000)
        self.key_repeats = 3 if quick else 5  # rounds of the large keys (joblib.hash: ~1 s)
        self.data_bytes = 20 * 2**20 if quick else 100 * 2**20
        self.sample_seconds = 0.02 if quick else 0.05  # one system's turn in a warm-hit round
        self.frame_rows = 200_000 if quick else 1_000_000
        self.map_items = 5_000
        self.spin_items, self.spin_seconds = (4, 0.2) if quick else (8, 0.2)
        self.spin_rounds = 2 if quick else 3
        if mode == "smoke":
            self.repeats, self.misses, self.claimed_misses, self.cold_runs = 1, 20, 2, 1
            self.store_sizes, self.big, self.disk_entries = [100], 100_000, 50
            self.concurrent_seconds, self.concurrent_rounds = 0.2, 1
            self.concurrent_start = 0.5
            self.key_sizes, self.key_repeats = (1024 * 1024, 100_000, 10_000), 1
            self.data_bytes, self.frame_rows = 2**20, 2_000
            self.sample_seconds = 0.001
            self.map_items = 100
            self.spin_items, self.spin_seconds, self.spin_rounds = 4, 0.02, 1


def row(scenario: str, system: str, samples: measure.Samples | None, **extra: Any) -> Row:
    """One measured system: the median of its rounds' figures, and the figures (for the
    spread); ``samples`` is None for a system skipped (see ``skipped``)."""
    seconds = None if samples is None else statistics.median(samples)
    return {"scenario": scenario, "system": system, "seconds": seconds, "samples": samples, **extra}


def double(x: Any) -> Any:
    return x


# The arguments of the hits and keys that the issues name.
SMALL_INT = 123
SMALL_DICT = {f"k{i}": i / 7 for i in range(100)}
FLOATS = [i / 3 for i in range(1000)]


# --- 1. warm hits --------------------------------------------------------------------------


def warm_hits(tmp: Path, settings: Settings) -> list[Row]:
    """Hits of every memoizer and raw reads of the same bytes, taking turns in every round."""
    rows = []
    arguments = {
        "hit, small int": (SMALL_INT, False),
        "hit, dict of 100 str->float": (SMALL_DICT, True),
        "hit, list of 1,000 floats": (FLOATS, True),
    }
    for scenario, (argument, unhashable) in arguments.items():
        calls: dict[str, Callable[[], object]] = {}
        notes = {}
        for name, memoizer in {**systems.IN_MEMORY, **systems.PERSISTENT}.items():
            in_memory = name in systems.IN_MEMORY
            wrapped = memoizer(double, tmp)
            call_argument = systems.hashable(argument) if in_memory and unhashable else argument
            calls[name] = lambda w=wrapped, a=call_argument: w(a)
            notes[name] = "argument made hashable by the caller" if in_memory and unhashable else ""
        calls.update(raw_reads(tmp, scenario, argument))
        samples = measure.interleaved_per_call(
            calls, repeats=settings.repeats, sample_seconds=settings.sample_seconds
        )
        rows += [
            row(scenario, name, figures, note=notes.get(name, ""))
            for name, figures in samples.items()
        ]
    return rows + first_hits(tmp, settings)


def first_hits(tmp: Path, settings: Settings) -> list[Row]:
    """Hits of keys read for the first time in the process (a repeated hit is served from
    the rows its connection kept while the store is unchanged: stores/recent_rows.py), and
    raw diskcache gets of the same keys, the systems taking turns."""
    import diskcache

    scenario = "hit, small int, each key read once"
    count = settings.misses
    store = Store(tmp / f"first-hits-{time.monotonic_ns()}")
    writer = memo(store=store, name="bench.first", version="1")(double)
    raw = diskcache.Cache(str(tmp / f"diskcache-first-{time.monotonic_ns()}"))
    arguments = [SMALL_INT + i for i in range(count + 1)]
    for argument in arguments:
        writer(argument)
    connection = sqlite3.connect(store.directory / "cache.db")
    stored = dict(connection.execute("SELECT key, value FROM Cache WHERE key LIKE 'pm%'"))
    connection.close()
    for argument in arguments:
        key = writer.key(argument)
        raw.set(key, bytes(stored[key]))
    # A reader that has never read these keys: a fresh handle on the same store.
    reader = memo(store=Store(store.directory), name="bench.first", version="1")(double)
    reader(arguments[0])  # opening the store and first-use imports are not a hit's
    keys = [writer.key(argument) for argument in arguments[1:]]
    calls = {
        "persistmemo": [lambda a=argument: reader(a) for argument in arguments[1:]],
        "raw diskcache get": [lambda k=key: raw.get(k) for key in keys],
    }
    samples = _batches_interleaved(
        {name: _rounds(each, settings.repeats) for name, each in calls.items()}, settings.repeats
    )
    return [row(scenario, name, figures) for name, figures in samples.items()]


def raw_reads(tmp: Path, scenario: str, argument: Any) -> dict[str, Callable[[], object]]:
    """Raw diskcache get and a raw SQLite SELECT of exactly the bytes persistmemo stores."""
    import diskcache

    store = Store(tmp / f"raw-{len(scenario)}-{time.monotonic_ns()}")
    wrapped = memo(store=store, name="bench.raw", version="1")(double)
    wrapped(argument)
    key = wrapped.key(argument)
    stored = _stored_bytes(store, key)
    raw = diskcache.Cache(str(tmp / f"diskcache-raw-{time.monotonic_ns()}"))
    raw.set(key, stored)
    connection = sqlite3.connect(store.directory / "cache.db", isolation_level=None)
    select = (
        "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1"
        " AND (expire_time IS NULL OR expire_time > ?)"
    )
    return {
        "raw diskcache get": lambda: raw.get(key),
        "raw sqlite3 SELECT": lambda: connection.execute(select, (key, time.time())).fetchone(),
    }


def _stored_bytes(store: Store, key: str) -> bytes:
    connection = sqlite3.connect(store.directory / "cache.db")
    ((value,),) = connection.execute("SELECT value FROM Cache WHERE key = ?", (key,)).fetchall()
    connection.close()
    return bytes(value)


# --- 2. misses -----------------------------------------------------------------------------


def misses(tmp: Path, settings: Settings) -> list[Row]:
    """Misses with distinct keys: each system writes a batch of new entries per round, the
    systems taking turns within every round (every persistmemo miss claims its key);
    ``claimed_misses`` has the miss of a function worth memoizing."""
    scenario = "miss + store, distinct keys"
    candidates = {
        **systems.IN_MEMORY,
        "persistmemo": systems.persistmemo_disk,
        "persistmemo lock=False": systems.persistmemo_unlocked,
        "diskcache memoize": systems.diskcache_memoize,
        "joblib.Memory": systems.joblib_memory,
        "cachier": systems.cachier_pickle,
    }
    batches: dict[str, list[list[Callable[..., object]]]] = {}
    for number, (name, memoizer) in enumerate(candidates.items()):
        wrapped = memoizer(double, tmp)
        count = (
            settings.misses if name not in ("joblib.Memory", "cachier") else settings.misses // 5
        )
        base = 10**9 * (1 + number)
        calls = [lambda w=wrapped, i=base + i: w(i) for i in range(count + 1)]
        calls[0]()  # warm: opening the store and first-use imports are not a miss's
        batches[name] = _rounds(calls[1:], settings.repeats)
    batches["raw diskcache set"] = _raw_sets(tmp, settings.misses, settings.repeats)
    samples = _batches_interleaved(batches, settings.repeats)
    return [row(scenario, name, figures) for name, figures in samples.items()]


def _raw_sets(tmp: Path, count: int, repeats: int) -> list[list[Callable[..., object]]]:
    """Rounds of raw diskcache sets of a sealed small int, tagged as persistmemo tags."""
    import diskcache

    sealer = Sealer(b"s" * 32)
    raw = diskcache.Cache(str(tmp / f"diskcache-raw-set-{time.monotonic_ns()}"))
    stored = sealer.seal("pm1:bench.raw:1:" + "0" * 64, encode_value(10**9), 0.0)
    keys = [f"pm1:bench.raw:1:{i:064x}" for i in range(count + 1)]
    raw_sets = [lambda k=k: raw.set(k, stored, tag="bench.raw") for k in keys]
    raw_sets[0]()
    return _rounds(raw_sets[1:], repeats)


def _batches_interleaved(
    batches: dict[str, list[list[Callable[..., object]]]], repeats: int
) -> dict[str, measure.Samples]:
    """Seconds per call of each system's batch of each round, the systems taking turns."""
    totals = measure.interleaved_once(
        {name: lambda r, b=rounds: [call() for call in b[r]] for name, rounds in batches.items()},
        repeats=repeats,
    )
    return {
        name: [total / len(batches[name][index]) for index, total in enumerate(figures)]
        for name, figures in totals.items()
    }


def _rounds(calls: list[Callable[..., object]], repeats: int) -> list[list[Callable[..., object]]]:
    size = max(1, len(calls) // repeats)
    return [calls[i * size : (i + 1) * size] for i in range(repeats)]


# A function worth memoizing: the time over it is what a user pays per miss (every miss
# claims its key; the function's sleep also leaves the caches as a real miss finds them).
CLAIMING_SECONDS = 0.011


def claiming(x: int) -> int:
    """Returns ``x`` after CLAIMING_SECONDS: sleeps, then spins to the deadline (a sleep
    alone overshoots by a varying amount, which would blur the time over it)."""
    deadline = time.perf_counter() + CLAIMING_SECONDS
    time.sleep(CLAIMING_SECONDS - 0.001)
    while time.perf_counter() < deadline:
        pass
    return x


def claimed_misses(tmp: Path, settings: Settings) -> list[Row]:
    """The default miss: a function that claims its key, each system's time over the
    function's own (the function alone takes its turn in every round; each round's
    difference is a figure), next to raw diskcache sets of the same bytes."""
    scenario = f"miss + store, a function of {CLAIMING_SECONDS * 1e3:g} ms (time over its own)"
    candidates: dict[str, Callable[[Callable[..., Any], Path], Callable[..., Any]]] = {
        "the function alone": lambda func, _: func,
        "persistmemo": systems.persistmemo_disk,
        "persistmemo lock=False": systems.persistmemo_unlocked,
        "diskcache memoize": systems.diskcache_memoize,
    }
    per_round = settings.claimed_misses
    batches: dict[str, list[list[Callable[..., object]]]] = {}
    for number, (name, memoizer) in enumerate(candidates.items()):
        wrapped = memoizer(claiming, tmp)
        base = 10**9 * (1 + number)
        calls = [lambda w=wrapped, i=base + i: w(i) for i in range(per_round * settings.repeats)]
        wrapped(base - 1)  # warm: opening the store and first-use imports are not a miss's
        batches[name] = _rounds(calls, settings.repeats)
    # More sets than misses per round: a set alone is far shorter than a miss of the function.
    batches["raw diskcache set"] = _raw_sets(
        tmp, 5 * per_round * settings.repeats, settings.repeats
    )
    samples = _batches_interleaved(batches, settings.repeats)
    alone = samples.pop("the function alone")
    rows = [row(scenario, "the function alone", alone, no_ratio=True, note="its own time per call")]
    for name, figures in samples.items():
        if name == "raw diskcache set":
            rows.append(row(scenario, name, figures))
            continue
        over = [figure - own for figure, own in zip(figures, alone, strict=True)]
        rows.append(
            row(scenario, name, over, over_function=True, note="a miss's time over the function's")
        )
    return rows


# --- 3. cold process (issue 11: the script path) -------------------------------------------

COLD_CODE = {
    "python -c pass": "pass",
    "import persistmemo": "import persistmemo",
    # The package loads its names on first mention: this is the import a script pays.
    "from persistmemo import memo": "from persistmemo import memo",
    "import diskcache": "import diskcache",
    "import joblib": "import joblib",
}

# The script a user re-runs: decorate, one call (a hit after the first run). Files, not -c,
# so that the version is derived from the source as in a user's script.
COLD_SCRIPTS = {
    "persistmemo @memo script, one hit": (
        "from persistmemo import memo\n\n\n"
        "@memo\n"
        "def square(x):\n"
        "    return x * x\n\n\n"
        "square(12)\n"
    ),
    "diskcache memoize script, one hit": (
        "import diskcache\n\n"
        "cache = diskcache.Cache({directory!r})\n\n\n"
        "@cache.memoize()\n"
        "def square(x):\n"
        "    return x * x\n\n\n"
        "square(12)\n"
    ),
}

# A re-run script is one whose file was written well before the process started: the
# version persistmemo remembered for it is served only then. Its mtime can be set back, its
# ctime cannot (os.utime sets it to now), so the runs wait until the ctime too is this old
# (persistmemo's margin is 2 s, from the process's start rounded down: source_stamps.py).
SCRIPT_AGE = 4.0

# Run in a child after the warm runs: the modules it imported that have no up-to-date .pyc
# (such a module is compiled at every start, which users' installs do not do).
UNCOMPILED = """
import importlib.util, os, sys
import persistmemo, persistmemo.stores.engine, diskcache
stale = []
for module in list(sys.modules.values()):
    spec = getattr(module, "__spec__", None)
    source = getattr(spec, "origin", None) or ""
    if not source.endswith(".py") or not getattr(spec, "cached", None):
        continue
    cached = spec.cached
    if not os.path.exists(cached) or os.path.getmtime(cached) < os.path.getmtime(source):
        stale.append(module.__name__)
print(",".join(sorted(stale)))
"""

# The sitecustomize of one checking run of the script (never of a timed one): whether the
# run was a hit, and whether it derived the version instead of reading the one remembered
# (only deriving imports the source index). It imports nothing of persistmemo's: that would
# change what the run does.
SCRIPT_PROBE = """
import atexit, sys
def tell():
    hits = sys.modules["__main__"].square.cache_info().hits
    derived = int("persistmemo._versioning.sources" in sys.modules)
    print(f"{hits} {derived}", file=sys.stderr)
atexit.register(tell)
"""


def cold_environment(home: Path) -> dict[str, str]:
    """The children's environment: bytecode written and read as in a user's install (this
    machine's PYTHONDONTWRITEBYTECODE dropped), the default store and the platform
    directories inside ``home``, no Redis default store."""
    drop = {"PYTHONDONTWRITEBYTECODE", "PERSISTMEMO_URL", "PERSISTMEMO_DIR", "PYTHONPATH"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("XDG_")}
    env["PERSISTMEMO_DIR"] = str(home / "persistmemo")
    for variable in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        env[variable] = str(home / variable.lower())
    return env


def compile_bytecode() -> None:
    """Compile persistmemo and the packages a cold script imports, as pip does on install
    (this environment sets PYTHONDONTWRITEBYTECODE, so nothing else would)."""
    import compileall

    import diskcache
    import platformdirs

    import persistmemo

    for package in (persistmemo, diskcache, platformdirs):
        compileall.compile_dir(os.path.dirname(str(package.__file__)), quiet=1)


def cold_process(tmp: Path, settings: Settings) -> list[Row]:
    """Whole-process wall time of a re-run script and of bare imports, the processes taking
    turns so that the shared machine's load falls on all of them alike. The scripts are run
    as a re-run sees them: written a while ago, packages compiled, one run before."""
    home = tmp / "cold-home"
    home.mkdir()
    env = cold_environment(home)
    commands: dict[str, list[str]] = {
        name: [sys.executable, "-c", code] for name, code in COLD_CODE.items()
    }
    scripts = {}
    for index, (name, script) in enumerate(COLD_SCRIPTS.items()):
        path = home / f"script_{index}.py"
        path.write_text(script.format(directory=str(home / f"diskcache-{index}")))
        aged = time.time() - 10 * SCRIPT_AGE
        os.utime(path, (aged, aged))
        scripts[name] = [sys.executable, str(path)]
    written = time.time()  # the scripts' ctime
    compile_bytecode()

    def start(command: list[str], extra: dict[str, str] | None = None) -> str:
        return subprocess.run(
            command,
            env={**env, **(extra or {})},
            cwd=home,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ).stderr

    for command in commands.values():
        start(command)  # warm: bytecode written
    time.sleep(max(0.0, written + SCRIPT_AGE - time.time()))
    for command in scripts.values():
        start(command)  # warm: the script's entry and its version stored (the runs hit)
    commands.update(scripts)
    stale = subprocess.run(
        [sys.executable, "-c", UNCOMPILED],
        env=env,
        cwd=home,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    note = f"compiled at each start: {stale}" if stale else ""
    script_note = _script_check(home, scripts["persistmemo @memo script, one hit"], start)
    samples = measure.interleaved_once(
        {name: lambda _, c=command: start(c) for name, command in commands.items()},
        repeats=settings.cold_runs,
    )
    scenario = "cold process (whole-process wall time)"
    bare = samples["python -c pass"]
    return [
        row(
            scenario,
            name,
            figures,
            note={"import persistmemo": note, "persistmemo @memo script, one hit": script_note}.get(
                name, ""
            ),
            over_bare=statistics.median(figures) - statistics.median(bare)
            if name != "python -c pass"
            else None,
            baseline=name == "diskcache memoize script, one hit",
        )
        for name, figures in samples.items()
    ]


def _script_check(home: Path, command: list[str], start: Callable[..., str]) -> str:
    """A note unless one run of the script, as the timed runs see it, is a hit that reads
    its version instead of deriving it."""
    probe = home / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(SCRIPT_PROBE)
    told = start(command, {"PYTHONPATH": str(probe)}).split()
    hits, derived = told[-2:] if len(told) >= 2 else ["?", "?"]
    notes = []
    if hits != "1":
        notes.append(f"not a hit: {hits} hits")
    if derived != "0":
        notes.append("the version derived, not read: the script looks newly written")
    return "; ".join(notes) or "a hit; the version read, not derived"


# --- 4. hits against the number of entries -------------------------------------------------


def store_sizes(tmp: Path, settings: Settings) -> list[Row]:
    """Hits in stores of each size, the stores taking turns in every round."""
    calls: dict[str, Callable[[], object]] = {}
    for size in settings.store_sizes:
        store = Store(tmp / f"sized-{size}")
        wrapped = memo(store=store, name="bench.sized", version="1")(double)
        wrapped(0)
        _fill(store, wrapped, size)
        probes = itertools.cycle(list(range(0, size, max(1, size // 997))))
        calls[f"persistmemo, {size:,} entries"] = lambda w=wrapped, p=probes: w(next(p))
    samples = measure.interleaved_per_call(
        calls, repeats=settings.repeats, sample_seconds=settings.sample_seconds
    )
    return [
        row("hit vs stored entries", name, figures, entries=size)
        for (name, figures), size in zip(samples.items(), settings.store_sizes, strict=True)
    ]


def _fill(store: Store, wrapped: Any, size: int) -> None:
    """Write ``size`` entries as a miss stores them, with diskcache's own INSERT, many rows
    per statement: a set each (a lookup and a cull per row) took minutes for a million."""
    store.open()
    cache = store.backend._writable_cache()
    sealer = store.backend.opened_sealer()
    insert = (
        "INSERT OR IGNORE INTO Cache(key, raw, store_time, expire_time, access_time,"
        " access_count, tag, size, mode, filename, value)"
        " VALUES (?, ?, ?, NULL, ?, 0, ?, ?, ?, ?, ?)"
    )
    batch = 10_000
    for start in range(0, size, batch):
        now = time.time()
        rows = []
        for i in range(start, min(size, start + batch)):
            key = wrapped.key(i)
            db_key, raw = cache._disk.put(key)
            stored = sealer.seal(key, encode_value(i), 0.0)
            length, mode, filename, value = cache._disk.store(stored, False, key=key)
            rows.append((db_key, raw, now, now, "bench.sized", length, mode, filename, value))
        with cache.transact():
            cache._con.executemany(insert, rows)


# --- 5. large results ----------------------------------------------------------------------


def large_values(tmp: Path, settings: Settings) -> list[Row]:
    import diskcache
    import numpy

    rows = []
    big = settings.big  # captured by the functions below: an int is keyed, a Settings is not
    results = {
        "10 MB bytes": lambda _: b"\x07" * big,
        "10 MB float64 array": lambda _: numpy.random.default_rng(0).random(big // 8),
    }
    for label, compute in results.items():
        store = Store(tmp / f"large-{label[:5].strip()}-{time.monotonic_ns()}")
        wrapped = memo(store=store, name="bench.large", version="1")(compute)
        wrapped(1)
        key = wrapped.key(1)
        stored = _stored_file_bytes(store, key)
        raw = diskcache.Cache(str(tmp / f"diskcache-large-{time.monotonic_ns()}"))
        raw.set(key, stored)
        scenario = f"hit, {label} result"
        samples = measure.interleaved_per_call(
            {
                "persistmemo": lambda w=wrapped: w(1),
                "raw diskcache get": lambda r=raw, k=key: r.get(k),
            },
            repeats=settings.repeats,
        )
        megabytes = settings.big / 1e6
        rows += [
            row(scenario, name, figures, mb_per_s=megabytes / statistics.median(figures))
            for name, figures in samples.items()
        ]
    return rows


def _stored_file_bytes(store: Store, key: str) -> bytes:
    connection = sqlite3.connect(store.directory / "cache.db")
    ((filename,),) = connection.execute(
        "SELECT filename FROM Cache WHERE key = ?", (key,)
    ).fetchall()
    connection.close()
    return (store.directory / filename).read_bytes()


# --- 6. two processes ----------------------------------------------------------------------

CONCURRENT = """
import sys, time
from persistmemo import Store, memo
f = memo(store=Store(sys.argv[1]), name="bench.shared", version="1")(lambda x: x)
for i in range(200): f(i)
deadline = float(sys.argv[2])
while time.time() < deadline: pass
calls, end = 0, deadline + float(sys.argv[3])
while time.time() < end:
    f(calls % 200); calls += 1
print(calls)
"""


def concurrent(tmp: Path, settings: Settings) -> list[Row]:
    """Hits per second of one process and of two on one store, in alternating rounds."""
    seconds = settings.concurrent_seconds
    directory = str(tmp / "concurrent")
    subprocess.run(
        [sys.executable, "-c", CONCURRENT, directory, "0", "0"], check=True, capture_output=True
    )
    samples: dict[int, measure.Samples] = {1: [], 2: []}
    for round_index in range(settings.concurrent_rounds):
        for processes in (1, 2) if round_index % 2 == 0 else (2, 1):
            start_at = time.time() + settings.concurrent_start
            workers = [
                subprocess.Popen(
                    [sys.executable, "-c", CONCURRENT, directory, str(start_at), str(seconds)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for _ in range(processes)
            ]
            total = sum(int(worker.communicate()[0]) for worker in workers)
            samples[processes].append(seconds / total)
    return [
        row(
            "hits/s, processes on one store",
            f"persistmemo, {processes} process{'es' if processes > 1 else ''}",
            figures,
            hits_per_second=1 / statistics.median(figures),
        )
        for processes, figures in samples.items()
    ]


# --- 7. bytes on disk ----------------------------------------------------------------------


def disk_usage(tmp: Path, settings: Settings) -> list[Row]:
    """Bytes on disk per small entry: counted, not timed (one figure each)."""
    count = settings.disk_entries
    # Fewer entries for the slow writers: cachier rewrites its whole pickle file on every
    # miss (10,000 entries would take an hour; 2,000 took 106 s), joblib writes a directory
    # per call. Bytes per entry do not depend on the count for either.
    counts = {"joblib.Memory": max(1, count // 5), "cachier": max(1, count // 50)}
    rows = []
    for name, memoizer in systems.PERSISTENT.items():
        if name == "persistmemo memory=":
            continue
        root = tmp / f"usage-{name.replace(' ', '-').replace('.', '')}"
        root.mkdir()
        wrapped = memoizer(double, root)
        entries = counts.get(name, count)
        for i in range(entries):
            wrapped(i)
        apparent, allocated = _directory_bytes(root)
        notes = [f"{apparent / entries:,.0f} bytes of file contents"]
        if entries != count:
            notes.append(f"{entries:,} entries")
        rows.append(
            row(
                f"bytes on disk per small entry ({count:,} entries)",
                name,
                [allocated / entries],
                unit="bytes",
                note="; ".join(notes),
            )
        )
    return rows


def _directory_bytes(root: Path) -> tuple[int, int]:
    """(contents, allocated blocks) of every file under ``root``, SQLite's write-ahead log
    checkpointed first (its preallocated WAL would otherwise dwarf a small store)."""
    for database in root.rglob("cache.db"):
        connection = sqlite3.connect(database)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.close()
    files = [path.stat() for path in root.rglob("*") if path.is_file()]
    return sum(info.st_size for info in files), sum(info.st_blocks * 512 for info in files)


# --- 8. keys -------------------------------------------------------------------------------


def large_keys(tmp: Path, settings: Settings) -> list[Row]:
    """persistmemo's key of an argument against joblib.hash of it, taking turns."""
    import joblib
    import numpy

    wrapped = memo(store=Store(tmp / "keys"), name="bench.keys", version="1")(double)
    array_bytes, text_bytes, ints = settings.key_sizes
    small = {
        "key of a dict of 100 str->float": SMALL_DICT,
        "key of a list of 1,000 floats": FLOATS,
    }
    large = {
        f"key of a list of {ints:,} ints": list(range(ints)),
        f"key of a {array_bytes // 2**20} MB float64 array": numpy.random.default_rng(1).random(
            array_bytes // 8
        ),
        f"key of a {text_bytes // 2**20} MB str": "é" * (text_bytes // 2),
    }
    rows = []
    for arguments, repeats in ((small, settings.repeats), (large, settings.key_repeats)):
        for scenario, argument in arguments.items():
            samples = measure.interleaved_per_call(
                {
                    "persistmemo": lambda a=argument: wrapped.key(a),
                    "joblib.hash": lambda a=argument: joblib.hash(a),
                },
                repeats=repeats,
                sample_seconds=settings.sample_seconds,
            )
            rows += [
                row(scenario, name, figures, baseline=name == "joblib.hash")
                for name, figures in samples.items()
            ]
    return rows


# --- 9. data workloads (issue 10) ----------------------------------------------------------

# What the data functions return: module globals, so that the functions are cheap to call
# and nothing large sits in a closure or a default argument.
DATA: dict[str, Any] = {}


def data_array(i: int) -> Any:
    return DATA["array"]


def data_frame(i: int) -> Any:
    return DATA["frame"]


def data_frame_value(rows: int) -> Any:
    """A DataFrame of ``rows`` rows with float64, int64, str and datetime64 columns."""
    import numpy
    import pandas

    rng = numpy.random.default_rng(3)
    return pandas.DataFrame(
        {
            "x": rng.random(rows),
            "n": numpy.arange(rows, dtype="int64"),
            "label": [f"item-{i % 9973}" for i in range(rows)],
            "at": pandas.date_range("2020-01-01", periods=rows, freq="s"),
        }
    )


def skipped(scenario: str, system: str, reason: str) -> Row:
    """A row for a system that cannot run yet (an option not landed): reported, not timed."""
    print(f"({scenario}: {system} skipped: {reason})", file=sys.stderr)
    return row(scenario, system, None, note=f"skipped: {reason}")


def _memory_mapped(array: Any) -> bool:
    """Whether the array's memory is a map of a file (numpy.memmap, or a view whose base
    chain reaches an mmap.mmap), not a copy in the process's own memory."""
    import mmap

    import numpy

    while array is not None:
        if isinstance(array, (numpy.memmap, mmap.mmap)):
            return True
        # numpy.frombuffer(an mmap) keeps the map behind a memoryview
        array = array.obj if isinstance(array, memoryview) else getattr(array, "base", None)
    return False


def _persistmemo_data(tmp: Path, func: Any, name: str, **options: Any) -> Any:
    store = Store(tmp / f"data-{name}-{time.monotonic_ns()}")
    return memo(store=store, name=f"bench.data.{name}", version="1", **options)(func)


def data_workloads(tmp: Path, settings: Settings) -> list[Row]:
    """Arrays and DataFrames in and out, against np.load / np.save of the same array and
    against joblib.Memory (with and without mmap_mode="r"), the systems taking turns."""
    import numpy

    size = settings.data_bytes
    DATA["array"] = numpy.random.default_rng(2).random(size // 8)
    try:
        return _data_arrays(tmp, settings) + _data_frames(tmp, settings)
    finally:
        DATA.clear()


def _data_arrays(tmp: Path, settings: Settings) -> list[Row]:
    import joblib
    import numpy

    array = DATA["array"]
    megabytes = array.nbytes / 2**20
    rows: list[Row] = []
    later: list[Row] = []  # rows of systems skipped, after the measured ones

    scenario = f"hit, large float64 array result ({megabytes:g} MB)"
    npy = tmp / "data-array.npy"
    numpy.save(npy, array)
    hits: dict[str, Callable[[], object]] = {
        "np.load, .npy in the page cache": lambda: numpy.load(npy)
    }
    ours = _persistmemo_data(tmp, data_array, "array")
    ours(1)
    hits["persistmemo"] = lambda: ours(1)
    notes: dict[str, str] = {}
    try:
        mapped = _persistmemo_data(tmp, data_array, "mmap", mmap=True)
        mapped(1)
        hit = mapped(1)
    except TypeError as error:  # the option has not landed yet
        later.append(skipped(scenario, "persistmemo mmap=True", f"memo(mmap=True): {error}"))
    else:
        hits["persistmemo mmap=True"] = lambda: mapped(1)
        # What the option promises: a read-only map of the stored file, not a copy.
        kind = type(hit)
        mapping = "a memory map" if _memory_mapped(hit) else "not a memory map"
        writeable = (
            "writeable" if getattr(hit, "flags", None) and hit.flags.writeable else "read-only"
        )
        notes["persistmemo mmap=True"] = (
            f"a hit returns {kind.__module__}.{kind.__qualname__}: {mapping}, {writeable}"
        )
        del hit
    memory = joblib.Memory(str(tmp / "data-joblib"), verbose=0).cache(data_array)
    memory(1)
    hits["joblib.Memory"] = lambda: memory(1)
    memory_mapped = joblib.Memory(str(tmp / "data-joblib-mmap"), mmap_mode="r", verbose=0)
    memory_mapped_array = memory_mapped.cache(data_array)
    memory_mapped_array(1)
    hits["joblib.Memory mmap_mode='r'"] = lambda: memory_mapped_array(1)
    notes["joblib.Memory mmap_mode='r'"] = "a hit returns numpy.memmap, read-only"
    samples = measure.interleaved_per_call(hits, repeats=settings.repeats)
    rows += [
        row(
            scenario,
            name,
            figures,
            baseline=name in ("np.load, .npy in the page cache", "joblib.Memory"),
            note=notes.get(name, ""),
            # A map reads nothing until used: its MB/s would be meaningless.
            **(
                {}
                if "mmap" in name
                else {"mb_per_s": array.nbytes / 1e6 / statistics.median(figures)}
            ),
        )
        for name, figures in samples.items()
    ]
    rows += later
    npy.unlink()

    scenario = f"miss + store, large float64 array ({megabytes:g} MB)"
    saved = tmp / "data-saved"
    saved.mkdir()
    # Each round a new key (the round's number, offset past the hit's), deleted after.
    misses: dict[str, Callable[[int], object]] = {
        "np.save": lambda i: numpy.save(saved / f"{i}.npy", array),
        "persistmemo": lambda i: ours(1_000 + i),
        "joblib.Memory": lambda i: memory(1_000 + i),
    }
    cleanup: dict[str, Callable[[int], object]] = {
        "np.save": lambda i: (saved / f"{i}.npy").unlink(),
        "persistmemo": lambda i: ours.invalidate(1_000 + i),
        "joblib.Memory": lambda i: memory.clear(warn=False),
    }
    for name, call in misses.items():
        call(-1)  # warm: first-use costs (opening, imports) are not a miss's
        cleanup[name](-1)
    samples = measure.interleaved_once(misses, repeats=settings.repeats, after=cleanup)
    rows += [
        row(
            scenario,
            name,
            figures,
            mb_per_s=array.nbytes / 1e6 / statistics.median(figures),
            baseline=name in ("np.save", "joblib.Memory"),
        )
        for name, figures in samples.items()
    ]
    return rows


def _data_frames(tmp: Path, settings: Settings) -> list[Row]:
    import joblib

    frame = DATA["frame"] = data_frame_value(settings.frame_rows)
    shape = f"{settings.frame_rows:,} rows: float64, int64, str, datetime64"
    rows: list[Row] = []

    scenario = f"hit, DataFrame result ({shape})"
    ours = _persistmemo_data(tmp, data_frame, "frame")
    ours(1)
    memory = joblib.Memory(str(tmp / "data-joblib-frame"), verbose=0).cache(data_frame)
    memory(1)
    samples = measure.interleaved_per_call(
        {"persistmemo": lambda: ours(1), "joblib.Memory": lambda: memory(1)},
        repeats=settings.repeats,
    )
    rows += [
        row(scenario, name, figures, baseline=name == "joblib.Memory")
        for name, figures in samples.items()
    ]
    rows += _fresh_process_frame_hits(tmp, settings, shape)

    scenario = f"key of a DataFrame argument ({shape})"
    keyed = _persistmemo_data(tmp, double, "frame-key")
    keys: dict[str, Callable[[], object]] = {"joblib.hash": lambda: joblib.hash(frame)}
    try:
        keyed.key(frame)
    except TypeError as error:
        if "not supported" not in str(error):
            raise
        later = [skipped(scenario, "persistmemo", f"DataFrame arguments: {error}")]
    else:
        keys["persistmemo"] = lambda: keyed.key(frame)
        later = []
    samples = measure.interleaved_per_call(keys, repeats=settings.repeats)
    rows += [
        row(scenario, name, figures, baseline=name == "joblib.hash")
        for name, figures in samples.items()
    ]
    rows += later
    return rows


# A process that hits a stored DataFrame once: the function is in a module of its own, so
# that joblib.Memory (which keys on the function's module and source) finds the entry too.
FRESH_FRAME_SOURCE = """
FRAME = None


def frame(i):
    return FRAME
"""

FRESH_FRAME_HIT = """
import sys, time
import pandas  # the result's own imports: not the hit's
import fresh_frame
if sys.argv[1] == "persistmemo":
    from persistmemo import Store, memo
    hit = memo(store=Store(sys.argv[2]), name="bench.data.fresh", version="1")(fresh_frame.frame)
else:
    import joblib
    hit = joblib.Memory(sys.argv[2], verbose=0).cache(fresh_frame.frame)
start = time.perf_counter()
value = hit(1)
seconds = time.perf_counter() - start
assert value is not None and len(value) == int(sys.argv[3])
print(seconds)
"""


def _fresh_process_frame_hits(tmp: Path, settings: Settings, shape: str) -> list[Row]:
    """The first call of a process, a hit of a DataFrame the processes before it stored:
    the call alone is timed (imports and interpreter start are the cold scenario's)."""
    import joblib

    source = tmp / "fresh-frame"
    source.mkdir()
    (source / "fresh_frame.py").write_text(FRESH_FRAME_SOURCE)
    sys.path.insert(0, str(source))
    try:
        import fresh_frame  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(source))
    fresh_frame.FRAME = DATA["frame"]
    stores = {"persistmemo": tmp / "fresh-persistmemo", "joblib.Memory": tmp / "fresh-joblib"}
    memo(store=Store(stores["persistmemo"]), name="bench.data.fresh", version="1")(
        fresh_frame.frame
    )(1)
    joblib.Memory(str(stores["joblib.Memory"]), verbose=0).cache(fresh_frame.frame)(1)
    fresh_frame.FRAME = None
    paths = [str(source), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}

    def first_hit(system: str) -> float:
        command = [sys.executable, "-c", FRESH_FRAME_HIT, system, str(stores[system])]
        command.append(str(settings.frame_rows))
        done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        return float(done.stdout)

    samples: dict[str, measure.Samples] = {name: [] for name in stores}
    names = list(stores)
    for round_index in range(settings.repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(first_hit(name))
    scenario = f"first hit in a fresh process, DataFrame result ({shape})"
    return [
        row(scenario, name, figures, baseline=name == "joblib.Memory")
        for name, figures in samples.items()
    ]


# --- Redis and the tiered store -------------------------------------------------------------


def redis_stores(tmp: Path, settings: Settings) -> list[Row]:
    """RedisStore hits and misses against raw redis-py GET/SET of the same bytes on the same
    server, and the tiered store's local hit against the disk store's, taking turns."""
    import socket

    binary = shutil.which("redis-server")
    if binary is None or importlib.util.find_spec("redis") is None:
        missing = "redis-server" if binary is None else "redis-py (the redis extra)"
        print(f"({missing} not installed: Redis scenarios skipped)", file=sys.stderr)
        return []
    import redis

    from persistmemo import RedisStore, TieredStore

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # The raw baseline gets the client settings RedisStore uses (no retries, short
        # timeouts): redis-py's default retry wrapper alone costs more than our whole hit.
        client = redis.Redis.from_url(url, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
        default_client = redis.Redis.from_url(url)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        remote = RedisStore(url, secret="bench")
        wrapped = memo(store=remote, name="bench.redis", version="1")(double)
        wrapped(1)
        key = wrapped.key(1)
        stored = client.get(f"persistmemo:{key}")
        client.set("raw", stored)
        samples = measure.interleaved_per_call(
            {
                "persistmemo RedisStore": lambda: wrapped(1),
                "raw redis-py GET": lambda: client.get("raw"),
                "redis-py GET, default client": lambda: default_client.get("raw"),
            },
            repeats=settings.repeats,
            sample_seconds=settings.sample_seconds,
        )
        rows = [
            row(
                "redis: hit, small int",
                name,
                figures,
                note="same client settings" if name == "raw redis-py GET" else "",
            )
            for name, figures in samples.items()
        ]
        batches: dict[str, list[list[Callable[..., object]]]] = {}
        for name, lock in (
            ("persistmemo RedisStore lock=False", False),
            ("persistmemo RedisStore", True),
        ):
            function = memo(store=remote, name=f"bench.redis.{lock}", version="1", lock=lock)(
                double
            )
            function(0)  # warm
            calls = [lambda f=function, i=i: f(10**9 + i) for i in range(settings.misses)]
            batches[name] = _rounds(calls, settings.repeats)
        sets = [lambda i=i: client.set(f"raw-{i}", stored) for i in range(settings.misses)]
        batches["raw redis-py SET"] = _rounds(sets, settings.repeats)
        samples = _batches_interleaved(batches, settings.repeats)
        rows += [row("redis: miss + store", name, figures) for name, figures in samples.items()]
        tiered = memo(
            store=TieredStore(tmp / "tiered-local", remote), name="bench.tiered", version="1"
        )(double)
        disk = memo(store=Store(tmp / "tiered-disk"), name="bench.tiered", version="1")(double)
        tiered(1)
        disk(1)
        samples = measure.interleaved_per_call(
            {
                "persistmemo TieredStore": lambda: tiered(1),
                "persistmemo Store (disk)": lambda: disk(1),
            },
            repeats=settings.repeats,
            sample_seconds=settings.sample_seconds,
        )
        rows += [
            row("tiered: local hit, small int", name, figures) for name, figures in samples.items()
        ]
        return rows
    finally:
        server.kill()
        server.wait()


# --- costs of features ---------------------------------------------------------------------


def feature_costs(tmp: Path, settings: Settings) -> list[Row]:
    """The seal (integrity check) and the metadata, as parts of a hit and a miss."""
    store = Store(tmp / "features")
    wrapped = memo(store=store, name="bench.features", version="1")(double)
    wrapped(1)
    key = wrapped.key(1)
    stored = _stored_bytes(store, key)
    sealer = store.backend.opened_sealer()
    encoded = encode_value(1)
    samples = measure.interleaved_per_call(
        {
            "hit, whole": lambda: wrapped(1),
            "seal check on a hit": lambda: sealer.unseal(key, stored),
            "seal made on a miss (with metadata)": lambda: sealer.seal(key, encoded, 0.5),
            "metadata: timing a miss": lambda: (time.perf_counter(), time.perf_counter()),
        },
        repeats=settings.repeats,
        sample_seconds=settings.sample_seconds,
    )
    hit = statistics.median(samples["hit, whole"])
    return [
        row(
            "feature cost",
            name,
            figures,
            **(
                {"share_of_hit": statistics.median(figures) / hit}
                if name == "seal check on a hit"
                else {}
            ),
        )
        for name, figures in samples.items()
    ]


def many_inputs(tmp: Path, settings: Settings) -> list[Row]:
    """f.map against a loop of single calls: batched hits, and misses in worker processes."""
    rows = []
    count = settings.map_items
    store = Store(tmp / "map")
    square = memo(store=store, name="bench.map", version="1")(double)
    square.map(range(count))
    samples = measure.interleaved_per_call(
        {
            "persistmemo, loop of calls": lambda: [square(x) for x in range(count)],
            "persistmemo, f.map": lambda: square.map(range(count)),
        },
        repeats=settings.repeats,
        sample_seconds=settings.sample_seconds,
    )
    loop, mapped = samples.values()
    scenario = f"{count:,} hits: f.map vs a loop"
    rows.append(
        row(scenario, "persistmemo, loop of calls", [s / count for s in loop], baseline=True)
    )
    rows.append(
        row(
            scenario,
            "persistmemo, f.map",
            [s / count for s in mapped],
            speedup=statistics.median(loop) / statistics.median(mapped),
        )
    )
    # Workers import the function by name: the memoized form must be the module attribute.
    items, seconds = settings.spin_items, settings.spin_seconds
    timings: dict[str, measure.Samples] = {"serial": [], "workers=2": []}
    for repeat in range(settings.spin_rounds):
        order = (("serial", None), ("workers=2", 2))
        for label, workers in order if repeat % 2 == 0 else order[::-1]:
            spin = memo(store=Store(tmp / f"spin-{label}-{repeat}"), name="bench.spin")(
                systems.spin
            )
            spin.__qualname__ = spin.__name__ = "spin_memoized"
            systems.spin_memoized = spin  # type: ignore[attr-defined]
            started = time.perf_counter()
            spin.map([seconds + i * 1e-9 for i in range(items)], workers=workers)
            timings[label].append(time.perf_counter() - started)
    scenario = f"{items} misses of {seconds} s CPU: f.map serial vs workers=2"
    serial, parallel = timings.values()
    rows.append(row(scenario, "persistmemo, f.map serial", serial, baseline=True))
    rows.append(
        row(
            scenario,
            "persistmemo, f.map workers=2",
            parallel,
            speedup=statistics.median(serial) / statistics.median(parallel),
        )
    )
    return rows


SCENARIOS: dict[str, Callable[[Path, Settings], list[Row]]] = {
    "warm": warm_hits,
    "misses": misses,
    "claimed": claimed_misses,
    "cold": cold_process,
    "sizes": store_sizes,
    "large": large_values,
    "concurrent": concurrent,
    "disk": disk_usage,
    "keys": large_keys,
    "data": data_workloads,
    "redis": redis_stores,
    "features": feature_costs,
    "map": many_inputs,
}

# Names for --only that stand for several scenarios: the rows an issue's targets need.
GROUPS = {
    "issue10": ["large", "data"],
    "issue11": ["warm", "claimed", "cold", "disk"],
    "issue22": ["warm", "claimed", "cold", "disk", "keys", "map"],
}

# What each scenario imports beyond the core (checked before anything runs). Redis is
# optional: without redis-py or redis-server its scenario is skipped with a message.
NEEDS = {
    "warm": ["joblib", "cachier"],
    "misses": ["joblib", "cachier"],
    "cold": ["joblib"],
    "large": ["numpy"],
    "disk": ["joblib", "cachier"],
    "keys": ["numpy", "joblib"],
    "data": ["numpy", "pandas", "pyarrow", "joblib"],
}
REPORT_NEEDS = ["matplotlib"]


def selected(only: str | list[str] | None) -> list[str]:
    """The scenarios ``--only`` names (comma- or space-separated, groups expanded), in run
    order; all of them for None."""
    if not only:
        return list(SCENARIOS)
    words = [only] if isinstance(only, str) else only
    names = [name.strip() for word in words for name in word.split(",") if name.strip()]
    wanted: set[str] = set()
    for name in names:
        if name in GROUPS:
            wanted.update(GROUPS[name])
        elif name in SCENARIOS:
            wanted.add(name)
        else:
            choices = ", ".join([*SCENARIOS, *GROUPS])
            raise ValueError(f"--only: unknown scenario {name!r}; choose from {choices}")
    return [name for name in SCENARIOS if name in wanted]


def missing_packages(names: list[str]) -> None:
    """Refuse to start (ValueError) when a package the scenarios ``names`` import is not
    installed: a run would otherwise fail in the middle."""
    needed = {package: name for name in names for package in NEEDS.get(name, [])}
    needed.update(dict.fromkeys(REPORT_NEEDS, "the chart"))
    missing = [
        f"{package} ({used})"
        for package, used in needed.items()
        if importlib.util.find_spec(package) is None
    ]
    if missing:
        raise ValueError(
            f"not installed: {', '.join(missing)}; install the benchmark's packages with "
            "pip install -e '.[bench,redis]'"
        )


def machine() -> dict[str, Any]:
    """What the figures depend on: the machine, its load, the versions and the commit."""
    from importlib.metadata import PackageNotFoundError, version

    packages = [
        "persistmemo", "diskcache", "msgpack", "blake3", "cryptography", "platformdirs",
        "numpy", "pandas", "pyarrow", "joblib", "cachier", "redis",
    ]  # fmt: skip
    versions = {}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    redis_server = shutil.which("redis-server")
    if redis_server:
        told = subprocess.run([redis_server, "--version"], capture_output=True, text=True).stdout
        versions["redis-server"] = next(
            (word[2:] for word in told.split() if word.startswith("v=")), "?"
        )
    return {
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "load": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "sqlite": sqlite3.sqlite_version,
        "packages": versions,
        **_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _commit() -> dict[str, Any]:
    """The commit measured, and whether the tree differed from it (results files aside)."""

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", *arguments], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--", ".", ":(exclude)benchmarks/results")
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown (not a git checkout)", "dirty": None}
    return {"commit": commit, "dirty": bool(changed)}


def default_out(quick: bool, names: list[str], merge: bool) -> Path:
    """Where a run writes unless told: only a full run of every scenario (or ``--merge``
    into them) writes the published results; a quick run writes to results/quick/, a full
    run of some scenarios to results/partial/ (both ignored by git)."""
    if quick:
        return RESULTS / "quick"
    if merge or names == list(SCENARIOS):
        return RESULTS
    return RESULTS / "partial"


class ScenariosFailed(RuntimeError):
    """Some scenarios raised; the results of the others are written all the same."""


def run(
    mode: str,
    only: str | list[str] | None = None,
    out: Path | None = None,
    merge: bool = False,
) -> dict[str, Any]:
    """Run the scenarios (all, or ``only`` those) and write the table, chart and JSON after
    each one; with ``merge``, the rows of the scenarios run replace theirs in the JSON
    already at ``out``. A scenario that raises is reported and the others still run; then
    ScenariosFailed is raised, after the results of the others are written."""
    settings = Settings(mode)
    names = selected(only)
    missing_packages(names)
    out = out if out is not None else default_out(settings.quick, names, merge)
    earlier = earlier_run(out / "latest.json", settings.quick) if merge else None
    header = machine()  # before any result is written: the tree's state as measured
    rows: list[Row] = []
    failed: dict[str, str] = {}
    results: dict[str, Any] = {}
    print(f"writing to {out}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="persistmemo-bench-") as tmp:
        for index, name in enumerate(names):
            started = time.monotonic()
            print(f"{name} ...", end=" ", flush=True, file=sys.stderr)
            try:
                rows += [{**found, "part": name} for found in SCENARIOS[name](Path(tmp), settings)]
            except Exception as error:
                failed[name] = f"{type(error).__name__}: {error}"
                print("failed", file=sys.stderr)
                traceback.print_exc()
            else:
                print(f"{time.monotonic() - started:.1f} s", file=sys.stderr)
            done = names[: index + 1]
            results = {
                "machine": {**header, "load_end": _load()},
                "quick": settings.quick,
                "rows": rows,
                "ran": [part for part in done if part not in failed],
                "failed": failed,
                "pending": names[index + 1 :],
            }
            if earlier is not None:
                results = merged(earlier, results, [part for part in done if part not in failed])
            write(results, out)
    if failed:
        raise ScenariosFailed(
            "scenarios failed (the others' results are written to "
            f"{out}): " + "; ".join(f"{name}: {error}" for name, error in failed.items())
        )
    return results


def _load() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def write(results: dict[str, Any], out: Path) -> None:
    """The JSON, the Markdown table and the chart, each replaced whole (a temporary file
    renamed over it): a crash while writing leaves the previous ones."""
    out.mkdir(parents=True, exist_ok=True)
    for filename, text in (
        ("latest.json", json.dumps(results, indent=1)),
        ("latest.md", report.markdown(results)),
    ):
        temporary = out / f"{filename}.tmp"
        temporary.write_text(text)
        temporary.replace(out / filename)
    temporary = out / "latest.png.tmp"
    if report.chart(results, temporary):
        temporary.replace(out / "latest.png")


def earlier_run(path: Path, quick: bool) -> dict[str, Any] | None:
    """The results at ``path`` to merge into, checked before anything runs."""
    if not path.exists():
        return None
    earlier: dict[str, Any] = json.loads(path.read_text())
    if earlier["quick"] != quick:
        raise ValueError(
            f"--merge: {path} holds a {'quick' if earlier['quick'] else 'full'} run; "
            "rerun with the same sizes (--quick or not) or write elsewhere with --out"
        )
    return earlier


def merged(earlier: dict[str, Any], results: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``results`` (of the scenarios ``names``) in place of those scenarios' rows in an
    earlier run. Every ratio stays within one run: a scenario's rows, its baselines among
    them, all come from one run or all from the other."""
    fresh = {found["scenario"] for found in results["rows"]}
    kept = [
        found
        for found in earlier["rows"]
        if found.get("part") not in names and found["scenario"] not in fresh
    ]
    order = {name: index for index, name in enumerate(SCENARIOS)}
    rows = sorted(kept + results["rows"], key=lambda found: order.get(found.get("part"), -1))
    dates = dict(earlier.get("dates") or {"earlier run": earlier["machine"]["date"]})
    dates.update(dict.fromkeys(names, results["machine"]["date"]))
    return {**results, "rows": rows, "dates": dates}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split(". ")[0].replace("\n", " "))
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, about a minute; writes results/quick/"
    )
    parser.add_argument(
        "--only",
        nargs="*",
        help="run only these scenarios, comma-separated: "
        + ", ".join(SCENARIOS)
        + "; or a group: "
        + "; ".join(f"{group} = {','.join(names)}" for group, names in GROUPS.items()),
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write results (default: results/ for a full run of every scenario, "
        "results/quick/ for --quick, results/partial/ for --only)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only the rerun scenarios' rows in the results already in --out "
        "(without it, --only writes a report of those scenarios alone)",
    )
    args = parser.parse_args(argv)
    try:
        only = selected(args.only)
        results = run("quick" if args.quick else "full", only, args.out, merge=args.merge)
    except ValueError as error:
        parser.error(str(error))
    except ScenariosFailed as error:
        sys.exit(str(error))
    print(report.markdown(results))


if __name__ == "__main__":
    main()
