"""airgap-eval: lm-evaluation-harness on disconnected clusters."""

__version__ = "0.1.0"
