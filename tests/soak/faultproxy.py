#!/usr/bin/python3
"""A TCP fault proxy for the soak (docs/soak.md): placed between two agents, it forwards bytes untouched
(the agents' mesh mTLS passes through it) and injects, per accepted connection, one fault chosen by the
configured probabilities:

    delay   every chunk forwarded (either way) waits DELAY_MS first
    drop    the connection is closed at accept, before the upstream is dialled
    reset   after a random time in [RESET_MIN_MS, RESET_MAX_MS] both sides are reset (SO_LINGER 0, RST)
            if the connection is still open then: mid-stream for a pooled agent-to-agent connection
    stall   after a random time in [0, STALL_AT_MAX_MS] the proxy stops reading both sides for STALL_MS
    none    plain forwarding

    faultproxy.py --listen HOST:PORT --upstream HOST:PORT [--control HOST:PORT] [--ttl SECONDS]
                  [--drop P] [--reset P] [--stall P] [--delay P] [--delay-ms MS] [--stall-ms MS]
                  [--reset-min-ms MS] [--reset-max-ms MS] [--stall-at-max-ms MS]
                  [--max-conns N] [--chunk BYTES] [--events FILE] [--stats FILE] [--seed N]

Control port (one command per line, one JSON line back): `stats`, `set KEY=VALUE ...` (the keys of the
mix: drop reset stall delay delay_ms stall_ms reset_min_ms reset_max_ms stall_at_max_ms), `get`.
SIGUSR1 prints the counters to stderr. Every fault it carried out is appended to --events as a JSON line
{"t": unix time, "conn": id, "event": drop|reset|stall|over_limit|upstream_failed, ...}; a reset whose
connection had already closed is counted as reset_moot, not logged. At exit (after --ttl, SIGTERM or
SIGINT) the counters are printed as one JSON object on stdout (and written to --stats).

Bounds: at most --max-conns connections at once (more are closed at accept and counted as over_limit),
reads of at most --chunk bytes, asyncio's write buffer paused above 64 KiB (the reader waits for drain),
control lines of 4 KiB, 8 control clients.
"""

import argparse
import asyncio
import json
import random
import signal
import socket
import struct
import sys
import time

MIX_KEYS = ("drop", "reset", "stall", "delay", "delay_ms", "stall_ms", "reset_min_ms", "reset_max_ms", "stall_at_max_ms")
FAULTS = ("drop", "reset", "stall", "delay")
WRITE_HIGH = 64 * 1024


def hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


