#!/usr/bin/python3
"""A tiny authoritative DNS server for tests (Python standard library only).

Answers A, AAAA, CNAME and ANY queries over UDP and TCP on loopback, NXDOMAIN for unknown names,
NOERROR with no answer (NODATA) for known names without records of the asked type. Records can be
changed while it runs, to test re-resolution by TTL.

Usage:
  /usr/bin/python3 dns_responder.py --listen 127.0.0.1:0 [--listen [::1]:0] \\
      [--record SPEC ...] [--records-file FILE] [--ttl SECONDS] [--port-file FILE] \\
      [--query-log FILE] [--no-tcp] [--verbose]

When every socket is bound it prints the port (a single decimal number and a newline) on stdout
and, with --port-file, writes it to that file (atomically). Port 0 picks a free port; the same port
is then used for UDP and TCP and for every further --listen whose port is 0.

--record SPEC (repeatable), SPEC = NAME=VALUE[;OPTION...]:
  VALUE   IP[,IP...]         A and AAAA records (IPv4 and IPv6 literals may be mixed)
          cname:TARGET       a CNAME to TARGET (followed if TARGET is known)
          rcode:CODE         answer with CODE: NXDOMAIN, SERVFAIL, REFUSED, NOTIMP, FORMERR
          drop               never answer (the client times out)
  OPTION  TTL                a bare number: the TTL in seconds (default --ttl, itself 30)
          ttl=N, delay_ms=N  the TTL; answer N milliseconds late
  Example: --record 'svc.test=10.0.0.1,fd00::1;5'   (quote it: ';' is special to the shell)

--records-file FILE: JSON object NAME -> entry, where an entry is a list of IPs or an object with
  any of "addrs" (list of IPs), "cname", "rcode", "drop" (bool), "ttl", "delay_ms". Its entries
  replace --record entries of the same name. The file is re-read whenever its modification time,
  size or inode changes (checked on every query; write a new file and rename it over the old one),
  and on SIGHUP. If it cannot be parsed, the previous records stay and an error goes to stderr.

--query-log FILE: appends "NAME TYPE" (e.g. "svc.test AAAA") for every query received, so a test
  can count re-resolutions.

The process exits on SIGTERM or SIGINT, and by itself when its parent process goes away (so a
crashed test does not leave it behind), unless --no-parent-watch.
"""

import argparse
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time

TYPE_A, TYPE_CNAME, TYPE_AAAA, TYPE_ANY = 1, 5, 28, 255
TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV", 255: "ANY"}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}
CLASS_IN = 1
MAX_CNAME_HOPS = 8
UDP_MAX = 512


class FormatError(Exception):
    pass


def normalize(name):
    name = name.strip().lower()
    return name[:-1] if name.endswith(".") else name


def make_entry(addrs=(), cname=None, rcode=None, drop=False, ttl=None, delay_ms=0, default_ttl=30):
    entry = {"v4": [], "v6": [], "cname": None, "rcode": 0, "drop": bool(drop),
             "ttl": default_ttl if ttl is None else int(ttl), "delay_ms": int(delay_ms)}
    if not 0 <= entry["ttl"] <= 0x7FFFFFFF:
        raise ValueError("ttl out of range")
    for a in addrs:
        ip = ipaddress.ip_address(a.strip())
        (entry["v4"] if ip.version == 4 else entry["v6"]).append(ip.packed)
    if cname:
        entry["cname"] = normalize(cname)
    if rcode is not None:
        code = str(rcode).upper()
        if code not in RCODES:
            raise ValueError("unknown rcode %r" % rcode)
        entry["rcode"] = RCODES[code]
    return entry


def parse_record_spec(spec, default_ttl):
    if "=" not in spec:
        raise ValueError("expected NAME=VALUE[;OPTION...]: %r" % spec)
    name, rest = spec.split("=", 1)
    parts = rest.split(";")
    value, options = parts[0].strip(), parts[1:]
    kw = {"default_ttl": default_ttl}
    for opt in options:
        opt = opt.strip()
        if not opt:
            continue
        if opt.isdigit():
            kw["ttl"] = int(opt)
        elif opt.startswith("ttl="):
            kw["ttl"] = int(opt[4:])
        elif opt.startswith("delay_ms="):
            kw["delay_ms"] = int(opt[9:])
        else:
            raise ValueError("unknown option %r in %r" % (opt, spec))
    if value.startswith("cname:"):
        kw["cname"] = value[6:]
    elif value.startswith("rcode:"):
        kw["rcode"] = value[6:]
    elif value == "drop":
        kw["drop"] = True
    elif value:
        kw["addrs"] = value.split(",")
    return normalize(name), make_entry(**kw)


