"""More than one DPDK worker on one net_tap port: the pollers hand TCP
frames to the worker that owns the flow (software dispatch, dataplane/dpdk.h
"Dispatch"), ARP replies go to every worker, and a worker without a TX queue
of its own sends through another's.

    sluiced (DPDK, 2 workers, 10.77.0.2) --net_tap-- kernel in netns (10.77.0.1)

Also the home of the small fixture the DPDK tests share beyond
test_dpdk_tap.py: a sluiced with extra configuration, and reading its
event=dp_stats lines (SIGUSR1). Skips as test_dpdk_tap.py does.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import HOSTNAME, sluiced_path, wait_for_maildir
from dpdk_netns import ADDR, PEER, PORT, DpdkSluice, dpdk_netns, in_ns
from test_dpdk_tap import PING


def _config(root, tap, server="", smtp="", dpdk="", eal_extra=""):
    root = Path(root)
    return (
        f"server: {{hostname: {HOSTNAME}, transport: dpdk{server}}}\n"
        "listen:\n"
        f"  - address: 0.0.0.0:{PORT}\n"
        f"smtp: {{message_size_max: 10m, greet_pause: 0{smtp}}}\n"
        f"spool: {{directory: {root / 'spool'}, sync: true}}\n"
        f"delivery: {{method: maildir, maildir: {root / 'Maildir'}, retry_min: 1s}}\n"
        "dpdk:\n"
        f'  eal: "--no-huge --no-shconf --no-pci -l 0 {eal_extra}--vdev=net_tap0,iface={tap} '
        '--log-level=notice"\n'
        "  port: 0\n"
        f"  address: {ADDR}/24\n"
        f"  gateway: {PEER}\n"
        f"{dpdk}"
        "log: {level: info}\n")


@contextlib.contextmanager
def dpdk_sluice(tmp_path, **conf):
    """sluiced on net_tap with the kernel side of the tap in a namespace of
    its own; conf goes to _config. Yields the DpdkSluice (with .ns)."""
    with dpdk_netns(tmp_path, conf_text=lambda tap: _config(tmp_path, tap, **conf),
                    stop_timeout=60, tag="w") as s:
        yield s


STATS = re.compile(r"event=dp_stats worker=(\d+) (.*)$")


def parse_stats(lines):
    """{worker: {counter: int}} from event=dp_stats lines (the last per worker)."""
    out = {}
    for line in lines:
        m = STATS.search(line)
        if m:
            out[int(m.group(1))] = {k: int(v) for k, v in
                                    re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


def dp_stats(s, workers, timeout=20.0):
    """SIGUSR1 sluiced and return the dp_stats of every worker."""
    before = len(s.log().splitlines())
    s.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = s.log().splitlines()[before:]
        st = parse_stats(new)
        if len(st) >= workers:
            return st
        time.sleep(0.05)
    raise AssertionError(f"got dp_stats from {sorted(parse_stats(s.log().splitlines()[before:]))}"
                         f" within {timeout}s of SIGUSR1, want workers 0..{workers - 1}; "
                         f"log:\n{s.log()[-3000:]}")


# ICMP destination unreachable (fragmentation needed) with a wrong checksum:
# every worker gets a copy, and each stack counts drop_icmp_csum.
BAD_UNREACH = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
quote = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0,
                    socket.inet_aton(sys.argv[1]), socket.inet_aton("10.77.0.1")) + bytes(8)
s.sendto(struct.pack("!BBHHH", 3, 4, 0x1234, 0, 1400) + quote, (sys.argv[1], 0))
"""

CLIENTS = r"""
import smtplib, sys
n = int(sys.argv[2])
for i in range(n):
    with smtplib.SMTP(sys.argv[1], 2525, local_hostname="ns.test.example", timeout=60) as c:
        code, text = c.ehlo()
        assert code == 250, (code, text)
        c.sendmail("alice@client.test.example", ["bob@test.example"],
                   ("Subject: worker test %d\r\nMessage-ID: <w%d@client.test.example>\r\n\r\n"
                    "body %d\r\n" % (i, i, i)).encode())
print("sent", n)
"""


