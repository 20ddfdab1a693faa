"""An authoritative DNS server on loopback for the contact validation tests (dnslib).

Usage: dns_server.py PORT ZONE_FILE

The zone file is JSON: {"domain": {"mx": [[preference, "host."], ...], "a": ["127.0.0.1"],
"behaviour": "servfail" | "silent"}}. Names under a listed domain answer as listed (an empty
answer with NOERROR for a type it lacks); any other name is NXDOMAIN; "servfail" answers
SERVFAIL and "silent" never answers. Serves UDP and TCP; prints "ready" once both listen.
"""

import json
import sys
import time

from dnslib import A, MX, QTYPE, RCODE, RR, SOA, DNSLabel
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class ZoneResolver(BaseResolver):
    def __init__(self, zones):
        self.zones = {DNSLabel(name): zone for name, zone in zones.items()}

    def resolve(self, request, handler):
        reply = request.reply()
        name = request.q.qname
        zone = self.zones.get(name)
        if zone is None:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(RR(name, QTYPE.SOA, rdata=SOA("ns.test.", "hostmaster.test.", (1, 3600, 600, 86400, 60)), ttl=60))
            return reply
        behaviour = zone.get("behaviour")
        if behaviour == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if behaviour == "silent":
            raise Silence(str(name))
        qtype = QTYPE[request.q.qtype]
        if qtype == "MX":
            for preference, host in zone.get("mx", []):
                reply.add_answer(RR(name, QTYPE.MX, rdata=MX(host, preference), ttl=300))
        if qtype == "A":
            for address in zone.get("a", []):
                reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=300))
        if not reply.rr:
            reply.add_auth(RR(name, QTYPE.SOA, rdata=SOA("ns.test.", "hostmaster.test.", (1, 3600, 600, 86400, 60)), ttl=60))
        return reply


class Silence(Exception):
    """Raised for a silent zone: dnslib then sends nothing (socketserver logs the exception)."""


def main():
    port = int(sys.argv[1])
    with open(sys.argv[2], encoding="utf-8") as file:
        zones = json.load(file)
    resolver = ZoneResolver(zones)
    # Nothing is logged: stdout carries only "ready".
    quiet = DNSLogger(logf=lambda _: None)
    servers = [
        DNSServer(resolver, address="127.0.0.1", port=port, tcp=tcp, logger=quiet)
        for tcp in (False, True)
    ]
    for server in servers:
        server.start_thread()
    print("ready", flush=True)
    while all(server.isAlive() for server in servers):
        time.sleep(0.5)


if __name__ == "__main__":
    main()
