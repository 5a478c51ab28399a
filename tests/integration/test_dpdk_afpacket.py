"""The DPDK transport on net_af_packet over a veth pair: the other port
type issue 3 names for machines without a DPDK NIC.

    sluiced (DPDK net_af_packet on vethsN, 10.77.0.2) --veth-- vethcN (kernel, 10.77.0.1, netns)

The kernel in the namespace is the TCP peer: ping, then swaks and Python's
smtplib deliver mail (a 1 MB message compared byte for byte) into the
Maildir. The kernel side's TX checksum offload is turned off (ethtool),
as an operator must on a veth feeding net_af_packet. Skipped like test_dpdk_tap.py without libdpdk, `ip` or root."""

import os
import sys
import time
from pathlib import Path

import pytest

from conftest import check_received, make_message, need, same_bytes, sluiced_path, wait_for_maildir
from dpdk_netns import ADDR, PEER, DpdkSluice, finish, in_ns, kill, need_dpdk_env, run
from test_dpdk_tap import PING, SMTPLIB


class AfPacketSluice(DpdkSluice):
    def __init__(self, root, veth):
        super().__init__(root, veth)
        text = self.conf.read_text()
        old = f"--vdev=net_tap0,iface={veth}"
        assert old in text
        self.conf.write_text(text.replace(old, f"--vdev=net_af_packet0,iface={veth}"))

    def wait_up(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"sluiced exited with {self.proc.returncode}; log:\n{self.log()[-4000:]}")
            if "event=start" in self.log():
                return
            time.sleep(0.1)
        raise AssertionError(f"sluiced did not start within {timeout}s; log:\n{self.log()[-4000:]}")


@pytest.fixture
def afp(tmp_path):
    exe = sluiced_path()
    need_dpdk_env(tap=False)
    n = os.getpid() % 100000
    vs, vc, ns = f"vethsl{n}", f"vethcl{n}", f"sluiceafp{n}"
    s = AfPacketSluice(tmp_path, vs)
    s.check_built_in(exe)
    run("ip", "netns", "add", ns)
    try:
        run("ip", "link", "add", vs, "type", "veth", "peer", "name", vc)
        run("ip", "link", "set", vc, "netns", ns)
        run("ip", "link", "set", vs, "up")
        # the root namespace must not answer for anything on vs
        Path(f"/proc/sys/net/ipv6/conf/{vs}/disable_ipv6").write_text("1\n")
        run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{PEER}/24", "dev", vc)
        run("ip", "netns", "exec", ns, "ip", "link", "set", vc, "up")
        # A veth hands its peer frames whose TCP checksum is left to an
        # offload that never happens (CHECKSUM_PARTIAL); AF_PACKET passes
        # them on as they are and the stack drops them (drop_tcp_csum). The
        # kernel side must checksum in software.
        need("ethtool", "ethtool")
        run("ip", "netns", "exec", ns, "ethtool", "-K", vc, "tx", "off")
        run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        s.start(exe)
        s.wait_up()
        s.ns = ns
        yield s
        finish(s)
    finally:
        kill(s)
        run("ip", "link", "del", vs, check=False)
        run("ip", "netns", "del", ns, check=False)


def test_af_packet_port(afp, tmp_path):
    log = afp.log()
    assert "driver=net_af_packet" in log, f"got no net_af_packet port in the log:\n{log[-2000:]}"
    p = in_ns(afp, sys.executable, "-c", PING, ADDR, timeout=30)
    assert p.returncode == 0, f"ping {ADDR}: got no echo reply, want one:\n{p.stdout!r} {p.stderr!r}"

    need("swaks", "swaks")
    p = in_ns(afp, "swaks", "--server", f"{ADDR}:2525", "--helo", "ns.test.example",
              "--from", "alice@client.test.example", "--to", "bob@test.example",
              "--timeout", "60", "--header", "Subject: over af_packet", "--body", "hello veth")
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 0, f"swaks: got exit {p.returncode}, want 0:\n{out[-3000:]}"

    line = b"".join(bytes([0x21 + (i * 3 + j) % 90 for j in range(76)]) + b"\r\n" for i in range(4))
    body = (line * ((1 << 20) // len(line) + 1))[:1 << 20]
    body = body[:body.rfind(b"\r\n") + 2]
    data = make_message(subject="af_packet 1 MB", body=body.decode())
    f = tmp_path / "msg.eml"
    f.write_bytes(data)
    p = in_ns(afp, sys.executable, "-c", SMTPLIB, ADDR, str(f), "plain")
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 0, f"smtplib: got exit {p.returncode}, want 0:\n{out[-3000:]}"

    msgs = wait_for_maildir(afp.maildir, 2)
    assert len(msgs) == 2, f"got {len(msgs)} messages, want 2"
    big = [m for m in msgs if m.header("Subject") == "af_packet 1 MB"]
    assert big and same_bytes(big[0].original(), data), "got the 1 MB message altered or missing"
    check_received(big[0], helo="ns.test.example", ip=PEER)
