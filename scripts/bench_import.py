"""The Python half of scripts/bench-import: the contact file and its peers' data, the checks of
celeritas' figures, CPU accounting from /proc, and the plain-Python baseline.

    bench_import.py generate DIR --contacts N --domains D [--seed S]
    celeritas follow ID --json | bench_import.py stamp > EVENTS
    bench_import.py snapshot OUT [--pid NAME=PID ...] [--database-url URL --database NAME]
    bench_import.py check EVENTS --expected DIR/expected.json --validation V --seconds S
        --submitted-at T --worker-hwm-kb KB --before SNAPSHOT --after SNAPSHOT >> results.jsonl
    bench_import.py peer FILE --validation dns|smtp --dns-port P [--smtp-port P] [--limit M]
    bench_import.py report RESULTS.jsonl PEER.json ...

The contact file (`generate`): `email,name`, one row per contact, domains in random order.
Every address says what it should come to, so any subset can be checked: `user123@d0042.bench`
is a mailbox the mail exchanger knows (250), `nobody123@d0042.bench` one it does not (550),
`user123@nx0003.bench` is at a domain that does not exist (NXDOMAIN), and `user123.d0042.bench`
(no @) or `user..123@d0042.bench` (two dots) is not an address. Every `dNNNN.bench` has one MX,
`mx.dNNNN.bench.`, whose A record is 127.0.0.1; `generate` writes the zones for
tests/peers/dns_server.py and the mailboxes for tests/peers/mailbox_server.py (no catch-all, no
greylisting), and the counts by verdict each validation depth must record.

The baseline (`peer`) does what `validate_contact_batch` does, in plain Python, on the same file
against the same servers: the file read with the csv module in batches of --batch-size; per
batch the syntax checked and the contacts grouped by domain, then the domains handed to a pool
of --threads threads, each asking dnspython for the domain's MX (once per domain for the whole
run: a shared cache; no MX means the A fallback), and with smtp one smtplib session per domain
and batch (EHLO, MAIL FROM, a random address first, asked once per domain for the run, to tell
a catch-all, then RCPT TO per address, QUIT), the exchanger's address from dnspython too (also
cached). It writes nothing anywhere: no broker, no database, no result backend, so it is a
lower bound on what the seed's Celery tasks spent on the same checks.
"""

import argparse
import concurrent.futures
import csv
import json
import os
import random
import re
import smtplib
import subprocess
import sys
import threading
import time

SYNTAX_INVALID = 0.03
NO_SUCH_DOMAIN = 0.02
UNKNOWN_MAILBOX = 0.05


def domain_names(domains):
    width = max(4, len(str(domains - 1)))
    return [f"d{index:0{width}d}.bench" for index in range(domains)]


