"""RFC 9113 5.1 on streams the client closed, which the agent answers itself (agent/src/http2/h2conn.h, rm_h2_closed_t):
nghttp2 keeps no closed streams in the agent's server session, so DATA or HEADERS that a client sends on a stream whose
client side it ended (END_STREAM, or its own RST_STREAM) is found by the agent's scan of the input and answered with
GOAWAY STREAM_CLOSED at that frame; frames on a stream the agent reset while the client was still sending are ignored,
as the RFC asks; and the set is bounded (RM_H2_CLOSED_IDS ids per connection). Frame-level, with tests/tools/h2raw.py;
each case sends the offending frame in a read of its own unless it says otherwise."""

import time

import pytest
from hyperframe.frame import GoAwayFrame

from h2raw import PROTOCOL_ERROR, STREAM_CLOSED, RawH2

pytestmark = pytest.mark.agent_only("remora's own answers")

# agent/src/http2/h2conn.h
RM_H2_CLOSED_IDS = 32


@pytest.fixture(scope="module")
def px(module_proxy_factory, h2_origin):
    return module_proxy_factory(upstream=h2_origin.addr, upstream_protocol="h2", workers=1)


def connect(px):
    c = RawH2("127.0.0.1", px.port)
    c.handshake()
    return c


def get(c, sid):
    c.send(c.headers_frame(sid, c.req(f"/s{sid}"), end_stream=True))
    head = c.response_for(sid, 5)
    assert head is not None and head[":status"] == "200", f"stream {sid}: {head}"
    # the whole response (its END_STREAM), so that the stream is closed on both sides
    assert c.pump_until(lambda f: f.stream_id == sid and "END_STREAM" in f.flags, 5) is not None


def stream_closed_goaway(c):
    g = c.expect_goaway(5)
    assert g is not None, f"no GOAWAY (frames: {c.frames})"
    assert g.error_code == STREAM_CLOSED, g
    assert c.wait_closed(5), "the connection stays open after a connection error"
    return g


def serves(c, sid):
    c.send(c.headers_frame(sid, c.req("/ok"), end_stream=True))
    head = c.response_for(sid, 5)
    return head is not None and head.get(":status") == "200" and c.goaway_seen() is None


def test_data_after_complete_exchange(px):
    with connect(px) as c:
        get(c, 1)
        c.send(c.data(1, b"late"))
        stream_closed_goaway(c)


def test_headers_after_complete_exchange(px):
    with connect(px) as c:
        get(c, 1)
        get(c, 3)
        c.send(c.headers_frame(1, [("x-trailer", "1")], end_stream=True))
        g = stream_closed_goaway(c)
        assert g.last_stream_id == 3


def test_data_after_own_rst_in_a_later_read(px):
    with connect(px) as c:
        c.send(c.headers_frame(1, c.req("/r", "POST")), c.rst(1))
        time.sleep(0.2)  # a read of its own
        c.send(c.data(1, b"x"))
        stream_closed_goaway(c)


def test_header_split_between_reads(px):
    """The offending frame's header arrives in two reads: the frame is still found."""
    with connect(px) as c:
        get(c, 1)
        frame = c.data(1, b"late").serialize()
        c.send(frame[:4])
        time.sleep(0.2)
        c.send(frame[4:])
        stream_closed_goaway(c)


def test_frames_before_it_are_parsed(px):
    """A new request and the offending frame in one read: the request counts as processed (GOAWAY's last stream id),
    the frame ends the connection."""
    with connect(px) as c:
        get(c, 1)
        c.send(c.headers_frame(3, c.req("/three"), end_stream=True), c.data(1, b"late"))
        g = stream_closed_goaway(c)
        assert g.last_stream_id == 3


def test_payload_spanning_reads_is_passed_over(px):
    """A DATA payload split between reads whose bytes look like a frame header on a closed stream is not read as one."""
    with connect(px) as c:
        get(c, 1)
        c.send(c.headers_frame(3, c.req("/body", "POST")))
        fake = c.data(1, b"late").serialize()  # the bytes of a DATA frame on closed stream 1, inside stream 3's payload
        payload = b"ab" + fake + b"cd"
        whole = c.data(3, payload, end_stream=True).serialize()
        c.send(whole[:11])
        time.sleep(0.2)
        c.send(whole[11:])
        head = c.response_for(3, 5)
        assert head is not None and head[":status"] == "200", c.frames
        assert c.goaway_seen() is None
        assert serves(c, 5)


def test_data_after_agent_reset_is_ignored(px):
    """The agent reset the stream while the client was still sending (a malformed field): DATA already on its way is
    ignored, and the connection goes on."""
    with connect(px) as c:
        c.send(c.headers_frame(1, c.req("/bad", "POST", extra=[("x-Upper", "1")])))
        assert c.rst_for(1, 5) == PROTOCOL_ERROR
        c.send(c.data(1, b"in flight"))
        assert serves(c, 3)


def test_bounded(px):
    """RM_H2_CLOSED_IDS ids per connection: once later streams took its slot, a closed stream is forgotten and a frame
    on it is ignored (as nghttp2 ignores the closed streams beyond its own bound)."""
    with connect(px) as c:
        sids = [1 + 2 * i for i in range(RM_H2_CLOSED_IDS + 1)]
        for sid in sids:
            get(c, sid)
        c.send(c.data(1, b"late"))  # stream 1's slot is stream 65's now
        nxt = sids[-1] + 2
        assert serves(c, nxt)
        c.send(c.data(sids[-1], b"late"))  # remembered
        stream_closed_goaway(c)
        assert not any(isinstance(f, GoAwayFrame) and f.error_code != STREAM_CLOSED for f in c.frames)
