"""``pneumo data download kermany`` against a small archive served on 127.0.0.1."""
from __future__ import annotations

import argparse
import hashlib
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo_core.cli.data_cmd import add_cli
from pneumo_core.download import DownloadError, download_kermany
from pneumo_core.download.kermany import ARCHIVE_NAME

# split -> class -> number of images in the fake archive
LAYOUT = {"train": {"NORMAL": 3, "PNEUMONIA": 4}, "test": {"NORMAL": 2, "PNEUMONIA": 2},
          "val": {"NORMAL": 1, "PNEUMONIA": 1}}


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _make_archive() -> bytes:
    buf = io.BytesIO()
    seed = 0
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for split, by_class in LAYOUT.items():
            for cls, n in by_class.items():
                for i in range(n):
                    seed += 1
                    ext = "jpg" if i == 0 else "jpeg"
                    zf.writestr(f"chest_xray/{split}/{cls}/img{i}.{ext}", _jpeg(seed))
        # junk the real archives carry, and hostile entries: none may be extracted
        zf.writestr("__MACOSX/chest_xray/train/NORMAL/._img0.jpeg", b"\x00\x05\x16\x07junk")
        zf.writestr("chest_xray/.DS_Store", b"junk")
        zf.writestr("chest_xray/train/NORMAL/.DS_Store", b"junk")
        zf.writestr("OCT2017/train/CNV/CNV-1.jpeg", _jpeg(999))
        zf.writestr("../evil.txt", b"zip-slip")
        zf.writestr("../chest_xray/train/NORMAL/evil.jpeg", b"zip-slip")
        zf.writestr("/tmp/pneumo-evil.jpeg", b"absolute")
    return buf.getvalue()


ARCHIVE = _make_archive()