@pytest.mark.parametrize("dpdk_conf", [
    "",                                   # as many queue pairs as the port gives
    "  queues: 1\n",                      # one: all RX on worker 0, worker 1 sends through it
    "  software_dispatch: true\n",        # several RX queues, software dispatch even with RSS
], ids=["auto", "one_queue", "software"])
def test_two_workers_deliver(tmp_path, dpdk_conf):
    with dpdk_sluice(tmp_path, server=", workers: 2", dpdk=dpdk_conf) as s:
        port_line = [l for l in s.log().splitlines() if "event=dpdk_port" in l]
        assert port_line, f"got no event=dpdk_port line, want one:\n{s.log()[-2000:]}"
        if dpdk_conf:
            assert "dispatch=software" in port_line[0], \
                f"got {port_line[0]!r}, want dispatch=software"
        p = in_ns(s, sys.executable, "-c", PING, ADDR, timeout=30)
        assert p.returncode == 0, f"ping {ADDR}: got no echo reply, want one: {p.stderr!r}"
        # 16 connections: with a random flow key, all on one worker has
        # probability 2^-15.
        n = 16
        p = in_ns(s, sys.executable, "-c", CLIENTS, ADDR, str(n), timeout=120)
        out = (p.stdout + p.stderr).decode(errors="replace")
        assert p.returncode == 0, f"smtplib: got exit {p.returncode}, want 0:\n{out[-3000:]}"
        msgs = wait_for_maildir(s.maildir, n)
        assert len(msgs) == n, f"got {len(msgs)} messages, want {n}"
        ids = sorted(re.search(rb"^Message-ID: <w(\d+)@", m.raw, re.M | re.I).group(1)
                     for m in msgs)
        assert ids == sorted(str(i).encode() for i in range(n)), \
            f"got messages {ids}, want one of each of the {n} sent"
        st = dp_stats(s, 2)
        acc = [st[w].get("tcp_accepted", 0) for w in (0, 1)]
        assert sum(acc) == n, f"got tcp_accepted {acc} on workers 0/1, want {n} in all"
        assert all(a > 0 for a in acc), \
            f"got tcp_accepted {acc} on workers 0/1, want connections on both; stats: {st}"
        if "dispatch=rss" not in port_line[0]:
            moved = st[0].get("dpdk_dispatch_out", 0) + st[1].get("dpdk_dispatch_out", 0)
            assert moved > 0, f"got no dispatched frames, want some; stats: {st}"
        if "queues: 1" in dpdk_conf:
            assert st[1].get("dpdk_tx_via", 0) > 0, \
                f"got worker 1 dpdk_tx_via 0, want its frames sent through worker 0: {st}"
            # worker 1 learnt the client's MAC from the copy of its ARP
            # request (and kept quiet): it never had to ask
            assert st[1].get("dpdk_arp_quiet", 0) >= 1 and \
                st[1].get("arp_requests_out", 0) == 0, \
                f"got worker 1 ARP counters {st[1]}, want dpdk_arp_quiet >= 1 and no requests"
        p = in_ns(s, sys.executable, "-c", BAD_UNREACH, ADDR, timeout=30)
        assert p.returncode == 0, f"raw ICMP: got exit {p.returncode}: {p.stderr!r}"
        deadline = time.monotonic() + 10
        while True:
            st = dp_stats(s, 2)
            csum = [st[w].get("drop_icmp_csum", 0) for w in (0, 1)]
            if all(csum) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert all(csum), f"got drop_icmp_csum {csum} on workers 0/1 after one bad ICMP " \
                          f"unreachable, want it on both (copied to every worker): {st}"
        drops = {w: st[w].get("dpdk_dispatch_drop", 0) for w in (0, 1)}
        assert not any(drops.values()), f"got dispatch drops {drops}, want none"
    final = parse_stats([l for l in s.log().splitlines() if "final=1" in l])
    assert sorted(final) == [0, 1], f"got final dp_stats for {sorted(final)}, want workers 0 and 1"


def test_mbuf_pool_beyond_eal_memory_is_refused(tmp_path):
    """An mbuf pool the EAL's memory cannot hold: exit 1 with a reason that
    names the knobs, and nothing leaked (the sanitizer build checks that)."""
    exe = sluiced_path()
    if not os.path.exists("/dev/net/tun") or os.geteuid() != 0:
        pytest.skip("needs root and /dev/net/tun (EAL, tap device)")
    tap = f"slmtap{os.getpid() % 100000}"
    s = DpdkSluice(tmp_path, tap)  # writes its own sluice.conf: replaced below
    conf = s.conf
    conf.write_text(_config(tmp_path, tap, server=", workers: 2", dpdk="  mbufs: 100000\n"))
    s.check_built_in(exe)
    p = subprocess.run([exe, "-c", str(conf)], capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 1, f"sluiced: got exit {p.returncode}, want 1:\n{out[-3000:]}"
    assert re.search(r"event=fatal .*mbuf pool of 100000 .*dpdk\.mbufs.*-m with --no-huge", out), \
        f"got no fatal line naming dpdk.mbufs and -m, want one:\n{out[-3000:]}"
