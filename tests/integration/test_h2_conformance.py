"""HTTP/2 conformance, frame by frame (RFC 9113), named after h2spec's sections (h2spec is not packaged here):
each test sends what the h2spec case sends and checks the answer h2spec requires, on the cleartext port and over
TLS (ALPN h2). A connection error must be a GOAWAY with the right code; a stream error an RST_STREAM with the
right code (or, as h2spec accepts, a GOAWAY with it)."""

import ssl

import pytest
from hyperframe.frame import GoAwayFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame

from h2raw import (FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, NO_ERROR, PREFACE, PROTOCOL_ERROR, STREAM_CLOSED, RawH2)

pytestmark = pytest.mark.agent_only("checks remora's own answers")

SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5


@pytest.fixture(scope="module", params=["h2c", "tls"])
def target(request, module_proxy_factory, h2_origin, certs):
    tls = request.param == "tls"
    px = module_proxy_factory(upstream=h2_origin.addr, upstream_protocol="h2", workers=1,
                              tls={"cert": certs["cert"], "key": certs["key"]} if tls else None)

    def connect(handshake=True):
        ctx = None
        if tls:
            ctx = ssl.create_default_context(cafile=certs["ca"])
        c = RawH2("127.0.0.1", px.port, tls=ctx, server_hostname="localhost" if tls else None)
        if handshake:
            c.handshake()
        return c

    connect.tls = tls
    connect.px = px
    return connect


def conn_error(c, code, timeout=5):
    g = c.expect_goaway(timeout)
    assert g is not None, f"no GOAWAY (frames: {c.frames}, closed {c.closed})"
    assert g.error_code == code, g
    assert c.wait_closed(timeout), "the connection stays open after a connection error"
    return g


def stream_error(c, sid, code, timeout=5):
    f = c.pump_until(lambda f: (isinstance(f, RstStreamFrame) and f.stream_id == sid) or isinstance(f, GoAwayFrame),
                     timeout)
    assert f is not None, f"neither RST_STREAM nor GOAWAY (frames: {c.frames})"
    assert f.error_code == code, f


def serves(c, sid):
    c.send(c.headers_frame(sid, c.req("/ok"), end_stream=True))
    head = c.response_for(sid, 5)
    return head is not None and head.get(":status") == "200"


# ---------------------------------------------------------------------------------------------- 3.5 preface

def test_3_5_1_client_preface(target):
    with target(handshake=False) as c:
        f = c.handshake()
        assert isinstance(f, SettingsFrame)
        assert isinstance(c.frames[0], SettingsFrame), "the server's first frame must be SETTINGS"
        assert serves(c, 1)


def test_3_5_2_invalid_preface(target):
    """h2spec sends "INVALID CONNECTION PREFACE"; on the cleartext port, where HTTP/1.1 is also served, a damaged
    preface that starts like HTTP/2 ("PRI ") is refused the HTTP/2 way."""
    with target(handshake=False) as c:
        bad = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" if not target.tls else b"INVALID CONNECTION PREFACE\r\n\r\n"
        c.send(bad)
        conn_error(c, PROTOCOL_ERROR)
        assert b"HTTP/1.1" not in c.raw_in


def test_3_5_2_truncated_preface_pri(target):
    with target(handshake=False) as c:
        c.send(b"PRI * HTTP/1.1\r\n\r\n")
        conn_error(c, PROTOCOL_ERROR)


# ---------------------------------------------------------------------------------------------- 4.2 frame size

