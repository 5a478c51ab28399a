"""The DPDK exception path: traffic that is not for the SMTP service goes
to a Linux TAP interface (dpdk.exception: tap) or is dropped (drop).

    client netns A: sltapN 10.77.0.1 --net_tap-- sluiced (DPDK, 10.77.0.2)
                                                   |  exception tap
    service netns B: sluice-excN 10.77.0.2 (the same address and MAC)

In B run a real HTTP server (python3 -m http.server, port 8080) and a UDP
echo (port 9999), both bound to 10.77.0.2. From A, curl fetches a page and
a datagram is echoed through sluiced's port, while SMTP on 2525 still
reaches sluiced, and the kernel in B pings A (its echo replies come over).
With drop, the same curl is refused at once (the stack
resets a port without a listener) and the datagram is counted and dropped.

Skipped like test_dpdk_tap.py (no libdpdk, no /dev/net/tun, no root, no
ip). All traffic stays inside the two namespaces; every wait is bounded.
"""

import contextlib
import os
import smtplib
import socket
import subprocess
import sys
import time

import pytest

from conftest import need, sluiced_path
from dpdk_netns import (ADDR, PEER, PORT, DpdkSluice, dpdk_netns, enter_netns, finish, kill,
                        need_dpdk_env, peer_ns_up, run)
from test_dpdk_tap import PING
from test_dpdk_workers import dp_stats

HTTP_PORT = 8080
UDP_PORT = 9999
PAGE = "exception path page\n"

UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(b"echo:" + data, peer)
"""


@contextlib.contextmanager
def exception_netns(root, workers=1, dpdk=""):
    """sluiced with dpdk.exception: tap (and `workers`, extra dpdk lines);
    the net_tap peer in namespace A (as dpdk_netns), the exception tap in
    namespace B with sluiced's address. Yields (sluiced, ns_a, ns_b)."""
    exe = sluiced_path()
    need_dpdk_env()
    n = os.getpid() % 100000
    tap, exc, ns_a, ns_b = f"sltap{n}", f"slexc{n}", f"sluice{n}", f"sluicex{n}"
    s = DpdkSluice(root, tap)
    conf = s.conf.read_text().replace("workers: 1,", f"workers: {workers},")
    s.conf.write_text(conf.replace("  port: 0\n",
                                   f"  port: 0\n  exception: tap\n  exception_iface: {exc}\n"
                                   + dpdk))
    s.check_built_in(exe)
    run("ip", "netns", "add", ns_a)
    run("ip", "netns", "add", ns_b)
    try:
        s.start(exe)
        s.wait_tap()
        assert f"event=dpdk_exception mode=tap iface={exc}" in s.log(), \
            f"got no event=dpdk_exception line, want one; log:\n{s.log()[-3000:]}"
        peer_ns_up(tap, ns_a)
        run("ip", "link", "set", exc, "netns", ns_b)
        # No IPv6 chatter (DAD, router solicitations) from the service side.
        run("ip", "netns", "exec", ns_b, "sysctl", "-qw", f"net.ipv6.conf.{exc}.disable_ipv6=1")
        run("ip", "netns", "exec", ns_b, "ip", "addr", "add", f"{ADDR}/24", "dev", exc)
        run("ip", "netns", "exec", ns_b, "ip", "link", "set", exc, "up")
        run("ip", "netns", "exec", ns_b, "ip", "link", "set", "lo", "up")
        s.ns = ns_a
        yield s, ns_a, ns_b
        finish(s)
    finally:
        kill(s)
        run("ip", "netns", "del", ns_a, check=False)
        run("ip", "netns", "del", ns_b, check=False)


@contextlib.contextmanager
def services(ns, root):
    """The HTTP server and the UDP echo in namespace ns, bound to ADDR."""
    www = root / "www"
    www.mkdir()
    (www / "index.html").write_text(PAGE)
    procs = []
    try:
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "http.server", str(HTTP_PORT),
             "--bind", ADDR, "--directory", str(www)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", UDP_ECHO, ADDR, str(UDP_PORT)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while True:
            out = run("ip", "netns", "exec", ns, "ss", "-Htlnu").stdout.decode()
            if f"{ADDR}:{HTTP_PORT}" in out and f"{ADDR}:{UDP_PORT}" in out:
                break
            assert time.monotonic() < deadline, \
                f"got no HTTP and UDP listeners in {ns} within 10s, want both:\n{out}"
            time.sleep(0.1)
        yield
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def curl(ns, timeout):
    return subprocess.run(["ip", "netns", "exec", ns, need("curl", "curl"), "-sS",
                           "--max-time", str(timeout), f"http://{ADDR}:{HTTP_PORT}/index.html"],
                          capture_output=True, timeout=timeout + 10)


