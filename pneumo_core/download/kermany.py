"""Fetch and unpack the Kermany pediatric chest X-ray archive (Mendeley Data, CC BY 4.0).

``download_kermany(dest)`` downloads ``ChestXRay2017.zip`` into ``dest`` (resumable), verifies it
(size, zip CRCs, optional SHA-256), writes ``ChestXRay2017.zip.sha256`` and unpacks only the chest
X-ray images into the layout the ``imagefolder`` dataset plugin reads::

    dest/chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/*.jpeg

The archive's URL can be changed with ``url=`` or the ``PNEUMO_KERMANY_URL`` environment variable
(for a mirror or a local copy served over HTTP).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pneumo_core.errors import PneumoError
from pneumo_core.hashing import sha256_file

KERMANY_URL = (
    "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
    "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded"
)
URL_ENV = "PNEUMO_KERMANY_URL"
ARCHIVE_NAME = "ChestXRay2017.zip"
ROOT_NAME = "chest_xray"
SPLITS = ("train", "test", "val")
CLASSES = ("NORMAL", "PNEUMONIA")
IMAGE_SUFFIXES = (".jpeg", ".jpg")
DEFAULT_DEST = Path("data") / "kermany"


class DownloadError(PneumoError, RuntimeError):
    """Downloading, verifying or unpacking the archive failed; the message says what to do."""


@dataclass(frozen=True)
class DownloadResult:
    """What ``download_kermany`` produced.

    ``archive`` is the verified zip, ``sha256`` its hex digest, ``size`` its size in bytes,
    ``dest`` the folder holding ``chest_xray/`` (pass ``dest / "chest_xray"`` to imagefolder) and
    ``counts`` the number of images per split and class, e.g. ``counts["train"]["NORMAL"]``.
    """

    archive: Path
    sha256: str
    size: int
    dest: Path
    counts: dict[str, dict[str, int]]

    @property
    def root(self) -> Path:
        """The folder the imagefolder plugin reads: ``dest/chest_xray``."""
        return self.dest / ROOT_NAME


def resolve_url(url: str | None = None) -> str:
    """``url`` if given, else ``$PNEUMO_KERMANY_URL``, else the official Mendeley URL."""
    if url:
        return url
    return os.environ.get(URL_ENV) or KERMANY_URL


def download_kermany(
    dest: Path,
    *,
    url: str = KERMANY_URL,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
    chunk_size: int = 1 << 20,
) -> DownloadResult:
    """Download, verify and unpack the Kermany chest X-ray archive into ``dest``.

    Steps: skip the download when ``dest/ChestXRay2017.zip`` already exists and verifies;
    otherwise stream into ``dest/ChestXRay2017.zip.part`` (resuming it with an HTTP Range request
    when it exists), check the size against Content-Length / ``expected_size``, test every zip
    member's CRC, compute the SHA-256 (compared with ``expected_sha256`` when given), rename the
    ``.part`` to the final name and write ``ChestXRay2017.zip.sha256``. Then extract only
    ``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/*.jp(e)g`` (no ``__MACOSX`` junk, no OCT
    images, no path escaping ``dest``).

    When the default ``url`` is used, ``$PNEUMO_KERMANY_URL`` overrides it.
    Raises ``DownloadError`` for network, HTTP, verification and unpacking failures.
    """
    if url == KERMANY_URL:
        url = resolve_url(None)
    if expected_sha256 is not None:
        expected_sha256 = expected_sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", expected_sha256):
            raise DownloadError(
                f"expected SHA-256 {expected_sha256!r} is not 64 hex digits; pass the digest as "
                "printed by sha256sum"
            )
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create destination folder {dest}: {exc}") from exc
    archive = dest / ARCHIVE_NAME
    part = dest / (ARCHIVE_NAME + ".part")

    digest: str | None = None
    if archive.exists():
        problem, digest = _verify(archive, expected_size, expected_sha256)
        if problem is not None:
            _say(progress, f"existing {archive} does not verify ({problem}); downloading again")
            archive.unlink()
            digest = None
        else:
            _say(progress, f"{archive} already downloaded and verified; skipping download")

    if digest is None:
        _fetch(url, part, timeout=timeout, progress=progress, chunk_size=chunk_size)
        problem, digest = _verify(part, expected_size, expected_sha256)
        if problem is not None:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"download from {url} is corrupt: {problem}; the partial file was removed, "
                "check the URL (or --sha256) and run the command again"
            )
        os.replace(part, archive)

    _write_text_atomic(archive.with_name(ARCHIVE_NAME + ".sha256"), f"{digest}  {ARCHIVE_NAME}\n")
    counts = _unpack(archive, dest)
    return DownloadResult(archive=archive, sha256=digest, size=archive.stat().st_size,
                          dest=dest, counts=counts)


# --------------------------------------------------------------------------- download

def _fetch(url: str, part: Path, *, timeout: float, progress: bool, chunk_size: int) -> None:
    """Stream ``url`` into ``part``, resuming it when the server honours Range requests."""
    import requests

    attempts = 0
    while True:
        attempts += 1
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            resp = requests.get(url, headers=headers, stream=True, timeout=timeout)
        except requests.Timeout as exc:
            raise DownloadError(
                f"timed out after {timeout:g}s connecting to {url}; check the network and run "
                "the command again (the download resumes)"
            ) from exc
        except requests.RequestException as exc:
            raise DownloadError(f"cannot reach {url}: {_one_line(exc)}; check the URL and network") from exc

        with resp:
            status = resp.status_code
            if status == 416 and offset:
                # Range not satisfiable: the .part may already be complete, or is junk.
                total = _total_from_content_range(resp.headers.get("Content-Range"))
                if total == offset:
                    return
                part.unlink()
                if attempts < 3:
                    continue
            if status == 206 and offset:
                start = _start_from_content_range(resp.headers.get("Content-Range"))
                if start != offset:
                    part.unlink()  # the server resumed somewhere else: start over
                    if attempts < 3:
                        continue
                    raise DownloadError(f"{url} answered a Range request with the wrong range; "
                                        "run the command again")
                total = _total_from_content_range(resp.headers.get("Content-Range"))
                mode = "ab"
            elif status == 200:
                offset = 0  # no resume support (or a fresh download): start from zero
                total = _int_or_none(resp.headers.get("Content-Length"))
                mode = "wb"
            else:
                raise DownloadError(
                    f"download from {url} failed: HTTP {status} {resp.reason or ''}".rstrip()
                    + "; check the URL (or set PNEUMO_KERMANY_URL to a mirror)"
                )
            _stream_to(resp, part, mode, offset, total, url=url, timeout=timeout,
                       progress=progress, chunk_size=chunk_size)
            return


def _stream_to(resp, part: Path, mode: str, offset: int, total: int | None, *, url: str,
               timeout: float, progress: bool, chunk_size: int) -> None:
    import requests
    from tqdm import tqdm

    show = progress and sys.stderr.isatty()
    written = offset
    try:
        with open(part, mode) as fh, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=ARCHIVE_NAME, disable=not show,
                                          leave=False) as bar:
            for chunk in resp.iter_content(chunk_size=chunk_size):
                if chunk:
                    fh.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
    except requests.Timeout as exc:
        raise DownloadError(
            f"timed out after {timeout:g}s reading from {url} at byte {written}; run the command "
            "again to resume"
        ) from exc
    except requests.RequestException as exc:
        raise DownloadError(
            f"connection to {url} broke at byte {written}: {_one_line(exc)}; run the command again "
            "to resume"
        ) from exc
    except OSError as exc:
        raise DownloadError(f"cannot write {part}: {_one_line(exc)}") from exc
    if total is not None and written != total:
        raise DownloadError(
            f"download from {url} stopped at {written} of {total} bytes; run the command again "
            "to resume"
        )


def _start_from_content_range(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)", value or "")
    return int(m.group(1)) if m else None


def _total_from_content_range(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(?:\d+-\d+|\*)/(\d+)", value or "")
    return int(m.group(1)) if m else None


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- verification

def _verify(path: Path, expected_size: int | None,
            expected_sha256: str | None) -> tuple[str | None, str]:
    """Return ``(problem or None, sha256 hex)`` for the archive at ``path``."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        return f"size is {size} bytes, expected {expected_size}", ""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, ...: all mean "corrupt"
        return f"not a readable zip archive ({_one_line(exc)})", ""
    if bad is not None:
        return f"zip member {bad!r} fails its CRC check", ""
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256:
        return f"SHA-256 is {digest}, expected {expected_sha256}", digest
    return None, digest


# --------------------------------------------------------------------------- unpacking

def _member_target(name: str) -> tuple[str, str, str] | None:
    """``(split, class, filename)`` for a wanted archive member, ``None`` for anything else.

    Wanted: ``.../chest_xray/<split>/<class>/<file>.jp(e)g`` outside ``__MACOSX``; never an
    absolute path, a drive letter, a backslash or a ``..`` component (zip-slip).
    """
    if not name or name.endswith("/") or "\\" in name or "\x00" in name:
        return None
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = PurePosixPath(name).parts
    if any(p in ("..", ".") for p in parts) or len(parts) < 4:
        return None
    if any(p == "__MACOSX" for p in parts):
        return None
    root, split, cls, fname = parts[-4:]
    if root.lower() != ROOT_NAME or split.lower() not in SPLITS or cls.upper() not in CLASSES:
        return None
    if fname.startswith(".") or not fname.lower().endswith(IMAGE_SUFFIXES):
        return None
    return split.lower(), cls.upper(), fname


def _unpack(archive: Path, dest: Path) -> dict[str, dict[str, int]]:
    """Extract the wanted images; files already there with the right size are kept."""
    root = (dest / ROOT_NAME).resolve()
    seen: dict[tuple[str, str], set[str]] = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = _member_target(info.filename)
                if target is None:
                    continue
                split, cls, fname = target
                out = (root / split / cls / fname).resolve()
                if out.parent != root / split / cls:  # belt and braces against odd names
                    continue
                names = seen.setdefault((split, cls), set())
                if fname in names:
                    continue  # same image twice (nested copies in some archives)
                names.add(fname)
                if out.is_file() and out.stat().st_size == info.file_size:
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(out.name + ".tmp")
                with zf.open(info) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.replace(tmp, out)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"cannot unpack {archive} into {dest}: {_one_line(exc)}") from exc
    if not seen:
        raise DownloadError(
            f"{archive} holds no {ROOT_NAME}/{{train,test,val}}/{{NORMAL,PNEUMONIA}}/*.jpeg images; "
            "is the URL the Kermany chest X-ray archive?"
        )
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        if any(s == split for s, _ in seen):
            counts[split] = {cls: len(seen.get((split, cls), ())) for cls in CLASSES}
    return counts


# --------------------------------------------------------------------------- helpers

def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr)
