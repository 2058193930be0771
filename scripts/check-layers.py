#!/usr/bin/env python3
"""Checks the include graph of agent/src: no cycle between modules, and no include from a lower
layer to a higher one (docs/architecture.md, "Layers"). Prints the graph's offending edges with the
files that make them and exits 1; prints a one-line summary and exits 0 when clean.

A module is a directory of agent/src; files directly in agent/src (main.c) are the "assembly".
Usage: scripts/check-layers.py [agent/src]
"""
import os
import re
import sys

# lowest first; a module may include its own layer and those below, never above
LAYERS = [
    ("core", "config", "obs"),        # leaves: the loop, the snapshot's types, counters
    ("net", "tls"),                   # sockets, listeners, DNS; TLS contexts and handshakes
    ("proxy",),                       # message model, stream, filter and attempt interfaces
    ("upstream",),                    # clusters, endpoints, load balancers, protocol table, pools
    ("http1", "http2"),               # codecs: they fill the protocol table
    ("router", "policy", "filters", "tcp"),  # the terminal filter, retry/timeout policy, request filters; tcp: the
                                             # opaque relay, which authorizes with the filters' policy matcher
    ("admin", "assembly"),            # admin servers, main.c: the only places naming concrete parts
]
# same-layer modules that must not see each other
SEPARATE = [("http1", "http2")]

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def module_of(rel):
    parts = rel.split(os.sep)
    return parts[0] if len(parts) > 1 else "assembly"


def graph(root):
    modules = {d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))}
    edges = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith((".c", ".h")):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)
            src = module_of(rel)
            with open(path, encoding="utf-8", errors="replace") as fp:
                text = fp.read()
            for inc in INCLUDE.findall(text):
                dst = inc.split("/")[0] if "/" in inc else None
                if dst is None or dst not in modules or dst == src:
                    continue
                edges.setdefault((src, dst), set()).add(rel)
    return modules | {"assembly"}, edges


def find_cycles(nodes, edges):
    adj = {n: sorted({d for (s, d) in edges if s == n}) for n in nodes}
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for n in sorted(nodes):
        if n not in index:
            strong(n)
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent", "src")
    nodes, edges = graph(root)
    layer = {m: i for i, group in enumerate(LAYERS) for m in group}
    problems = []
    unknown = sorted(n for n in nodes if n not in layer)
    if unknown:
        problems.append(f"modules without a layer (add them to LAYERS in {sys.argv[0]}): {', '.join(unknown)}")
    for comp in find_cycles(nodes, edges):
        problems.append("cycle: " + " <-> ".join(comp))
        for (s, d), files in sorted(edges.items()):
            if s in comp and d in comp:
                problems.append(f"  {s} -> {d}: {', '.join(sorted(files))}")
    for (s, d), files in sorted(edges.items()):
        if s in layer and d in layer and layer[d] > layer[s]:
            problems.append(f"upward include: {s} (layer {layer[s]}) -> {d} (layer {layer[d]}): {', '.join(sorted(files))}")
        if (s, d) in SEPARATE or (d, s) in SEPARATE:
            problems.append(f"{s} must not include {d}: {', '.join(sorted(files))}")
    if problems:
        print("\n".join(problems))
        return 1
    print(f"layers: {len(nodes)} modules, {len(edges)} module edges, no cycle, no upward include")
    return 0


if __name__ == "__main__":
    sys.exit(main())
