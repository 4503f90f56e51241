"""A job's exports beyond S3 (EvalHub 1.0's contract): an OCI artifact when the spec has
`exports.oci`, an MLflow run when it has `experiment_name`. Both go through eval-hub-sdk:
the persister behind `DefaultCallbacks.create_oci_artifact` (olot + oras: EvalHub's artifact
type, annotations and tag rule; `OCI_AUTH_CONFIG_PATH`, `OCI_INSECURE`, and in EvalHub's pods
its sidecar proxy on localhost:8080) and the SDK's MLflow save (`MLFLOW_TRACKING_URI`,
`EVALHUB_MLFLOW_BACKEND`).

One place exports: whoever sends the terminal event (docs/sidecar.md) -- our sidecar when it
is deployed (it holds the results, also when the adapter died), else the adapter. Neither
export ever fails the evaluation: a refused push is one [UPLOAD] line, a lost MLflow run one
warning, and the results stay in S3 and on disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import UploadError
from common.layout import MANIFEST_NAME
from common.manifest import Manifest, entries_for

if TYPE_CHECKING:
    from evalhub.adapter import DefaultCallbacks, JobResults, JobSpec
    from evalhub.adapter.models.job import OCIArtifactResult

log = logging.getLogger(__name__)

# The SDK logs a failed push or save at ERROR with a traceback (oras-py once per retry):
# the one line below says it instead.
_PROBE_S = 10.0
_NOISY = ("oras.logger", "evalhub.adapter.callbacks", "evalhub.adapter.mlflow")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in _NOISY]
    before = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        yield
    finally:
        for lg, was in zip(loggers, before, strict=True):
            lg.disabled = was


def callback_settings() -> dict[str, Any]:
    """DefaultCallbacks' OCI and MLflow arguments from the SDK's own settings, as its
    `from_adapter` derives them (for callbacks built without a FrameworkAdapter)."""
    from evalhub.adapter import AdapterSettings
    from evalhub.adapter.config import EvalHubMode
    from evalhub.adapter.oci import DEFAULT_OCI_PROXY_HOST

    settings = AdapterSettings.from_env()
    return {
        "oci_auth_config_path": settings.oci_auth_config_path,
        "oci_insecure": settings.oci_insecure,
        # In EvalHub's pods (EVALHUB_MODE=k8s) its sidecar proxies the registry with the
        # pod's credentials.
        "oci_proxy_host": DEFAULT_OCI_PROXY_HOST if settings.mode == EvalHubMode.K8S else None,
        "mlflow_backend": settings.mlflow_backend,
    }


def _probe(callbacks: DefaultCallbacks, host: str) -> None:
    """Fail fast where oras-py would retry for minutes (five rounds of backoff, 3 to 83 s,
    per request, on any error, a refused token included): the registry's /v2/ answers, and
    a challenge is met with the credentials the persister will load (oras-py's own auth)."""
    import oras.provider

    persister = callbacks.persister
    proxy = persister.oci_proxy_host
    provider = oras.provider.Registry(insecure=persister.oci_insecure or proxy is not None)
    target = proxy or host
    if proxy is None:
        provider.auth.hostname = host
        paths = [str(persister.oci_auth_config_path)] if persister.oci_auth_config_path else None
        provider.auth.load_configs(host, paths)
    response = provider.session.get(f"{provider.prefix}://{target}/v2/", timeout=_PROBE_S)
    if response.status_code in (401, 403):
        _, authorized = provider.auth.authenticate_request(response, {})
        if not authorized:
            raise PermissionError(f"{target} refused the credentials (HTTP {response.status_code})")


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or a volume that refuses hard links
        shutil.copyfile(src, dst)


class Exports:
    def __init__(self, spec: JobSpec, callbacks: DefaultCallbacks) -> None:
        self.spec, self.callbacks = spec, callbacks

    def oci(
        self, files: Mapping[str, Path], manifest: bytes | None = None
    ) -> OCIArtifactResult | None:
        """Push `files` (relative name -> file) plus their manifest.json (sizes and sha256:
        the one S3 holds when given, else built here) as one artifact; None when not asked
        for or refused."""
        oci = self.spec.exports.oci if self.spec.exports else None
        if oci is None:
            return None
        from evalhub.adapter.models.job import OCIArtifactSpec

        coords = oci.coordinates
        where = f"{coords.oci_host}/{coords.oci_repository}"
        with tempfile.TemporaryDirectory(prefix="airgap-oci-") as tmp:
            root = Path(tmp)
            for rel, src in files.items():
                _link_or_copy(src, root / rel)
            if manifest is None:
                built = Manifest(files=entries_for(root, [root / rel for rel in files]))
                manifest = built.model_dump_json(indent=1).encode()
            (root / MANIFEST_NAME).write_bytes(manifest)
            try:
                with _quiet():
                    _probe(self.callbacks, coords.oci_host)
                    result = self.callbacks.create_oci_artifact(
                        OCIArtifactSpec(files_path=root, coordinates=coords.model_copy(deep=True))
                    )
            except Exception as e:
                log.error(
                    UploadError(
                        f"OCI export to {where} refused: {type(e).__name__}: {str(e)[:300]}",
                        "check the registry, the dockerconfigjson at OCI_AUTH_CONFIG_PATH and "
                        "OCI_INSECURE (plain HTTP); the results stay in S3 and on disk",
                    ).one_line()
                )
                return None
        log.info("OCI export: %d file(s) + manifest pushed as %s", len(files), result.reference)
        return result

    def mlflow(self, results: JobResults) -> str | None:
        """The SDK's MLflow save (metrics, parameters, a run named <job>_<index>); the run id,
        or None when no experiment is set or the server is down."""
        if not self.spec.experiment_name:
            return None
        # The SDK's own save, without the callbacks it would report a failed job through:
        # a lost MLflow run never fails the evaluation here.
        from evalhub.adapter.callbacks import _MlflowOps

        ops = _MlflowOps(backend=self.callbacks.mlflow._backend, callbacks=None)
        try:
            with _quiet():
                run_id = ops.save(results, self.spec)
        except Exception as e:
            log.warning(
                "MLflow: run for experiment %r not logged (%s); the evaluation stands, its "
                "results are in S3 and on disk",
                self.spec.experiment_name,
                str(e.__cause__ or e)[:300],
            )
            return None
        log.info("MLflow: experiment %r, run %s", self.spec.experiment_name, run_id)
        return run_id

    def apply(
        self, results: JobResults, files: Mapping[str, Path], manifest: bytes | None = None
    ) -> None:
        """Both exports for a completed job, recorded in the results EvalHub receives."""
        results.oci_artifact = self.oci(files, manifest) or results.oci_artifact
        results.mlflow_run_id = self.mlflow(results) or results.mlflow_run_id
