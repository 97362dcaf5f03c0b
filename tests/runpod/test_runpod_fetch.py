"""The image_url guard: refuses before any traffic, checks every address, limits size and time."""
from __future__ import annotations

import socket
import time

import pytest

from adapters.runpod.fetch import FetchError, FetchPolicy, check_url, fetch_url

PRIVATE_URLS = [
    "http://10.0.0.1/x.png",
    "http://192.168.1.1/",
    "http://172.16.5.4/x.png",
    "http://169.254.169.254/latest/meta-data",
    "http://[fd00:ec2::254]/latest/meta-data",
    "http://[::1]/",
    "http://localhost/",
    "http://127.0.0.1:8080/x.png",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://0.0.0.0/",
    "http://[::ffff:10.0.0.1]/",  # IPv4-mapped IPv6
    "http://100.64.0.1/",  # carrier-grade NAT: not private, not global
    "http://224.0.0.1/",  # multicast
    "http://240.0.0.1/",  # reserved
    "https://user:pw@192.168.0.10:8443/a.png",
]
BAD_SCHEMES = ["file:///etc/passwd", "ftp://example.org/x.png", "gopher://example.org/", "data:image/png;base64,AAAA",
               "javascript:alert(1)", "x.png", "//example.org/x.png", "http:///x.png"]


