"""The test bed: real local servers (SeaweedFS, vLLM CPU), tiny assets in real formats, and the
demo built on them (`make demo`: `python -m testbed.demo` from the repo root). Used by tests,
benches and the demo from a source checkout; never in the wheel or an image, and never
imported by the product packages (import-linter)."""