def test_4_2_1_data_frame_max_size(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/big", "POST")), c.data(1, b"a" * 16384, end_stream=True))
        head = c.response_for(1, 5)
        assert head is not None and head[":status"] == "200"


def test_4_2_2_data_frame_too_large(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/big", "POST")), c.data(1, b"a" * 16385, end_stream=True))
        stream_error(c, 1, FRAME_SIZE_ERROR)


def test_4_2_3_headers_frame_too_large(target):
    with target() as c:
        hdrs = c.req("/h") + [("x-dummy%d" % i, "x" * 1000) for i in range(17)]
        c.send(c.headers_frame(1, None, end_stream=True, block=c.enc.encode(hdrs, huffman=False)))
        conn_error(c, FRAME_SIZE_ERROR)


# ---------------------------------------------------------------------------------------------- 5.1 stream states

def test_5_1_1_idle_data(target):
    with target() as c:
        c.send(c.data(1, b"x"))
        conn_error(c, PROTOCOL_ERROR)


def test_5_1_2_idle_rst_stream(target):
    with target() as c:
        c.send(c.rst(1))
        conn_error(c, PROTOCOL_ERROR)


def test_5_1_3_idle_window_update(target):
    with target() as c:
        c.send(c.window_update(1, 100))
        conn_error(c, PROTOCOL_ERROR)


def test_5_1_4_idle_continuation(target):
    with target() as c:
        c.send(c.continuation(1, c.block(c.req("/c"))))
        conn_error(c, PROTOCOL_ERROR)


def test_5_1_5_half_closed_remote_data(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/slow", extra=[("x-delay-ms", "500")]), end_stream=True), c.data(1, b"x"))
        stream_error(c, 1, STREAM_CLOSED)


def test_5_1_6_half_closed_remote_headers(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/slow", extra=[("x-delay-ms", "500")]), end_stream=True),
               c.headers_frame(1, c.req("/again"), end_stream=True))
        stream_error(c, 1, STREAM_CLOSED)


def test_5_1_7_closed_data_after_rst(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/r", "POST")), c.rst(1), c.data(1, b"x"))
        stream_error(c, 1, STREAM_CLOSED)


def test_5_1_1_1_even_stream_id(target):
    with target() as c:
        c.send(c.headers_frame(2, c.req("/even"), end_stream=True))
        conn_error(c, PROTOCOL_ERROR)


def test_5_1_1_2_stream_id_lower(target):
    """h2spec 5.1.1/2: HEADERS on stream 5, then a new stream 3: a connection error (nghttp2 alone ignores it)."""
    with target() as c:
        c.send(c.headers_frame(5, c.req("/five"), end_stream=True))
        assert c.response_for(5, 5) is not None
        c.send(c.headers_frame(3, c.req("/three"), end_stream=True))
        conn_error(c, PROTOCOL_ERROR)


def test_5_1_1_trailers_on_open_lower_stream_are_fine(target):
    """A lower id that is an open stream (trailers of stream 1 after stream 3 started) is no error."""
    with target() as c:
        c.send(c.headers_frame(1, c.req("/t", "POST")), c.headers_frame(3, c.req("/three"), end_stream=True))
        assert c.response_for(3, 5) is not None
        c.send(c.headers_frame(1, [("x-trailer", "1")], end_stream=True))
        head = c.response_for(1, 5)
        assert head is not None and head[":status"] == "200"
        assert c.goaway_seen() is None


# ---------------------------------------------------------------------------------------------- 5.4.1

def test_5_4_1_connection_error_goaway_then_close(target):
    with target() as c:
        assert serves(c, 1)
        c.send(c.raw_frame(0x8, 0, 0, b"\x00\x00\x00\x00"))
        g = conn_error(c, PROTOCOL_ERROR)
        assert g.last_stream_id == 1


# ---------------------------------------------------------------------------------------------- 6.x frame types

def test_6_1_1_data_stream_0(target):
    with target() as c:
        c.send(c.raw_frame(0x0, 0, 0, b"x"))
        conn_error(c, PROTOCOL_ERROR)


def test_6_1_2_data_padding_too_long(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/p", "POST")),
               c.raw_frame(0x0, 0x8 | 0x1, 1, bytes([10]) + b"abc"))  # PADDED, pad length 10 > payload
        conn_error(c, PROTOCOL_ERROR)


def test_6_2_1_headers_stream_0(target):
    with target() as c:
        c.send(c.raw_frame(0x1, 0x4 | 0x1, 0, c.block(c.req("/zero"))))
        conn_error(c, PROTOCOL_ERROR)


def test_6_2_2_headers_then_other_frame(target):
    with target() as c:
        block = c.block(c.req("/x"))
        c.send(c.headers_frame(1, None, end_stream=True, end_headers=False, block=block), c.data(1, b"x"))
        conn_error(c, PROTOCOL_ERROR)


def test_6_2_3_headers_padding_too_long(target):
    with target() as c:
        block = c.block(c.req("/x"))
        c.send(c.raw_frame(0x1, 0x4 | 0x1 | 0x8, 1, bytes([len(block) + 10]) + block))
        conn_error(c, PROTOCOL_ERROR)


def test_6_3_1_priority_stream_0(target):
    with target() as c:
        c.send(c.raw_frame(0x2, 0, 0, b"\x00\x00\x00\x01\x10"))
        conn_error(c, PROTOCOL_ERROR)


def test_6_3_2_priority_bad_length(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/slow", extra=[("x-delay-ms", "300")]), end_stream=True),
               c.raw_frame(0x2, 0, 1, b"\x00\x00\x00\x00"))
        stream_error(c, 1, FRAME_SIZE_ERROR)


def test_6_4_1_rst_stream_0(target):
    with target() as c:
        c.send(c.raw_frame(0x3, 0, 0, b"\x00\x00\x00\x08"))
        conn_error(c, PROTOCOL_ERROR)


def test_6_4_2_rst_stream_idle(target):
    with target() as c:
        c.send(c.rst(7))
        conn_error(c, PROTOCOL_ERROR)


def test_6_4_3_rst_stream_bad_length(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/slow", extra=[("x-delay-ms", "300")]), end_stream=True),
               c.raw_frame(0x3, 0, 1, b"\x00\x00\x00"))
        conn_error(c, FRAME_SIZE_ERROR)


def test_6_5_1_settings_ack_with_payload(target):
    with target() as c:
        c.send(c.raw_frame(0x4, 0x1, 0, b"\x00\x03\x00\x00\x00\x64"))
        conn_error(c, FRAME_SIZE_ERROR)


def test_6_5_2_settings_nonzero_stream(target):
    with target() as c:
        c.send(c.raw_frame(0x4, 0, 1, b"\x00\x03\x00\x00\x00\x64"))
        conn_error(c, PROTOCOL_ERROR)


def test_6_5_3_settings_bad_length(target):
    with target() as c:
        c.send(c.raw_frame(0x4, 0, 0, b"\x00\x03\x00"))
        conn_error(c, FRAME_SIZE_ERROR)


def test_6_5_2_1_enable_push_invalid(target):
    with target() as c:
        c.send(c.raw_frame(0x4, 0, 0, SETTINGS_ENABLE_PUSH.to_bytes(2, "big") + (2).to_bytes(4, "big")))
        conn_error(c, PROTOCOL_ERROR)


def test_6_5_2_2_initial_window_too_large(target):
    with target() as c:
        c.send(c.raw_frame(0x4, 0, 0, SETTINGS_INITIAL_WINDOW_SIZE.to_bytes(2, "big") + (1 << 31).to_bytes(4, "big")))
        conn_error(c, FLOW_CONTROL_ERROR)


def test_6_5_2_3_max_frame_size_too_small(target):
    with target() as c:
        c.send(c.raw_frame(0x4, 0, 0, SETTINGS_MAX_FRAME_SIZE.to_bytes(2, "big") + (16383).to_bytes(4, "big")))
        conn_error(c, PROTOCOL_ERROR)


def test_6_5_3_settings_acknowledged(target):
    with target() as c:
        c.send(c.settings({SETTINGS_INITIAL_WINDOW_SIZE: 100000}))
        f = c.pump_until(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags, 5)
        assert f is not None


def test_6_7_1_ping_answered(target):
    with target() as c:
        c.send(c.ping(b"h2guard!"))
        f = c.pump_until(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags, 5)
        assert f is not None and f.opaque_data == b"h2guard!"


def test_6_7_2_ping_ack_not_answered(target):
    with target() as c:
        c.send(c.ping(b"unsolici", ack=True), c.ping(b"expected"))
        f = c.pump_until(lambda f: isinstance(f, PingFrame), 5)
        assert f is not None and f.opaque_data == b"expected"


def test_6_7_3_ping_nonzero_stream(target):
    with target() as c:
        c.send(c.raw_frame(0x6, 0, 1, b"12345678"))
        conn_error(c, PROTOCOL_ERROR)


def test_6_7_4_ping_bad_length(target):
    with target() as c:
        c.send(c.raw_frame(0x6, 0, 0, b"1234567"))
        conn_error(c, FRAME_SIZE_ERROR)


def test_6_8_1_goaway_nonzero_stream(target):
    with target() as c:
        c.send(c.raw_frame(0x7, 0, 1, b"\x00\x00\x00\x00\x00\x00\x00\x00"))
        conn_error(c, PROTOCOL_ERROR)


def test_6_8_2_goaway_received_then_close(target):
    with target() as c:
        c.send(c.raw_frame(0x7, 0, 0, b"\x00\x00\x00\x00\x00\x00\x00\x00"))
        assert c.wait_closed(5)
        assert c.goaway_seen() is None or c.goaway_seen().error_code == NO_ERROR


def test_6_9_window_update_zero_connection(target):
    with target() as c:
        c.send(c.raw_frame(0x8, 0, 0, b"\x00\x00\x00\x00"))
        conn_error(c, PROTOCOL_ERROR)


def test_6_9_window_update_zero_stream(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/slow", extra=[("x-delay-ms", "300")]), end_stream=True),
               c.raw_frame(0x8, 0, 1, b"\x00\x00\x00\x00"))
        stream_error(c, 1, PROTOCOL_ERROR)


def test_6_9_window_update_bad_length(target):
    with target() as c:
        c.send(c.raw_frame(0x8, 0, 0, b"\x00\x00\x01"))
        conn_error(c, FRAME_SIZE_ERROR)


def test_6_9_1_connection_window_overflow(target):
    with target() as c:
        c.send(c.window_update(0, 0x7fffffff), c.window_update(0, 0x7fffffff))
        conn_error(c, FLOW_CONTROL_ERROR)


def test_6_9_1_stream_window_overflow(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/slow", extra=[("x-delay-ms", "300")]), end_stream=True),
               c.window_update(1, 0x7fffffff), c.window_update(1, 0x7fffffff))
        stream_error(c, 1, FLOW_CONTROL_ERROR)


def test_6_10_1_continuation_other_stream(target):
    with target() as c:
        block = c.block(c.req("/x"))
        c.send(c.headers_frame(1, None, end_stream=True, end_headers=False, block=block[:2]),
               c.continuation(3, block[2:]))
        conn_error(c, PROTOCOL_ERROR)


def test_6_10_2_continuation_after_end_headers(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/slow", extra=[("x-delay-ms", "300")]), end_stream=True),
               c.continuation(1, c.block([("x-more", "1")])))
        conn_error(c, PROTOCOL_ERROR)


def test_6_10_3_continuation_completes_headers(target):
    with target() as c:
        block = c.block(c.req("/split"))
        c.send(c.headers_frame(1, None, end_stream=True, end_headers=False, block=block[:4]),
               c.continuation(1, block[4:]))
        head = c.response_for(1, 5)
        assert head is not None and head[":status"] == "200"


# ---------------------------------------------------------------------------------------------- 7 error codes

def pong(c, payload=b"7-unknwn"):
    """The connection still answers a PING after what was sent."""
    c.send(c.ping(payload))
    f = c.pump_until(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags, 5)
    return f is not None and f.opaque_data == payload


def test_7_1_goaway_unknown_error_code(target):
    """An unknown error code is not an error: the endpoint must not treat it specially. After the client's GOAWAY, with
    no stream open, the server may also just close (h2spec accepts the PING's ACK or the connection's close), but never
    with an error of its own."""
    with target() as c:
        c.send(RawH2.raw_frame(0x7, 0, 0, (0).to_bytes(4, "big") + (0xff).to_bytes(4, "big")))
        answered = pong(c)
        assert answered or c.wait_closed(5), "neither a PING ACK nor the connection's close"
        errors = [f for f in c.frames if isinstance(f, GoAwayFrame) and f.error_code != NO_ERROR]
        assert not errors, errors


def test_7_2_rst_stream_unknown_error_code(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/slow", extra=[("x-delay-ms", "300")]), end_stream=True), c.rst(1, 0xff))
        assert pong(c)
        assert serves(c, 3)


# ---------------------------------------------------------------------------------------------- 8.1 HTTP request

def test_8_1_1_trailers_without_end_stream(target):
    """A second HEADERS frame (trailers) that does not end the stream is malformed."""
    with target() as c:
        c.send(c.headers_frame(1, c.req("/post", "POST")), c.data(1, b"x"),
               c.headers_frame(1, [("x-trailer", "1")], end_stream=False))
        stream_error(c, 1, PROTOCOL_ERROR)


# 8.1.2: a malformed request (its header block) is a stream error of type PROTOCOL_ERROR; the connection goes on
MALFORMED = {
    "8_1_2_1_uppercase_field_name": lambda c: c.req("/x", extra=[("X-Upper", "1")]),
    "8_1_2_1_1_unknown_pseudo_header": lambda c: c.req("/x") + [(":foo", "bar")],
    "8_1_2_1_2_response_pseudo_header": lambda c: c.req("/x") + [(":status", "200")],
    "8_1_2_1_4_pseudo_header_after_regular": lambda c: [(":method", "GET"), (":scheme", "http"), ("x-a", "1"),
                                                        (":path", "/x"), (":authority", c.authority.decode())],
    "8_1_2_2_1_connection_specific_field": lambda c: c.req("/x", extra=[("connection", "keep-alive")]),
    "8_1_2_2_2_te_other_than_trailers": lambda c: c.req("/x", extra=[("te", "trailers, deflate")]),
    "8_1_2_3_1_empty_path": lambda c: c.req(""),
    "8_1_2_3_2_no_method": lambda c: [h for h in c.req("/x") if h[0] != ":method"],
    "8_1_2_3_3_no_scheme": lambda c: [h for h in c.req("/x") if h[0] != ":scheme"],
    "8_1_2_3_4_no_path": lambda c: [h for h in c.req("/x") if h[0] != ":path"],
    "8_1_2_3_5_duplicate_method": lambda c: c.req("/x") + [(":method", "GET")],
    "8_1_2_3_6_duplicate_scheme": lambda c: c.req("/x") + [(":scheme", "http")],
    "8_1_2_3_7_duplicate_path": lambda c: c.req("/x") + [(":path", "/x")],
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_8_1_2_malformed_request(target, case):
    with target() as c:
        c.send(c.headers_frame(1, MALFORMED[case](c), end_stream=True))
        stream_error(c, 1, PROTOCOL_ERROR)
        if not c.goaway_seen():
            assert serves(c, 3), "the connection must stay usable after a stream error"


def test_8_1_2_1_3_pseudo_header_in_trailers(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/post", "POST")), c.data(1, b"x"),
               c.headers_frame(1, [(":method", "POST")], end_stream=True))
        stream_error(c, 1, PROTOCOL_ERROR)


def test_8_1_2_6_1_content_length_more_than_data(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/post", "POST", extra=[("content-length", "10")])),
               c.data(1, b"abcd", end_stream=True))
        stream_error(c, 1, PROTOCOL_ERROR)


def test_8_1_2_6_2_content_length_less_than_data(target):
    with target() as c:
        c.send(c.headers_frame(1, c.req("/post", "POST", extra=[("content-length", "4")])),
               c.data(1, b"abc"), c.data(1, b"def", end_stream=True))
        stream_error(c, 1, PROTOCOL_ERROR)


# ---------------------------------------------------------------------------------------------- 8.2 server push

def test_8_2_1_push_promise_from_client(target):
    """A client cannot push: PUSH_PROMISE from it is a connection error of type PROTOCOL_ERROR."""
    with target() as c:
        c.send(c.headers_frame(1, c.req("/slow", extra=[("x-delay-ms", "300")]), end_stream=True))
        block = c.block(c.req("/pushed"))
        c.send(RawH2.raw_frame(0x5, 0x4, 1, (2).to_bytes(4, "big") + block))
        conn_error(c, PROTOCOL_ERROR)


def test_h2_after_errors_still_serves(target):
    with target() as c:
        assert serves(c, 1)
        assert not any(isinstance(f, (GoAwayFrame, HeadersFrame)) and getattr(f, "error_code", 0) for f in c.frames)
    assert PREFACE.startswith(b"PRI ")
