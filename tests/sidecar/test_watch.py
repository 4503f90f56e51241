"""How the sidecar reads the adapter's state from the results dir (no servers needed)."""

from __future__ import annotations

from sidecar.watch import observe
from tests.sidecar.conftest import FakeAdapter

LIMITS = {"stale_after": 5.0, "start_timeout": 60.0}


def test_running_with_a_fresh_heartbeat_is_waited_for(adapter: FakeAdapter) -> None:
    adapter.status()
    assert observe(adapter.root, waited=100, **LIMITS) is None


def test_terminal_status_is_finished_with_the_done_code(adapter: FakeAdapter) -> None:
    adapter.complete(code=11)
    outcome = observe(adapter.root, waited=1, **LIMITS)
    assert outcome is not None and outcome.kind == "finished"
    assert (
        outcome.exit_code == 11 and outcome.status is not None and outcome.status.state == "failed"
    )


def test_done_without_terminal_status_means_died_with_its_code(adapter: FakeAdapter) -> None:
    adapter.status()
    (adapter.root / "done").write_text("137\n")
    outcome = observe(adapter.root, waited=1, **LIMITS)
    assert outcome is not None and outcome.kind == "died" and outcome.exit_code == 137


def test_stale_heartbeat_means_died(adapter: FakeAdapter) -> None:
    adapter.stale_status(age_s=30)
    outcome = observe(adapter.root, waited=1, **LIMITS)
    assert outcome is not None and outcome.kind == "died"
    assert "no heartbeat" in outcome.reason and "30 s" in outcome.reason


def test_no_status_waits_until_the_start_timeout_or_exit(adapter: FakeAdapter) -> None:
    assert observe(adapter.root, waited=59, **LIMITS) is None
    late = observe(adapter.root, waited=61, **LIMITS)
    assert late is not None and late.kind == "never_started"
    gone = observe(adapter.root, waited=1, exited=True, **LIMITS)
    assert gone is not None and gone.kind == "never_started" and "before it exited" in gone.reason
