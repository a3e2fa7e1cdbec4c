r"""TF Serving REST client for an exported SDL model (no TensorFlow needed on the client).

The library of `python -m sdl_tf.serving_client` (`ServingClient`, request building, replies).

Requests follow TF Serving's REST predict API
(`POST /v1/models/<name>[/versions/<v>]:predict`):

* `serving_default` and `matrices` use the row format,
  `{"signature_name": ..., "instances": [{"image_bytes": {"b64": "..."}}, ...]}`; the reply is
  `{"predictions": [{"scores": [...], "top_k_labels": [...], ...}, ...]}`, one object per image.
* `score_labels` uses the columnar format, because the row format needs every input to share
  the batch dimension and `label_vectors` [L, d] does not:
  `{"signature_name": "score_labels", "inputs": {"image_bytes": [{"b64": ...}, ...],
  "label_vectors": [[...], ...]}}`; the reply is `{"outputs": {"scores": [[...]], ...}}`.
* Errors come back as `{"error": "..."}` with an HTTP 4xx/5xx status (raised as ServingError).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import urllib.error
import urllib.request

import numpy as np

from sdl_tf import errors
from sdl_tf.config_flags import field

SERVING_DEFAULT = "serving_default"
SCORE_LABELS = "score_labels"
MATRICES = "matrices"


class ServingError(errors.SDLError):
    """A failed request: HTTP error, server-reported error or malformed reply."""


def b64(data: bytes) -> dict:
    """TF Serving's JSON encoding of binary input (inputs whose name ends in `_bytes`)."""
    return {"b64": base64.b64encode(data).decode("ascii")}


def model_url(server: str, model_name: str, version: int | None = None) -> str:
    url = f"{server.rstrip('/')}/v1/models/{model_name}"
    return url if version is None else f"{url}/versions/{int(version)}"


def predict_url(server: str, model_name: str, version: int | None = None) -> str:
    return model_url(server, model_name, version) + ":predict"


def build_predict_request(images, signature_name: str = SERVING_DEFAULT) -> dict:
    """Row-format request for the single-input signatures (`serving_default`, `matrices`).

    Args:
      images: N encoded JPEG/PNG images (bytes).
      signature_name: signature to run.
    """
    return {"signature_name": signature_name,
            "instances": [{"image_bytes": b64(bytes(d))} for d in images]}


def build_score_labels_request(images, label_vectors) -> dict:
    """Columnar request for `score_labels`: N images and an [L, d] array of label vectors."""
    vectors = np.asarray(label_vectors, np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"label_vectors must be (L, d), got shape {vectors.shape}")
    return {"signature_name": SCORE_LABELS,
            "inputs": {"image_bytes": [b64(bytes(d)) for d in images],
                       "label_vectors": vectors.tolist()}}


def parse_predict_response(body, output_name: str | None = None) -> dict[str, np.ndarray]:
    """Parses a predict reply into {output name: array with the batch dimension first}.

    Args:
      body: the decoded JSON reply (dict), or its text.
      output_name: name to use when a row-format reply holds bare values, which TF Serving
        sends for a signature with a single output.

    Raises:
      ServingError: the reply holds an "error" or neither "predictions" nor "outputs".
    """
    if isinstance(body, str | bytes):
        try:
            body = json.loads(body)
        except ValueError as e:
            raise ServingError(f"reply is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ServingError(f"reply must be a JSON object, got {type(body).__name__}")
    if "error" in body:
        raise ServingError(f"server error: {body['error']}")
    if "outputs" in body:
        outputs = body["outputs"]
        if not isinstance(outputs, dict):
            outputs = {output_name or "output": outputs}
        return {k: np.asarray(v) for k, v in outputs.items()}
    if "predictions" not in body:
        raise ServingError(f"reply has neither 'predictions' nor 'outputs': {list(body)}")
    rows = body["predictions"]
    if not rows:
        return {}
    if isinstance(rows[0], dict):
        return {k: np.asarray([row[k] for row in rows]) for k in rows[0]}
    return {output_name or "output": np.asarray(rows)}


class ServingClient:
    """Calls a TF Serving REST endpoint serving an SDL export.

    Args:
      server: base URL, e.g. "http://localhost:8501".
      model_name: TF Serving model name (`--model_name` / models.config `name`).
      version: a fixed version, or None for the latest the server has loaded.
      timeout: seconds per HTTP request.
    """

    def __init__(self, server: str = "http://localhost:8501", model_name: str = "sdl",
                 version: int | None = None, timeout: float = 30.0):
        self.server, self.model_name, self.version, self.timeout = (
            server, model_name, version, timeout)

    def _request(self, url: str, payload: dict | None = None) -> dict:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                text = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except (ValueError, AttributeError):
                pass
            raise ServingError(f"HTTP {e.code} from {url}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ServingError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None
        try:
            return json.loads(text)
        except ValueError as e:
            raise ServingError(f"reply from {url} is not JSON: {e}") from None

    def status(self) -> dict:
        """GET /v1/models/<name>[/versions/<v>]: the model version status."""
        return self._request(model_url(self.server, self.model_name, self.version))

    def predict_raw(self, payload: dict) -> dict:
        return self._request(predict_url(self.server, self.model_name, self.version), payload)

    def predict(self, images, signature_name: str = SERVING_DEFAULT) -> dict[str, np.ndarray]:
        """Runs a single-input signature on encoded images; returns its outputs as arrays."""
        if not images:
            return {}
        reply = self.predict_raw(build_predict_request(images, signature_name))
        return parse_predict_response(reply)

    def tag(self, images) -> list[dict]:
        """Top-K tags per image via `serving_default`.

        Returns:
          per image {"ok", "error", "tags": [{"name", "score", "unseen", "row"}, ...]}.
        """
        out = self.predict(images, SERVING_DEFAULT)
        results = []
        for i in range(len(images)):
            tags = [] if not out["ok"][i] else [
                {"name": str(n), "score": float(s), "unseen": bool(u), "row": int(r)}
                for n, s, u, r in zip(out["top_k_labels"][i], out["top_k_scores"][i],
                                      out["top_k_unseen"][i], out["top_k_rows"][i], strict=True)
            ]
            results.append({"ok": bool(out["ok"][i]), "error": str(out["error"][i]),
                            "tags": tags})
        return results

    def score_labels(self, images, label_vectors) -> dict[str, np.ndarray]:
        """Scores [N, L] (and top_rows, ok, error) of arbitrary label vectors [L, d]."""
        reply = self.predict_raw(build_score_labels_request(images, label_vectors))
        return parse_predict_response(reply)

    def matrices(self, images) -> np.ndarray:
        """The matrices A [N, M, d] (zeros for failed images)."""
        return np.asarray(self.predict(images, MATRICES)["matrices"], np.float32)


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """Configuration of `python -m sdl_tf.serving_client`."""

    images: str = field(help="Image folder or comma-separated files.", required=True)
    server: str = field("http://localhost:8501", "TF Serving REST base URL.")
    model_name: str = field("sdl", "Served model name.")
    version: int | None = field(None, "Model version (default: latest loaded).")
    extra_labels: str | None = field(
        None, "Also score these tags: label-vector file or words (+ --word_vectors).")
    word_vectors: str | None = field(None, "Word-vector file for --extra_labels words.")
    timeout: float = field(30.0, "Seconds per request.")
