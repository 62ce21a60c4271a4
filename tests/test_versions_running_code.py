"""The version describes the code the process runs, even when its file was edited since import."""

from __future__ import annotations

from pathlib import Path

from conftest import run_python

PRICING = """
from persistmemo import memo

RATE = 1

@memo
def price(n):
    return n * {factor} * RATE
"""


def test_a_call_after_the_file_was_edited_is_stored_under_the_running_codes_version(
    tmp_path: Path,
) -> None:
    env = {"PERSISTMEMO_DIR": str(tmp_path / "store")}
    (tmp_path / "pricing.py").write_text(PRICING.format(factor=10))
    # The process imports the old code, the file is edited under it, then the first call.
    old_process = run_python(
        f"""
        import pathlib, pricing
        pathlib.Path("pricing.py").write_text({PRICING.format(factor=20)!r})
        print(pricing.price(3), pricing.price.version())
        """,
        cwd=tmp_path,
        env=env,
    ).stdout.split()
    assert old_process[0] == "30"  # the old code ran
    new_process = run_python(
        "import pricing; print(pricing.price(3), pricing.price.version())", cwd=tmp_path, env=env
    ).stdout.split()
    assert new_process[0] == "60"  # not the old code's 30
    assert new_process[1] != old_process[1]


def test_editing_another_function_of_the_file_after_import_keeps_the_source_version(
    tmp_path: Path,
) -> None:
    source = PRICING.format(factor=10) + "\ndef other():\n    return {}\n"
    (tmp_path / "pricing.py").write_text(source.format(1))
    edited = source.format(2)
    versions = run_python(
        f"""
        import pathlib, pricing
        from persistmemo._versioning.versions import explain_version
        pathlib.Path("pricing.py").write_text({edited!r})
        print(pricing.price.version(), explain_version(pricing.price)["function"]["basis"])
        """,
        cwd=tmp_path,
    ).stdout.split()
    fresh = run_python("import pricing; print(pricing.price.version())", cwd=tmp_path)
    assert versions == [fresh.stdout.strip(), "source"]
