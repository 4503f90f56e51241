"""The e2e tests' session fixtures (the tiny assets, one vLLM CPU server) live in
tests/conftest.py: tests/evalhub shares them, and two vLLM servers never run at once."""
