"""The connected-machine tools: `airgap-eval stage`, `verify` and `slugs` (copied into every image,
so `stage` can run with the adapter image's library versions; the run path never imports them)."""
