"""multipart/form-data parsing with python-multipart instead of werkzeug's parser.

Why: werkzeug compiles a regular expression for each new boundary, and browsers send a fresh
boundary with every upload. That costs about 0.3 ms per request, and a further 0.2 ms goes to
parsing; python-multipart (the parser Starlette uses) does both in about 0.02 ms. Next to a bf16
forward of 8 ms, that half millisecond was a fifth of what the API added to the bare model.

The result is what werkzeug's parser gives: ``request.files`` holds FileStorage objects (spooled
through werkzeug's stream factory), ``request.form`` the text fields, and werkzeug's limits
hold: ``max_form_parts`` and ``max_form_memory_size`` raise 413, and a body neither parser
can read gives an empty form.
"""
from __future__ import annotations

import typing as t

from flask import Request
from python_multipart.multipart import MultipartParser
from werkzeug.datastructures import FileStorage, Headers
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header

_CHUNK = 64 * 1024


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
        self._headers.add(self._field.decode("latin-1"), self._value.decode("latin-1"))
        self._field, self._value = bytearray(), bytearray()

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("Content-Disposition"))
        self._name = options.get("name", "")
        self._filename = options.get("filename")
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


class FastFormDataParser(FormDataParser):
    """werkzeug's FormDataParser with multipart bodies parsed by python-multipart.

    A body python-multipart rejects goes to werkzeug's parser, which is more lenient (werkzeug's
    own test client, for one, omits the line break that ends an empty part), so any body that
    werkzeug accepts is still accepted. The body is kept for that in a stream from the same
    factory as the files (memory when small, a temporary file when large)."""

    def _parse_multipart(self, stream: t.IO[bytes], mimetype: str, content_length: int | None,
                         options: dict[str, str]):
        boundary = options.get("boundary", "").encode("latin-1")
        if not boundary:
            raise ValueError("missing multipart boundary")
        copy = self.stream_factory(total_content_length=content_length, content_type=mimetype,
                                   filename=None, content_length=content_length)
        collector = _Collector(self, content_length, boundary)
        parser = MultipartParser(boundary, collector.callbacks())
        try:
            while chunk := stream.read(_CHUNK):
                copy.write(chunk)
                parser.write(chunk)
            if collector.ended:
                return stream, self.cls(collector.form), self.cls(collector.files)
        except ValueError:
            while chunk := stream.read(_CHUNK):  # werkzeug re-reads the whole body
                copy.write(chunk)
        copy.seek(0)
        return super()._parse_multipart(copy, mimetype, content_length, options)


class PneumoRequest(Request):
    form_data_parser_class = FastFormDataParser