def udp_echo(ns, tries=5, wait=1.0):
    """The echo of one datagram from namespace ns, or None."""
    with enter_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(wait)
        for i in range(tries):
            sock.sendto(b"ping %d" % i, (ADDR, UDP_PORT))
            try:
                data, _ = sock.recvfrom(2048)
                return data
            except socket.timeout:
                continue
    return None


def smtp_ok(ns):
    with enter_netns(ns):
        sock = socket.create_connection((ADDR, PORT), timeout=10)
    sock.close()  # the namespace's route works; smtplib below connects anew
    with enter_netns(ns):
        c = smtplib.SMTP(timeout=10)
        code, _ = c.connect(ADDR, PORT)
    try:
        assert code == 220, f"SMTP greeting: got {code}, want 220"
        code, _ = c.ehlo("client.test.example")
        assert code == 250, f"EHLO: got {code}, want 250"
    finally:
        c.quit()


@pytest.mark.parametrize("workers,dpdk", [
    (1, ""),
    (2, "  software_dispatch: true\n"),   # TCP dispatched, ARP copied to both workers
], ids=["one_worker", "two_workers"])
def test_exception_tap(tmp_path, workers, dpdk):
    with exception_netns(tmp_path, workers, dpdk) as (s, ns_a, ns_b):
        with services(ns_b, tmp_path):
            p = curl(ns_a, 10)
            out = p.stdout.decode(errors="replace")
            assert p.returncode == 0 and out == PAGE, \
                (f"curl through the exception path: got exit {p.returncode} and {out!r}, want "
                 f"0 and {PAGE!r}; stderr: {p.stderr.decode(errors='replace')}\n"
                 f"log:\n{s.log()[-2000:]}")
            echo = udp_echo(ns_a)
            assert echo is not None and echo.startswith(b"echo:ping "), \
                f"UDP echo through the exception path: got {echo!r}, want b'echo:ping N'"
            smtp_ok(ns_a)
            # The kernel behind the tap pings out: its echo replies are
            # ICMP the stack does not handle, so they go over to it.
            p = run("ip", "netns", "exec", ns_b, sys.executable, "-c", PING, PEER, check=False)
            assert p.returncode == 0, \
                (f"ping from the exception side to {PEER}: got exit {p.returncode}, want 0:\n"
                 f"{p.stdout.decode(errors='replace')}")
            per = dp_stats(s, workers)
            st = {}
            for w in per.values():
                for k, v in w.items():
                    st[k] = st.get(k, 0) + v
            assert st.get("exception_out", 0) > 0 and st.get("dpdk_exception_out", 0) > 0, \
                f"exception_out / dpdk_exception_out: got {st}, want both > 0"
            assert st.get("dpdk_exception_in", 0) > 0, \
                f"dpdk_exception_in: got {st.get('dpdk_exception_in', 0)}, want > 0"
            assert st.get("tcp_accepted", 0) >= 1, \
                f"tcp_accepted: got {st.get('tcp_accepted', 0)}, want >= 1 (SMTP to sluiced)"
            if workers > 1:
                assert st.get("dpdk_exception_copies", 0) > 0, \
                    (f"dpdk_exception_copies: got {st.get('dpdk_exception_copies', 0)}, want > 0 "
                     "(ARP copied to the other worker is written once)")
            assert st.get("drop_tcp_noport", 0) == 0, \
                f"drop_tcp_noport: got {st.get('drop_tcp_noport')}, want 0 (to the kernel)"


def test_exception_drop(tmp_path):
    with dpdk_netns(tmp_path) as s:
        t0 = time.monotonic()
        p = curl(s.ns, 5)
        took = time.monotonic() - t0
        assert p.returncode != 0, \
            f"curl with exception: drop: got exit 0 ({p.stdout!r}), want a failure"
        assert took < 4, f"curl with exception: drop: took {took:.1f}s, want a fast RST"
        assert udp_echo(s.ns, tries=1, wait=0.5) is None, "UDP with drop: got an echo, want none"
        smtp_ok(s.ns)
        st = s.stats()
        assert st.get("drop_tcp_noport", 0) >= 1, \
            f"drop_tcp_noport: got {st.get('drop_tcp_noport', 0)}, want >= 1"
        assert st.get("drop_ip_proto", 0) >= 1, \
            f"drop_ip_proto (UDP): got {st.get('drop_ip_proto', 0)}, want >= 1"
        assert st.get("exception_out", 0) == 0, \
            f"exception_out: got {st.get('exception_out')}, want 0 with drop"
