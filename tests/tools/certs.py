#!/usr/bin/python3
"""Generates a throw-away TLS certificate set with the openssl CLI.

make_certs(DIR) writes:
  ca.crt / ca.key           a test CA
  server.crt / server.key   signed by it, for DNS:localhost and IP:127.0.0.1 (serverAuth)
  other-ca.crt              an unrelated CA (to check that peers are really verified)
and returns their paths in a dict. CLI: certs.py DIR
"""

import os
import subprocess
import sys


def _run(args, cwd):
    subprocess.run(["openssl"] + args, cwd=cwd, check=True, timeout=30, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def _ca(cwd, name, cn):
    _run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
          "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={cn}", "-days", "3",
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], cwd)


def make_certs(directory):
    os.makedirs(directory, exist_ok=True)
    _ca(directory, "ca", "Remora Test CA")
    _ca(directory, "other-ca", "Unrelated Test CA")
    _run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "server.key",
          "-out", "server.csr", "-subj", "/CN=localhost"], directory)
    with open(os.path.join(directory, "server.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n")
    _run(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
          "-out", "server.crt", "-days", "3", "-extfile", "server.ext"], directory)
    p = lambda n: os.path.join(directory, n)  # noqa: E731
    return {"ca": p("ca.crt"), "ca_key": p("ca.key"), "cert": p("server.crt"), "key": p("server.key"),
            "other_ca": p("other-ca.crt")}


if __name__ == "__main__":
    print(make_certs(sys.argv[1] if len(sys.argv) > 1 else "certs"))
