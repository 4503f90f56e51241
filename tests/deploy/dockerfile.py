"""Read the Dockerfile and .dockerignore the way the tests need them: stages with their
instructions (continuations joined), and Docker's ignore-file matching."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
LOCK_DIR = REPO / "deploy" / "docker"
# target -> the airgap-eval subcommand its ENTRYPOINT runs
TARGETS = {"initcontainer": "sync", "adapter": "run", "sidecar": "upload"}


@dataclass
class Stage:
    name: str
    parent: str  # the FROM image or stage
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments inside a continuation are dropped by Docker as well
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


def stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    out: dict[str, Stage] = {}
    current: Stage | None = None
    for line in _logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            assert m, f"unreadable FROM line: {line}"
            current = Stage(name=m.group(2) or f"stage{len(out)}", parent=m.group(1))
            out[current.name] = current
        elif current is not None:
            current.instructions.append((keyword, args.strip()))
    return out


def chain(all_stages: dict[str, Stage], target: str) -> list[Stage]:
    """The target and its ancestor stages, base first."""
    out: list[Stage] = []
    name: str | None = target
    while name in all_stages:
        out.insert(0, all_stages[name])
        name = all_stages[name].parent
    return out


def effective(all_stages: dict[str, Stage], target: str, keyword: str) -> str | None:
    """The value of USER/ENTRYPOINT/... in force for the target (the last one set)."""
    found = [a for stage in chain(all_stages, target) for a in stage.all(keyword)]
    return found[-1] if found else None


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return [str(v) for v in value]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):  # `**/x` also matches `x` at the top
                out = out[:-2] + "(?:.*/)?"
                i += 1
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out)


def ignored(rel: str, path: Path = DOCKERIGNORE) -> bool:
    """Docker's rule: the last pattern matching the path, or a parent dir of it, decides."""
    patterns = [
        p.strip()
        for p in path.read_text().splitlines()
        if p.strip() and not p.strip().startswith("#")
    ]
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            result = not negate
    return result


def lock(name: str) -> dict[str, str]:
    """deploy/docker/NAME.lock -> {normalized project name: version}."""
    pins: dict[str, str] = {}
    for line in (LOCK_DIR / f"{name}.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            project, _, version = line.partition("==")
            pins[project] = version
    return pins
