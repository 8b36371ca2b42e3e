#!/usr/bin/env python3
"""Logging TCP proxy for 9P: records every frame exchanged between a client and a server.

Listens on --listen HOST:PORT, connects each accepted client to --connect HOST:PORT, and
forwards bytes unchanged in both directions. Each direction's byte stream is split into 9P
frames by their size[4] field (little-endian, counts itself); every complete frame is appended
to --out as one line:

    C <hex>    a frame sent by the client (a T-message)
    S <hex>    a frame sent by the server (an R-message)

Lines are written in the order the proxy forwarded the frames. With several connections each
line is prefixed by "<n> " unless --single is given (then a second connection is refused).
Frames are forwarded whole, and logged as they are forwarded; bytes left at EOF are reported as
"# trailing ..." lines. With --hold-walk NAME the server's reply to any Twalk naming NAME is held
back, so a client can interrupt that request and send Tflush; the held reply is then dropped
(logged as a "# held reply dropped" comment) when the server's Rflush passes.
Stops on SIGTERM/SIGINT, or after the first connection closes with --once.
"""

import argparse
import select
import signal
import socket
import sys
import threading
import time

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


TWALK, TFLUSH, RFLUSH = 110, 108, 109


def walk_names(frame):
    """The names of a Twalk frame: size[4] type[1] tag[2] fid[4] newfid[4] nwname[2] wname[s]..."""
    names, at = [], 17
    for _ in range(int.from_bytes(frame[15:17], "little")):
        n = int.from_bytes(frame[at:at + 2], "little")
        names.append(frame[at + 2:at + 2 + n].decode("utf-8", "replace"))
        at += 2 + n
    return names


class Holder:
    """Holds back the server's reply to any Twalk naming a trigger name, so the client's request
    stays outstanding long enough to be interrupted (the kernel then sends Tflush). A held reply
    whose tag is flushed is dropped (logged as a comment) when the server's Rflush passes, as a
    server that aborted the request would; otherwise it is released after `seconds`."""

    def __init__(self, name, seconds):
        self.name, self.seconds = name, seconds
        self.watch = set()  # tags of trigger walks awaiting their reply
        self.held = {}  # tag -> (reply frame, release time)
        self.flushed = set()  # held tags named by a Tflush

    def client_frame(self, fr):
        tag = int.from_bytes(fr[5:7], "little")
        if self.name and fr[4] == TWALK and self.name in walk_names(fr):
            self.watch.add(tag)
        elif fr[4] == TFLUSH:
            oldtag = int.from_bytes(fr[7:9], "little")
            if oldtag in self.held:
                self.flushed.add(oldtag)

    def server_frame(self, fr, now):
        """Returns (frames to forward now, frames dropped)."""
        tag = int.from_bytes(fr[5:7], "little")
        if tag in self.watch and fr[4] != RFLUSH:
            self.watch.discard(tag)
            self.held[tag] = (fr, now + self.seconds)
            return [], []
        if fr[4] == RFLUSH:
            dropped = [self.held.pop(t)[0] for t in sorted(self.flushed) if t in self.held]
            self.flushed.clear()
            return [fr], dropped
        return [fr], []

    def due(self, now):
        out = [t for t, (_, when) in self.held.items() if when <= now]
        return [self.held.pop(t)[0] for t in out]

    def timeout(self, now):
        if not self.held:
            return None
        return max(0.0, min(when for _, when in self.held.values()) - now)


def relay(client, upstream, log, prefix, holder):
    """Forwards both directions of one connection, frame by frame, until either side closes.
    A direction whose framing is lost falls back to forwarding raw bytes."""
    split = {client: Splitter(), upstream: Splitter()}
    raw = {client: False, upstream: False}
    peer = {client: upstream, upstream: client}
    tag = {client: "C", upstream: "S"}
    socks = [client, upstream]
    try:
        while True:
            now = time.monotonic()
            for fr in holder.due(now):
                client.sendall(fr)
                log.frame(prefix, "S", fr)
            readable, _, _ = select.select(socks, [], [], holder.timeout(now))
            for s in readable:
                data = s.recv(1 << 20)
                if not data:
                    return split, tag
                if raw[s]:
                    peer[s].sendall(data)
                    continue
                try:
                    frames = split[s].feed(data)
                except ValueError as e:
                    log.line(f"# {prefix}{tag[s]} framing lost, forwarding raw bytes: {e}")
                    peer[s].sendall(bytes(split[s].buf))
                    split[s].buf.clear()
                    raw[s] = True
                    continue
                for fr in frames:
                    if s is client:
                        holder.client_frame(fr)
                        upstream.sendall(fr)
                        log.frame(prefix, "C", fr)
                        continue
                    send, dropped = holder.server_frame(fr, time.monotonic())
                    for d in dropped:
                        log.line(f"# {prefix}held reply dropped (its request was flushed): S {d.hex()}")
                    for f in send:
                        client.sendall(f)
                        log.frame(prefix, "S", f)
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
    ap.add_argument("--hold-walk", metavar="NAME", default="",
                    help="hold back replies to Twalks naming NAME (to provoke Tflush)")
    ap.add_argument("--hold-seconds", type=float, default=30.0,
                    help="release a held reply that was not flushed after this long")
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
                split, tag = relay(c, u, log, p, Holder(args.hold_walk, args.hold_seconds))
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
