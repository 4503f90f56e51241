"""The results sidecar: waits for the adapter, uploads results, logs and status to S3, and
sends the job's terminal event, also when the adapter died without reporting."""
