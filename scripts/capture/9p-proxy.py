#!/usr/bin/env python3
"""Logging TCP proxy for 9P: records every frame exchanged between a client and a server.

Listens on --listen HOST:PORT, connects each accepted client to --connect HOST:PORT, and
forwards bytes unchanged in both directions. Each direction's byte stream is split into 9P
frames by their size[4] field (little-endian, counts itself); every complete frame is appended
to --out as one line:

    C <hex>    a frame sent by the client (a T-message)
    S <hex>    a frame sent by the server (an R-message)

Lines are written in the order the proxy received the frames. With several connections each
line is prefixed by "<n> " unless --single is given (then a second connection is refused).
A frame is logged only when complete; bytes left at EOF are reported as "# trailing ..." lines.
Stops on SIGTERM/SIGINT, or after the first connection closes with --once.
"""

import argparse
import select
import signal
import socket
import sys
import threading

MAX_FRAME = 16 * 1024 * 1024


def hostport(text):
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


class Log:
    """Serialises lines from both directions into one file, flushed per line."""

    def __init__(self, path):
        self.f = open(path, "a", encoding="ascii")
        self.lock = threading.Lock()
        self.frames = 0

    def line(self, text):
        with self.lock:
            self.f.write(text + "\n")
            self.f.flush()

    def frame(self, prefix, tag, data):
        with self.lock:
            self.f.write(f"{prefix}{tag} {data.hex()}\n")
            self.f.flush()
            self.frames += 1


class Splitter:
    """Accumulates one direction's bytes and yields whole frames."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        frames = []
        while len(self.buf) >= 4:
            size = int.from_bytes(self.buf[:4], "little")
            if size < 7 or size > MAX_FRAME:
                raise ValueError(f"implausible frame size {size}")
            if len(self.buf) < size:
                break
            frames.append(bytes(self.buf[:size]))
            del self.buf[:size]
        return frames


def relay(client, upstream, log, prefix):
    """Forwards both directions of one connection until either side closes."""
    split = {client: Splitter(), upstream: Splitter()}
    peer = {client: upstream, upstream: client}
    tag = {client: "C", upstream: "S"}
    socks = [client, upstream]
    try:
        while True:
            readable, _, _ = select.select(socks, [], [])
            for s in readable:
                data = s.recv(1 << 20)
                if not data:
                    return split, tag
                peer[s].sendall(data)
                try:
                    for fr in split[s].feed(data):
                        log.frame(prefix, tag[s], fr)
                except ValueError as e:
                    log.line(f"# {prefix}{tag[s]} framing lost: {e}")
                    split[s].buf.clear()
    except OSError as e:
        log.line(f"# {prefix}connection error: {e}")
        return split, tag
    finally:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, type=hostport, help="HOST:PORT to accept on")
    ap.add_argument("--connect", required=True, type=hostport, help="HOST:PORT of the server")
    ap.add_argument("--out", required=True, help="file to append frame lines to")
    ap.add_argument("--single", action="store_true", help="one connection, no per-line prefix")
    ap.add_argument("--once", action="store_true", help="exit after the first connection ends")
    args = ap.parse_args()

    log = Log(args.out)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(args.listen)
    srv.listen(8)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"9p-proxy: {args.listen[0]}:{args.listen[1]} -> {args.connect[0]}:{args.connect[1]}, "
          f"log {args.out}", file=sys.stderr, flush=True)

    n = 0
    threads = []
    try:
        while True:
            client, addr = srv.accept()
            n += 1
            if args.single and n > 1:
                print(f"9p-proxy: refusing second connection from {addr}", file=sys.stderr)
                client.close()
                continue
            upstream = socket.create_connection(args.connect)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            prefix = "" if args.single else f"{n} "
            print(f"9p-proxy: connection {n} from {addr[0]}:{addr[1]}", file=sys.stderr, flush=True)

            def run(c=client, u=upstream, p=prefix):
                split, tag = relay(c, u, log, p)
                for s, sp in split.items():
                    if sp.buf:
                        log.line(f"# {p}{tag[s]} trailing {len(sp.buf)} bytes: {bytes(sp.buf).hex()}")

            t = threading.Thread(target=run, daemon=True)
            t.start()
            threads.append(t)
            if args.once:
                t.join()
                break
    except KeyboardInterrupt:
        pass
    finally:
        srv.close()
        print(f"9p-proxy: {log.frames} frames logged", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
