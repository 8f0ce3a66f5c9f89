"""Tests for the signature wire format: header layout, test vectors, verification failures."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from airflow_webhook_provider.core.exceptions import FlowWebhookError, InvalidSignature
from airflow_webhook_provider.core.signing import (
    SIGNATURE_HEADER,
    compute_signature,
    payload_for,
    sign,
    verify_signature,
)

HEADER_FORMAT = re.compile(r"t=(\d+),sha256=([0-9a-f]{64})")
NOW_MS = 1_700_000_000_000
SECRET = "mySecret"

# Computed with `printf '%s' '<ts>.<payload>' | openssl dgst -sha256 -hmac '<key>'`, not with this package.
VECTORS = [
    pytest.param(
        "mySecret",
        1568818215724,
        "test",
        "ae9c9f18381e423059604b64469099165a343deef595013525703e50e84d19f9",
        id="ascii-key-and-payload",
    ),
    pytest.param(
        "whsec-🔑-ü",
        1700000000000,
        '{"jobId":"run_1","jobStatus":"success"}',
        "6ebf7a89270f1131e12d6c9e54eef2e4730edcebd1a43f92d30894a86b6e79ee",
        id="non-ascii-key-json-body",
    ),
    pytest.param(
        "k",
        1700000000123,
        "https://example.com/ping?job=a%20b&x=1",
        "ff6914cce747bac8b46b74c05a9e236cba0d809ee40939a145ae3a4aa8854553",
        id="url-payload-with-query",
    ),
    pytest.param(
        "k",
        1700000000000,
        "",
        "54d81f8140e02fd9fa42f43fe9f03b9e572e8d255c11d2b10d6d677679b880be",
        id="empty-payload",
    ),
]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class TestVectors:
    @pytest.mark.parametrize(("secret", "timestamp_ms", "payload", "expected"), VECTORS)
    def test_compute_signature_matches_openssl(
        self, secret: str, timestamp_ms: int, payload: str, expected: str
    ) -> None:
        assert compute_signature(secret, timestamp_ms, payload) == expected
        assert compute_signature(secret.encode(), timestamp_ms, payload.encode()) == expected

    @pytest.mark.parametrize(("secret", "timestamp_ms", "payload", "expected"), VECTORS)
    def test_sign_builds_the_header_from_the_vector(
        self, secret: str, timestamp_ms: int, payload: str, expected: str
    ) -> None:
        assert sign(secret, payload, timestamp_ms=timestamp_ms) == f"t={timestamp_ms},sha256={expected}"

    @pytest.mark.parametrize(("secret", "timestamp_ms", "payload", "expected"), VECTORS)
    def test_verify_accepts_the_vector(
        self, secret: str, timestamp_ms: int, payload: str, expected: str
    ) -> None:
        header = f"t={timestamp_ms},sha256={expected}"
        verify_signature(header, payload.encode(), secret, now_ms=timestamp_ms)

    @pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not on PATH")
    def test_random_payload_matches_openssl(self) -> None:
        key = secrets.token_urlsafe(24)
        payload = os.urandom(512)
        timestamp_ms = _now_ms()
        message = f"{timestamp_ms}.".encode() + payload
        result = subprocess.run(
            ["openssl", "dgst", "-sha256", "-hmac", key],
            input=message,
            capture_output=True,
            check=True,
            timeout=30,
        )
        expected = result.stdout.decode().split()[-1]
        assert re.fullmatch(r"[0-9a-f]{64}", expected), result.stdout
        assert sign(key, payload, timestamp_ms=timestamp_ms) == f"t={timestamp_ms},sha256={expected}"


class TestSign:
    def test_header_format(self) -> None:
        header = sign(SECRET, b'{"a": 1}', timestamp_ms=NOW_MS)
        match = HEADER_FORMAT.fullmatch(header)
        assert match is not None, header
        assert int(match.group(1)) == NOW_MS

    def test_default_timestamp_is_current_unix_milliseconds(self) -> None:
        before = _now_ms()
        header = sign(SECRET, b"body")
        after = _now_ms()
        match = HEADER_FORMAT.fullmatch(header)
        assert match is not None, header
        assert before <= int(match.group(1)) <= after

    def test_str_and_bytes_payload_sign_the_same(self) -> None:
        assert sign(SECRET, "häj", timestamp_ms=NOW_MS) == sign(SECRET, "häj".encode(), timestamp_ms=NOW_MS)

    def test_str_and_bytes_secret_sign_the_same(self) -> None:
        assert sign("ü-key", b"x", timestamp_ms=NOW_MS) == sign("ü-key".encode(), b"x", timestamp_ms=NOW_MS)

    @pytest.mark.parametrize("secret", [pytest.param("", id="str"), pytest.param(b"", id="bytes")])
    def test_empty_secret_is_refused(self, secret: str | bytes) -> None:
        with pytest.raises(ValueError, match="non-empty secret"):
            sign(secret, b"x", timestamp_ms=NOW_MS)

    def test_signature_header_name(self) -> None:
        assert SIGNATURE_HEADER == "X-Webhook-Signature"


class TestPayloadFor:
    @pytest.mark.parametrize(
        "method",
        [
            pytest.param("POST", id="POST"),
            pytest.param("PUT", id="PUT"),
            pytest.param("PATCH", id="PATCH"),
            pytest.param("post", id="post-lowercase"),
            pytest.param("Patch", id="patch-mixed-case"),
        ],
    )
    def test_methods_with_body_sign_the_body_bytes(self, method: str) -> None:
        body = b'{"jobId": "r\xc3\xa4"}'
        assert payload_for(method, body=body, url="https://example.com/hook?x=1") == body

    @pytest.mark.parametrize("method", ["POST", "put"])
    def test_missing_body_signs_empty_bytes(self, method: str) -> None:
        assert payload_for(method, body=None, url="https://example.com/hook") == b""

    @pytest.mark.parametrize(
        "method",
        [
            pytest.param("GET", id="GET"),
            pytest.param("DELETE", id="DELETE"),
            pytest.param("get", id="get-lowercase"),
            pytest.param("delete", id="delete-lowercase"),
        ],
    )
    def test_methods_without_body_sign_the_full_url(self, method: str) -> None:
        url = "https://example.com/ping?job=a%20b&x=1"
        assert payload_for(method, body=b"ignored", url=url) == url.encode()


def _header(payload: bytes | str = b"payload", *, secret: str = SECRET, timestamp_ms: int = NOW_MS) -> str:
    return sign(secret, payload, timestamp_ms=timestamp_ms)


class TestVerifySignature:
    def test_invalid_signature_is_a_flow_webhook_error_and_value_error(self) -> None:
        assert issubclass(InvalidSignature, FlowWebhookError)
        assert issubclass(InvalidSignature, ValueError)

    @pytest.mark.parametrize(
        ("header", "payload"),
        [
            pytest.param(_header(b"payload"), b"payload", id="str-header-bytes-payload"),
            pytest.param(_header(b"payload").encode(), b"payload", id="bytes-header-bytes-payload"),
            pytest.param(_header("pä"), "pä", id="str-header-str-payload"),
            pytest.param(_header("pä").encode(), "pä".encode(), id="bytes-header-utf8-payload"),
        ],
    )
    def test_accepts_a_valid_header(self, header: str | bytes, payload: bytes | str) -> None:
        verify_signature(header, payload, SECRET, now_ms=NOW_MS)

    def test_uses_the_clock_when_now_is_not_given(self) -> None:
        verify_signature(sign(SECRET, b"fresh"), b"fresh", SECRET)

    def test_clock_rejects_an_old_header(self) -> None:
        header = sign(SECRET, b"old", timestamp_ms=_now_ms() - 10 * 60 * 1000)
        with pytest.raises(InvalidSignature, match="stale signature"):
            verify_signature(header, b"old", SECRET)

    def test_uppercase_hex_is_accepted(self) -> None:
        signature = compute_signature(SECRET, NOW_MS, b"payload").upper()
        assert re.fullmatch(r"[0-9A-F]{64}", signature)
        verify_signature(f"t={NOW_MS},sha256={signature}", b"payload", SECRET, now_ms=NOW_MS)

    def test_spaces_around_parts_are_accepted(self) -> None:
        timestamp, signature = _header(b"payload").split(",")
        verify_signature(f" {timestamp} , {signature} ", b"payload", SECRET, now_ms=NOW_MS)

    @pytest.mark.parametrize(
        "signatures",
        [
            pytest.param(["old", "new"], id="match-last"),
            pytest.param(["new", "old"], id="match-first"),
            pytest.param(["old", "new", "older"], id="match-middle"),
        ],
    )
    def test_key_rotation_one_matching_signature_suffices(self, signatures: list[str]) -> None:
        by_secret = {
            "new": compute_signature(SECRET, NOW_MS, b"payload"),
            "old": compute_signature("previous-secret", NOW_MS, b"payload"),
            "older": compute_signature("ancient-secret", NOW_MS, b"payload"),
        }
        header = ",".join([f"t={NOW_MS}", *(f"sha256={by_secret[s]}" for s in signatures)])
        verify_signature(header, b"payload", SECRET, now_ms=NOW_MS)

    def test_key_rotation_no_matching_signature_is_a_mismatch(self) -> None:
        header = ",".join(
            [
                f"t={NOW_MS}",
                f"sha256={compute_signature('previous-secret', NOW_MS, b'payload')}",
                f"sha256={compute_signature('ancient-secret', NOW_MS, b'payload')}",
            ]
        )
        with pytest.raises(InvalidSignature, match="signature mismatch"):
            verify_signature(header, b"payload", SECRET, now_ms=NOW_MS)

    @pytest.mark.parametrize(
        ("header", "payload", "secret"),
        [
            pytest.param(_header(b"payload"), b"payload", "wrong-secret", id="wrong-secret"),
            pytest.param(_header(b"payload"), b"paylaod", SECRET, id="payload-two-bytes-swapped"),
            pytest.param(_header(b"payload"), b"payloae", SECRET, id="payload-last-byte-changed"),
            pytest.param(_header(b"payload"), b"payload ", SECRET, id="payload-byte-appended"),
            pytest.param(_header(b"payload"), b"", SECRET, id="payload-empty"),
        ],
    )
    def test_mismatch(self, header: str, payload: bytes, secret: str) -> None:
        with pytest.raises(InvalidSignature, match="signature mismatch"):
            verify_signature(header, payload, secret, now_ms=NOW_MS)

    def test_one_changed_hex_digit_is_a_mismatch(self) -> None:
        header = _header(b"payload")
        flipped = header[:-1] + ("0" if header[-1] != "0" else "1")
        with pytest.raises(InvalidSignature, match="signature mismatch"):
            verify_signature(flipped, b"payload", SECRET, now_ms=NOW_MS)

    def test_changed_timestamp_in_header_is_a_mismatch(self) -> None:
        header = _header(b"payload").replace(f"t={NOW_MS}", f"t={NOW_MS - 1}")
        with pytest.raises(InvalidSignature, match="signature mismatch"):
            verify_signature(header, b"payload", SECRET, now_ms=NOW_MS)

    @pytest.mark.parametrize(
        ("offset_ms", "tolerance_seconds"),
        [
            pytest.param(-299_000, 300, id="299s-old"),
            pytest.param(-300_000, 300, id="exactly-tolerance-old"),
            pytest.param(299_000, 300, id="299s-ahead"),
            pytest.param(300_000, 300, id="exactly-tolerance-ahead"),
            pytest.param(0, 0, id="zero-tolerance-same-ms"),
            pytest.param(-3_599_000, 3600, id="custom-tolerance-old"),
            pytest.param(3_599_000, 3600, id="custom-tolerance-ahead"),
        ],
    )
    def test_within_tolerance_is_accepted(self, offset_ms: int, tolerance_seconds: float) -> None:
        header = _header(b"payload", timestamp_ms=NOW_MS + offset_ms)
        verify_signature(header, b"payload", SECRET, now_ms=NOW_MS, tolerance_seconds=tolerance_seconds)

    @pytest.mark.parametrize(
        ("offset_ms", "tolerance_seconds", "message"),
        [
            pytest.param(
                -301_000, 300, r"stale signature: timestamp is 301 s old \(tolerance 300 s\)", id="stale"
            ),
            pytest.param(-86_400_000, 300, "stale signature", id="a-day-old"),
            pytest.param(-NOW_MS, 300, "stale signature", id="epoch"),
            pytest.param(-2_000, 1, "stale signature", id="custom-tolerance-stale"),
            pytest.param(
                301_000, 300, r"301 s in the future \(tolerance 300 s\)", id="future-beyond-tolerance"
            ),
            pytest.param(2_000, 1, "in the future", id="custom-tolerance-future"),
        ],
    )
    def test_outside_tolerance_is_refused(
        self, offset_ms: int, tolerance_seconds: float, message: str
    ) -> None:
        # Signed correctly, so only the timestamp can be the reason for the refusal.
        header = _header(b"payload", timestamp_ms=NOW_MS + offset_ms)
        with pytest.raises(InvalidSignature, match=message):
            verify_signature(header, b"payload", SECRET, now_ms=NOW_MS, tolerance_seconds=tolerance_seconds)

    @pytest.mark.parametrize(
        "header",
        [
            pytest.param(None, id="none"),
            pytest.param("", id="empty-str"),
            pytest.param(b"", id="empty-bytes"),
        ],
    )
    def test_missing_header(self, header: str | bytes | None) -> None:
        with pytest.raises(InvalidSignature, match="missing X-Webhook-Signature header"):
            verify_signature(header, b"payload", SECRET, now_ms=NOW_MS)

    @pytest.mark.parametrize(
        ("header", "message"),
        [
            pytest.param(f"sha256={'0' * 64}", "no t= timestamp", id="no-t"),
            pytest.param(f"T={NOW_MS},sha256={'0' * 64}", "no t= timestamp", id="uppercase-T-is-not-t"),
            pytest.param(f"t={NOW_MS}", "no sha256= signature", id="no-sha256"),
            pytest.param(f"t={NOW_MS},v1={'0' * 64}", "no sha256= signature", id="other-scheme-only"),
            pytest.param(
                f"t=abc,sha256={'0' * 64}", "t= must be UNIX time in milliseconds", id="t-not-digits"
            ),
            pytest.param(f"t=-5,sha256={'0' * 64}", "t= must be UNIX time in milliseconds", id="t-negative"),
            pytest.param(f"t=1.5,sha256={'0' * 64}", "t= must be UNIX time in milliseconds", id="t-fraction"),
            pytest.param(
                f"t={'9' * 17},sha256={'0' * 64}", "t= must be UNIX time in milliseconds", id="t-too-long"
            ),
            pytest.param(
                f"t=\u00b2,sha256={'0' * 64}",
                "t= must be UNIX time in milliseconds",
                id="t-superscript-digit",
            ),
            pytest.param(
                f"t={NOW_MS},t={NOW_MS},sha256={'0' * 64}", "more than one t= timestamp", id="duplicate-t"
            ),
            pytest.param(
                f"t={NOW_MS},garbage,sha256={'0' * 64}", "is not key=value", id="part-without-equals"
            ),
            pytest.param(f"t={NOW_MS},,sha256={'0' * 64}", "is not key=value", id="empty-part"),
            pytest.param(f"t={NOW_MS},sha256=", "is not key=value", id="empty-sha256-value"),
            pytest.param(f"t=,sha256={'0' * 64}", "is not key=value", id="empty-t-value"),
            pytest.param("garbage", "is not key=value", id="garbage"),
            pytest.param(",", "is not key=value", id="only-comma"),
            pytest.param(f"t={NOW_MS};sha256={'0' * 64}", "t= must be UNIX time", id="semicolon-separator"),
        ],
    )
    def test_malformed_header(self, header: str, message: str) -> None:
        with pytest.raises(InvalidSignature, match=re.escape(message)) as info:
            verify_signature(header, b"payload", SECRET, now_ms=NOW_MS)
        assert "malformed signature header" in str(info.value)

    @pytest.mark.parametrize(
        "header",
        [
            pytest.param(f"t={NOW_MS},sha256=\u00e9{'0' * 63}".encode("latin-1"), id="latin1-byte"),
            pytest.param(f"t={NOW_MS},sha256=\u00e9{'0' * 63}".encode(), id="utf8-bytes"),
            pytest.param(b"t=\xff\xfe,sha256=00", id="invalid-utf8"),
        ],
    )
    def test_non_ascii_bytes_header(self, header: bytes) -> None:
        with pytest.raises(InvalidSignature, match="malformed signature header: not ASCII"):
            verify_signature(header, b"payload", SECRET, now_ms=NOW_MS)

    @pytest.mark.parametrize(
        "header",
        [
            pytest.param(f"t={NOW_MS},sha256=\u00e9{'0' * 63}", id="non-ascii-signature"),
            pytest.param(f"t={NOW_MS},sha256=\U0001f511", id="emoji-signature"),
        ],
    )
    def test_non_ascii_str_header_is_invalid_signature(self, header: str) -> None:
        with pytest.raises(InvalidSignature):
            verify_signature(header, b"payload", SECRET, now_ms=NOW_MS)

    def test_non_ascii_digits_in_t_are_refused(self) -> None:
        # str.isdigit() and int() accept Arabic-Indic digits, but they are not the text the sender signed.
        arabic_indic = str(NOW_MS).translate({ord(d): 0x0660 + int(d) for d in "0123456789"})
        header = f"t={arabic_indic},sha256={compute_signature(SECRET, NOW_MS, b'payload')}"
        with pytest.raises(InvalidSignature, match="t= must be UNIX time in milliseconds"):
            verify_signature(header, b"payload", SECRET, now_ms=NOW_MS)


_VALID = sign(SECRET, b"payload", timestamp_ms=NOW_MS)
_VALID_HEX = _VALID.split("sha256=")[1]
_timestamps = st.one_of(
    st.integers(NOW_MS - 400_000, NOW_MS + 400_000).map(str),
    st.text(st.characters(categories=("Nd", "No")), min_size=1, max_size=16),
    st.text(max_size=20),
)
_signatures = st.one_of(
    st.just(_VALID_HEX),
    st.text("0123456789abcdefABCDEF", max_size=70),
    st.text(max_size=70),
)
_extra_parts = st.lists(
    st.one_of(st.text(max_size=30), st.sampled_from(["t=", "sha256=", "=", "v1=00"])), max_size=2
)
_structured_headers = st.builds(
    lambda timestamp, signatures, extra: ",".join(
        [f"t={timestamp}", *(f"sha256={signature}" for signature in signatures), *extra]
    ),
    _timestamps,
    st.lists(_signatures, min_size=1, max_size=3),
    _extra_parts,
)


@given(
    header=st.one_of(
        st.text(),
        st.binary(),
        _structured_headers,
        _structured_headers.map(lambda header: header.encode("utf-8", "surrogatepass")),
    )
)
@example(header=f"t={NOW_MS},sha256=\u00e9")
@example(header="t=\u00b2,sha256=00")
@settings(max_examples=300, deadline=None)
def test_arbitrary_header_raises_only_invalid_signature(header: str | bytes) -> None:
    try:
        verify_signature(header, b"payload", SECRET, now_ms=NOW_MS)
    except InvalidSignature as exc:
        assert str(exc)
    else:
        # Only a header carrying the right signature may verify.
        text = header.decode("ascii") if isinstance(header, bytes) else header
        assert _VALID_HEX in text.lower()
