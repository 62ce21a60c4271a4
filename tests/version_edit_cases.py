"""The corpus of test_version_edits: small programs around a memoized ``f(x)``, and edits.

A program is a few modules written with the prefix ``pfx_`` in their names, replaced by a
prefix unique to each case, so that many cases can share one interpreter. Every file starts
with a ``# note: aa`` line and the memoized function has the docstring ``Doc aa.``: the
generic no-op edits change those. Files are listed deepest first, the main module (the one
defining ``f``) last: the order in which an edited program is reloaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

MAIN = "pfx_main.py"
HEADER = "# note: aa\n"
DOC = '"""Doc aa."""'
MEMO = "from persistmemo import memo\n"


@dataclass(frozen=True)
class Program:
    """Modules (path -> source, deepest first, MAIN last) and the edits that change f(7)."""

    name: str
    files: dict[str, str] = field(repr=False)
    # edit name -> (path, old text, new text)
    changes: dict[str, tuple[str, str, str]] = field(repr=False)
    helper: str = MAIN  # the module the generic no-op edits change besides MAIN


@dataclass(frozen=True)
class Edit:
    """New sources for some of a program's files; ``kind`` is "changes" or "noop"."""

    name: str
    kind: str
    change: Callable[[dict[str, str]], dict[str, str]] = field(repr=False)


@dataclass(frozen=True)
class Case:
    program: Program
    edit: Edit

    @property
    def name(self) -> str:
        return f"{self.program.name}-{self.edit.name}"

    def files(self, prefix: str) -> dict[str, str]:
        """The program's files, named and written with ``prefix``."""
        return _prefixed(self._sources(), prefix)

    def edited(self, prefix: str) -> dict[str, str]:
        """The files the edit rewrites, with their new sources."""
        sources = self._sources()
        changed = {
            path: source
            for path, source in self.edit.change(sources).items()
            if source != sources[path]
        }
        assert changed, f"{self.name} changes no file"
        return _prefixed(changed, prefix)

    def _sources(self) -> dict[str, str]:
        return {path: HEADER + source for path, source in self.program.files.items()}


def _prefixed(files: dict[str, str], prefix: str) -> dict[str, str]:
    return {
        path.replace("pfx_", prefix): text.replace("pfx_", prefix) for path, text in files.items()
    }


