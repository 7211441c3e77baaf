"""Build the archive that carries the project's code to Spark executors.

    python infra/package.py .build/streaming_jobs.zip

The zip holds every `streaming_jobs/**/*.py` with fixed timestamps, so the
same sources always give the same bytes; it is written next to its target and
renamed into place, so a job starting meanwhile never reads half an archive.
`./spark-submit.sh` passes it as --py-files (the Makefile's `pyfiles` target
rebuilds it when a source changed).
"""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("streaming_jobs",)
EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


def sources(root: Path = ROOT) -> list[Path]:
    return sorted(
        path.relative_to(root)
        for package in PACKAGES
        for path in (root / package).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def build(target: Path, root: Path = ROOT) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    files = sources(root)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".zip.tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                entry = zipfile.ZipInfo(path.as_posix(), EPOCH)
                entry.compress_type = zipfile.ZIP_DEFLATED
                entry.external_attr = 0o644 << 16
                archive.writestr(entry, (root / path).read_bytes())
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return len(files)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python infra/package.py <archive.zip>", file=sys.stderr)
        return 2
    count = build(Path(argv[0]).resolve())
    print(f"package: {argv[0]} ({count} modules)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
