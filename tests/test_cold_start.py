"""A script run again and again: what each cold process pays before its first hit."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

PLATFORM_CASES = {
    "xdg set": {"XDG_CACHE_HOME": "/srv/cache", "XDG_CONFIG_HOME": "/srv/config"},
    "xdg unset": {},
    "xdg empty": {"XDG_CACHE_HOME": "", "XDG_CONFIG_HOME": ""},
    "xdg relative": {"XDG_CACHE_HOME": "rel/cache", "XDG_CONFIG_HOME": "rel/config"},
    "home with a trailing slash": {"HOME": "/home/someone/"},
    "home is the root": {"HOME": "/"},
    "home relative": {"HOME": "relative/home"},
}

AGREEMENT = """
import json, platformdirs
from persistmemo.stores import disk_opening
from persistmemo._secret import default_secret_path
ours_cache = disk_opening.user_directory("XDG_CACHE_HOME", ".cache")
ours_secret = disk_opening._secret_path()
print(json.dumps({
    "ours": [ours_cache, None if ours_secret is None else str(ours_secret)],
    "platformdirs": [
        platformdirs.user_cache_dir("persistmemo", appauthor=False),
        str(default_secret_path()),
    ],
    "default": str(disk_opening.default_directory()[0]),
}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the XDG rules are computed on Linux only")
@pytest.mark.parametrize("variables", PLATFORM_CASES.values(), ids=PLATFORM_CASES.keys())
def test_the_default_directories_are_the_ones_platformdirs_names(
    variables: dict[str, str],
) -> None:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("XDG_", "PERSISTMEMO_"))
    }
    environment.update(variables)
    done = subprocess.run(
        [sys.executable, "-c", AGREEMENT], env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    ours, theirs = seen["ours"], seen["platformdirs"]
    for computed, named in zip(ours, theirs, strict=True):
        assert computed is None or computed == named  # None: platformdirs is asked
    assert seen["default"] == theirs[0]
    if variables.get("XDG_CACHE_HOME", "/").startswith("/"):
        assert ours[0] is not None or not variables.get("HOME", "/").startswith("/")


COLD_IMPORTS = """
import sys
from persistmemo import memo

@memo
def square(x):
    return x * x

square(3)
print(" ".join(sorted(sys.modules)))
"""


def test_a_script_on_the_default_store_never_imports_platformdirs(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PERSISTMEMO_")}
    environment.update(
        {
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
        }
    )
    script = tmp_path / "script.py"
    script.write_text(COLD_IMPORTS)
    for _ in range(2):  # the first run creates the store and the key
        done = subprocess.run(
            [sys.executable, str(script)], env=environment, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert "platformdirs" not in done.stdout.split()
    assert (tmp_path / "cache" / "persistmemo" / "cache.db").exists()
    assert (tmp_path / "config" / "persistmemo" / "secret.key").exists()


def _plain(a, b=2, /, c=3, *rest, d, e=5, **more):  # type: ignore[no-untyped-def]
    return a


def _no_defaults(a, b):  # type: ignore[no-untyped-def]
    return a


def _keywords_only(*, x=1, y):  # type: ignore[no-untyped-def]
    return x


def _only_rest(*args, **kwargs):  # type: ignore[no-untyped-def]
    return args


async def _coroutine(a, *, b=1):  # type: ignore[no-untyped-def]
    return a


@pytest.mark.parametrize("func", [_plain, _no_defaults, _keywords_only, _only_rest, _coroutine])
def test_a_plain_function_binds_as_inspect_signature_says_without_importing_it(
    func: object,
) -> None:
    import inspect

    from persistmemo._memo.binding import _KIND_NAMES, _NO_DEFAULT, _plain_parameters
    from persistmemo._memo.call_paths import is_async as inspect_is_async
    from persistmemo._memo.memoized import is_async

    read = _plain_parameters(func)  # type: ignore[arg-type]
    assert read is not None
    names, kinds, defaults = read
    parameters = list(inspect.signature(func).parameters.values())  # type: ignore[arg-type]
    assert names == tuple(p.name for p in parameters)
    assert kinds == tuple(_KIND_NAMES[p.kind.name] for p in parameters)
    assert defaults == tuple(
        _NO_DEFAULT if p.default is inspect.Parameter.empty else p.default for p in parameters
    )
    assert is_async(func) == inspect_is_async(func)  # type: ignore[arg-type]


def test_decorating_a_plain_function_imports_neither_inspect_nor_ast() -> None:
    code = (
        "import sys\nfrom persistmemo import Store, memo\n"
        "import tempfile\nstore = Store(tempfile.mkdtemp())\n"
        "@memo(store=store)\ndef f(x, y=1):\n    return x + y\n"
        "@memo(store=store)\nasync def g(x):\n    return x\n"
        "print('inspect' in sys.modules, 'ast' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_import_persistmemo_loads_the_public_names_on_first_mention() -> None:
    code = (
        "import sys\nimport persistmemo\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('persistmemo.'))\n"
        "from persistmemo import *\n"
        "print(loaded, memo.__module__, Store.__module__, RedisStore.__name__, "
        "sorted(set(persistmemo.__all__) - set(dir(persistmemo))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "['persistmemo._moved']",
        "persistmemo._memo.decorator",
        "persistmemo.stores.disk",
        "RedisStore",
        "[]",
    ]


THREADS = """
import os, sys, threading
started = []
original = threading.Thread.start
def start(self):
    started.append(self.name)
    original(self)
threading.Thread.start = start
from persistmemo import memo

@memo
def square(x):
    return x * x

print(square(3), square.cache_info().hits, started)
"""


def test_an_existing_store_opens_for_a_hit_without_a_thread(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PERSISTMEMO_")}
    environment["PERSISTMEMO_DIR"] = str(tmp_path / "store")
    script = tmp_path / "script.py"
    script.write_text(THREADS)
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script)], env=environment, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.strip())
    assert outputs[0].startswith("9 0 ['persistmemo-open'")  # created by diskcache, in a thread
    assert outputs[1] == "9 1 []"


ONLY_HITS = """
import atexit, sys

# Registered before persistmemo's own exit hook, so it runs after it (last in, first out).
atexit.register(lambda: print("diskcache" in sys.modules))
from persistmemo import Store, memo

@memo(store=Store(sys.argv[1]))
def square(x):
    return x * x

square(3)
square(3)
"""


def test_a_run_that_only_hits_records_its_hits_without_importing_diskcache(
    tmp_path: Path,
) -> None:
    store = str(tmp_path / "store")
    runs = []
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", ONLY_HITS, store], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout.strip())
    # The first run computes (diskcache writes the entry and the count row); the next
    # ones only hit, and add to the count in place.
    assert runs == ["True", "False", "False"]
    from persistmemo import Store

    assert sum(Store(store).recorded_hits().values()) == 1 + 2 + 2


RERUN = """
import atexit, sys

# Registered before persistmemo's exit hook (which writes the hit count), so it runs after it.
atexit.register(lambda: print(" ".join(sorted(sys.modules))))
from persistmemo import {names}

@memo{options}
def square(x):
    return x * x

square(3)
print(square.cache_info().hits)
"""
RERUNS = {
    "default store": RERUN.format(names="memo", options=""),
    "Store(directory)": RERUN.format(names="Store, memo", options="(store=Store(sys.argv[1]))"),
}

# What a script that only hits an existing store has no use for: pathlib (the store keeps
# its directory as a str), OpenSSL through hashlib or hmac (BLAKE2b and the constant-time
# comparison come from the builtin modules), platformdirs (the XDG rules are computed) and
# diskcache (opened for writes only; hit counts are added in place).
NOT_ON_THE_HIT_PATH = ["pathlib", "hmac", "platformdirs", "diskcache", "urllib.parse"]
# Nor what only a miss, a pickle, a listing or an old import path needs (issue 22: each module
# costs a cold start its lookup and loading): the miss's machinery (claims, encoding, the
# lock's context variables), unpickling, the rows' listing, the keys of types past the
# builtins (and blake3), opcode's tables (the light walk knows IMPORT_NAME's number),
# importlib and warnings (until a fault is reported).
NOT_ON_THE_HIT_PATH += [
    "persistmemo._memo.locking",
    "persistmemo._memo.responses",
    "persistmemo._codec.encoding",
    "persistmemo._codec.pickles",
    "persistmemo._codec.class_names",
    "persistmemo.stores.inspection",
    "persistmemo._keys.dispatch",
    "persistmemo._keys.frames",
    "persistmemo._keys.registry",
    "blake3",
    "contextvars",
    "opcode",
    "importlib",
    "warnings",
]
# hashlib's blake2b lives in _blake2, loaded without OpenSSL (~3 ms).
OPENSSL = ["_hashlib", "hashlib"]


@pytest.fixture(scope="module")
def rerun_modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """The modules loaded by the end of each script's third run: one that only hits."""
    home = tmp_path_factory.mktemp("rerun")
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PERSISTMEMO_", "XDG_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    environment["XDG_CACHE_HOME"] = str(home / "cache")
    environment["XDG_CONFIG_HOME"] = str(home / "config")
    scripts = {}
    for name, text in RERUNS.items():
        scripts[name] = home / f"script{len(scripts)}.py"
        scripts[name].write_text(text)
    written = time.monotonic()
    outputs: dict[str, list[list[str]]] = {name: [] for name in scripts}

    def run(name: str) -> None:
        command = [sys.executable, str(scripts[name]), str(home / "store")]
        done = subprocess.run(command, env=environment, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outputs[name].append(done.stdout.split("\n"))

    for name in scripts:
        run(name)  # computes (a script this young is versioned by parsing its source)
    # A script changed less than 2 s before its process started cannot be vouched for by its
    # stat, and the start is known to the whole second of the kernel's boot time: wait until
    # it is a script re-run as users re-run them. (os.utime cannot age it: the stamp reads
    # the ctime too, which only the clock moves.)
    time.sleep(max(0.0, written + 3.1 - time.monotonic()))
    for name in scripts:
        run(name)  # hits; derives the version once more, remembers it, makes the count's row
        run(name)  # only hits: the version is the one remembered, the count added in place
    for name, runs in outputs.items():
        assert [lines[0] for lines in runs] == ["0", "1", "1"], name
    return {name: set(runs[-1][1].split()) for name, runs in outputs.items()}


@pytest.fixture(scope="module")
def interpreter_modules() -> set[str]:
    """The modules a process that imports only the standard modules every store needs has
    loaded by its exit: where its startup or those modules load one (a -W option or
    PYTHONWARNINGS loads warnings, a .pth file may load importlib; threading loads warnings
    on 3.13, sqlite3 on 3.12), the test cannot tell whether persistmemo would."""
    code = (
        "import atexit, sqlite3, sys, threading\n"
        "atexit.register(lambda: print(' '.join(sorted(sys.modules))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.parametrize("script", RERUNS)
@pytest.mark.parametrize("module", NOT_ON_THE_HIT_PATH)
def test_a_rerun_script_that_hits_an_existing_store_does_not_import(
    rerun_modules: dict[str, set[str]],
    interpreter_modules: set[str],
    script: str,
    module: str,
) -> None:
    assert "persistmemo.stores.disk" in rerun_modules[script]  # the listing is the script's
    if module in interpreter_modules:
        pytest.skip(f"this interpreter loads {module} at startup")
    assert module not in rerun_modules[script]


@pytest.mark.parametrize("script", RERUNS)
@pytest.mark.parametrize("module", OPENSSL)
def test_a_rerun_script_that_hits_an_existing_store_does_not_load_openssl(
    rerun_modules: dict[str, set[str]], script: str, module: str
) -> None:
    assert module not in rerun_modules[script]


# The cold-start budget (docs/architecture.md): each costs every re-run milliseconds, and
# typing imports the other two.
NEVER_ON_A_RERUN = ("typing", "re", "enum", "random")  # random: ~3 ms of its own
# Standard modules that load one of them when imported (inspect, dataclasses: re; ast: enum;
# linecache: tokenize, re): a module on the re-run path defers them to where they are needed.
LOADS_THEM = {*NEVER_ON_A_RERUN, "inspect", "dataclasses", "ast", "tokenize", "linecache"}


def imported_at_run_time(path: Path) -> set[str]:
    """The modules a file imports outside functions and outside ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                found.add(node.module or "")
            elif isinstance(node, ast.If):
                test = node.test  # `TYPE_CHECKING` or `typing.TYPE_CHECKING`
                if getattr(test, "id", getattr(test, "attr", None)) != "TYPE_CHECKING":
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, *(h.body for h in node.handlers), node.orelse):
                    visit(block)
                visit(node.finalbody)

    visit(ast.parse(path.read_text()).body)
    return found


def importers_of_the_budget(modules: set[str]) -> dict[str, list[str]]:
    """persistmemo's modules among ``modules`` that import, at their top, what the budget
    leaves out (or what loads it)."""
    import persistmemo

    package = Path(persistmemo.__file__).parent
    importers = {}
    for name in sorted(m for m in modules if m.startswith("persistmemo.")):
        path = package.joinpath(*name.split(".")[1:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        names = {m.partition(".")[0] for m in imported_at_run_time(path)} & LOADS_THEM
        if names:
            importers[name] = sorted(names)
    return importers


@pytest.mark.parametrize("script", RERUNS)
def test_a_rerun_script_loads_neither_typing_nor_re_nor_enum(
    rerun_modules: dict[str, set[str]], script: str
) -> None:
    modules = rerun_modules[script]
    loaded = [name for name in NEVER_ON_A_RERUN if name in modules]
    importers = importers_of_the_budget(modules)
    assert not loaded, f"imported at the top of {importers or 'no module: inside a function'}"


def test_the_store_directory_stays_a_path_for_its_users(tmp_path: Path) -> None:
    from persistmemo import Store, default_directory

    store = Store(str(tmp_path / "a" / ".." / "store"))
    assert store.directory == tmp_path / "store"
    assert isinstance(store.directory, Path)
    assert isinstance(default_directory()[0], Path)


URI_NAMES = ["with space", "per%cent", "what?", "hash#tag", "ünï", "semi;colon&amp", "a%2Fb"]


@pytest.mark.skipif(os.name != "posix", reason="built by hand on POSIX only")
@pytest.mark.parametrize("name", URI_NAMES)
def test_a_database_uri_is_the_one_pathlib_makes(tmp_path: Path, name: str) -> None:
    from persistmemo.stores.entry_reader import file_uri

    database = tmp_path / name / "cache.db"
    assert file_uri(str(database)) == database.as_uri()


@pytest.mark.parametrize("name", URI_NAMES)
def test_a_store_named_with_uri_characters_is_read_read_only(tmp_path: Path, name: str) -> None:
    from persistmemo import Store, memo
    from persistmemo._sealing import Sealer
    from persistmemo.stores.entry_reader import EntryReader

    store = Store(tmp_path / name)

    @memo(store=store)
    def square(x: int) -> int:
        return x * x

    assert square(3) == 9
    reader = EntryReader(str(tmp_path / name), timeout=1.0, mode="ro")
    found = reader.read(square.key(3), 0.0)
    reader.close()
    assert found is not None
    assert Sealer(store.secret).unseal(square.key(3), found[0])
    store.close()


def test_a_reader_that_wrote_the_hit_counts_is_query_only_again(tmp_path: Path) -> None:
    import sqlite3

    from persistmemo import Store, memo
    from persistmemo.stores.entry_reader import EntryReader

    store = Store(tmp_path / "store")

    @memo(store=store)
    def square(x: int) -> int:
        return x * x

    square(3)
    reader = EntryReader(str(tmp_path / "store"), timeout=1.0)
    changed = reader.write_once("UPDATE Cache SET store_time = store_time WHERE raw = 1", ())
    assert changed >= 1
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader._held().cursor.execute("DELETE FROM Cache")
    assert reader.read(square.key(3), 0.0) is not None
    reader.close()
    read_only = EntryReader(str(tmp_path / "store"), timeout=1.0, mode="ro")
    with pytest.raises(sqlite3.OperationalError):
        read_only.write_once("DELETE FROM Cache", ())
    read_only.close()
    store.close()


def test_the_public_protocols_subscript_at_run_time_as_in_annotations() -> None:
    import typing

    from persistmemo import MemoDecorator, Memoized

    def load() -> Memoized[[int], str]: ...  # type: ignore[empty-body]

    hints = typing.get_type_hints(load, localns={"Memoized": Memoized})
    assert hints["return"] == Memoized[[int], str]
    assert MemoDecorator.__doc__


MANY_HITS = """
import sys, time
from persistmemo import Store, memo

store = Store(sys.argv[1], timeout=1)

@memo(store=store)
def one(x):
    return x

@memo(store=store)
def two(x):
    return x

@memo(store=store)
def three(x):
    return x

for function in (one, two, three):
    function(1)
"""


def test_hit_counts_at_exit_wait_for_a_locked_store_once_not_once_per_function(
    tmp_path: Path,
) -> None:
    import sqlite3
    import time

    store = str(tmp_path / "store")
    for _ in range(2):  # computes, then makes the hit-count rows
        done = subprocess.run([sys.executable, "-c", MANY_HITS, store], capture_output=True)
        assert done.returncode == 0, done.stderr
    holder = sqlite3.connect(str(tmp_path / "store" / "cache.db"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", MANY_HITS, store], capture_output=True, text=True
        )
        took = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert done.returncode == 0, done.stderr
    # One timeout (1 s) for the first count, then the store is bypassed: before, each of
    # the three functions waited its timeout, and again through diskcache (about 6 s).
    assert took < 3.5, took
    assert done.stderr.count("PersistmemoWarning") == 1, done.stderr


def test_isinstance_of_memoized_says_whether_a_callable_has_the_controls(tmp_path: Path) -> None:
    from persistmemo import Memoized, Store, memo

    @memo(store=Store(tmp_path / "s"))
    def double(x: int) -> int:
        return 2 * x

    assert isinstance(double, Memoized)
    assert not isinstance(len, Memoized)
    assert not isinstance(double.__wrapped__, Memoized)


FORKED_HITS = """
import os, sys
from persistmemo import Store, memo

@memo(store=Store(sys.argv[1]))
def square(x):
    return x * x

square(3)
for _ in range(10):
    square(3)  # 10 hits, the parent's
child = os.fork()
if child == 0:
    square(3)  # one hit, the child's
    sys.exit(0)  # a normal exit: the child writes its counts too
os.waitpid(child, 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_records_only_its_own_hits(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    done = subprocess.run([sys.executable, "-c", FORKED_HITS, store], capture_output=True)
    assert done.returncode == 0, done.stderr
    from persistmemo import Store

    assert sum(Store(store).recorded_hits().values()) == 11


def test_a_decoration_stamps_none_of_persistmemos_own_files(tmp_path: Path) -> None:
    import persistmemo
    from persistmemo import Store, memo
    from persistmemo._versioning import source_stamps

    @memo(store=Store(tmp_path / "store"))
    def square(x: int) -> int:
        return x * x

    # Its files are the fingerprint's (fingerprints.py), wherever it is installed: an
    # editable install outside site-packages costs a re-run no stat per module of its own.
    package = os.path.dirname(persistmemo.__file__ or "")
    stamped = [path for path in source_stamps._stamped_files if path.startswith(package)]
    assert stamped == []
    assert source_stamps.stamp_of(__file__) is not None  # a user's module is stamped


def test_the_claims_module_loads_blake3_only_for_a_key_that_is_not_a_results() -> None:
    code = (
        "import sys\nfrom persistmemo.stores import claims\n"
        "claims.offset_of('pm3:f:0123456789abcdef:' + 'Ab-_' * 5 + 'xy')\n"
        "print('blake3' in sys.modules)\n"
        "claims.offset_of('pm-version:abc')\n"
        "print('blake3' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