class Proxy:
    def __init__(self, args):
        self.args = args
        self.mix = {k: float(getattr(args, k)) for k in MIX_KEYS}
        self.check_mix(self.mix)
        self.rng = random.Random(args.seed)
        self.next_id = 0
        self.active = 0
        self.counts = {"accepted": 0, "over_limit": 0, "upstream_failed": 0, "max_active": 0,
                       "bytes_down_to_up": 0, "bytes_up_to_down": 0, "mix_changes": 0,
                       "faults": {f: 0 for f in FAULTS + ("none",)}, "reset_done": 0, "reset_moot": 0, "stall_done": 0}
        self.events = open(args.events, "a", buffering=1) if args.events else None
        self.control_clients = 0

    @staticmethod
    def check_mix(mix):
        for k, v in mix.items():
            if v < 0:
                raise ValueError(f"{k} must be >= 0")
        if sum(mix[f] for f in FAULTS) > 1.0 + 1e-9:
            raise ValueError("the fault probabilities add up to more than 1")
        if mix["reset_min_ms"] > mix["reset_max_ms"]:
            raise ValueError("reset_min_ms > reset_max_ms")

    def log(self, conn, event, **kw):
        if self.events:
            self.events.write(json.dumps({"t": round(time.time(), 6), "conn": conn, "event": event, **kw}) + "\n")

    def choose(self):
        r = self.rng.random()
        acc = 0.0
        for f in FAULTS:
            acc += self.mix[f]
            if r < acc:
                return f
        return "none"

    def stats(self):
        return {**self.counts, "active": self.active, "mix": dict(self.mix)}

    async def handle(self, reader, writer):
        cid = self.next_id
        self.next_id += 1
        if self.active >= self.args.max_conns:
            self.counts["over_limit"] += 1
            self.log(cid, "over_limit")
            abort(writer)
            return
        self.active += 1
        self.counts["max_active"] = max(self.counts["max_active"], self.active)
        self.counts["accepted"] += 1
        try:
            await self.serve(cid, reader, writer)
        finally:
            self.active -= 1

    async def serve(self, cid, reader, writer):
        fault = self.choose()
        self.counts["faults"][fault] += 1
        mix = dict(self.mix)  # the mix at accept applies to the whole connection
        if fault == "drop":
            self.log(cid, "drop")
            writer.close()
            return
        host, port = hostport(self.args.upstream)
        try:
            ureader, uwriter = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=self.args.chunk), timeout=5)
        except (OSError, asyncio.TimeoutError) as e:
            self.counts["upstream_failed"] += 1
            self.log(cid, "upstream_failed", error=repr(e))
            abort(writer)
            return
        for w in (writer, uwriter):
            w.transport.set_write_buffer_limits(high=WRITE_HIGH)
        gate = asyncio.Event()
        gate.set()
        delay = mix["delay_ms"] / 1000 if fault == "delay" else 0.0
        done = asyncio.Event()
        pumps = [asyncio.ensure_future(self.pump(reader, uwriter, gate, delay, "bytes_down_to_up")),
                 asyncio.ensure_future(self.pump(ureader, writer, gate, delay, "bytes_up_to_down"))]
        timer = None
        if fault == "reset":
            at = self.rng.uniform(mix["reset_min_ms"], mix["reset_max_ms"]) / 1000
            timer = asyncio.ensure_future(self.reset_later(cid, at, writer, uwriter, done))
        elif fault == "stall":
            at = self.rng.uniform(0, mix["stall_at_max_ms"]) / 1000
            timer = asyncio.ensure_future(self.stall_later(cid, at, mix["stall_ms"] / 1000, gate, done))
        try:
            # the connection lives until both directions ended (half-close passed on) or one failed
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            done.set()
            if timer:
                await timer
            for w in (writer, uwriter):
                if not w.transport.is_closing():
                    w.close()

    async def pump(self, src, dst, gate, delay, counter):
        try:
            while True:
                await gate.wait()
                data = await src.read(self.args.chunk)
                if not data:
                    if dst.can_write_eof() and not dst.transport.is_closing():
                        dst.write_eof()
                    return
                if delay:
                    await asyncio.sleep(delay)
                await gate.wait()
                if dst.transport.is_closing():
                    return
                dst.write(data)
                self.counts[counter] += len(data)
                await dst.drain()
        except (OSError, ConnectionError):
            # the other side is gone: end this connection both ways
            for w in (dst,):
                if not w.transport.is_closing():
                    abort(w)
            raise

    async def reset_later(self, cid, at, writer, uwriter, done):
        try:
            await asyncio.wait_for(done.wait(), timeout=at)
            self.counts["reset_moot"] += 1  # closed before its reset was due
        except asyncio.TimeoutError:
            self.counts["reset_done"] += 1
            self.log(cid, "reset", after_ms=round(at * 1000))
            abort(writer)
            abort(uwriter)

    async def stall_later(self, cid, at, stall_s, gate, done):
        try:
            await asyncio.wait_for(done.wait(), timeout=at)
            return
        except asyncio.TimeoutError:
            pass
        self.counts["stall_done"] += 1
        self.log(cid, "stall", ms=round(stall_s * 1000))
        gate.clear()
        try:
            await asyncio.wait_for(done.wait(), timeout=stall_s)
        except asyncio.TimeoutError:
            pass
        gate.set()

    async def control(self, reader, writer):
        if self.control_clients >= 8:
            writer.close()
            return
        self.control_clients += 1
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError, ConnectionError):
                    return
                if not line:
                    return
                words = line.decode(errors="replace").split()
                if not words:
                    continue
                if words[0] == "stats":
                    out = self.stats()
                elif words[0] == "get":
                    out = dict(self.mix)
                elif words[0] == "set":
                    mix = dict(self.mix)
                    try:
                        for w in words[1:]:
                            k, _, v = w.partition("=")
                            if k not in MIX_KEYS:
                                raise ValueError(f"unknown key {k!r} (one of {', '.join(MIX_KEYS)})")
                            mix[k] = float(v)
                        self.check_mix(mix)
                    except ValueError as e:
                        out = {"error": str(e)}
                    else:
                        self.mix = mix
                        self.counts["mix_changes"] += 1
                        self.log(None, "mix", mix=mix)
                        out = dict(mix)
                else:
                    out = {"error": "commands: stats | get | set KEY=VALUE..."}
                writer.write((json.dumps(out) + "\n").encode())
                await writer.drain()
        finally:
            self.control_clients -= 1
            writer.close()


def abort(writer):
    """Close with RST: SO_LINGER on, 0 s."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


async def main_async(args):
    proxy = Proxy(args)
    host, port = hostport(args.listen)
    server = await asyncio.start_server(proxy.handle, host, port, limit=args.chunk, backlog=128)
    ctl = None
    if args.control:
        chost, cport = hostport(args.control)
        ctl = await asyncio.start_server(proxy.control, chost, cport, limit=4096)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(json.dumps(proxy.stats()), file=sys.stderr, flush=True))
    print("ready", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.ttl)
    except asyncio.TimeoutError:
        pass
    server.close()
    if ctl:
        ctl.close()
    out = json.dumps(proxy.stats())
    if args.stats:
        with open(args.stats, "w") as f:
            f.write(out + "\n")
    print(out, flush=True)
    if proxy.events:
        proxy.events.close()


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--control", help="HOST:PORT of the control port (off by default)")
    p.add_argument("--ttl", type=float, default=900, help="exit after this many seconds (default 900)")
    p.add_argument("--drop", type=float, default=0.0)
    p.add_argument("--reset", type=float, default=0.0)
    p.add_argument("--stall", type=float, default=0.0)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--delay-ms", dest="delay_ms", type=float, default=20)
    p.add_argument("--stall-ms", dest="stall_ms", type=float, default=500)
    p.add_argument("--stall-at-max-ms", dest="stall_at_max_ms", type=float, default=2000)
    p.add_argument("--reset-min-ms", dest="reset_min_ms", type=float, default=200)
    p.add_argument("--reset-max-ms", dest="reset_max_ms", type=float, default=5000)
    p.add_argument("--max-conns", dest="max_conns", type=int, default=256)
    p.add_argument("--chunk", type=int, default=16384)
    p.add_argument("--events")
    p.add_argument("--stats")
    p.add_argument("--seed", type=int)
    args = p.parse_args(argv)
    if args.max_conns < 1 or not 512 <= args.chunk <= 1 << 20 or args.ttl <= 0:
        p.error("--max-conns >= 1, --chunk in [512, 1 MiB], --ttl > 0")
    try:
        Proxy.check_mix({k: float(getattr(args, k)) for k in MIX_KEYS})
    except ValueError as e:
        p.error(str(e))
    return args


if __name__ == "__main__":
    asyncio.run(main_async(parse(sys.argv[1:])))