def parse_records_json(doc, default_ttl):
    if not isinstance(doc, dict):
        raise ValueError("the records file must hold a JSON object")
    records = {}
    for name, e in doc.items():
        if isinstance(e, list):
            records[normalize(name)] = make_entry(addrs=e, default_ttl=default_ttl)
        elif isinstance(e, dict):
            unknown = set(e) - {"addrs", "cname", "rcode", "drop", "ttl", "delay_ms"}
            if unknown:
                raise ValueError("%s: unknown keys %s" % (name, sorted(unknown)))
            records[normalize(name)] = make_entry(addrs=e.get("addrs", []), cname=e.get("cname"), rcode=e.get("rcode"),
                                                  drop=e.get("drop", False), ttl=e.get("ttl"),
                                                  delay_ms=e.get("delay_ms", 0), default_ttl=default_ttl)
        else:
            raise ValueError("%s: an entry is a list of IPs or an object" % name)
    return records


class Zone:
    """The records: --record entries overlaid with the records file, reloaded when it changes."""

    def __init__(self, static, path, default_ttl):
        self.static = static
        self.path = path
        self.default_ttl = default_ttl
        self.lock = threading.Lock()
        self.file_records = {}
        self.file_key = None
        self.force_reload = False
        self.maybe_reload()

    def maybe_reload(self):
        if not self.path:
            return
        with self.lock:
            try:
                st = os.stat(self.path)
                key = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError as e:
                key = None
                err = e
            if key is None:
                if self.file_key is not None or self.force_reload:
                    log("records file %s: %s (keeping previous records)" % (self.path, err))
                self.force_reload = False
                return
            if key == self.file_key and not self.force_reload:
                return
            self.force_reload = False
            self.file_key = key
            try:
                with open(self.path) as f:
                    self.file_records = parse_records_json(json.load(f), self.default_ttl)
            except (OSError, ValueError) as e:
                log("records file %s: %s (keeping previous records)" % (self.path, e))

    def lookup(self, name):
        self.maybe_reload()
        with self.lock:
            e = self.file_records.get(name)
            return e if e is not None else self.static.get(name)


def log(msg):
    sys.stderr.write("dns_responder: %s\n" % msg)
    sys.stderr.flush()


def encode_name(name):
    out = b""
    for label in name.split(".") if name else []:
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError("bad label in %r" % name)
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def parse_question(msg):
    """Returns (id, flags, qname, qtype, qclass, end offset of the question)."""
    if len(msg) < 12:
        raise FormatError("short header")
    qid, flags, qdcount = struct.unpack("!HHH", msg[:6])
    if qdcount != 1:
        raise FormatError("qdcount %d" % qdcount)
    pos, labels = 12, []
    while True:
        if pos >= len(msg):
            raise FormatError("truncated name")
        n = msg[pos]
        pos += 1
        if n == 0:
            break
        if n >= 64:
            raise FormatError("compressed or bad label in question")
        labels.append(msg[pos:pos + n].decode("ascii", "replace"))
        pos += n
    if pos + 4 > len(msg):
        raise FormatError("truncated question")
    qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
    return qid, flags, normalize(".".join(labels)), qtype, qclass, pos + 4


def rr(owner, rtype, ttl, rdata):
    return owner + struct.pack("!HHIH", rtype, CLASS_IN, ttl, len(rdata)) + rdata


def build_response(zone, msg, query_log):
    """Returns (response bytes or None to stay silent, delay in seconds)."""
    try:
        qid, qflags, qname, qtype, qclass, qend = parse_question(msg)
    except FormatError:
        if len(msg) < 12:
            return None, 0
        qid, qflags = struct.unpack("!HH", msg[:4])
        return struct.pack("!HHHHHH", qid, 0x8000 | (qflags & 0x7900) | RCODES["FORMERR"], 0, 0, 0, 0), 0
    if query_log:
        with open(query_log, "a") as f:
            f.write("%s %s\n" % (qname, TYPE_NAMES.get(qtype, str(qtype))))
    question = msg[12:qend]
    # QR, opcode and RD echoed, AA set
    flags = 0x8000 | (qflags & 0x7900) | 0x0400
    answers, rcode, delay = [], 0, 0.0
    if (qflags >> 11) & 0xF != 0:
        rcode = RCODES["NOTIMP"]
    elif qclass != CLASS_IN:
        rcode = RCODES["REFUSED"]
    else:
        entry = zone.lookup(qname)
        if entry is None:
            rcode = RCODES["NXDOMAIN"]
        elif entry["drop"]:
            return None, 0
        else:
            rcode = entry["rcode"]
            delay = entry["delay_ms"] / 1000.0
            owner, name, hops = b"\xc0\x0c", qname, 0
            while rcode == 0 and entry is not None and entry["cname"] and qtype != TYPE_CNAME and hops < MAX_CNAME_HOPS:
                answers.append(rr(owner, TYPE_CNAME, entry["ttl"], encode_name(entry["cname"])))
                name = entry["cname"]
                owner = encode_name(name)
                entry = zone.lookup(name)
                hops += 1
            if rcode == 0 and entry is not None:
                if qtype == TYPE_CNAME and entry["cname"]:
                    answers.append(rr(owner, TYPE_CNAME, entry["ttl"], encode_name(entry["cname"])))
                if qtype in (TYPE_A, TYPE_ANY):
                    answers += [rr(owner, TYPE_A, entry["ttl"], a) for a in entry["v4"]]
                if qtype in (TYPE_AAAA, TYPE_ANY):
                    answers += [rr(owner, TYPE_AAAA, entry["ttl"], a) for a in entry["v6"]]
    if rcode != 0:
        answers = []
    header = struct.pack("!HHHHHH", qid, flags | rcode, 1, len(answers), 0, 0)
    return header + question + b"".join(answers), delay


