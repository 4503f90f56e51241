"""Where things live: the /test_data tree, the results dir, and the safe-path rule."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from common.errors import UnsafePathError

DEFAULT_TEST_DATA = Path("/test_data")
# EvalHub's runtimeenv.GitMetadataFile: one line, the synced commit; its sidecar reads it.
GIT_METADATA = Path("/run/init-metadata/.git-metadata")
DEFAULT_RESULTS = Path("/results")
MANIFEST_NAME = "manifest.json"
# Our own bookkeeping inside a destination tree (sync state, partial downloads, status).
STATE_DIR_NAME = ".airgap-eval"
SYNC_STATUS_NAME = "sync-status.json"  # the sync's StatusRecord, in STATE_DIR_NAME
BUNDLE_MARKER = "dataset_dict.json"
TOKENIZER_DIR_NAME = "tokenizer"
TASKS_DIR_NAME = "tasks"  # custom task YAML folders (stage --include-path DIR -> tasks/<DIR name>)
EVALUATE_DIR_NAME = "evaluate"  # metric modules evaluate.load fetches: evaluate/<name>/<name>.py
NLTK_DIR_NAME = "nltk_data"  # staged nltk data: <test_data>/nltk_data/tokenizers/punkt_tab
STATUS_NAME = "status.json"
DONE_MARKER = "done"
UPLOADED_MARKER = "uploaded"
TERMINATION_LOG = Path("/dev/termination-log")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_relative_key(rel: str) -> None:
    """Check that an object key (relative to its prefix) names a plain path below the prefix.

    Refuses empty names, absolute paths, `..` and `.` components, backslashes and control
    characters: the names an archive or bucket can use to escape a destination.
    """
    if not rel or rel.startswith("/") or "\\" in rel:
        raise UnsafePathError(
            f"object key {rel!r} is not a plain relative path",
            "remove or rename the object in the bucket; keys must be relative paths "
            "without '..', '\\' or a leading '/'",
        )
    if _CONTROL.search(rel):
        raise UnsafePathError(
            f"object key {rel!r} contains control characters",
            "rename the object in the bucket",
        )
    parts = rel.split("/")
    if any(p in ("..", ".") for p in parts) or posixpath.normpath(rel) != rel.rstrip("/"):
        raise UnsafePathError(
            f"object key {rel!r} has '.', '..' or empty components and could resolve "
            "outside the destination",
            "remove or rename the object in the bucket",
        )
