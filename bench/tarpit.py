#!/usr/bin/python3
"""What a held (tarpitted) client costs: sluiced's rbl.tarpit against
Postfix's smtpd holding the same clients (`smtpd_client_restrictions =
sleep N, reject`, its own tarpit: one smtpd process per held client).

For each server: N clients connect from 127.0.0.2 (listed in a private
rbldnsd for sluiced; every client is held by the Postfix configuration) and
stay held; the server's memory is read before and while they are held, as
PSS (proportional set size: shared pages split among the processes sharing
them) summed over the server's processes, from /proc/PID/smaps_rollup. The
kernel's socket buffers are the same for both and are not counted.

    /usr/bin/python3 bench/tarpit.py --sluiced build-perf/control/sluiced [--n 500]

Prints a markdown table (KB per held client, and the ratio); bench/RESULTS.md
records a run. Every load is bounded: N connections, held for --hold
seconds at most, closed at the end.
"""

import argparse
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))
from postfix_instance import Postfix  # noqa: E402

LISTED = "127.0.0.2"


def pss_kb(pids):
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        m = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
        if m:
            total += int(m.group(1))
    return total


def tree(root_pid):
    """root_pid and every descendant."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    kids = {}
    for line in out.splitlines():
        p, pp = (int(x) for x in line.split())
        kids.setdefault(pp, []).append(p)
    pids, todo = [], [root_pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += kids.get(p, [])
    return pids


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hold(port, n, first_bytes, timeout):
    """n connections from LISTED; each waits for first_bytes (or, with None,
    for nothing). Returns the sockets."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(LISTED, 0))
        socks.append(s)
        if (i + 1) % 100 == 0:
            print(f"  {i + 1}/{n} connected", file=sys.stderr)
    if first_bytes is not None:
        for s in socks:
            got = s.recv(64)
            if not got.startswith(first_bytes):
                raise SystemExit(f"a held client got {got!r}, want {first_bytes!r} first")
    return socks


def settle(pids_fn, seconds=2.0):
    time.sleep(seconds)
    return pss_kb(pids_fn())


def run_sluiced(exe, n, hold_s, work):
    dns_port = free_port(socket.SOCK_DGRAM)
    (work / "bl.zone").write_text(f":127.0.0.2:listed\n{LISTED}\n")
    dns = subprocess.Popen([shutil.which("rbldnsd") or "/usr/sbin/rbldnsd", "-n", "-b",
                            f"127.0.0.1/{dns_port}", "-w", str(work), "bl.bench.test:ip4set:bl.zone"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = free_port()
    conf = work / "sluice.conf"
    conf.write_text(f"""server: {{hostname: mx.bench.test, workers: 1, transport: kernel}}
listen: [{{address: 127.0.0.1:{port}}}]
smtp: {{tarpit_interval: 10s, connections_max: {n + 100}}}
spool: {{directory: {work}/spool}}
delivery: {{method: discard}}
rbl:
  enabled: true
  zones: {{bl.bench.test: 1}}
  servers: "127.0.0.1:{dns_port}"
  tarpit: {hold_s}s
log: {{level: warn}}
""")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(work / "sluiced.log", "wb"))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("sluiced did not listen")
                time.sleep(0.1)
        # rbldnsd loaded: a listed client is held (and now cached)
        deadline = time.monotonic() + 20
        while True:
            with socket.create_connection(("127.0.0.1", port), timeout=10,
                                          source_address=(LISTED, 0)) as t:
                if t.recv(64).startswith(b"554-"):
                    break
            if time.monotonic() > deadline:
                raise SystemExit("rbldnsd did not answer")
            time.sleep(0.2)
        before = settle(lambda: [proc.pid])
        socks = hold(port, n, b"554-", 30)
        during = settle(lambda: [proc.pid])
        for s in socks:
            s.close()
        return before, during
    finally:
        proc.terminate()
        proc.wait(20)
        dns.terminate()
        dns.wait(10)


def run_postfix(n, hold_s):
    pf = Postfix({"bench.test": "discard:"})
    try:
        with open(pf.conf / "main.cf", "a") as f:
            f.write(f"smtpd_delay_reject = no\n"
                    f"smtpd_client_restrictions = sleep {hold_s}, reject\n"
                    f"default_process_limit = {n + 50}\n"
                    f"smtpd_client_connection_count_limit = 0\n"
                    f"smtpd_client_connection_rate_limit = 0\n")
        # its start waits for a 220, which the sleep holds back: probe by port
        p = pf.postfix("start")
        if p.returncode != 0:
            raise SystemExit(f"postfix start: {p.stdout}{p.stderr}")
        master = None
        deadline = time.monotonic() + 30
        while master is None:
            pidf = pf.queue / "pid" / "master.pid"
            if pidf.exists() and pidf.read_text().strip():
                master = int(pidf.read_text().split()[0])
            elif time.monotonic() > deadline:
                raise SystemExit("postfix: no master.pid")
            else:
                time.sleep(0.2)
        time.sleep(2)
        before = pss_kb(tree(master))
        socks = hold(pf.port, n, None, 30)
        deadline = time.monotonic() + 60
        while True:
            procs = [p for p in tree(master)
                     if Path(f"/proc/{p}/comm").exists() and
                     Path(f"/proc/{p}/comm").read_text().strip() == "smtpd"]
            if len(procs) >= n or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(f"  postfix: {len(procs)} smtpd processes for {n} held clients", file=sys.stderr)
        during = settle(lambda: tree(master))
        for s in socks:
            s.close()
        return before, during, len(procs)
    finally:
        pf.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluiced", required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--hold", type=int, default=120, help="seconds a client is held at most")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sluice-tarpit-"))
    os.chmod(work, 0o755)  # rbldnsd reads its zone as its own user
    try:
        print(f"sluiced: holding {a.n} clients", file=sys.stderr)
        s_before, s_during = run_sluiced(a.sluiced, a.n, a.hold, work)
        print(f"postfix: holding {a.n} clients", file=sys.stderr)
        p_before, p_during, nproc = run_postfix(a.n, a.hold)
    finally:
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    s_per = (s_during - s_before) / a.n
    p_per = (p_during - p_before) / a.n
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"- machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"kernel {platform.release()}")
    print(f"- command: `/usr/bin/python3 bench/tarpit.py --sluiced {a.sluiced} --n {a.n}`")
    print()
    print("| server | held clients | PSS before (KB) | PSS while held (KB) | KB per held client | vs sluiced |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| sluiced (rbl.tarpit, kernel transport) | {a.n} | {s_before} | {s_during} | "
          f"{s_per:.1f} | 1.0x |")
    print(f"| Postfix smtpd (`sleep {a.hold}, reject`; {nproc} smtpd processes) | {a.n} | "
          f"{p_before} | {p_during} | {p_per:.1f} | {p_per / s_per if s_per > 0 else float('inf'):.0f}x |")


if __name__ == "__main__":
    main()