def missing_domain_names(domains):
    return [f"nx{index:04d}.bench" for index in range(max(1, domains // 50))]


def generate(args):
    rng = random.Random(args.seed)
    domains = domain_names(args.domains)
    missing = missing_domain_names(args.domains)
    os.makedirs(args.dir, exist_ok=True)
    users = []
    counts = {"syntax": 0, "no_such_domain": 0, "unknown_mailbox": 0, "mailbox": 0}
    with open(os.path.join(args.dir, "contacts.csv"), "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["email", "name"])
        for index in range(args.contacts):
            draw = rng.random()
            domain = rng.choice(domains)
            if draw < SYNTAX_INVALID:
                email = f"user{index}.{domain}" if index % 2 else f"user..{index}@{domain}"
                counts["syntax"] += 1
            elif draw < SYNTAX_INVALID + NO_SUCH_DOMAIN:
                email = f"user{index}@{rng.choice(missing)}"
                counts["no_such_domain"] += 1
            elif draw < SYNTAX_INVALID + NO_SUCH_DOMAIN + UNKNOWN_MAILBOX:
                email = f"nobody{index}@{domain}"
                counts["unknown_mailbox"] += 1
            else:
                email = f"user{index}@{domain}"
                users.append(email)
                counts["mailbox"] += 1
            writer.writerow([email, f"User {index}"])
    zones = {}
    for domain in domains:
        zones[domain] = {"mx": [[10, f"mx.{domain}."]]}
        zones[f"mx.{domain}"] = {"a": ["127.0.0.1"]}
    with open(os.path.join(args.dir, "zones.json"), "w", encoding="utf-8") as file:
        json.dump(zones, file)
    with open(os.path.join(args.dir, "mailboxes.json"), "w", encoding="utf-8") as file:
        json.dump({"users": users, "greylist": [], "catch_all": []}, file)
    n = args.contacts
    syntax = counts["syntax"]
    after_dns = syntax + counts["no_such_domain"]
    after_smtp = after_dns + counts["unknown_mailbox"]
    expected = {
        "contacts": n,
        "kinds": counts,
        "syntax": {"valid": n - syntax, "invalid": syntax},
        "dns": {"valid": n - after_dns, "invalid": after_dns},
        "smtp": {"valid": n - after_smtp, "invalid": after_smtp},
    }
    with open(os.path.join(args.dir, "expected.json"), "w", encoding="utf-8") as file:
        json.dump(expected, file, indent=1)
    print(
        f"{n} contacts over {args.domains} domains: {syntax} not addresses, "
        f"{counts['no_such_domain']} at {len(missing)} domains that do not exist, "
        f"{counts['unknown_mailbox']} mailboxes the exchanger refuses"
    )


def expected_status(email, depth):
    """What the address was generated to come to (see the module's docstring)."""
    if "@" not in email or ".." in email:
        return "invalid"
    local, domain = email.rsplit("@", 1)
    if depth == "syntax":
        return "valid"
    if domain.startswith("nx"):
        return "invalid"
    if depth == "smtp" and local.startswith("nobody"):
        return "invalid"
    return "valid"


# CPU accounting, from /proc: each process's user + system time, and the machine's.


def process_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields 14 and 15 (utime, stime), counted from 1, are 11 and 12 after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds():
    with open("/proc/stat", encoding="ascii") as file:
        values = [int(value) for value in file.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return {"busy": (sum(values[:8]) - idle) / hz, "total": sum(values[:8]) / hz}


def snapshot(args):
    processes = {}
    for named in args.pid:
        name, pid = named.split("=", 1)
        processes[name] = {pid: process_cpu_seconds(pid)}
    if args.database_url:
        # The Postgres backends serving the benchmark's database (the coordinator's pool).
        pids = subprocess.run(
            ["psql", args.database_url, "-Atc",
             f"SELECT pid FROM pg_stat_activity WHERE datname = '{args.database}'"],
            check=True, capture_output=True, text=True,
        ).stdout.split()
        processes["postgres"] = {pid: process_cpu_seconds(pid) for pid in pids}
        # Its walwriter, checkpointer and background writer work for every database.
        processes["postgres (shared)"] = {
            pid: process_cpu_seconds(pid) for pid in postgres_auxiliary_pids()
        }
    out = {"at": time.time(), "machine": machine_cpu_seconds(), "processes": processes}
    with open(args.out, "w", encoding="utf-8") as file:
        json.dump(out, file)


def postgres_auxiliary_pids():
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                command = file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if command.startswith("postgres: ") and any(
            word in command for word in ("walwriter", "checkpointer", "background writer")
        ):
            pids.append(pid)
    return pids


def cpu_used(before, after):
    """CPU seconds per process name between two snapshots; a process that started in between
    counts from zero."""
    used = {}
    for name, pids in after["processes"].items():
        total = 0.0
        for pid, seconds in pids.items():
            if seconds is None:
                continue
            start = before["processes"].get(name, {}).get(pid) or 0.0
            total += seconds - start
        used[name] = round(total, 2)
    wall = after["at"] - before["at"]
    machine = after["machine"]["busy"] - before["machine"]["busy"]
    return used, round(machine, 2), wall


# Checking celeritas' run.


def stamp(args):
    """Each JSON line of standard input with the moment it arrived, as `at`."""
    for line in sys.stdin:
        if line.strip():
            event = json.loads(line)
            event["at"] = time.time()
            print(json.dumps(event), flush=True)


def timeline(lines, submitted):
    """When the first and the last batch's records arrived, from the stamped events."""
    arrivals = [(event["at"], event["progress"]["done"]) for event in lines
                if event.get("event", {}).get("kind") == "tree_updated"
                and event["event"].get("records_added")]
    if not arrivals or submitted is None:
        return {}
    first_at, first_done = arrivals[0]
    last_at, last_done = arrivals[-1]
    steady = ((last_done - first_done) / (last_at - first_at)) if last_at > first_at else None
    return {
        "first_records_after_seconds": round(first_at - submitted, 3),
        "steady_per_second": round(steady, 1) if steady else None,
    }


def check(args):
    with open(args.expected, encoding="utf-8") as file:
        expected_all = json.load(file)
    expected = expected_all[args.validation]
    contacts = expected_all["contacts"]
    lines = [json.loads(line) for line in open(args.events, encoding="utf-8") if line.strip()]
    problems = []
    if not lines:
        problems.append("follow printed no events")
        last = {}
    else:
        last = lines[-1]
        event = last.get("event", {})
        if event.get("kind") != "tree_finished":
            problems.append(f"the last event is not tree_finished: {event}")
        elif event.get("root_state") != "succeeded":
            problems.append(f"the import ended {event.get('root_state')}")
    records = last.get("records_by_status", {})
    recorded = sum(records.values())
    if recorded != contacts:
        problems.append(f"{recorded} records for {contacts} rows")
    if records != expected:
        problems.append(f"records by status {records}, expected {expected}")
    states = last.get("tasks_by_state", {})
    if set(states) - {"succeeded"}:
        problems.append(f"tasks not succeeded: {states}")
    with open(args.before, encoding="utf-8") as file:
        before = json.load(file)
    with open(args.after, encoding="utf-8") as file:
        after = json.load(file)
    used, machine, wall = cpu_used(before, after)
    result = {
        "system": "celeritas",
        "validation": args.validation,
        "contacts": contacts,
        "seconds": round(args.seconds, 3),
        "per_second": round(contacts / args.seconds, 1),
        "records_by_status": records,
        "tasks": last.get("tasks_total"),
        **timeline(lines, args.submitted_at),
        "worker_vm_hwm_bytes": args.worker_hwm_kb * 1024,
        "cpu_seconds": used,
        "machine_busy_cpu_seconds": machine,
        "machine_cpu_seconds": round(wall * os.cpu_count(), 2),
    }
    print(json.dumps(result))
    print(
        f"{args.validation:>6}: {contacts} contacts in {args.seconds:.2f} s, "
        f"{contacts / args.seconds:,.0f} contacts/s; records {records}; "
        f"worker peak {args.worker_hwm_kb * 1024 / 1e6:.1f} MB",
        file=sys.stderr,
    )
    if result.get("first_records_after_seconds") is not None:
        print(
            f"        first batch recorded {result['first_records_after_seconds']:.2f} s after "
            f"the submit; from then on {result['steady_per_second'] or 0:,.0f} contacts/s",
            file=sys.stderr,
        )
    print(f"        CPU s: {cpu_summary(result)}", file=sys.stderr)
    if problems:
        for problem in problems:
            print(f"error: {args.validation}: {problem}", file=sys.stderr)
        sys.exit(1)


def cpu_summary(result):
    used = result["cpu_seconds"]
    parts = [f"{name} {seconds:.1f}" for name, seconds in used.items()]
    ours = sum(used.values())
    others = result["machine_busy_cpu_seconds"] - ours
    parts.append(f"everything else on the machine {max(others, 0):.1f}")
    return (
        ", ".join(parts)
        + f" (machine busy {result['machine_busy_cpu_seconds']:.1f} of "
        f"{result['machine_cpu_seconds']:.1f})"
    )


# The plain-Python baseline.

ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$")
LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def syntax_ok(email):
    """RFC 5321's dot-string local part and an LDH domain: what celeritas' parser takes of
    ASCII addresses (quoted local parts and IDNA left out; the file has none)."""
    email = email.strip()
    if "@" not in email:
        return False
    local, domain = email.rsplit("@", 1)
    if not local or len(local) > 64 or len(email) > 254:
        return False
    if not all(atom and ATEXT.match(atom) for atom in local.split(".")):
        return False
    labels = domain.lower().rstrip(".").split(".")
    return len(labels) > 1 and all(LABEL.match(label) for label in labels)


class Baseline:
    def __init__(self, args):
        import dns.resolver

        self.dns = dns
        self.resolver = dns.resolver.Resolver(configure=False)
        self.resolver.nameservers = ["127.0.0.1"]
        self.resolver.port = args.dns_port
        self.resolver.timeout = 2.0
        self.resolver.lifetime = 4.0
        self.args = args
        self.routes = {}
        self.addresses = {}
        self.catch_all = {}
        self.lock = threading.Lock()

    def route(self, domain):
        """('mx', [hosts]) / ('invalid', reason) / ('unknown', why), cached per domain."""
        with self.lock:
            known = self.routes.get(domain)
        if known is not None:
            return known
        resolver, dns = self.resolver, self.dns
        try:
            answer = resolver.resolve(domain + ".", "MX", search=False)
            exchangers = sorted((record.preference, record.exchange.to_text()) for record in answer)
            if len(exchangers) == 1 and exchangers[0][1] == ".":
                route = ("invalid", "null_mx")
            else:
                route = ("mx", [host.rstrip(".") for _, host in exchangers if host != "."])
        except dns.resolver.NXDOMAIN:
            route = ("invalid", "no_such_domain")
        except dns.resolver.NoAnswer:
            try:
                resolver.resolve(domain + ".", "A", search=False)
                route = ("mx", [domain])
            except dns.resolver.NXDOMAIN:
                route = ("invalid", "no_such_domain")
            except dns.resolver.NoAnswer:
                route = ("invalid", "no_mail_host")
            except dns.exception.DNSException as error:
                route = ("unknown", str(error))
        except dns.exception.DNSException as error:
            route = ("unknown", str(error))
        with self.lock:
            self.routes[domain] = route
        return route

    def address_of(self, host):
        with self.lock:
            if host in self.addresses:
                return self.addresses[host]
        try:
            address = self.resolver.resolve(host + ".", "A", search=False)[0].to_text()
        except self.dns.exception.DNSException:
            address = None
        with self.lock:
            self.addresses[host] = address
        return address

    def domain(self, domain, emails):
        """The verdicts of one domain's addresses in one batch."""
        kind, detail = self.route(domain)
        if kind != "mx":
            return ["invalid" if kind == "invalid" else "unknown"] * len(emails)
        if self.args.validation != "smtp":
            return ["valid"] * len(emails)
        for host in detail:
            address = self.address_of(host)
            if address is None:
                continue
            try:
                return self.session(address, domain, emails)
            except (OSError, smtplib.SMTPException):
                continue
        return ["unknown"] * len(emails)

    def session(self, address, domain, emails):
        with smtplib.SMTP(address, self.args.smtp_port, local_hostname="probe.bench",
                          timeout=30) as smtp:
            smtp.ehlo()
            code, _ = smtp.mail("verify@probe.bench")
            if code != 250:
                raise smtplib.SMTPException(f"MAIL FROM: {code}")
            with self.lock:
                catch_all = self.catch_all.get(domain)
            if catch_all is None:
                code, _ = smtp.rcpt(f"probe-{random.getrandbits(64):016x}@{domain}")
                catch_all = code in (250, 251)
                with self.lock:
                    self.catch_all[domain] = catch_all
            verdicts = []
            for email in emails:
                if catch_all:
                    verdicts.append("risky")
                    continue
                code, _ = smtp.rcpt(email)
                if code in (250, 251):
                    verdicts.append("valid")
                elif code in (550, 551, 553):
                    verdicts.append("invalid")
                else:
                    verdicts.append("unknown")
            smtp.quit()
        return verdicts

    def batch(self, pool, emails):
        statuses = [None] * len(emails)
        by_domain = {}
        for index, email in enumerate(emails):
            if not syntax_ok(email):
                statuses[index] = "invalid"
                continue
            domain = email.strip().rsplit("@", 1)[1].lower()
            by_domain.setdefault(domain, []).append(index)
        if self.args.validation == "syntax":
            return ["valid" if status is None else status for status in statuses]
        work = {
            pool.submit(self.domain, domain, [emails[index].strip() for index in indices]): indices
            for domain, indices in by_domain.items()
        }
        for future, indices in work.items():
            for index, verdict in zip(indices, future.result()):
                statuses[index] = verdict
        return statuses


def peer(args):
    emails = []
    with open(args.file, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        for row in reader:
            if args.limit and len(emails) >= args.limit:
                break
            emails.append(row["email"])
    baseline = Baseline(args)
    counts = {}
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        for start in range(0, len(emails), args.batch_size):
            for status in baseline.batch(pool, emails[start:start + args.batch_size]):
                counts[status] = counts.get(status, 0) + 1
    seconds = time.perf_counter() - started
    expected = {}
    for email in emails:
        status = expected_status(email, args.validation)
        expected[status] = expected.get(status, 0) + 1
    result = {
        "system": "python",
        "validation": args.validation,
        "contacts": len(emails),
        "seconds": round(seconds, 3),
        "per_second": round(len(emails) / seconds, 1),
        "records_by_status": counts,
        "threads": args.threads,
    }
    print(json.dumps(result))
    print(
        f"{args.validation:>6}: {len(emails)} contacts in {seconds:.2f} s, "
        f"{len(emails) / seconds:,.0f} contacts/s; verdicts {counts}",
        file=sys.stderr,
    )
    if counts != expected:
        print(f"error: python {args.validation}: verdicts {counts}, expected {expected}",
              file=sys.stderr)
        sys.exit(1)


def report(args):
    celeritas = {}
    for line in open(args.results, encoding="utf-8"):
        if line.strip():
            result = json.loads(line)
            celeritas[result["validation"]] = result
    python = {}
    for path in args.peers:
        with open(path, encoding="utf-8") as file:
            result = json.load(file)
        python[result["validation"]] = result
    threads = next(iter(python.values()))["threads"] if python else 0
    print(f"{'':8}{'celeritas':>22}{'worker peak':>13}"
          f"{f'plain Python ({threads} threads)':>30}{'ratio':>8}")
    for validation in ("syntax", "dns", "smtp"):
        ours = celeritas.get(validation)
        if ours is None:
            continue
        line = (f"{validation:8}{ours['per_second']:>14,.0f} contacts/s"
                f"{ours['worker_vm_hwm_bytes'] / 1e6:>10.1f} MB")
        theirs = python.get(validation)
        if theirs:
            subset = "" if theirs["contacts"] == ours["contacts"] else f" ({theirs['contacts']:,})"
            line += f"{theirs['per_second']:>16,.0f} contacts/s{subset:>11}"
            line += f"{ours['per_second'] / theirs['per_second']:>7.1f}x"
        print(line)
    print("(ratio: celeritas contacts/s ÷ plain Python's, on the same file and servers)")
    print()
    print("CPU seconds during each celeritas phase (Postgres: the backends of the bench's database):")
    for validation in ("syntax", "dns", "smtp"):
        if validation in celeritas:
            ours = celeritas[validation]
            print(f"  {validation:6} ({ours['seconds']:.1f} s): {cpu_summary(ours)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    command = commands.add_parser("generate")
    command.add_argument("dir")
    command.add_argument("--contacts", type=int, default=100_000)
    command.add_argument("--domains", type=int, default=2_000)
    command.add_argument("--seed", type=int, default=42)

    command = commands.add_parser("snapshot")
    command.add_argument("out")
    command.add_argument("--pid", action="append", default=[], metavar="NAME=PID")
    command.add_argument("--database-url")
    command.add_argument("--database")

    commands.add_parser("stamp")

    command = commands.add_parser("check")
    command.add_argument("events")
    command.add_argument("--expected", required=True)
    command.add_argument("--validation", required=True, choices=["syntax", "dns", "smtp"])
    command.add_argument("--seconds", type=float, required=True)
    command.add_argument("--submitted-at", type=float, help="the submit's moment (Unix time)")
    command.add_argument("--worker-hwm-kb", type=int, required=True)
    command.add_argument("--before", required=True)
    command.add_argument("--after", required=True)

    command = commands.add_parser("peer")
    command.add_argument("file")
    command.add_argument("--validation", required=True, choices=["syntax", "dns", "smtp"])
    command.add_argument("--dns-port", type=int, required=True)
    command.add_argument("--smtp-port", type=int, default=25)
    command.add_argument("--threads", type=int, default=4)
    command.add_argument("--batch-size", type=int, default=1000)
    command.add_argument("--limit", type=int, default=0, help="the first M contacts only")

    command = commands.add_parser("report")
    command.add_argument("results")
    command.add_argument("peers", nargs="*")

    args = parser.parse_args()
    {"generate": generate, "snapshot": snapshot, "stamp": stamp, "check": check, "peer": peer,
     "report": report}[args.command](args)


if __name__ == "__main__":
    main()
