"""REST client against the exported model, through a loopback test double of TF Serving.

`FakeTFServing` is a TEST DOUBLE of tensorflow_model_server's REST API (which cannot be installed
here): a tiny http.server on 127.0.0.1 that answers
`POST /v1/models/<name>[/versions/<v>]:predict` (row "instances" and columnar "inputs" formats,
`{"b64": ...}` for `_bytes` inputs) and `GET /v1/models/<name>` by running the loaded
SavedModel's signatures, and replies `{"error": ...}` with HTTP 400 when a signature fails,
as TF Serving does. It reproduces the wire format only, not TF Serving's batching or threading.
"""

import base64
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tensorflow as tf

from sdl_tf.serving import client as sc
from sdl_tf.serving.signatures import op_error_message
from tests.helpers.paths import REPO_ROOT
from tests.helpers.serving_models import ATOL, NAMES, export_tiny, make_images

MAX_BODY = 8 << 20
_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?P<predict>:predict)?$"
)


def _decode(value):
    """JSON value -> python/bytes, undoing TF Serving's {"b64": ...} encoding."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _tensor(value, spec):
    if spec.dtype == tf.string:
        return tf.constant(value, tf.string, shape=[len(value)])
    array = np.asarray(value, spec.dtype.as_numpy_dtype)
    if array.size == 0:
        array = array.reshape([0, *spec.shape[1:]])
    return tf.constant(array)


def _jsonable(array: np.ndarray):
    if array.dtype.kind in "SO":
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array).tolist() \
            if array.size else array.tolist()
    return array.tolist()


class FakeTFServing:
    """TEST DOUBLE of TF Serving's REST predict API over one loaded SavedModel (see module doc)."""

    def __init__(self, export_path: str, model_name: str = "sdl", version: int = 1):
        self.module = tf.saved_model.load(export_path)
        self.model_name, self.version = model_name, version
        self.requests = 0
        handler = self._handler_class()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.timeout = 5
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def predict(self, payload: dict) -> dict:
        sig_name = payload.get("signature_name", "serving_default")
        if sig_name not in self.module.signatures:
            raise ValueError(f"Serving signature name: \"{sig_name}\" not found in signature def")
        sig = self.module.signatures[sig_name]
        specs = sig.structured_input_signature[1]
        if "instances" in payload:
            rows = payload["instances"]
            if rows and not isinstance(rows[0], dict):
                rows = [{next(iter(specs)): r} for r in rows]
            columns = {k: [_decode(r[k]) for r in rows] for k in specs}
            outputs = sig(**{k: _tensor(columns[k], specs[k]) for k in specs})
            n = len(rows)
            arrays = {k: v.numpy() for k, v in outputs.items()}
            return {"predictions": [{k: _jsonable(a[i]) if a.ndim > 1 else _jsonable(a[i:i + 1])[0]
                                     for k, a in arrays.items()} for i in range(n)]}
        if "inputs" in payload:
            inputs = {k: _decode(v) for k, v in payload["inputs"].items()}
            missing = set(specs) - set(inputs)
            if missing:
                raise ValueError(f"missing inputs {sorted(missing)}")
            outputs = sig(**{k: _tensor(inputs[k], specs[k]) for k in specs})
            return {"outputs": {k: _jsonable(v.numpy()) for k, v in outputs.items()}}
        raise ValueError("Missing 'inputs' or 'instances' key")

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 30  # seconds per connection: a stalled client cannot hold a thread forever

            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, code, body):
                data = json.dumps(body).encode("utf-8")
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self):
                m = _PATH.match(self.path)
                if not m or m["name"] != server.model_name:
                    return None, (404, {"error": f"Servable not found for request: {self.path}"})
                if m["version"] and int(m["version"]) != server.version:
                    return None, (404, {"error": f"version {m['version']} not found"})
                return m, None

            def do_GET(self):
                m, err = self._route()
                if err:
                    return self._reply(*err)
                self._reply(200, {"model_version_status": [{
                    "version": str(server.version), "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""}}]})

            def do_POST(self):
                server.requests += 1
                m, err = self._route()
                if err or not m["predict"]:
                    return self._reply(*(err or (404, {"error": "unknown path"})))
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    return self._reply(413, {"error": f"request body over {MAX_BODY} bytes"})
                try:
                    payload = json.loads(self.rfile.read(length))
                    self._reply(200, server.predict(payload))
                except tf.errors.OpError as e:
                    self._reply(400, {"error": op_error_message(e)})
                except (ValueError, KeyError, TypeError) as e:
                    self._reply(400, {"error": str(e)})

        return Handler


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("serve"))
    model, ls, path = export_tiny(base)
    with FakeTFServing(path) as server:
        yield server, path, ls


def test_request_format_is_tf_serving_row_format():
    req = sc.build_predict_request([b"\xff\xd8abc", b"\x89PNG"], "matrices")
    text = json.dumps(req)  # JSON-serialisable as is
    back = json.loads(text)
    assert back["signature_name"] == "matrices"
    assert [base64.b64decode(r["image_bytes"]["b64"]) for r in back["instances"]] == [
        b"\xff\xd8abc", b"\x89PNG"]
    col = sc.build_score_labels_request([b"x"], np.eye(2, 3))
    assert col["inputs"]["label_vectors"] == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert sc.predict_url("http://h:8501/", "sdl", 3) == "http://h:8501/v1/models/sdl/versions/3:predict"
    assert sc.predict_url("http://h:8501", "sdl") == "http://h:8501/v1/models/sdl:predict"


def test_parse_response_formats():
    rows = sc.parse_predict_response({"predictions": [{"a": [1, 2], "b": "x"},
                                                      {"a": [3, 4], "b": "y"}]})
    np.testing.assert_array_equal(rows["a"], [[1, 2], [3, 4]])
    assert rows["b"].tolist() == ["x", "y"]
    single = sc.parse_predict_response('{"predictions": [[1.5], [2.5]]}', output_name="s")
    np.testing.assert_array_equal(single["s"], [[1.5], [2.5]])
    col = sc.parse_predict_response({"outputs": {"scores": [[0.1, 0.2]]}})
    assert col["scores"].shape == (1, 2)
    with pytest.raises(sc.ServingError, match="server error: boom"):
        sc.parse_predict_response({"error": "boom"})
    with pytest.raises(sc.ServingError, match="neither"):
        sc.parse_predict_response({"foo": 1})


def test_round_trip_matches_signature(served):
    server, path, ls = served
    client = sc.ServingClient(server.url, "sdl", timeout=60)
    assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
    images = make_images(3, seed=11) + [b"garbage"]
    out = client.predict(images)
    direct = server.module.signatures["serving_default"](image_bytes=tf.constant(images))
    np.testing.assert_allclose(out["scores"], direct["scores"].numpy(), atol=ATOL)
    assert out["scores"].shape == (4, len(NAMES))
    assert out["top_k_labels"][:3].tolist() == direct["top_k_labels"].numpy()[:3].astype(
        str).tolist()
    np.testing.assert_array_equal(out["ok"], [True, True, True, False])
    tags = client.tag(images)
    assert tags[3] == {"ok": False, "error": str(direct["error"].numpy()[3].decode()),
                       "tags": []}
    assert [t["name"] for t in tags[0]["tags"]] == out["top_k_labels"][0].tolist()
    assert all(isinstance(t["unseen"], bool) for t in tags[0]["tags"])

    # Extra tags at request time (columnar request) and matrices for indexing.
    vectors = np.random.default_rng(0).normal(size=(6, ls.dim)).astype(np.float32)
    scored = client.score_labels(images[:2], vectors)
    ref = server.module.signatures["score_labels"](image_bytes=tf.constant(images[:2]),
                                                    label_vectors=tf.constant(vectors))
    np.testing.assert_allclose(scored["scores"], ref["scores"].numpy(), atol=ATOL)
    assert scored["scores"].shape == (2, 6)
    mats = client.matrices(images[:2])
    assert mats.shape == (2, 3, ls.dim)
    # Versioned URL works; a wrong version or model name is a clear ServingError.
    assert sc.ServingClient(server.url, "sdl", version=1).predict(images[:1])["ok"].all()
    with pytest.raises(sc.ServingError, match="HTTP 404.*version 5"):
        sc.ServingClient(server.url, "sdl", version=5).predict(images[:1])
    with pytest.raises(sc.ServingError, match="HTTP 404"):
        sc.ServingClient(server.url, "nope").predict(images[:1])


def test_corrupt_payload_is_an_error_reply_not_a_crash(served):
    server, _, _ = served
    client = sc.ServingClient(server.url, "sdl", timeout=60)
    png = make_images(1, seed=12, fmt="PNG")[0]
    # Valid PNG signature and IEND trailer around zeroed chunk data: passes the structural check,
    # so the decoder itself rejects it and the request fails with a clear message.
    broken = png[:40] + b"\0" * 60 + png[100:]
    with pytest.raises(sc.ServingError, match="HTTP 400.*PNG"):
        client.predict([broken])
    with pytest.raises(sc.ServingError, match="not found in signature def"):
        client.predict(make_images(1), "no_such_signature")
    # The server still answers afterwards, and an empty batch gives empty outputs.
    assert client.predict(make_images(1, seed=13))["ok"].all()
    empty = sc.parse_predict_response(client.predict_raw({"signature_name": "serving_default",
                                                          "inputs": {"image_bytes": []}}))
    assert empty["scores"].shape == (0,) or empty["scores"].shape == (0, len(NAMES))
    assert client.predict([]) == {}


def test_cli_against_fake_server(served, tmp_path):
    server, _, ls = served
    for i, data in enumerate(make_images(2, seed=14)):
        (tmp_path / f"img{i}.jpg").write_bytes(data)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    vec_file = tmp_path / "new_tags.txt"
    rng = np.random.default_rng(1)
    vec_file.write_text("".join(
        f"{name}\t{' '.join(f'{v:.5f}' for v in rng.normal(size=ls.dim))}\n"
        for name in ("zebra", "hot air balloon")))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    res = subprocess.run(
        [sys.executable, "-m", "sdl_tf.serving_client", f"--server={server.url}",
         "--model_name=sdl", f"--images={tmp_path}", f"--extra_labels={vec_file}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert lines[0].startswith("broken: ERROR not a complete JPEG or PNG")
    assert lines[1].startswith("img0: ") and "(row " in lines[1]
    assert lines[2].startswith("  extra: ") and "zebra+" in lines[2]
    assert "hot air balloon+" in lines[2]