@pytest.fixture()
def no_traffic(monkeypatch):
    """Record (and block) every outgoing connection attempt."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("test: network traffic is not allowed here")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_private_addresses_refused_without_traffic(no_traffic):
    policy = FetchPolicy()
    for url in PRIVATE_URLS:
        with pytest.raises(FetchError) as err:
            fetch_url(url, policy)
        assert err.value.code == "url_refused", (url, str(err.value))
        assert "refused" in str(err.value)
    assert no_traffic == []


def test_refusal_names_the_reason_and_the_switch():
    with pytest.raises(FetchError, match=r"'10\.0\.0\.1' is a private address.*PNEUMO_ALLOW_PRIVATE_URLS=1"):
        check_url("http://10.0.0.1/x.png", FetchPolicy())
    with pytest.raises(FetchError, match=r"localhost.*resolves to .*loopback"):
        check_url("http://localhost/", FetchPolicy())


@pytest.mark.parametrize("url", BAD_SCHEMES)
def test_non_http_schemes_refused(url, no_traffic):
    with pytest.raises(FetchError) as err:
        fetch_url(url, FetchPolicy(allow_private=True))
    assert err.value.code == "url_refused"
    assert no_traffic == []


def test_every_resolved_address_is_checked(no_traffic):
    def resolver(host, port):  # one public and one private answer: the private one decides
        return ["93.184.216.34", "10.1.2.3"]

    with pytest.raises(FetchError, match=r"resolves to 10\.1\.2\.3"):
        fetch_url("https://images.example.org/x.png", FetchPolicy(), resolver=resolver)
    assert no_traffic == []
    host, port, addrs = check_url("https://images.example.org/x.png", FetchPolicy(),
                                  resolver=lambda h, p: ["93.184.216.34", "2606:2800:220:1::1"])
    assert (host, port, addrs) == ("images.example.org", 443, ["93.184.216.34", "2606:2800:220:1::1"])


def test_metadata_refused_even_when_private_allowed(no_traffic):
    policy = FetchPolicy(allow_private=True)
    for url in ("http://169.254.169.254/latest/meta-data", "http://[fd00:ec2::254]/"):
        with pytest.raises(FetchError, match="metadata"):
            fetch_url(url, policy)
    with pytest.raises(FetchError, match="metadata"):
        fetch_url("http://metadata.internal/", policy, resolver=lambda h, p: ["169.254.169.254"])
    assert no_traffic == []


def test_loopback_allowed_when_configured(image_server, phantom_png):
    base, _ = image_server
    assert fetch_url(f"{base}/x.png", FetchPolicy(allow_private=True)) == phantom_png
    with pytest.raises(FetchError, match="loopback"):  # and refused by default
        fetch_url(f"{base}/x.png", FetchPolicy())


def test_redirects_are_checked_again(image_server, phantom_png):
    base, hits = image_server
    policy = FetchPolicy(allow_private=True, max_redirects=2)
    assert fetch_url(f"{base}/redirect", policy) == phantom_png
    with pytest.raises(FetchError, match="metadata"):
        fetch_url(f"{base}/redirect-metadata", policy)
    hits.clear()
    with pytest.raises(FetchError, match="more than 2 redirects"):
        fetch_url(f"{base}/loop", policy)
    assert len(hits) == 3  # the first request and two redirects, then it stops


def test_oversize_download_refused(image_server):
    base, _ = image_server
    policy = FetchPolicy(allow_private=True, max_bytes=2048)
    with pytest.raises(FetchError, match="limit 2,048") as err:  # Content-Length says so up front
        fetch_url(f"{base}/big", policy)
    assert err.value.code == "image_too_large"
    with pytest.raises(FetchError, match="more than 2,048 bytes") as err:  # counted while streaming
        fetch_url(f"{base}/big-stream", policy)
    assert err.value.code == "image_too_large"


def test_total_deadline(image_server):
    base, _ = image_server
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="longer than 0.5 s"):
        fetch_url(f"{base}/slow", FetchPolicy(allow_private=True, deadline_s=0.5, read_timeout_s=5))
    assert time.monotonic() - t0 < 2.0


def test_http_errors_and_dead_ports(image_server):
    base, _ = image_server
    with pytest.raises(FetchError, match="HTTP 404") as err:
        fetch_url(f"{base}/missing.png", FetchPolicy(allow_private=True))
    assert err.value.code == "fetch_failed"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with pytest.raises(FetchError, match="cannot download") as err:
        fetch_url(f"http://127.0.0.1:{dead}/x.png", FetchPolicy(allow_private=True, connect_timeout_s=2))
    assert err.value.code == "fetch_failed"


PUBLIC_IP = "93.184.215.14"  # a global address; the fake internet below routes it to the local image server


@pytest.fixture()
def internet(image_server, monkeypatch):
    """The local image server, reachable as the public host ``images.test`` (PUBLIC_IP): the
    resolver answers that once per check, every connection urllib3 opens is recorded, and those to
    PUBLIC_IP are routed to 127.0.0.1 (a stand-in for the internet; nothing else is reachable).
    A system DNS lookup of ``images.test`` answers 127.0.0.1, as a rebinding DNS server would."""
    import urllib3.util.connection as urllib3_connection

    base, hits = image_server
    hits.clear()
    port = int(base.rsplit(":", 1)[1])
    connections, lookups = [], []
    real_create, real_getaddrinfo = urllib3_connection.create_connection, socket.getaddrinfo

    def create_connection(address, *args, **kwargs):
        connections.append(address)
        if address[0] != PUBLIC_IP:
            raise OSError(f"test: no route to {address[0]}")
        return real_create(("127.0.0.1", address[1]), *args, **kwargs)

    def getaddrinfo(host, *args, **kwargs):
        if host == "images.test":
            lookups.append(host)
            return real_getaddrinfo("127.0.0.1", *args, **kwargs)
        return real_getaddrinfo(host, *args, **kwargs)

    def resolver(host, _port):
        lookups.append(f"checked {host}")
        if host != "images.test":
            raise OSError(f"test: unknown host {host}")
        return [PUBLIC_IP]

    monkeypatch.setattr(urllib3_connection, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return f"http://images.test:{port}", resolver, connections, lookups, hits


def test_the_connection_goes_to_the_checked_address_without_a_second_lookup(internet, phantom_png):
    base, resolver, connections, lookups, _ = internet
    assert fetch_url(f"{base}/x.png", FetchPolicy(), resolver) == phantom_png
    assert lookups == ["checked images.test"], "one lookup, the checked one: no second answer to rebind"
    assert [host for host, _ in connections] == [PUBLIC_IP]


@pytest.mark.parametrize("target, reason", [
    ("http://127.0.0.1:{port}/x.png", "loopback"),
    ("http://[2002:7f00:1::]:{port}/x.png", "embedded in 2002:7f00:1::"),  # 6to4 of 127.0.0.1
    ("http://10.0.0.1/x.png", "private"),
    ("http://169.254.169.254/latest/meta-data", "metadata"),
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
])
def test_a_public_host_redirecting_inwards_is_refused_by_default(internet, target, reason):
    base, resolver, connections, _, hits = internet
    port = base.rsplit(":", 1)[1]
    from urllib.parse import quote

    with pytest.raises(FetchError, match=reason) as err:
        fetch_url(f"{base}/redirect-to?{quote(target.format(port=port), safe='')}", FetchPolicy(), resolver)
    assert err.value.code == "url_refused"
    assert [host for host, _ in connections] == [PUBLIC_IP], "the refused target got no connection"
    assert len(hits) == 1


def test_a_public_redirect_on_the_same_host_is_followed_by_default(internet, phantom_png):
    base, resolver, connections, _, hits = internet
    assert fetch_url(f"{base}/redirect", FetchPolicy(), resolver) == phantom_png
    assert hits == ["/redirect", "/x.png"] and [h for h, _ in connections] == [PUBLIC_IP, PUBLIC_IP]
