"""The s5cmd engine on its own: its output parsed without a crash whatever the AWS SDK prints,
its errors typed like boto3's, one quoting rule for every name, and a wildcard copy that
never follows `..` out of its target."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from common.errors import UnsafePathError
from common.s3settings import S3Connection
from common.s5cmd import S5cmdStorage, classify, command_line, error_lines, find_binary
from common.storage import Copy, Deadline
from tests.stub_s3 import stub_s3

CONN = S3Connection(endpoint="http://s3.local:9000")
# What s5cmd 2.3 prints with no credentials on a host where IMDS answers 403: the SDK's
# warning lines (plain text, a date first) mixed with its JSON lines.
NO_CREDENTIALS_OUTPUT = (
    "2026/12/02 01:36:35 WARN: failed to get session token, falling back to IMDSv1: 403 Forbidden\n"
    "\tstatus code: 403, request id: \n"
    "caused by: EC2MetadataError: failed to make EC2Metadata request\n"
    '{"error":"session: fetching region failed: NoCredentialProviders: no valid providers in chain."}\n'
    '{"operation":"ls","command":"ls s3://b/p/*","error":"NoCredentialProviders: no valid providers"}\n'
)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("SignatureDoesNotMatch: The request signature ... status code: 403", "AUTH"),
        ("InvalidAccessKeyId: ... status code: 403, request id: x", "AUTH"),
        ("NoSuchBucket: The specified bucket does not exist status code: 404", "NOT_FOUND"),
        ('RequestError: send request failed caused by: Get "http://h/b": dial tcp: connection refused', "UNREACHABLE"),
        ("InternalError: We encountered an internal error status code: 500", "UNREACHABLE"),
        ("NoCredentialProviders: no valid providers in chain", "CONFIG"),
        ("RequestError: send request failed: context deadline exceeded", "TIMEOUT"),
    ],
)  # fmt: skip
def test_error_texts_map_to_typed_errors(text: str, code: str) -> None:
    assert classify(text, CONN, "b", "listing").code == code


def test_non_json_lines_are_skipped_never_a_crash() -> None:
    assert error_lines(NO_CREDENTIALS_OUTPUT) == [
        "session: fetching region failed: NoCredentialProviders: no valid providers in chain.",
        "NoCredentialProviders: no valid providers",
    ]
    out = 'WARN something\n{"operation":"cp","error":"NoSuchKey: x"}\n{"operation":"cp","success":true}\n'
    assert error_lines(out) == ["NoSuchKey: x"]


@pytest.mark.parametrize(
    "name",
    [
        "plain.txt",
        "we ird*name [1].txt",
        'it\'s "quoted".txt',
        "back\\slash",
        "#hash",
        "$HOME`x`",
        "ünï",
    ],
)
def test_one_quoting_rule_round_trips_every_name(name: str) -> None:
    """s5cmd splits `run` lines with POSIX shell rules (go-shellquote): shlex is that rule."""
    line = command_line("cp", "--raw", f"/tmp/{name}", f"s3://b/k/{name}")
    assert line.endswith("\n") and line.count("\n") == 1
    assert shlex.split(line) == ["cp", "--raw", f"/tmp/{name}", f"s3://b/k/{name}"]


def test_a_line_break_cannot_be_quoted_and_is_refused() -> None:
    with pytest.raises(UnsafePathError, match="line break"):
        command_line("cp", "--raw", "/tmp/a\nb", "s3://b/k")


def test_wildcard_copy_stays_inside_its_target(tmp_path: Path) -> None:
    """s5cmd 2.3 writes `data/../../x` two levels above a wildcard copy's target; a key
    listed after our own check (a race) must not get there."""
    binary = find_binary()
    assert binary is not None
    keys = ["data/ok.txt", "data/a..b.txt", "data/../../escape1.txt", "data/x/../../../escape2.txt"]
    root = tmp_path / "a" / "b" / "partial"
    with stub_s3(keys) as endpoint:
        conn = S3Connection(endpoint=endpoint, access_key="k", secret_key="s")
        storage = S5cmdStorage(binary, conn, "bkt", 4)
        got = list(storage.download_folder("data", root, Deadline(30, "-")))
        assert got == [str(root / "ok.txt")]  # every key holding `..` is left out
        # `a..b.txt` is a legal name: fetched by its own cp --raw
        more = list(storage.download([Copy("data/a..b.txt", root / "a..b.txt")], Deadline(30, "-")))
    assert [c.path.name for c in more] == ["a..b.txt"]
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["a/b/partial/a..b.txt", "a/b/partial/ok.txt"]