def module_name(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# --- edits ------------------------------------------------------------------------------


def _replace(path: str, old: str, new: str) -> Callable[[dict[str, str]], dict[str, str]]:
    def change(files: dict[str, str]) -> dict[str, str]:
        assert files[path].count(old) == 1, f"{old!r} is not once in {path}"
        return {path: files[path].replace(old, new)}

    return change


def _in(role: str, change: Callable[[str], str | None]) -> Callable[[Program], Edit | None]:
    """A no-op edit of MAIN (role "main") or of the program's helper module (MAIN if none)."""

    def make(program: Program) -> Edit | None:
        path = MAIN if role == "main" else program.helper
        if change(HEADER + program.files[path]) is None:
            return None
        return Edit("", "noop", lambda files: {path: change(files[path]) or files[path]})

    return make


def _comment(source: str) -> str:  # same size
    return source.replace("# note: aa", "# note: bb", 1)


def _comment_lines(source: str) -> str:  # every line below moves down
    return source.replace(HEADER, HEADER + "# A comment added, and blank lines.\n\n\n", 1)


def _docstring(source: str) -> str | None:  # same size
    return source.replace(DOC, '"""Doc bb."""', 1) if DOC in source else None


def _blank_line_moved(source: str) -> str | None:  # same size, the lines below move up
    return source.replace("\n\n\n", "\n\n", 1) + "\n" if "\n\n\n" in source else None


def _reindented(source: str) -> str:  # four spaces an indent level to two
    return re.sub(r"^(?: {4})+", lambda found: " " * (len(found.group()) // 2), source, flags=re.M)


def _reindent_all(program: Program) -> Edit | None:
    if all(_reindented(source) == source for source in program.files.values()):
        return None
    return Edit("", "noop", lambda files: {path: _reindented(text) for path, text in files.items()})


NOOP_EDITS: dict[str, Callable[[Program], Edit | None]] = {
    "comment_in_helper": _in("helper", _comment),
    "comment_lines_in_main": _in("main", _comment_lines),
    "docstring_of_f": _in("main", _docstring),
    "blank_line_moved_in_helper": _in("helper", _blank_line_moved),
    "reindent_everything": _reindent_all,
}


def edits_of(program: Program) -> list[Edit]:
    edits = [
        Edit(name, "changes", _replace(*replacement))
        for name, replacement in program.changes.items()
    ]
    for name, make in NOOP_EDITS.items():
        edit = make(program)
        if edit is not None:
            edits.append(Edit(name, "noop", edit.change))
    return edits


# --- programs ---------------------------------------------------------------------------

HELPER = """\
K = 3


def g(x):
    \"\"\"Helper aa.\"\"\"
    return x + K


def k(x):
    return x * 10
"""
HELPER_CHANGES = {
    "constant_in_helper": ("pfx_h.py", "K = 3", "K = 4"),
    "operator_in_helper": ("pfx_h.py", "x + K", "x - K"),
}


def _main(imports: str, body: str, before: str = "", signature: str = "x") -> str:
    head = f"{imports}\n{MEMO}" if imports else MEMO
    return f"{head}{before}\n\n@memo\ndef f({signature}):\n    {DOC}\n{body}"


def _importing_programs() -> list[Program]:
    sub = {"pfx_pkg/__init__.py": "", "pfx_pkg/sub.py": HELPER}
    sub_changes = {
        name: ("pfx_pkg/sub.py", old, new) for name, (_, old, new) in HELPER_CHANGES.items()
    }
    times = {"body_of_f": (MAIN, "* 2", "* 5")}
    shapes = {
        "import_module": ({}, _main("import pfx_h\n", "    return pfx_h.g(x) * 2\n")),
        "from_import": ({}, _main("from pfx_h import g\n", "    return g(x) * 2\n")),
        "import_in_body": ({}, _main("", "    import pfx_h\n\n    return pfx_h.g(x) * 2\n")),
        "from_import_in_body": (
            {},
            _main("", "    from pfx_h import g\n\n    return g(x) * 2\n"),
        ),
        "import_pkg_sub_in_body": (
            sub,
            _main("", "    import pfx_pkg.sub\n\n    return pfx_pkg.sub.g(x) * 2\n"),
        ),
        "from_pkg_sub_import_in_body": (
            sub,
            _main("", "    from pfx_pkg.sub import g\n\n    return g(x) * 2\n"),
        ),
        "import_pkg_sub": (sub, _main("import pfx_pkg.sub\n", "    return pfx_pkg.sub.g(x) * 2\n")),
        "from_pkg_import_sub": (
            sub,
            _main("from pfx_pkg import sub\n", "    return sub.g(x) * 2\n"),
        ),
    }
    programs = []
    for name, (package, main) in shapes.items():
        if package:
            files = {**package, MAIN: main}
            programs.append(Program(name, files, {**sub_changes, **times}, "pfx_pkg/sub.py"))
        else:
            files = {"pfx_h.py": HELPER, MAIN: main}
            programs.append(Program(name, files, {**HELPER_CHANGES, **times}, "pfx_h.py"))
    return programs


CONFIGS = {
    "dataclass": (
        "from dataclasses import dataclass\n\n\n@dataclass(frozen=True)\nclass Config:\n"
        "    scale: int = 3\n\n    def apply(self, x):\n        return x * self.scale + 1\n\n\n"
        "CONFIG = Config()\n",
        "scale",
        {"value": ("scale: int = 3", "scale: int = 4"), "instance": ("Config()", "Config(5)")},
    ),
    "enum_member": (
        "import enum\n\n\nclass Mode(enum.Enum):\n    FAST = 3\n    SLOW = 5\n\n"
        "    def apply(self, x):\n        return x * self.value + 1\n\n\nCONFIG = Mode.FAST\n",
        "value",
        {"value": ("FAST = 3", "FAST = 4"), "instance": ("= Mode.FAST", "= Mode.SLOW")},
    ),
    "namedtuple": (
        "from typing import NamedTuple\n\n\nclass Params(NamedTuple):\n    scale: int = 3\n\n"
        "    def apply(self, x):\n        return x * self.scale + 1\n\n\nCONFIG = Params()\n",
        "scale",
        {"value": ("scale: int = 3", "scale: int = 4"), "instance": ("Params()", "Params(5)")},
    ),
    "plain_instance": (
        "class Scaler:\n    def __init__(self, scale=3):\n        self.scale = scale\n\n"
        "    def apply(self, x):\n        return x * self.scale + 1\n\n\nCONFIG = Scaler()\n",
        "scale",
        {"value": ("scale=3", "scale=4"), "instance": ("Scaler()", "Scaler(5)")},
    ),
}
CONFIG_USES = {
    "global": _main("from pfx_cfg import CONFIG\n", "    return CONFIG.apply(x)\n"),
    "module_attribute": _main("import pfx_cfg\n", "    return pfx_cfg.CONFIG.apply(x)\n"),
    "closure": (
        f"from pfx_cfg import CONFIG\n{MEMO}\n\ndef make(config):\n    @memo\n    def f(x):\n"
        f"        {DOC}\n        return config.apply(x)\n\n    return f\n\n\nf = make(CONFIG)\n"
    ),
    "default": _main(
        "from pfx_cfg import CONFIG\n", "    return config.apply(x)\n", "", "x, config=CONFIG"
    ),
}


def _config_programs() -> list[Program]:
    programs = []
    for kind, (source, attribute, edits) in CONFIGS.items():
        method = (f"x * self.{attribute} + 1", f"x * self.{attribute} + 2")
        changes = {
            "method_body_of_config": ("pfx_cfg.py", *method),
            **{f"{what}_of_config": ("pfx_cfg.py", *edit) for what, edit in edits.items()},
        }
        for use, main in CONFIG_USES.items():
            if kind == "plain_instance" and use in ("closure", "default"):
                continue  # refused as a captured variable or an argument (docs/keys.md)
            files = {"pfx_cfg.py": source, MAIN: main}
            programs.append(Program(f"{kind}_via_{use}", files, changes, "pfx_cfg.py"))
    return programs


def _factory(body: str, made: str, captured: str = "k", imports: str = "") -> str:
    return (
        f"{imports}{MEMO}\n\ndef make({captured}):\n    @memo\n    def f(x):\n        {DOC}\n"
        f"{body}\n    return f\n\n\nf = {made}\n"
    )


def _closure_and_default_programs() -> list[Program]:
    helper = {"pfx_h.py": HELPER}
    return [
        Program(
            "closure_over_a_number",
            {MAIN: _factory("        return x * k + 1\n", "make(3)")},
            {"factory_argument": (MAIN, "make(3)", "make(4)"), "body_of_f": (MAIN, "+ 1", "+ 2")},
        ),
        Program(
            "closure_over_a_helper",
            {
                **helper,
                MAIN: _factory("        return k(x) * 2\n", "make(pfx_h.g)", "k", "import pfx_h\n"),
            },
            {**HELPER_CHANGES, "factory_argument": (MAIN, "make(pfx_h.g)", "make(pfx_h.k)")},
            "pfx_h.py",
        ),
        Program(
            # Functions are not keyed (docs/keys.md): the default is what a helper returns.
            "default_computed_by_a_helper",
            {
                **helper,
                MAIN: _main(
                    "import pfx_h\n", "    return pfx_h.g(x) + base\n", "", "x, base=pfx_h.k(1)"
                ),
            },
            {**HELPER_CHANGES, "default_of_f": (MAIN, "=pfx_h.k(1)", "=pfx_h.k(2)")},
            "pfx_h.py",
        ),
        Program(
            "default_argument_number",
            {MAIN: _main("", "    return x * scale\n", "", "x, scale=3")},
            {"default_of_f": (MAIN, "scale=3", "scale=4")},
        ),
        Program(
            "default_from_a_helper_constant",
            {
                **helper,
                MAIN: _main("import pfx_h\n", "    return x * scale\n", "", "x, scale=pfx_h.K"),
            },
            {"constant_in_helper": ("pfx_h.py", "K = 3", "K = 4")},
            "pfx_h.py",
        ),
    ]


def _constant_programs() -> list[Program]:
    helper_constant = {"pfx_h.py": "SCALE = 3\n"}
    return [
        Program(
            "constant_number",
            {MAIN: _main("", "    return x * SCALE\n", "\nSCALE = 3\n")},
            {"constant": (MAIN, "SCALE = 3", "SCALE = 4")},
        ),
        Program(
            "constant_str",
            {MAIN: _main("", '    return f"{LABEL}-{x}"\n', '\nLABEL = "ab"\n')},
            {"constant": (MAIN, '"ab"', '"cd"')},
        ),
        Program(
            "constant_tuple",
            {MAIN: _main("", "    return sum(w * x for w in WEIGHTS)\n", "\nWEIGHTS = (1, 2)\n")},
            {"constant": (MAIN, "(1, 2)", "(1, 3)")},
        ),
        Program(
            "constant_dict",
            {
                MAIN: _main(
                    "", '    return x * TABLE["a"] + TABLE["b"]\n', '\nTABLE = {"a": 1, "b": 2}\n'
                )
            },
            {
                "constant": (MAIN, '"a": 1', '"a": 5'),
                "key_read": (MAIN, 'TABLE["b"]', 'TABLE["a"]'),
            },
        ),
        Program(
            "constant_derived_from_another",
            {MAIN: _main("", "    return x * SCALE\n", "\nBASE = 3\nSCALE = BASE * 2\n")},
            {"constant": (MAIN, "BASE = 3", "BASE = 4")},
        ),
        Program(
            "constant_of_a_helper_module",
            {**helper_constant, MAIN: _main("import pfx_h\n", "    return x * pfx_h.SCALE\n")},
            {"constant_in_helper": ("pfx_h.py", "SCALE = 3", "SCALE = 4")},
            "pfx_h.py",
        ),
        Program(
            "constant_from_import",
            {**helper_constant, MAIN: _main("from pfx_h import SCALE\n", "    return x * SCALE\n")},
            {"constant_in_helper": ("pfx_h.py", "SCALE = 3", "SCALE = 4")},
            "pfx_h.py",
        ),
    ]


DECORATORS = """\
import functools


def twice(fn):
    @functools.wraps(fn)
    def wrapper(x):
        return fn(x) * 2

    return wrapper


def twice_unwrapped(fn):
    def wrapper(x):
        return fn(x) * 2

    return wrapper


def scaled(factor):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(x):
            return fn(x) * factor

        return wrapper

    return decorate
"""


def _decorated(decorator: str) -> str:
    return (
        f"import pfx_deco\n{MEMO}\n\n@memo\n@pfx_deco.{decorator}\ndef f(x):\n"
        f"    {DOC}\n    return x + 1\n"
    )


def _decorator_programs() -> list[Program]:
    body = {"body_of_f": (MAIN, "x + 1", "x + 2")}
    return [
        Program(
            "decorator_below_memo",
            {"pfx_deco.py": DECORATORS, MAIN: _decorated("twice")},
            {
                **body,
                "decorator_body": (
                    "pfx_deco.py",
                    "fn(x) * 2\n\n    return wrapper\n\n\ndef twice_",
                    "fn(x) * 3\n\n    return wrapper\n\n\ndef twice_",
                ),
            },
            "pfx_deco.py",
        ),
        Program(
            "decorator_without_wraps_below_memo",
            {"pfx_deco.py": DECORATORS, MAIN: _decorated("twice_unwrapped")},
            {
                **body,
                "decorator_body": (
                    "pfx_deco.py",
                    "fn(x) * 2\n\n    return wrapper\n\n\ndef scaled",
                    "fn(x) * 3\n\n    return wrapper\n\n\ndef scaled",
                ),
            },
            "pfx_deco.py",
        ),
        Program(
            "decorator_with_an_argument_below_memo",
            {"pfx_deco.py": DECORATORS, MAIN: _decorated("scaled(10)")},
            {
                **body,
                "decorator_argument": (MAIN, "scaled(10)", "scaled(20)"),
                "decorator_body": ("pfx_deco.py", "fn(x) * factor", "fn(x) + factor"),
            },
            "pfx_deco.py",
        ),
    ]


OPS = """\
class Ops:
    BASE = 3

    @staticmethod
    def double(x):
        return x * 2

    @classmethod
    def triple(cls, x):
        return cls.BASE * x


class Calc:
    def run(self, x):
        return self.step(x) + 1

    def step(self, x):
        return x * 3
"""


def _class_programs() -> list[Program]:
    return [
        Program(
            "staticmethod_and_classmethod_helpers",
            {
                "pfx_h.py": OPS,
                MAIN: _main(
                    "from pfx_h import Ops\n", "    return Ops.double(x) + Ops.triple(x)\n"
                ),
            },
            {
                "staticmethod_body": ("pfx_h.py", "x * 2", "x * 4"),
                "classmethod_body": ("pfx_h.py", "cls.BASE * x", "cls.BASE + x"),
                "class_attribute": ("pfx_h.py", "BASE = 3", "BASE = 4"),
            },
            "pfx_h.py",
        ),
        Program(
            "method_calling_a_method",
            {"pfx_h.py": OPS, MAIN: _main("import pfx_h\n", "    return pfx_h.Calc().run(x)\n")},
            {
                "inner_method_body": ("pfx_h.py", "x * 3", "x * 4"),
                "outer_method_body": ("pfx_h.py", ") + 1", ") + 2"),
            },
            "pfx_h.py",
        ),
    ]


MUTATES = '    opts.setdefault("scale", 2)\n    return x * opts["scale"]\n'


def _mutating_programs() -> list[Program]:
    setdefault = ('"scale", 2', '"scale", 5')
    return [
        Program(
            "dict_read_and_mutated_global",
            {MAIN: _main("", MUTATES.replace("opts", "OPTS"), "\nOPTS = {}\n")},
            {
                "setdefault_value": (MAIN, *setdefault),
                "initial_dict": (MAIN, "OPTS = {}", 'OPTS = {"scale": 3}'),
            },
        ),
        Program(
            "dict_read_and_mutated_captured",
            {MAIN: _factory(MUTATES.replace("    ", "        "), "make({})", "opts")},
            {
                "setdefault_value": (MAIN, *setdefault),
                "initial_dict": (MAIN, "make({})", 'make({"scale": 3})'),
            },
        ),
        Program(
            "dict_read_and_mutated_in_a_helper",
            {
                "pfx_h.py": "OPTS = {}\n\n\ndef g(x):\n" + MUTATES.replace("opts", "OPTS"),
                MAIN: _main("import pfx_h\n", "    return pfx_h.g(x)\n"),
            },
            {
                "setdefault_value": ("pfx_h.py", *setdefault),
                "initial_dict": ("pfx_h.py", "OPTS = {}", 'OPTS = {"scale": 3}'),
            },
            "pfx_h.py",
        ),
    ]


def _chain_programs() -> list[Program]:
    third = "K = 3\n\n\ndef b(x):\n    return x * K\n"
    changes = {
        "operator_in_third_module": ("pfx_b.py", "x * K", "x - K"),
        "constant_in_third_module": ("pfx_b.py", "K = 3", "K = 4"),
        "body_of_middle_helper": ("pfx_a.py", ") + 1", ") + 2"),
    }
    shapes = {
        "chain_of_module_attributes": (
            "import pfx_b\n\n\ndef a(x):\n    return pfx_b.b(x) + 1\n",
            _main("import pfx_a\n", "    return pfx_a.a(x)\n"),
        ),
        "chain_of_from_imports": (
            "from pfx_b import b\n\n\ndef a(x):\n    return b(x) + 1\n",
            _main("from pfx_a import a\n", "    return a(x)\n"),
        ),
        "chain_of_imports_in_bodies": (
            "def a(x):\n    from pfx_b import b\n\n    return b(x) + 1\n",
            _main("", "    import pfx_a\n\n    return pfx_a.a(x)\n"),
        ),
    }
    return [
        Program(name, {"pfx_b.py": third, "pfx_a.py": middle, MAIN: main}, changes, "pfx_b.py")
        for name, (middle, main) in shapes.items()
    ]


PROGRAMS = [
    *_importing_programs(),
    *_config_programs(),
    *_closure_and_default_programs(),
    *_constant_programs(),
    *_decorator_programs(),
    *_class_programs(),
    *_mutating_programs(),
    *_chain_programs(),
]
CASES = [Case(program, edit) for program in PROGRAMS for edit in edits_of(program)]
