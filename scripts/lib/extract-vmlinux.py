#!/usr/bin/env python3
"""Extracts the uncompressed ELF kernel (vmlinux) from a bzImage, if it can be booted directly.

QEMU boots an ELF kernel that carries a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18)
without running the bzImage's self-decompressor, which under software emulation (TCG) takes
several seconds. Usage: extract-vmlinux.py BZIMAGE OUT. Exits 0 and writes OUT only when the
payload was found, decompressed to an ELF file and has the PVH note; otherwise exits 1 with a
reason on stderr (callers then keep using the bzImage).
"""

import gzip
import lzma
import re
import subprocess
import sys

# (magic, decompress(data from the magic on) -> bytes)
def _xz(b):
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(b)


def _gz(b):
    import zlib
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(b)


def _zstd(b):
    # zstd stops after the frame and complains about trailing bytes; the output is still whole.
    r = subprocess.run(["zstd", "-dcq"], input=b, capture_output=True, check=False)
    return r.stdout


FORMATS = [(b"\xfd7zXZ\x00", _xz), (b"\x28\xb5\x2f\xfd", _zstd), (b"\x1f\x8b\x08", _gz)]
PVH_NOTE = re.compile(rb"\x04\x00\x00\x00.\x00\x00\x00\x12\x00\x00\x00Xen\x00", re.S)


def main(src, dst):
    data = open(src, "rb").read()
    for magic, fn in FORMATS:
        at = data.find(magic)
        while at >= 0:
            try:
                out = fn(data[at:])
            except (lzma.LZMAError, OSError, EOFError, ValueError):
                out = b""
            if out[:4] == b"\x7fELF":
                if not PVH_NOTE.search(out):
                    print("vmlinux has no PVH entry note; QEMU cannot boot it directly", file=sys.stderr)
                    return 1
                with open(dst, "wb") as f:
                    f.write(out)
                return 0
            at = data.find(magic, at + 1)
    print("no compressed ELF payload found in the bzImage", file=sys.stderr)
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: extract-vmlinux.py BZIMAGE OUT")
    sys.exit(main(sys.argv[1], sys.argv[2]))
