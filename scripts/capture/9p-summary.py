#!/usr/bin/env python3
"""Summarises a 9P frame log ('C <hex>' / 'S <hex>' lines, as written by 9p-proxy.py).

Checks that every line is one whole frame (size[4] equals its length) and that every
R-message answers an outstanding T-message of the same tag with type T+1 or Rlerror/Rerror
(an Rflush also ends the request it flushed).
Prints '# '-prefixed lines: frame count, per-type counts, and the errors returned per request
type. Exits 1 if a frame is malformed or unmatched.
"""

import collections
import errno
import sys

NAMES = {
    6: "lerror", 8: "statfs", 12: "lopen", 14: "lcreate", 16: "symlink", 18: "mknod",
    20: "rename", 22: "readlink", 24: "getattr", 26: "setattr", 30: "xattrwalk",
    32: "xattrcreate", 40: "readdir", 50: "fsync", 52: "lock", 54: "getlock", 70: "link",
    72: "mkdir", 74: "renameat", 76: "unlinkat", 100: "version", 102: "auth", 104: "attach",
    106: "error", 108: "flush", 110: "walk", 112: "open", 114: "create", 116: "read",
    118: "write", 120: "clunk", 122: "remove", 124: "stat", 126: "wstat",
}


def name(t):
    return ("T" if t % 2 == 0 else "R") + NAMES.get(t - t % 2, str(t - t % 2))


def main(path):
    counts = collections.Counter()
    errors = collections.Counter()
    outstanding = {}
    flushes = {}  # Tflush tag -> oldtag
    problems = []
    frames = 0
    with open(path, encoding="ascii") as f:
        for n, line in enumerate(f, 1):
            if not line.startswith(("C ", "S ")):
                continue
            b = bytes.fromhex(line[2:].strip())
            if len(b) < 7 or int.from_bytes(b[:4], "little") != len(b):
                problems.append(f"line {n}: size field does not match the frame length")
                continue
            frames += 1
            t, tag = b[4], int.from_bytes(b[5:7], "little")
            counts[name(t)] += 1
            if line[0] == "C":
                outstanding[tag] = t
                if t == 108 and len(b) >= 9:  # Tflush oldtag[2]
                    flushes[tag] = int.from_bytes(b[7:9], "little")
                continue
            req = outstanding.pop(tag, None)
            if t == 109 and tag in flushes:  # Rflush: the flushed request is over too
                outstanding.pop(flushes.pop(tag), None)
            if req is None or t not in (req + 1, 7, 107):
                problems.append(f"line {n}: {name(t)} tag {tag} answers no matching request")
            elif t == 7 and len(b) >= 11:
                code = int.from_bytes(b[7:11], "little")
                errors[(name(req), errno.errorcode.get(code, str(code)))] += 1
    print(f"# frames: {frames}; distinct message types: {len(counts)}")
    print("# counts: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if errors:
        print("# Rlerror: " + " ".join(f"{r}->{e}x{v}" for (r, e), v in sorted(errors.items())))
    if outstanding:
        problems.append(f"requests never answered: tags {sorted(outstanding)}")
    for p in problems:
        print(f"# PROBLEM {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: 9p-summary.py FRAMES.txt")
    sys.exit(main(sys.argv[1]))
