"""A TCP server that tells each client where the connection was going and where it landed.

    origdst_server.py NAME=ADDR:PORT [NAME=[V6]:PORT ...]

For every accepted connection it writes one JSON line and closes:
{"listener": NAME, "local": "ADDR:PORT", "orig": "ADDR:PORT" or null, "peer": "ADDR:PORT"}.
"orig" is the connection's original destination from netfilter (SO_ORIGINAL_DST at SOL_IP for
IPv4, IP6T_SO_ORIGINAL_DST at SOL_IPV6 (IPPROTO_IPV6) for IPv6, both 80), null when conntrack has no entry.
Prints "ready" on stdout once every listener is bound. Runs until killed (tests start it in a
network namespace with a timeout and stop it by PID).
"""

import ipaddress
import json
import selectors
import socket
import struct
import sys

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h


def fmt(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def original_dst(conn):
    try:
        if conn.family == socket.AF_INET:
            raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)  # struct sockaddr_in
            port = struct.unpack("!H", raw[2:4])[0]
            return fmt(socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
        raw = conn.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)  # struct sockaddr_in6
        port = struct.unpack("!H", raw[2:4])[0]
        return fmt(socket.inet_ntop(socket.AF_INET6, raw[8:24]), port)
    except OSError:
        return None


def main(argv):
    sel = selectors.DefaultSelector()
    for spec in argv:
        name, _, addr = spec.partition("=")
        host, _, port = addr.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, int(port)))
        s.listen(64)
        sel.register(s, selectors.EVENT_READ, name)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            conn, peer = key.fileobj.accept()
            with conn:
                local = conn.getsockname()
                line = {
                    "listener": key.data,
                    "local": fmt(local[0], local[1]),
                    "orig": original_dst(conn),
                    "peer": fmt(peer[0], peer[1]),
                }
                conn.settimeout(2)
                try:
                    conn.sendall((json.dumps(line) + "\n").encode())
                except OSError:
                    pass


if __name__ == "__main__":
    main(sys.argv[1:])
