"""The adapter image: runs lm_eval jobs offline from /test_data (`airgap-eval run`)."""
