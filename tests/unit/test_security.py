"""Security checks that need no services: no credentials in the repository,
YAML loaded safely, symbols validated before they reach names and paths."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from streaming_jobs.common.settings import PROJECT_ROOT, check_symbol, load_settings
from streaming_jobs.common.strict import ConfigError

# What a leaked credential looks like. The documented local MinIO default
# (`lakehouse-local-only`, accepted only for a loopback endpoint; see
# Settings.s3_credentials) is the one secret-like literal allowed.
SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN ([A-Z]+ )?PRIVATE KEY-----"),
    "secret assignment": re.compile(
        r"""(?i)\b[a-z_]*(secret|password|passwd|api[_-]?key|token)[a-z_]*\s*[:=]\s*["']"""
        r"""(?!lakehouse-local-only["'])[^"'\s$<>{}()]{12,}["']"""
    ),
    "Binance API key": re.compile(r"(?i)x-mbx-apikey\s*[:=]\s*[A-Za-z0-9]{32,}"),
}
# Shipped real data (captures, archives) is binary or market data, not code.
SKIP_SUFFIXES = {".gz", ".zip", ".png", ".parquet", ".CHECKSUM"}


def repository_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    return [PROJECT_ROOT / name.decode() for name in listed if name]


def leaks(text: str) -> list[str]:
    return [what for what, pattern in SECRET_PATTERNS.items() if pattern.search(text)]


def test_the_scanner_finds_planted_credentials() -> None:
    # Built from pieces, so this file does not itself hold what the scan looks for.
    assert leaks("aws_key = '" + "AKIA" + "ABCDEFGHIJKLMNOP'") == ["AWS access key id"]
    assert leaks("-----BEGIN RSA " + "PRIVATE KEY-----") == ["private key"]
    assert leaks('MINIO_ROOT_PASSWORD = "' + 's3cr3t-and-long-enough"') == ["secret assignment"]
    assert leaks("secret_key: 'lakehouse-local-only'") == []
    assert leaks('password = os.environ["MINIO_ROOT_PASSWORD"]') == []


def test_no_credentials_in_the_repository() -> None:
    found = []
    for path in repository_files():
        if path.suffix in SKIP_SUFFIXES or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        found += [f"{path.relative_to(PROJECT_ROOT)}: {what}" for what in leaks(text)]
    assert not found, found
    assert not any(p.name in (".env", "credentials", ".netrc") for p in repository_files())


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    sources = [p for p in repository_files() if p.suffix == ".py"]
    unsafe = re.compile(r"yaml\.(unsafe_load|load_all|load)\(|Loader=yaml\.(Loader|UnsafeLoader)")
    assert not [p for p in sources if unsafe.search(p.read_text())]
    conf = tmp_path / "conf"
    conf.mkdir()
    for name in ("pipeline.yaml", "symbols.yaml", "portfolio.yaml"):
        (conf / name).write_text((PROJECT_ROOT / "conf" / name).read_text())
    marker = tmp_path / "executed"
    (conf / "portfolio.yaml").write_text(f'!!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match=r"portfolio\.yaml"):
        load_settings(conf, {"STATE_DIR": str(tmp_path / "state")})
    assert not marker.exists()


@pytest.mark.parametrize(
    "symbol",
    ["btcusdt", "BTC/USDT", "../../ETC", "BTC USDT", "BTCUSDT\n", "", "A" * 21, "BTC", "ÉTHUSDT"],
)
def test_a_symbol_that_could_reach_a_path_or_stream_name_is_refused(symbol: str) -> None:
    with pytest.raises(ValueError, match="not a Binance spot symbol"):
        check_symbol(symbol)
