"""packages=: the versions of installed distributions are in the version when asked for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import run_python

MAIN = """
import json
import tinydist

def f(x):
    return json.dumps(tinydist.tiny(x))
"""

PRINT_VERSIONS = """
import json, main
from persistmemo._versioning.versions import code_version, explain_version
print(json.dumps([
    code_version(main.f),
    code_version(main.f, packages=True),
    code_version(main.f, packages=["tinydist"]),
    explain_version(main.f, packages=True)["packages"],
]))
"""


def install_tiny_distribution(site: Path, version: str) -> None:
    """A distribution as pip leaves it: the package, and a dist-info with its version."""
    for old in site.glob("tinydist-*.dist-info"):
        shutil.rmtree(old)
    package = site / "tinydist"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("def tiny(x):\n    return x\n")
    info = site / f"tinydist-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tinydist\nVersion: {version}\n")
    (info / "top_level.txt").write_text("tinydist\n")
    (info / "RECORD").write_text("tinydist/__init__.py,,\n")


def versions(tmp_path: Path, version: str) -> list[object]:
    site = tmp_path / "site-packages"
    install_tiny_distribution(site, version)
    (tmp_path / "main.py").write_text(MAIN)
    env = {"PYTHONPATH": str(site)}
    return list(json.loads(run_python(PRINT_VERSIONS, cwd=tmp_path, env=env).stdout))


def test_a_package_upgrade_changes_the_version_and_a_downgrade_restores_it(
    tmp_path: Path,
) -> None:
    plain, every, named, described = versions(tmp_path, "1.0")
    assert described == {"tinydist": "1.0"}  # json is the standard library: not a package
    upgraded = versions(tmp_path, "1.1")
    assert upgraded[0] == plain  # without packages=, the library is not looked at
    assert upgraded[1] != every
    assert upgraded[2] != named
    assert versions(tmp_path, "1.0") == [plain, every, named, described]


def test_a_named_package_that_is_not_installed_is_part_of_the_version(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("def f(x):\n    return x\n")
    described = run_python(
        "import main; from persistmemo._versioning.versions import explain_version; "
        "print(explain_version(main.f, packages=['no-such-dist'])['packages'])",
        cwd=tmp_path,
    ).stdout.strip()
    assert described == "{'no-such-dist': 'not installed'}"


def test_a_package_imported_inside_the_function_is_found_by_packages_true(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site-packages"
    (tmp_path / "main.py").write_text(
        "def f(x):\n    import tinydist\n    return tinydist.tiny(x)\n"
    )
    code = "import json, main\nfrom persistmemo._versioning.versions import explain_version\n"
    code += "print(json.dumps(explain_version(main.f, packages=True)['packages']))"
    found = []
    for version in ("1.0", "2.0"):
        install_tiny_distribution(site, version)
        env = {"PYTHONPATH": str(site)}
        found.append(json.loads(run_python(code, cwd=tmp_path, env=env).stdout))
    assert found == [{"tinydist": "1.0"}, {"tinydist": "2.0"}]
