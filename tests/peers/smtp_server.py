"""A real SMTP server for the email tests (aiosmtpd), scripted by recipient.

    smtp_server.py PORT LOG [--defer-times N] [--data-delay SECONDS] [--stall-seconds S]
                   [--busy-domain DOMAIN --busy-rate N --busy-for SECONDS]
                   [--tls starttls|implicit --cert PEM --key PEM]

Recipients whose local part starts with `reject` get 550, those starting with `nul` get a 550
whose text holds a NUL byte (a relay's reply is foreign text); those starting with `defer` get 451 for
their first N RCPTs (default 1), then are accepted; those starting with `stall` get no answer to
their first RCPT for S seconds (default 600: a relay that hangs), then are accepted. With
--busy-domain, recipients of that domain are a server under load for --busy-for seconds from
the first of them: more than --busy-rate RCPTs within a second get 421 (each appended to
LOG.pushbacks as {"at": ...}), then every RCPT is accepted again. Every accepted
message is appended to LOG as one JSON line: {"from": ..., "to": [...], "data": "<the message as
received>", "at": <seconds since the epoch, when its DATA was accepted>}; every QUIT appends {"quit": true} to LOG.quits. With --tls it speaks STARTTLS (and
requires it before MAIL) or TLS from the first byte, with the given certificate. Prints `ready`
once it listens; runs until SIGTERM.
"""

import argparse
import asyncio
import collections
import json
import signal
import ssl
import threading
import time

from aiosmtpd.controller import Controller


class Scripted:
    def __init__(self, log, defer_times, data_delay, stall_seconds, busy=None):
        self.busy = busy
        self.busy_since = None
        self.busy_recent = collections.deque()
        self.pushbacks = open(log + ".pushbacks", "a", encoding="utf-8")
        self.log = open(log, "a", encoding="utf-8")
        self.quits = open(log + ".quits", "a", encoding="utf-8")
        self.defer_times = defer_times
        self.data_delay = data_delay
        self.stall_seconds = stall_seconds
        self.deferred = collections.Counter()
        self.stalled = set()
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject"):
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        if local.startswith("nul"):
            return f"550 5.1.1 <{address}>: no\x00such user"
        if local.startswith("stall"):
            with self.lock:
                first = address.lower() not in self.stalled
                self.stalled.add(address.lower())
            if first:
                await asyncio.sleep(self.stall_seconds)
        if self.busy and address.lower().endswith("@" + self.busy[0]):
            domain, rate, seconds = self.busy
            now = time.time()
            with self.lock:
                if self.busy_since is None:
                    self.busy_since = now
                while self.busy_recent and self.busy_recent[0] <= now - 1.0:
                    self.busy_recent.popleft()
                if now - self.busy_since < seconds and len(self.busy_recent) >= rate:
                    self.pushbacks.write(json.dumps({"at": now}) + "\n")
                    self.pushbacks.flush()
                    return "421 4.7.0 too many messages; slow down"
                self.busy_recent.append(now)
        if local.startswith("defer"):
            with self.lock:
                self.deferred[address.lower()] += 1
                if self.deferred[address.lower()] <= self.defer_times:
                    return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        line = json.dumps(
            {
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "data": envelope.original_content.decode("utf-8", "replace"),
                "at": time.time(),
            }
        )
        with self.lock:
            self.log.write(line + "\n")
            self.log.flush()
        return "250 2.0.0 queued"

    async def handle_QUIT(self, server, session, envelope):
        with self.lock:
            self.quits.write(json.dumps({"quit": True}) + "\n")
            self.quits.flush()
        return "221 Bye"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("log")
    parser.add_argument("--defer-times", type=int, default=1)
    parser.add_argument("--data-delay", type=float, default=0.0)
    parser.add_argument("--stall-seconds", type=float, default=600.0)
    parser.add_argument("--busy-domain")
    parser.add_argument("--busy-rate", type=int, default=10)
    parser.add_argument("--busy-for", type=float, default=5.0)
    parser.add_argument("--tls", choices=["starttls", "implicit"])
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    busy = (args.busy_domain.lower(), args.busy_rate, args.busy_for) if args.busy_domain else None
    handler = Scripted(args.log, args.defer_times, args.data_delay, args.stall_seconds, busy)
    options = {}
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        if args.tls == "implicit":
            options = {"ssl_context": context}
        else:
            options = {"tls_context": context, "require_starttls": True}
    controller = Controller(handler, hostname="127.0.0.1", port=args.port, **options)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
