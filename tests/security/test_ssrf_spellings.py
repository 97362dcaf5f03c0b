"""image_url: every spelling of an internal address is refused, directly and after a redirect.

IPv6 forms that carry an IPv4 address (6to4, NAT64, IPv4-mapped, IPv4-compatible, Teredo) reach
that IPv4 address through a gateway, so they are judged by the IPv4 address's rules.
"""
from __future__ import annotations

import ipaddress

import pytest

import adapters.runpod.fetch as fetch
from adapters.runpod.fetch import FetchError, FetchPolicy, check_url, fetch_url

EMBEDDED = [
    ("http://[2002:7f00:1::]/", "127.0.0.1"),  # 6to4
    ("http://[2002:a9fe:a9fe::]/", "169.254.169.254"),
    ("http://[2002:a00:1::]/x.png", "10.0.0.1"),
    ("http://[64:ff9b::a9fe:a9fe]/", "169.254.169.254"),  # NAT64 well-known prefix
    ("http://[64:ff9b:1::c0a8:101]/", "192.168.1.1"),  # NAT64 local-use prefix, IPv4 in the low bits
    ("http://[64:ff9b:1:a9fe:a9:fe00::]/", "169.254.169.254"),  # the same prefix as RFC 6052 lays out a /48
    ("http://[::ffff:7f00:1]/", "127.0.0.1"),  # IPv4-mapped, hex spelling
    ("http://[::127.0.0.1]/", "127.0.0.1"),  # IPv4-compatible
    ("http://[::a00:1]/", "10.0.0.1"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "127.0.0.1"),  # Teredo, client 127.0.0.1
]


@pytest.mark.parametrize("url, inner", EMBEDDED)
def test_embedded_ipv4_is_judged_like_ipv4(url, inner):
    with pytest.raises(FetchError, match=inner.replace(".", r"\.")) as err:
        check_url(url, FetchPolicy())
    assert err.value.code == "url_refused"


def test_metadata_stays_refused_through_any_spelling_even_with_private_allowed():
    for url in ("http://[2002:a9fe:a9fe::]/", "http://[64:ff9b::a9fe:a9fe]/", "http://[::ffff:a9fe:a9fe]/",
                "http://[64:ff9b:1:a9fe:a9:fe00::]/"):
        with pytest.raises(FetchError, match="metadata"):
            check_url(url, FetchPolicy(allow_private=True))


def test_public_addresses_in_the_same_forms_pass():
    for url in ("http://[2002:808:808::]/", "http://[::ffff:8.8.8.8]/", "http://[2606:4700::1111]/"):
        host, port, addresses = check_url(url, FetchPolicy())
        assert port == 80 and addresses


def test_a_resolver_answer_in_an_embedded_form_is_refused():
    with pytest.raises(FetchError, match="127.0.0.1"):
        check_url("http://images.example/x.png", FetchPolicy(), resolver=lambda h, p: ["2002:7f00:1::"])


@pytest.mark.parametrize("target", ["http://[2002:7f00:1::]/", "http://[::ffff:7f00:1]/", "http://10.0.0.1/x.png",
                                    "http://[64:ff9b::a9fe:a9fe]/"])
def test_redirects_to_internal_spellings_are_refused_under_the_default_policy(image_server, monkeypatch, target):
    """The test server stands in for a public host: only its exact address is treated as public."""
    base, hits = image_server
    real = fetch.blocked_reason
    server_ip = ipaddress.ip_address("127.0.0.1")
    monkeypatch.setattr(fetch, "blocked_reason", lambda ip, allow: None if ip == server_ip else real(ip, allow))
    hits.clear()
    with pytest.raises(FetchError) as err:
        fetch_url(f"{base}/redirect-to?{target}", FetchPolicy())
    assert err.value.code == "url_refused" and "refused" in str(err.value)
    assert len(hits) == 1, "only the first, allowed hop was requested"