def truncate_for_udp(resp):
    if len(resp) <= UDP_MAX:
        return resp
    qid, flags = struct.unpack("!HH", resp[:4])
    _, _, _, _, _, qend = parse_question(resp)
    return struct.pack("!HHHHHH", qid, flags | 0x0200, 1, 0, 0, 0) + resp[12:qend]


def serve_tcp_conn(conn, zone, query_log):
    conn.settimeout(30)
    try:
        while True:
            hdr = recv_exact(conn, 2)
            if hdr is None:
                return
            msg = recv_exact(conn, struct.unpack("!H", hdr)[0])
            if msg is None:
                return
            resp, delay = build_response(zone, msg, query_log)
            if resp is None:
                continue
            if delay:
                time.sleep(delay)
            conn.sendall(struct.pack("!H", len(resp)) + resp)
    except OSError:
        pass
    finally:
        conn.close()


def send_quietly(sock, data, peer):
    try:
        sock.sendto(data, peer)
    except OSError:
        pass  # closed meanwhile, or the client went away: UDP gives no guarantee anyway


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def parse_listen(s):
    if s.startswith("["):
        host, _, port = s[1:].partition("]:")
    else:
        host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("--listen expects IP:PORT or [IPV6]:PORT, got %r" % s)
    ip = ipaddress.ip_address(host)
    return (socket.AF_INET if ip.version == 4 else socket.AF_INET6), host, int(port)


def bind_all(listens, want_tcp, attempts=50):
    """Binds UDP (and TCP) sockets for every listen address; port 0 picks one port shared by all."""
    for _ in range(attempts):
        socks, shared_port = [], 0
        try:
            for family, host, port in listens:
                port = port or shared_port
                u = socket.socket(family, socket.SOCK_DGRAM)
                socks.append(u)
                u.bind((host, port))
                port = u.getsockname()[1]
                shared_port = shared_port or port
                if want_tcp:
                    t = socket.socket(family, socket.SOCK_STREAM)
                    socks.append(t)
                    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    t.bind((host, port))
                    t.listen(64)
            return socks, shared_port
        except OSError:
            for s in socks:
                s.close()
            if all(p != 0 for _, _, p in listens):
                raise
    raise OSError("could not bind the same free port for UDP and TCP")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", action="append", required=True, help="IP:PORT or [IPV6]:PORT (loopback)")
    ap.add_argument("--record", action="append", default=[], help="NAME=VALUE[;OPTION...]")
    ap.add_argument("--records-file", help="JSON records, re-read when it changes and on SIGHUP")
    ap.add_argument("--ttl", type=int, default=30, help="default TTL in seconds (30)")
    ap.add_argument("--port-file", help="also write the port to this file")
    ap.add_argument("--query-log", help="append 'NAME TYPE' per query to this file")
    ap.add_argument("--no-tcp", action="store_true", help="UDP only")
    ap.add_argument("--no-parent-watch", action="store_true", help="keep running if the parent exits")
    ap.add_argument("--verbose", action="store_true", help="log every query to stderr")
    args = ap.parse_args()

    try:
        listens = [parse_listen(s) for s in args.listen]
        static = dict(parse_record_spec(s, args.ttl) for s in args.record)
        zone = Zone(static, args.records_file, args.ttl)
    except ValueError as e:
        ap.error(str(e))

    socks, port = bind_all(listens, not args.no_tcp)
    stop = threading.Event()

    def on_term(signum, frame):
        stop.set()

    def on_hup(signum, frame):
        zone.force_reload = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)

    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)
    sys.stdout.write("%d\n" % port)
    sys.stdout.flush()

    parent = os.getppid()
    while not stop.is_set():
        if not args.no_parent_watch and os.getppid() != parent:
            break
        try:
            ready, _, _ = select.select(socks, [], [], 0.5)
        except InterruptedError:
            continue
        for s in ready:
            if s.type == socket.SOCK_STREAM:
                try:
                    conn, _ = s.accept()
                except OSError:
                    continue
                threading.Thread(target=serve_tcp_conn, args=(conn, zone, args.query_log), daemon=True).start()
                continue
            try:
                msg, peer = s.recvfrom(65535)
            except OSError:
                continue
            resp, delay = build_response(zone, msg, args.query_log)
            if args.verbose:
                log("query from %s: %d bytes -> %s" % (peer, len(msg), "no answer" if resp is None else "%d bytes" % len(resp)))
            if resp is None:
                continue
            resp = truncate_for_udp(resp)
            if delay:
                timer = threading.Timer(delay, send_quietly, (s, resp, peer))
                timer.daemon = True
                timer.start()
            else:
                send_quietly(s, resp, peer)
    for s in socks:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
