"""The multipart parser behind request.files and request.form (python-multipart, werkzeug fallback)."""
from __future__ import annotations

import hashlib
import io
import os

import pytest
from flask import Flask, jsonify, request

from adapters.flask_app.multipart import PneumoRequest


def _echo():
    files = [{"field": k, "name": f.filename, "type": f.mimetype, "sha": hashlib.sha256(f.read()).hexdigest()}
             for k, f in request.files.items(multi=True)]
    return jsonify(files=files, form=request.form.to_dict(flat=False))


def _app(request_class=None) -> Flask:
    app = Flask(__name__)
    if request_class:
        app.request_class = request_class
    app.config.update(MAX_FORM_PARTS=20, MAX_FORM_MEMORY_SIZE=1000)
    app.post("/echo")(_echo)
    return app


@pytest.fixture(scope="module")
def client():
    return _app(PneumoRequest).test_client()


def body(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary", close: bool = True) -> bytes:
    """A browser-style multipart body: (field, filename or None, content) per part."""
    out = b""
    for field, filename, content in parts:
        disp = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename is not None else "")
        ctype = "Content-Type: application/octet-stream\r\n" if filename is not None else ""
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n{ctype}\r\n".encode() + content + b"\r\n"
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


def post(client, data: bytes, boundary: str = "b0undary"):
    return client.post("/echo", data=data, content_type=f"multipart/form-data; boundary={boundary}")


def test_files_and_fields_arrive_intact(client):
    small, large = os.urandom(3000), os.urandom(2 * 1024 * 1024)  # the large one spools to disk
    boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
    r = post(client, body([("file", "a.png", small), ("file", "b.dcm", large), ("heatmap", None, b"true"),
                           ("note", None, "r\u00e9sum\u00e9".encode())], boundary), boundary)
    assert r.status_code == 200
    assert r.json["files"] == [
        {"field": "file", "name": "a.png", "type": "application/octet-stream", "sha": hashlib.sha256(small).hexdigest()},
        {"field": "file", "name": "b.dcm", "type": "application/octet-stream", "sha": hashlib.sha256(large).hexdigest()}]
    assert r.json["form"] == {"heatmap": ["true"], "note": ["r\u00e9sum\u00e9"]}


def test_content_containing_boundary_like_bytes(client):
    tricky = b"--b0undar\r\n--b0undaryX" + b"\r\n--b0undar" * 100  # near-misses of the delimiter
    r = post(client, body([("file", "t.bin", tricky)]))
    assert r.json["files"][0]["sha"] == hashlib.sha256(tricky).hexdigest()


def test_werkzeug_test_client_bodies_still_parse(client):
    """werkzeug's encoder writes an empty part without its closing line break; werkzeug's parser
    accepts that, so the fallback must too."""
    import io

    r = client.post("/echo", data={"file": [(io.BytesIO(b""), "empty.png"), (io.BytesIO(b"xy"), "b.png")]})
    assert [(f["name"], f["sha"]) for f in r.json["files"]] == [
        ("empty.png", hashlib.sha256(b"").hexdigest()), ("b.png", hashlib.sha256(b"xy").hexdigest())]


@pytest.mark.parametrize("data", [
    body([("file", "a.png", b"abc")], close=False),  # no closing boundary
    b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n",  # cut in the headers
    body([("file", "a.png", b"\x00" * 1_500_000)], close=False),  # too large to hand to werkzeug
    b"\x00\xff" * 500,  # not multipart at all
    b"",
])
def test_unreadable_bodies_give_an_empty_form(client, data):
    r = post(client, data)
    assert r.status_code == 200 and r.json == {"files": [], "form": {}}


def test_missing_boundary_gives_an_empty_form(client):
    r = client.post("/echo", data=body([("file", "a.png", b"abc")]), content_type="multipart/form-data")
    assert r.status_code == 200 and r.json == {"files": [], "form": {}}


def test_too_many_parts_is_413(client):
    r = post(client, body([("f", None, b"x")] * 21))
    assert r.status_code == 413


def test_oversized_text_field_is_413(client):
    r = post(client, body([("note", None, b"x" * 1001)]))
    assert r.status_code == 413


def test_well_formed_bodies_skip_werkzeugs_parser(client, monkeypatch):
    """The fast path is the point of this parser: werkzeug's is only the fallback."""
    import werkzeug.formparser

    def refuse(*args, **kwargs):
        raise AssertionError("werkzeug's multipart parser was used")

    monkeypatch.setattr(werkzeug.formparser, "MultiPartParser", refuse)
    r = post(client, body([("file", "a.png", b"abc"), ("heatmap", None, b"1")]))
    assert r.json["files"][0]["name"] == "a.png" and r.json["form"] == {"heatmap": ["1"]}


def _utf8_body() -> bytes:
    return ("--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r\u00e9sum\u00e9.png\"\r\n"
            "Content-Type: image/png\r\n\r\nabc\r\n--b0undary--\r\n").encode()


@pytest.mark.parametrize("data, boundary", [
    (_utf8_body(), "b0undary"),  # a UTF-8 file name
    (b"--b0undary\r\nX-Other: 1\r\n\r\nabc\r\n--b0undary--\r\n", "b0undary"),  # no Content-Disposition
    (b"--b0undary\r\nContent-Disposition: form-data; filename=\"a.png\"\r\n\r\nabc\r\n--b0undary--\r\n",
     "b0undary"),  # no field name
    (b"--b0undary\r\nContent-Disposition: form-data; name=\"note\"\r\nContent-Type: text/plain; "
     b"charset=iso-8859-1\r\n\r\nr\xe9sum\xe9\r\n--b0undary--\r\n", "b0undary"),  # a latin-1 text field
    (body([("file", "a.png", b"abc")], "x" * 300), "x" * 300),  # a boundary over python-multipart's limit
    (b"preamble\r\n" + body([("file", "a.png", b"abc")]) + b"epilogue", "b0undary"),
])
def test_parses_like_werkzeug(client, data, boundary):
    """Bodies python-multipart reads otherwise, or not at all, get werkzeug's answer."""
    ctype = f"multipart/form-data; boundary={boundary}"
    ours = client.post("/echo", data=data, content_type=ctype)
    ref = _app().test_client().post("/echo", data=data, content_type=ctype)
    assert ours.status_code == ref.status_code == 200
    assert ours.json == ref.json


@pytest.mark.parametrize("size", [1000, 2 * 1024 * 1024])  # under and over the 1 MB werkzeug fallback
def test_a_latin1_file_name_keeps_its_file(size, phantom_png):
    from adapters.flask_app.multipart import FastFormDataParser

    boundary = b"pneumo-boundary"
    payload = phantom_png + b"\0" * max(0, size - len(phantom_png))
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r\xf6ntgen.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + payload + b"\r\n--" + boundary + b"--\r\n")
    parser = FastFormDataParser(max_content_length=64 * 1024 * 1024)
    _, form, files = parser.parse(io.BytesIO(body), "multipart/form-data", len(body), {"boundary": boundary.decode()})
    assert list(files) == ["file"]
    assert files["file"].filename == "röntgen.png" and files["file"].read() == payload
