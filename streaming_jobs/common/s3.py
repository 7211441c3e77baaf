"""A minimal S3 client (AWS Signature V4, standard library only) for the lake bucket.

Spark reaches MinIO through S3A; this module is for the few calls made
outside Spark: creating the lake bucket when MinIO starts and listing objects
in tests and status reports. It signs requests with the credentials from
`Settings.s3_credentials()` and path-style URLs, as MinIO expects.

`python -m streaming_jobs.common.s3 ensure-bucket` creates the configured
bucket if it does not exist (used by infra/minio.sh).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

from streaming_jobs.common.settings import S3Credentials, Settings, load_settings

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3Error(RuntimeError):
    pass


class S3Client:
    def __init__(self, endpoint: str, credentials: S3Credentials, region: str = "us-east-1"):
        self.endpoint = endpoint.rstrip("/")
        self.credentials = credentials
        self.region = region

    def _request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        # Keys hold partition values like `window=1 hour`: encode every byte
        # but the unreserved ones and "/", once, for both the URL and the signature.
        path = urllib.parse.quote(path, safe="/~")
        url = urllib.parse.urlsplit(self.endpoint + path)
        now = dt.datetime.now(dt.UTC)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        canonical_query = "&".join(
            f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}"
            for k, v in sorted((query or {}).items())
        )
        headers = {
            "host": url.netloc,
            "x-amz-content-sha256": _EMPTY_SHA256,
            "x-amz-date": amz_date,
        }
        signed = ";".join(sorted(headers))
        canonical = "\n".join(
            [
                method,
                url.path or "/",
                canonical_query,
                "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
                signed,
                _EMPTY_SHA256,
            ]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = ("AWS4" + self.credentials.secret_key).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.credentials.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        full_url = self.endpoint + path + (f"?{canonical_query}" if canonical_query else "")
        # Extra headers (Range) are sent unsigned, which SigV4 allows.
        request = urllib.request.Request(
            full_url, method=method, headers={**headers, **(extra or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except OSError as err:
            raise S3Error(f"S3 endpoint {self.endpoint} unreachable: {err}") from err

    def bucket_exists(self, bucket: str) -> bool:
        status, body = self._request("HEAD", f"/{bucket}")
        if status in (200, 404):
            return status == 200
        raise S3Error(f"HEAD /{bucket} answered {status}: {body[:200]!r}")

    def ensure_bucket(self, bucket: str) -> bool:
        """Create the bucket if missing; True when it was created now."""
        if self.bucket_exists(bucket):
            return False
        status, body = self._request("PUT", f"/{bucket}")
        if status != 200:
            raise S3Error(f"creating bucket {bucket} answered {status}: {body[:300]!r}")
        return True

    def get(self, bucket: str, key: str, tail: int | None = None) -> bytes:
        """The object, or only its last `tail` bytes."""
        extra = {"Range": f"bytes=-{tail}"} if tail else None
        status, body = self._request("GET", f"/{bucket}/{key}", extra=extra)
        if status not in (200, 206):
            raise S3Error(f"GET s3://{bucket}/{key} answered {status}: {body[:300]!r}")
        return body

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under prefix (follows continuation tokens)."""
        return list(self.list_sizes(bucket, prefix))

    def list_sizes(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every object key under prefix with its size in bytes."""
        keys: dict[str, int] = {}
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            status, body = self._request("GET", f"/{bucket}", query)
            if status == 404 and b"NoSuchBucket" in body:
                return keys  # nothing is there yet: the first writer makes the bucket
            if status != 200:
                raise S3Error(f"listing s3://{bucket}/{prefix} answered {status}: {body[:300]!r}")
            root = ET.fromstring(body)
            for item in root.iter(f"{_NS}Contents"):
                keys[item.findtext(f"{_NS}Key") or ""] = int(item.findtext(f"{_NS}Size") or 0)
            token = root.findtext(f"{_NS}NextContinuationToken")
            if not token:
                return keys


def ensure_lake_bucket(settings: Settings) -> bool:
    """Create the lake's bucket if missing (MinIO started before this lake was configured,
    a fresh S3 account); True when it was created now."""
    client = S3Client(settings.s3_endpoint, settings.s3_credentials())
    return client.ensure_bucket(settings.pipeline.storage.s3_bucket)


def main(argv: list[str]) -> int:
    if argv != ["ensure-bucket"]:
        print("usage: python -m streaming_jobs.common.s3 ensure-bucket", file=sys.stderr)
        return 2
    settings = load_settings()
    bucket = settings.pipeline.storage.s3_bucket
    try:
        created = ensure_lake_bucket(settings)
    except S3Error as err:
        print(f"minio: {err}", file=sys.stderr)
        return 1
    print(f"bucket {bucket} {'created' if created else 'exists'} at {settings.s3_endpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
