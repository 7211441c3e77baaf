"""The executors' archive (infra/package.py): every module, nothing else, same bytes each time."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

from streaming_jobs.common.settings import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("package", PROJECT_ROOT / "infra" / "package.py")
assert spec is not None and spec.loader is not None
package = importlib.util.module_from_spec(spec)
spec.loader.exec_module(package)


def test_archive_holds_every_module_and_is_reproducible(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "code.zip", tmp_path / "b" / "code.zip"
    count = package.build(first)
    package.build(second)
    assert first.read_bytes() == second.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    expected = sorted(
        p.relative_to(PROJECT_ROOT).as_posix()
        for p in (PROJECT_ROOT / "streaming_jobs").rglob("*.py")
    )
    assert names == expected and count == len(expected)
    assert "streaming_jobs/silver/indicators.py" in names
    assert not [n for n in names if "__pycache__" in n or not n.endswith(".py")]
    assert list(tmp_path.rglob("*.tmp")) == []  # written aside, renamed into place


def test_modules_import_from_the_archive(tmp_path: Path) -> None:
    archive = tmp_path / "code.zip"
    package.build(archive)
    code = "import streaming_jobs.silver.indicators as m; print(m.__file__)"
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(archive)!r}); {code}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(archive))
