"""Captures the TCP payloads seen on an interface (an AF_PACKET socket; root, inside the test's network namespace), so
that a test can assert what crossed the wire in clear. Writes records of (source port, destination port, length)
followed by the payload, for SECONDS; with PORTS (comma-separated) only segments from or to one of them.

    python3 sniff.py IFACE OUTFILE SECONDS [PORTS]

Prints "sniffing" once the socket is bound."""

import socket
import struct
import sys
import time


def main():
    iface, out_path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    ports = {int(p) for p in sys.argv[4].split(",")} if len(sys.argv) > 4 else None
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
    s.bind((iface, 0))
    s.settimeout(0.2)
    deadline = time.time() + seconds
    with open(out_path, "wb") as out:
        print("sniffing", flush=True)
        while time.time() < deadline:
            try:
                pkt = s.recv(65535)
            except socket.timeout:
                continue
            if struct.unpack("!H", pkt[12:14])[0] != 0x0800 or pkt[14 + 9] != 6:  # IPv4, TCP
                continue
            ip = pkt[14:]
            ihl, tot = (ip[0] & 15) * 4, struct.unpack("!H", ip[2:4])[0]
            tcp = ip[ihl:tot]
            sport, dport = struct.unpack("!HH", tcp[:4])
            payload = tcp[(tcp[12] >> 4) * 4:]
            if payload and (ports is None or sport in ports or dport in ports):
                out.write(struct.pack("!HHI", sport, dport, len(payload)) + payload)
                out.flush()


if __name__ == "__main__":
    main()
