"""Fetch an image from an ``image_url`` without opening a door into the worker's network.

The guard, in order, before any byte is sent:
- only ``http`` and ``https`` URLs with a host name;
- the host is resolved and EVERY address it resolves to is checked: loopback, private,
  link-local, reserved, multicast, unspecified and other non-global addresses are refused
  unless ``FetchPolicy.allow_private`` (env ``PNEUMO_ALLOW_PRIVATE_URLS=1``); cloud-metadata
  addresses (169.254.169.254, fd00:ec2::254, ...) are refused always;
- the connection goes to an address that was checked (pinned: no second DNS lookup that a
  rebinding DNS server could answer differently); TLS still verifies the original host name;
- redirects are not followed blindly: each ``Location`` is checked like the first URL, at most
  ``max_redirects`` times;
- the body is streamed and refused as soon as it passes ``max_bytes`` (or when Content-Length
  says it will); connect and read timeouts apply to each step and a total deadline to the whole.

Environment proxies are not used (the request goes straight to the checked address).
"""
from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Iterable[str]]

ALLOWED_SCHEMES = ("http", "https")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# Instance-metadata services: refused even when private addresses are allowed.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, DigitalOcean, OpenStack, ...
    "169.254.170.2",  # AWS ECS task metadata
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "100.100.100.200",  # Alibaba Cloud
))
_PRIVATE_HINT = "only public http(s) hosts are allowed (set PNEUMO_ALLOW_PRIVATE_URLS=1 to allow private networks)"


class FetchError(ValueError):
    """An ``image_url`` was refused or could not be downloaded; ``code`` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 20 * 1024 * 1024
    allow_private: bool = False
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    deadline_s: float = 30.0
    max_redirects: int = 3
    user_agent: str = "pneumo-runpod/0.1"


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


# IPv6 prefixes whose low 32 bits are an IPv4 address a gateway would forward to (NAT64).
_NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address reaches: IPv4-mapped, IPv4-compatible, 6to4, Teredo
    (its server and client) and NAT64. Each is judged by the same rules as a plain IPv4 address."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64_PREFIXES[0]:
        found.append(low)
    elif ip in _NAT64_PREFIXES[1]:  # a /48 prefix: RFC 6052 puts the IPv4 in bits 48-87, around the u octet
        b = ip.packed
        # both readings, each where it holds an address (the other one reads 0.0.0.0)
        found += [a for a in (low, ipaddress.IPv4Address(bytes([b[6], b[7], b[9], b[10]]))) if int(a)]
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d (IPv4-compatible; :: and ::1 are themselves)
        found.append(low)
    return found


def _plain_reason(ip: IPAddress, allow_private: bool) -> Optional[str]:
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if allow_private:
        return None
    for attr, what in (("is_loopback", "a loopback"), ("is_link_local", "a link-local"),
                       ("is_multicast", "a multicast"), ("is_unspecified", "an unspecified"),
                       ("is_private", "a private"), ("is_reserved", "a reserved")):
        if getattr(ip, attr):
            return f"{what} address"
    if not ip.is_global:
        return "not a public address"
    return None


def blocked_reason(ip: IPAddress, allow_private: bool) -> Optional[str]:
    """Why ``ip`` may not be fetched from, or None when it may. An IPv6 address is refused when
    it, or any IPv4 address embedded in it, would be."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        for inner in embedded_ipv4(ip):
            reason = _plain_reason(inner, allow_private)
            if reason:
                return f"{reason} ({inner}, embedded in {ip})"
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is exactly a.b.c.d, already judged
            return None
    return _plain_reason(ip, allow_private)


