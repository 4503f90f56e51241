"""The e2e tests' session fixtures (the tiny assets, built once, and one vLLM CPU server) live
in tests/conftest.py: tests/evalhub and tests/deploy's pod tests use the same server (never two
at a time on a small machine)."""
