"""S3 error texts (s5cmd's) become the same typed errors as botocore's."""

from __future__ import annotations

import pytest

from common.s3 import s5cmd_error, s5cmd_error_lines
from common.s3settings import S3Connection

CONN = S3Connection(endpoint="http://s3.local:9000")


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
)
def test_s5cmd_error_texts_map_to_typed_errors(text: str, code: str) -> None:
    assert s5cmd_error(text, CONN, "b", "listing").code == code


def test_s5cmd_error_lines_keep_only_json_errors() -> None:
    out = 'WARN something\n{"operation":"cp","error":"NoSuchKey: x"}\n{"operation":"cp","success":true}\n'
    assert s5cmd_error_lines(out) == ["NoSuchKey: x"]
