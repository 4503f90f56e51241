"""What several images share: S3 settings, the /test_data layout, manifests, status records, logging."""
