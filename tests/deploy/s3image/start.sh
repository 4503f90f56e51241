#!/bin/sh
# weed mini with an identities file made from S3_ACCESS_KEY / S3_SECRET_KEY; S3 on :8333.
set -eu
printf '{"identities":[{"name":"t","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' \
    "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >/tmp/s3.json
exec /opt/weed/bin/weed mini -dir=/data -ip=127.0.0.1 -ip.bind=0.0.0.0 -s3.port=8333 \
    -s3.config=/tmp/s3.json -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0