def check_url(url: str, policy: FetchPolicy, resolver: Resolver = system_resolver) -> tuple[str, int, list[str]]:
    """Validate ``url``; return ``(host, port, addresses)`` where every address passed the guard.

    Raises :class:`FetchError` (code ``url_refused``) without sending any traffic.
    """
    shown = _shorten(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError("url_refused", f"image_url {shown} is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise FetchError("url_refused", f"image_url {shown}: scheme '{scheme or '(none)'}' is not allowed; "
                         "use an http:// or https:// URL")
    host = parts.hostname
    if not host:
        raise FetchError("url_refused", f"image_url {shown} has no host name")
    port = port or (443 if scheme == "https" else 80)
    try:
        literal = ipaddress.ip_address(host)
        addresses = [str(literal)]
    except ValueError:
        try:
            ascii_host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise FetchError("url_refused", f"image_url {shown}: host name '{host}' is not valid") from None
        try:
            addresses = list(resolver(ascii_host, port))
        except (OSError, UnicodeError) as exc:
            raise FetchError("fetch_failed", f"image_url {shown}: cannot resolve host '{host}' ({exc})") from None
        if not addresses:
            raise FetchError("fetch_failed", f"image_url {shown}: host '{host}' has no address")
    for addr in addresses:
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            raise FetchError("url_refused", f"image_url {shown}: host '{host}' resolved to "
                             f"an unusable address {addr!r}") from None
        reason = blocked_reason(ip, policy.allow_private)
        if reason:
            via = "" if addr == host else f" (resolves to {addr})"
            hint = "cloud metadata endpoints are never fetched" if "metadata" in reason else _PRIVATE_HINT
            raise FetchError("url_refused", f"image_url {shown} refused: host '{host}'{via} is {reason}; {hint}")
    return host, port, addresses


def fetch_url(url: str, policy: FetchPolicy, resolver: Resolver = system_resolver) -> bytes:
    """Download ``url`` under ``policy`` and return the body; raises :class:`FetchError`."""
    deadline = time.monotonic() + policy.deadline_s
    current = url
    for hop in range(policy.max_redirects + 1):
        host, port, addresses = check_url(current, policy, resolver)
        resp, pool = _open(current, host, port, addresses, policy, deadline)
        try:
            if resp.status in REDIRECT_STATUSES:
                location = resp.headers.get("Location")
                if not location:
                    raise FetchError("fetch_failed", f"image_url {_shorten(current)}: HTTP {resp.status} "
                                     "redirect without a Location header")
                current = urljoin(current, location)
                continue
            if resp.status != 200:
                raise FetchError("fetch_failed", f"image_url {_shorten(current)}: the server answered "
                                 f"HTTP {resp.status} {resp.reason or ''}".rstrip() + "; check the URL")
            return _read_body(resp, current, policy, deadline)
        finally:
            resp.release_conn()
            pool.close()
    raise FetchError("fetch_failed", f"image_url {_shorten(url)}: more than {policy.max_redirects} "
                     "redirects; link the image directly")


def _open(url: str, host: str, port: int, addresses: list[str], policy: FetchPolicy, deadline: float):
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    netloc = parts.netloc.rsplit("@", 1)[-1]  # never forward userinfo as part of Host
    headers = {"Host": netloc, "User-Agent": policy.user_agent, "Accept": "image/*, application/dicom, */*;q=0.5",
               "Accept-Encoding": "identity"}
    last: Optional[Exception] = None
    for addr in addresses:  # every one of them passed the guard; use the first that answers
        remaining = _remaining(deadline, url, policy)
        timeout = urllib3.Timeout(connect=min(policy.connect_timeout_s, remaining),
                                  read=min(policy.read_timeout_s, remaining))
        if parts.scheme.lower() == "https":
            pool = urllib3.HTTPSConnectionPool(addr, port, timeout=timeout, retries=False, maxsize=1,
                                               cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(),
                                               server_hostname=host)
        else:
            pool = urllib3.HTTPConnectionPool(addr, port, timeout=timeout, retries=False, maxsize=1)
        try:
            resp = pool.urlopen("GET", path, headers=headers, redirect=False, retries=False,
                                preload_content=False, decode_content=True, assert_same_host=False)
            return resp, pool
        except urllib3.exceptions.HTTPError as exc:
            pool.close()
            last = exc
    raise FetchError("fetch_failed", f"image_url {_shorten(url)}: cannot download ({_describe(last)})")


def _read_body(resp, url: str, policy: FetchPolicy, deadline: float) -> bytes:
    limit = policy.max_bytes
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FetchError("image_too_large", f"image_url {_shorten(url)}: {int(declared):,} bytes, "
                         f"limit {limit:,}; send a smaller image")
    chunks, size = [], 0
    sock = getattr(getattr(resp, "connection", None), "sock", None)
    try:
        while True:
            remaining = _remaining(deadline, url, policy)
            if sock is not None:  # no single read may outlive the deadline
                sock.settimeout(min(policy.read_timeout_s, remaining))
            chunk = resp.read1(64 * 1024)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise FetchError("image_too_large", f"image_url {_shorten(url)}: more than {limit:,} bytes; "
                                 "send a smaller image")
            chunks.append(chunk)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        if time.monotonic() >= deadline:
            raise _too_slow(url, policy) from None
        raise FetchError("fetch_failed", f"image_url {_shorten(url)}: download failed ({_describe(exc)})") from None
    return b"".join(chunks)


def _remaining(deadline: float, url: str, policy: FetchPolicy) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _too_slow(url, policy)
    return left


def _too_slow(url: str, policy: FetchPolicy) -> FetchError:
    return FetchError("fetch_failed", f"image_url {_shorten(url)}: download took longer than "
                      f"{policy.deadline_s:g} s; use a faster host or send the image as base64")


def _describe(exc: Optional[Exception]) -> str:
    if exc is None:
        return "no address answered"
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # (a subclass of ConnectTimeoutError)
        return str(exc).split(": ", 1)[-1]
    if isinstance(exc, (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError,
                        socket.timeout, TimeoutError)):
        return "timed out"
    inner = getattr(exc, "reason", None)
    return str(inner or exc) or type(exc).__name__


def _shorten(url: str, limit: int = 120) -> str:
    text = url if len(url) <= limit else url[:limit] + "..."
    return repr(text)
