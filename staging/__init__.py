"""The connected-machine tools: `airgap-eval stage`, `verify` and `slugs` (never in an image)."""