class _Server:
    """A loopback HTTP server with Range support; ``mode`` picks how it misbehaves."""

    def __init__(self) -> None:
        self.payload = ARCHIVE
        self.mode = "ok"  # ok | corrupt | 404 | norange | slow | drop
        self.requests: list[dict[str, str]] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                server.requests.append(dict(self.headers.items()))
                if server.mode == "404":
                    self.send_error(404, "Not Found")
                    return
                if server.mode == "slow":
                    server.release.wait(10)
                    return
                body = server.payload
                if server.mode == "corrupt":
                    mid = len(body) // 2
                    body = body[:mid] + bytes(b ^ 0xFF for b in body[mid:mid + 64]) + body[mid + 64:]
                rng = self.headers.get("Range")
                if rng and server.mode != "norange":
                    start = int(rng.split("=", 1)[1].split("-", 1)[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                    body = body[start:]
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.mode == "drop":  # promise the whole body, send half, hang up
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ChestXRay2017.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _get(server: _Server, dest: Path, **kw):
    return download_kermany(dest, url=server.url, timeout=5, progress=False, **kw)


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_download_unpacks_layout_counts_and_sha256(server, tmp_path):
    dest = tmp_path / "kermany"
    result = _get(server, dest)

    digest = hashlib.sha256(ARCHIVE).hexdigest()
    assert result.archive == dest / ARCHIVE_NAME and result.archive.read_bytes() == ARCHIVE
    assert result.sha256 == digest and result.size == len(ARCHIVE)
    assert (dest / (ARCHIVE_NAME + ".sha256")).read_text().split() == [digest, ARCHIVE_NAME]
    assert not (dest / (ARCHIVE_NAME + ".part")).exists()
    assert result.counts == LAYOUT
    assert result.root == dest / "chest_xray"

    files = _images(dest / "chest_xray")
    rel = {p.relative_to(dest / "chest_xray").parts[:2] for p in files}
    assert rel == {(s, c) for s in LAYOUT for c in LAYOUT[s]}
    assert len(files) == sum(sum(v.values()) for v in LAYOUT.values())
    assert all(p.suffix in (".jpg", ".jpeg") and not p.name.startswith(".") for p in files)
    # junk and hostile entries stayed out
    assert not (dest / "__MACOSX").exists() and not (dest / "OCT2017").exists()
    assert not (tmp_path / "evil.txt").exists() and not (dest / "evil.txt").exists()
    assert not list(tmp_path.rglob("evil*"))
    assert not Path("/tmp/pneumo-evil.jpeg").exists()
    with Image.open(files[0]) as im:
        assert im.size == (16, 16)
    assert "Range" not in server.requests[0]


def test_resume_sends_range_and_verifies(server, tmp_path):
    dest = tmp_path / "k"
    dest.mkdir()
    half = len(ARCHIVE) // 2
    (dest / (ARCHIVE_NAME + ".part")).write_bytes(ARCHIVE[:half])

    result = _get(server, dest)

    assert server.requests[0].get("Range") == f"bytes={half}-"
    assert result.archive.read_bytes() == ARCHIVE
    assert result.sha256 == hashlib.sha256(ARCHIVE).hexdigest()
    assert result.counts == LAYOUT


def test_dropped_connection_keeps_part_and_next_run_resumes(server, tmp_path):
    server.mode = "drop"
    dest = tmp_path / "k"
    with pytest.raises(DownloadError, match="resume"):
        _get(server, dest, chunk_size=1024)
    part = dest / (ARCHIVE_NAME + ".part")
    kept = part.stat().st_size
    assert 0 < kept <= len(ARCHIVE) // 2 and not (dest / ARCHIVE_NAME).exists()

    server.mode = "ok"
    result = _get(server, dest)
    assert server.requests[-1].get("Range") == f"bytes={kept}-"
    assert result.archive.read_bytes() == ARCHIVE


def test_resume_restarts_when_server_ignores_range(server, tmp_path):
    server.mode = "norange"
    dest = tmp_path / "k"
    dest.mkdir()
    (dest / (ARCHIVE_NAME + ".part")).write_bytes(b"stale bytes from another file")

    result = _get(server, dest)

    assert "Range" in server.requests[0]
    assert result.archive.read_bytes() == ARCHIVE


def test_complete_part_file_is_accepted_on_416(server, tmp_path):
    dest = tmp_path / "k"
    dest.mkdir()
    (dest / (ARCHIVE_NAME + ".part")).write_bytes(ARCHIVE)
    result = _get(server, dest)
    assert result.archive.read_bytes() == ARCHIVE and len(server.requests) == 1


def test_corrupt_download_raises_and_leaves_no_archive(server, tmp_path):
    server.mode = "corrupt"
    dest = tmp_path / "k"
    with pytest.raises(DownloadError, match="corrupt"):
        _get(server, dest)
    assert not (dest / ARCHIVE_NAME).exists()
    assert not (dest / (ARCHIVE_NAME + ".part")).exists()
    assert not (dest / "chest_xray").exists()


def test_wrong_expected_sha256_raises(server, tmp_path):
    dest = tmp_path / "k"
    with pytest.raises(DownloadError, match="SHA-256"):
        _get(server, dest, expected_sha256="0" * 64)
    assert not (dest / ARCHIVE_NAME).exists()


def test_right_expected_sha256_and_size_pass(server, tmp_path):
    result = _get(server, tmp_path / "k", expected_sha256=hashlib.sha256(ARCHIVE).hexdigest().upper(),
                  expected_size=len(ARCHIVE))
    assert result.counts == LAYOUT


def test_http_404_names_url_and_status(server, tmp_path):
    server.mode = "404"
    with pytest.raises(DownloadError) as info:
        _get(server, tmp_path / "k")
    assert server.url in str(info.value) and "404" in str(info.value)
    assert not (tmp_path / "k" / ARCHIVE_NAME).exists()


def test_timeout_raises_download_error(server, tmp_path):
    server.mode = "slow"
    with pytest.raises(DownloadError, match="timed out"):
        download_kermany(tmp_path / "k", url=server.url, timeout=0.3, progress=False)


def test_existing_archive_is_not_fetched_again(server, tmp_path):
    dest = tmp_path / "k"
    first = _get(server, dest)
    n = len(server.requests)
    second = _get(server, dest)
    assert len(server.requests) == n == 1
    assert second == first


def test_existing_corrupt_archive_is_replaced(server, tmp_path):
    dest = tmp_path / "k"
    dest.mkdir()
    (dest / ARCHIVE_NAME).write_bytes(b"not a zip")
    result = _get(server, dest)
    assert len(server.requests) == 1 and result.archive.read_bytes() == ARCHIVE


def test_env_var_overrides_default_url(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMO_KERMANY_URL", server.url)
    result = download_kermany(tmp_path / "k", timeout=5, progress=False)
    assert result.counts == LAYOUT and len(server.requests) == 1


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pneumo")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_pneumo_main_wires_the_command(server, tmp_path, capsys):
    import pneumo_core.cli.main as main

    main.build_parser()
    server.mode = "404"
    code = main.main(["data", "download", "kermany", "--dest", str(tmp_path / "k"), "--url", server.url,
                      "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "404" in err and "Traceback" not in err


def test_cli_success_and_one_line_error(server, tmp_path, capsys):
    assert _cli(["data", "download", "kermany", "--dest", str(tmp_path / "k"), "--url", server.url,
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert hashlib.sha256(ARCHIVE).hexdigest() in out and "train" in out

    server.mode = "404"
    code = _cli(["data", "download", "kermany", "--dest", str(tmp_path / "k2"), "--url", server.url,
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "404" in err and "Traceback" not in err

    code = _cli(["data", "download", "kermany", "--dest", str(tmp_path / "k3"), "--url", server.url,
                 "--sha256", "nothex"])
    assert code == 2 and capsys.readouterr().err.count("\n") == 1
