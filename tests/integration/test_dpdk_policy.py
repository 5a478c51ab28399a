"""Policy on the DPDK transport: the DNS lists (with the tarpit) at connect
and the greylist at RCPT park sessions on a DPDK worker and wake it with
their answers, as on kernel sockets.

    sluiced (DPDK, 10.77.0.2) --net_tap-- sltapN (kernel, netns sluiceN)
        10.77.0.1: listed in the test's rbldnsd   10.77.0.5: not listed

rbldnsd and Redis run on the host's loopback, where sluiced's resolver and
greylist threads (control plane, kernel sockets) reach them; the clients
(swaks, Python) run inside the namespace. Skipped like the other DPDK tests
when sluiced has no DPDK or the machine no tap.
"""

import re
import sys
import time

import pytest

from conftest import need
from dpdk_netns import ADDR, PEER, PORT, DpdkSluice, dpdk_netns, in_ns, run
from test_greylist import Redis
from test_rbl import Rbldnsd

CLEAN = "10.77.0.5"

HELD = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], 2525), timeout=30)
t0 = time.monotonic(); buf = b""
while b"\n554 " not in b"\n" + buf:
    c = s.recv(4096)
    if not c: break
    buf += c
print(round(time.monotonic() - t0, 2)); print(buf.decode(errors="replace"))
"""


@pytest.fixture
def dns(tmp_path):
    d = tmp_path / "dns"
    d.mkdir()
    r = Rbldnsd(d)  # its zones, then the block list rewritten to list PEER
    (d / "bl.zone").write_text(f":127.0.0.2:listed\n127.0.0.2\n{PEER}\n")  # 127.0.0.2: the readiness probe
    r.start()
    yield r
    r.stop()


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()


def test_rbl_tarpit_and_greylist_on_dpdk(tmp_path, dns, redis):
    extra = ("smtp: {message_size_max: 10m, greet_pause: 0, junk_max: 0, tarpit_interval: 300ms}\n"
             "rbl:\n"
             "  enabled: true\n"
             "  zones: {bl.sluice.test: 1}\n"
             f"  servers: \"127.0.0.1:{dns.port}\"\n"
             "  tarpit: 1500ms\n"
             f"greylist: {{enabled: true, redis: \"127.0.0.1:{redis.port}\", delay: 1s, "
             "retry_window: 1h}\n")

    def conf(tap):
        text = DpdkSluice(tmp_path, tap).conf.read_text()
        text = re.sub(r"smtp: \{[^\n]*\}\n", "", text)
        return text + extra

    with dpdk_netns(tmp_path, conf_text=conf) as s:
        run("ip", "netns", "exec", s.ns, "ip", "addr", "add", f"{CLEAN}/24", "dev", s.tap)
        # listed (10.77.0.1): held in the tarpit, then 554
        p = in_ns(s, sys.executable, "-c", HELD, ADDR, timeout=60)
        out = p.stdout.decode()
        assert p.returncode == 0, out + p.stderr.decode()
        took, text = out.split("\n", 1)
        assert float(took) >= 1.3, f"held {took}s, want the 1.5 s hold"
        assert re.search(r"^554-5\.7\.1 ", text, re.M) and "554 5.7.1 Service unavailable" in text, text
        # not listed (10.77.0.5): greylisted, then through after the delay
        swaks = ["swaks", "--server", f"{ADDR}:{PORT}", "--local-interface", CLEAN,
                 "--from", "a@example.org", "--to", "b@example.test", "--helo", "ns.test.example",
                 "--timeout", "20"]
        need("swaks", "swaks")
        p = in_ns(s, *swaks, timeout=60)
        assert p.returncode != 0 and b"451 4.7.1 Greylisted" in p.stdout, p.stdout.decode()[-1500:]
        time.sleep(2.2)
        p = in_ns(s, *swaks, timeout=60)
        assert p.returncode == 0, p.stdout.decode()[-1500:]
        log = s.log()
        assert re.search(rf"event=rbl_reject worker=\d+ client={re.escape(PEER)} .*tarpit_ms=1500", log)
        assert re.search(rf"event=greylisted worker=\d+ client={re.escape(CLEAN)} ", log)
