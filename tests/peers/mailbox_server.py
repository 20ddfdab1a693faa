"""A mail exchanger for the SMTP probe tests (aiosmtpd), knowing its mailboxes.

Usage: mailbox_server.py PORT MAILBOXES_FILE LOG

The mailboxes file is JSON: {"users": ["ivan@mx.test", ...], "catch_all": ["catchall.test"],
"greylist": ["grey@mx.test"]}. RCPT TO a listed user gets 250, a greylisted one 451 the first
time and 250 after; any address of a catch-all domain 250; anything else 550 5.1.1. DATA is
refused (a probe must never send it). Every command's verb and argument is appended to LOG as a
JSON line. Prints `ready` once it listens; runs until SIGTERM.
"""

import json
import signal
import sys
import threading

from aiosmtpd.controller import Controller


class Mailboxes:
    def __init__(self, mailboxes, log):
        self.users = {user.lower() for user in mailboxes.get("users", [])}
        self.catch_all = {domain.lower() for domain in mailboxes.get("catch_all", [])}
        self.greylist = {user.lower() for user in mailboxes.get("greylist", [])}
        self.greeted = set()
        self.log = open(log, "a", encoding="utf-8")
        self.lock = threading.Lock()

    def note(self, verb, argument):
        with self.lock:
            self.log.write(json.dumps({"verb": verb, "argument": argument}) + "\n")
            self.log.flush()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.note("EHLO", hostname)
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.note("MAIL", address)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.note("RCPT", address)
        lowered = address.lower()
        domain = lowered.rsplit("@", 1)[-1]
        if domain in self.catch_all:
            return "250 OK"
        if lowered in self.greylist:
            with self.lock:
                first = lowered not in self.greeted
                self.greeted.add(lowered)
            if first:
                return "451 4.7.1 greylisted, try again later"
        if lowered in self.users or lowered in self.greylist:
            return "250 OK"
        return f"550 5.1.1 <{address}>: no such user"

    async def handle_DATA(self, server, session, envelope):
        self.note("DATA", "")
        return "554 5.7.1 this server takes no messages"

    async def handle_RSET(self, server, session, envelope):
        self.note("RSET", "")
        return "250 OK"

    async def handle_QUIT(self, server, session, envelope):
        self.note("QUIT", "")
        return "221 Bye"


def main():
    port = int(sys.argv[1])
    with open(sys.argv[2], encoding="utf-8") as file:
        mailboxes = json.load(file)
    # The server's own name is given: without it aiosmtpd asks getfqdn() on every connection.
    controller = Controller(
        Mailboxes(mailboxes, sys.argv[3]), hostname="127.0.0.1", port=port, server_hostname="mx.test"
    )
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
