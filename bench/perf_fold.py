#!/usr/bin/python3
"""Folds `perf script` output into flame-graph stacks (docs/profiling.md): Debian 12 packages no flamegraph.pl.

    perf script -i perf.data | /usr/bin/python3 bench/perf_fold.py > agent.folded
    perf script -i perf.data | /usr/bin/python3 bench/perf_fold.py --top 25

Default output: one line per distinct stack, "root;caller;...;leaf COUNT" (the folded format that flamegraph.pl,
inferno-flamegraph and speedscope read), sorted by count. --top N prints instead the N functions with the largest
inclusive share of the samples (on any frame of the stack) and the N with the largest exclusive share (leaf).
Frames perf could not name are written as [unknown] (Debian's libraries carry no symbols for static functions
unless their -dbgsym packages are installed); the offset suffix (+0x1f) is dropped so equal functions fold together.
"""
import argparse
import collections
import re
import signal
import sys

FRAME = re.compile(r"^\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$")


def frames_of(block):
    """The frames of one sample, leaf first, as function names (or [unknown]:library)."""
    out = []
    for line in block:
        m = FRAME.match(line)
        if not m:
            continue
        sym, obj = m.group(1), m.group(2)
        sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
        if sym == "[unknown]":
            sym = "[unknown]:%s" % obj.rsplit("/", 1)[-1]
        out.append(sym)
    return out


def samples(stream):
    """Yields (command, frames leaf first) for each sample of `perf script` output."""
    head, block = None, []
    for line in stream:
        line = line.rstrip("\n")
        if not line.strip():
            if head is not None:
                yield head, frames_of(block)
            head, block = None, []
        elif head is None:
            head = line.split()[0] if line.split() else "?"
        else:
            block.append(line)
    if head is not None:
        yield head, frames_of(block)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", type=int, default=0, help="print the top N functions instead of folded stacks")
    ap.add_argument("--no-comm", action="store_true", help="do not put the command name at the root of each stack")
    a = ap.parse_args()
    folded = collections.Counter()
    incl, excl, total = collections.Counter(), collections.Counter(), 0
    for comm, frames in samples(sys.stdin):
        if not frames:
            continue
        total += 1
        stack = list(reversed(frames))
        if not a.no_comm:
            stack.insert(0, comm)
        folded[";".join(f.replace(";", ":") for f in stack)] += 1
        excl[frames[0]] += 1
        for f in set(frames):
            incl[f] += 1
    if a.top:
        print("%d samples" % total)
        for title, counter in (("inclusive (on the stack)", incl), ("exclusive (leaf)", excl)):
            print("\n%s:" % title)
            for f, n in counter.most_common(a.top):
                print("%6.2f%%  %s" % (100.0 * n / max(total, 1), f))
        return 0
    for stack, n in folded.most_common():
        print("%s %d" % (stack, n))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the output quietly
    sys.exit(main())
