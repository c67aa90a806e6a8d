#!/usr/bin/python3
"""Reference milter for markgate's benchmarks, in pymilter (Debian python3-milter): adds one
header and replaces the body with the body plus a two-line disclaimer, like disclaimer.c.

Run: /usr/bin/python3 disclaimer.py unix:/tmp/py.sock   (or inet:PORT@127.0.0.1)"""
import os
import sys

import Milter

DISCLAIMER = (b"\r\n-- \r\n"
              b"This message has been scanned and labelled by the gateway.\r\n"
              b"Communications with this organisation may be monitored or recorded.\r\n")


class Disclaimer(Milter.Base):
    def __init__(self):
        self.chunks = []

    @Milter.noreply
    def envfrom(self, mailfrom, *args):
        self.chunks = []
        return Milter.CONTINUE

    def body(self, chunk):
        self.chunks.append(chunk)
        return Milter.CONTINUE

    def eom(self):
        self.addheader("X-Reference-Label", "OFFICIAL")
        self.replacebody(b"".join(self.chunks) + DISCLAIMER)
        self.chunks = []
        return Milter.CONTINUE

    def abort(self):
        self.chunks = []
        return Milter.CONTINUE


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: disclaimer.py SOCKET")
    sock = sys.argv[1]
    if sock.startswith("unix:"):
        try:
            os.unlink(sock[5:])
        except FileNotFoundError:
            pass
    Milter.factory = Disclaimer
    Milter.set_flags(Milter.ADDHDRS + Milter.CHGBODY)
    Milter.runmilter("markgate-bench-pymilter", sock, 600)


if __name__ == "__main__":
    main()
