"""The init container: sync an S3 prefix into /test_data, fast, verified and resumable."""
