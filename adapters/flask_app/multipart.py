"""multipart/form-data parsing with python-multipart instead of werkzeug's parser.

Why: werkzeug compiles a regular expression for each new boundary, and browsers send a fresh
boundary with every upload, and its parsing is slow besides; python-multipart (the parser
Starlette uses) does both an order of magnitude faster, which matters next to a fast forward
(benchmarks/serve.py shows what the API adds to the bare model).

The result is what werkzeug's parser gives: ``request.files`` holds FileStorage objects (spooled
through werkzeug's stream factory), ``request.form`` the text fields, and werkzeug's limits
hold: ``max_form_parts`` and ``max_form_memory_size`` raise 413, and a body neither parser
can read gives an empty form.
"""
from __future__ import annotations

import io
import logging
import typing as t

from flask import Request
from python_multipart.multipart import MultipartParser
from werkzeug.datastructures import FileStorage, Headers
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header

_CHUNK = 64 * 1024
_FALLBACK_MAX = 1024 * 1024  # bodies up to this size are kept for werkzeug's parser
# python-multipart logs a warning for each malformed body; clients could fill the log with them,
# and such a body is answered (or handed to werkzeug) anyway.
logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)


class _Collector:
    """python-multipart callbacks that collect (name, value) pairs for werkzeug's form and files."""

    def __init__(self, parser: FormDataParser, content_length: int | None, boundary: bytes) -> None:
        self.parser, self.content_length = parser, content_length
        self._marker = b"--" + boundary
        self.form: list[tuple[str, str]] = []
        self.files: list[tuple[str, FileStorage]] = []
        self.parts = 0
        self.ended = False
        self._field, self._value = bytearray(), bytearray()
        self._headers: Headers = Headers()
        self._stream: t.IO[bytes] | None = None  # the file part being read, if any

    def callbacks(self) -> dict[str, t.Callable]:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end, "on_end": self.end}

    def part_begin(self) -> None:
        self.parts += 1
        limit = self.parser.max_form_parts
        if limit is not None and self.parts > limit:
            raise RequestEntityTooLarge(f"more than {limit} form parts")
        self._headers = Headers()
        self._name, self._filename, self._stream, self._text = "", None, None, bytearray()
        self._head = bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        # UTF-8 as werkzeug reads headers (so file names keep their accents); bytes that are not
        # UTF-8 (a latin-1 file name from an old client) are read as latin-1, which keeps the part.
        self._headers.add(self._field.decode("latin-1"), _text(self._value))
        self._field, self._value = bytearray(), bytearray()

    def headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get("Content-Disposition"))
        if disposition != "form-data" or "name" not in options:
            raise ValueError("a part without a form-data name")  # werkzeug's parser decides
        self._name = options["name"]
        self._filename = options.get("filename")
        charset = parse_options_header(self._headers.get("Content-Type"))[1].get("charset", "utf-8")
        if self._filename is None and charset.lower().replace("-", "") != "utf8":
            raise ValueError("a text field in another charset than UTF-8")  # werkzeug decodes it
        if self._filename is not None:
            self._stream = self.parser.stream_factory(
                total_content_length=self.content_length, filename=self._filename,
                content_type=self._headers.get("Content-Type"), content_length=None)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if len(self._head) < len(self._marker):
            self._head += data[start:min(end, start + len(self._marker) - len(self._head))]
        if self._stream is not None:
            self._stream.write(data[start:end])
            return
        self._text += data[start:end]
        limit = self.parser.max_form_memory_size
        if limit is not None and len(self._text) > limit:
            raise RequestEntityTooLarge(f"form field {self._name!r} is over {limit} bytes")

    def part_end(self) -> None:
        if self._head == self._marker:
            # A part that starts with the delimiter is how werkzeug's encoder writes an empty part
            # (it leaves out the line break before the next delimiter): werkzeug's parser reads
            # that as two parts, python-multipart as one, so let werkzeug's parser decide.
            raise ValueError("a part starts with the boundary")
        if self._stream is None:
            self.form.append((self._name, self._text.decode("utf-8", "replace")))
            return
        self._stream.seek(0)
        self.files.append((self._name, FileStorage(self._stream, self._filename, self._name,
                                                   headers=self._headers)))

    def end(self) -> None:
        self.ended = True

    def close(self) -> None:
        """Close the file streams collected so far (when the body is handed to werkzeug)."""
        for stream in [f.stream for _, f in self.files] + [self._stream]:
            if stream is not None:
                stream.close()


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class FastFormDataParser(FormDataParser):
    """werkzeug's FormDataParser with multipart bodies parsed by python-multipart.

    A body of up to 1 MB that python-multipart rejects (or reads differently, see
    ``_Collector.part_end``) goes to werkzeug's parser, which is more lenient: werkzeug's own test
    client, for one, leaves out the line break that ends an empty part. For that the body is also
    kept in memory; a larger body that python-multipart rejects gives an empty form."""

    def _parse_multipart(self, stream: t.IO[bytes], mimetype: str, content_length: int | None,
                         options: dict[str, str]):
        boundary = options.get("boundary", "").encode("latin-1")
        if not boundary:
            raise ValueError("missing multipart boundary")
        copy = io.BytesIO() if content_length is not None and content_length <= _FALLBACK_MAX else None
        collector = _Collector(self, content_length, boundary)
        try:
            parser = MultipartParser(boundary, collector.callbacks())
            while chunk := stream.read(_CHUNK):
                if copy is not None:
                    copy.write(chunk)
                parser.write(chunk)
            if not collector.ended:
                raise ValueError("the body ended before its closing boundary")
            return stream, self.cls(collector.form), self.cls(collector.files)
        except ValueError:
            collector.close()
            if copy is None:
                raise
            while chunk := stream.read(_CHUNK):
                copy.write(chunk)
        except BaseException:
            collector.close()
            raise
        copy.seek(0)
        return super()._parse_multipart(copy, mimetype, content_length, options)


class PneumoRequest(Request):
    """Flask's request, with uploads parsed by :class:`FastFormDataParser`."""

    form_data_parser_class = FastFormDataParser
