"""The test bed: real local servers (SeaweedFS, vLLM CPU), tiny assets in real formats, and the
`airgap-eval demo` built on them. Used by tests, benches and the demo from a source checkout;
never shipped in an image and never imported by the image packages (import-linter)."""
