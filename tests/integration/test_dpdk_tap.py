"""The DPDK transport end to end: sluiced on a net_tap port, clients in a
network namespace of the test's own on the kernel side of the tap.

    sluiced (DPDK, 10.77.0.2) --net_tap-- sltapN (kernel, 10.77.0.1, netns sluiceN)

Clients: ping, swaks, Python's smtplib (plain and STARTTLS, 1 MB messages
compared byte for byte) and a private Postfix running inside the namespace
that relays to sluiced with STARTTLS.

Skipped (with the reason) when sluiced was built without libdpdk, when
/dev/net/tun or `ip` is missing, or without root. The EAL runs with
--no-huge --no-shconf (DPDK 22.11 refuses --in-memory with --no-huge) and
--no-pci, so it touches no hardware; all traffic stays inside the namespace.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (BAD_LOG, HOSTNAME, check_received, make_message, need, same_bytes,
                      sluiced_path, wait_for_maildir)
from postfix_instance import Postfix

ADDR = "10.77.0.2"
PEER = "10.77.0.1"
ADDR6 = "2001:db8:77::2"
PEER6 = "2001:db8:77::1"
PORT = 2525
HELO = "ns.test.example"
SENDER = "alice@client.test.example"


def run(*cmd, check=True, timeout=30):
    p = subprocess.run(list(cmd), capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: got exit {p.returncode}, want 0:\n"
                             f"{p.stdout.decode(errors='replace')}{p.stderr.decode(errors='replace')}")
    return p


class DpdkSluice:
    def __init__(self, root, tap, cert=None):
        self.root = Path(root)
        self.tap = tap
        self.maildir = self.root / "Maildir"
        self.logf = self.root / "sluiced.log"
        self.conf = self.root / "sluice.conf"
        self.conf.write_text(
            f"server: {{hostname: {HOSTNAME}, workers: 1, transport: dpdk}}\n"
            "listen:\n"
            f"  - address: 0.0.0.0:{PORT}\n"
            "smtp: {message_size_max: 10m, greet_pause: 0}\n"
            f"spool: {{directory: {self.root / 'spool'}, sync: true}}\n"
            f"delivery: {{method: maildir, maildir: {self.maildir}, retry_min: 1s}}\n"
            + (f"tls: {{certificate: {cert[0]}, key: {cert[1]}}}\n" if cert else "") +
            "dpdk:\n"
            f'  eal: "--no-huge --no-shconf --no-pci -l 0 --vdev=net_tap0,iface={tap} '
            '--log-level=notice"\n'
            "  port: 0\n"
            f"  address: {ADDR}/24\n"
            f"  gateway: {PEER}\n"
            f"  address6: {ADDR6}/64\n"
            "log: {level: info}\n")
        self.proc = None

    def check_built_in(self, exe):
        p = run(exe, "--check", "-c", str(self.conf), check=False)
        out = (p.stdout + p.stderr).decode(errors="replace")
        if "built without libdpdk" in out:
            pytest.skip("sluiced was built without libdpdk (no DPDK transport)")
        assert p.returncode == 0, f"sluiced --check: got exit {p.returncode}, want 0:\n{out}"

    def start(self, exe):
        self._logfh = open(self.logf, "ab")
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                     stdout=self._logfh, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self):
        return self.logf.read_text(errors="replace") if self.logf.exists() else ""

    def wait_tap(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"sluiced exited with {self.proc.returncode} before the "
                                     f"tap existed; log:\n{self.log()[-4000:]}")
            if Path(f"/sys/class/net/{self.tap}").exists() and "event=start" in self.log():
                return
            time.sleep(0.1)
        raise AssertionError(f"got no interface {self.tap} within {timeout}s, want one; "
                             f"log:\n{self.log()[-4000:]}")

    def stop(self, timeout=20.0):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self._logfh.close()
                self.proc = None
                raise AssertionError(f"sluiced: got no exit {timeout}s after SIGTERM, want exit 0")
        rc = self.proc.returncode
        self._logfh.close()
        self.proc = None
        return rc


@pytest.fixture
def dpdk(tmp_path, tls_cert):
    exe = sluiced_path()
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("/dev/net/tun is missing (net_tap needs it)")
    if os.geteuid() != 0:
        pytest.skip("needs root (EAL, tap device, network namespace)")
    if not shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin"):
        pytest.skip("no 'ip' (Debian package iproute2)")
    n = os.getpid() % 100000
    tap, ns = f"sltap{n}", f"sluice{n}"
    s = DpdkSluice(tmp_path, tap, tls_cert)
    s.check_built_in(exe)
    run("ip", "netns", "add", ns)
    try:
        s.start(exe)
        s.wait_tap()
        run("ip", "link", "set", tap, "netns", ns)
        # net_tap gives the kernel side the port's own MAC: make them differ.
        run("ip", "netns", "exec", ns, "ip", "link", "set", tap, "address", "02:00:00:77:00:01")
        run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{PEER}/24", "dev", tap)
        run("ip", "netns", "exec", ns, "ip", "-6", "addr", "add", f"{PEER6}/64", "dev", tap, "nodad")
        run("ip", "netns", "exec", ns, "ip", "link", "set", tap, "up")
        run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        s.ns = ns
        yield s
        rc = s.stop()
        assert rc == 0, f"sluiced: got exit code {rc} after SIGTERM, want 0:\n{s.log()[-3000:]}"
        bad = [l for l in s.log().splitlines() if BAD_LOG.search(l)]
        assert not bad, "got error lines in the log, want none:\n" + "\n".join(bad[:20])
    finally:
        if s.proc is not None:
            s.proc.kill()
            s.proc.wait(10)
        run("ip", "netns", "del", ns, check=False)


def in_ns(s, *cmd, timeout=120):
    return subprocess.run(["ip", "netns", "exec", s.ns, *cmd], capture_output=True,
                          timeout=timeout)


PING = r"""
import os, socket, struct, sys, time
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xffff); t += t >> 16
    return ~t & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(2)
ident = os.getpid() & 0xffff
for seq in range(1, 6):
    payload = b"sluice-ping-%d" % seq
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    pkt = struct.pack("!BBHHH", 8, 0, csum(hdr + payload), ident, seq) + payload
    s.sendto(pkt, (sys.argv[1], 0))
    end = time.monotonic() + 2
    while time.monotonic() < end:
        try:
            data, addr = s.recvfrom(2048)
        except socket.timeout:
            break
        icmp = data[(data[0] & 15) * 4:]
        t, _, _, i, q = struct.unpack("!BBHHH", icmp[:8])
        if addr[0] == sys.argv[1] and t == 0 and i == ident and q == seq and icmp[8:] == payload:
            print("reply", seq); sys.exit(0)
sys.exit(1)
"""

PING6 = r"""
import os, socket, struct, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.settimeout(2)
ident = os.getpid() & 0xffff
for seq in range(1, 8):
    payload = b"sluice-ping6-%d" % seq
    # the kernel fills in the ICMPv6 checksum of a raw ICMPv6 socket
    s.sendto(struct.pack("!BBHHH", 128, 0, 0, ident, seq) + payload, (sys.argv[1], 0))
    end = time.monotonic() + 2
    while time.monotonic() < end:
        try:
            data, addr = s.recvfrom(2048)
        except socket.timeout:
            break
        t, _, _, i, q = struct.unpack("!BBHHH", data[:8])
        if addr[0] == sys.argv[1] and t == 129 and i == ident and q == seq and data[8:] == payload:
            print("reply", seq); sys.exit(0)
sys.exit(1)
"""

SMTPLIB = r"""
import smtplib, ssl, sys
data = open(sys.argv[2], "rb").read()
with smtplib.SMTP(sys.argv[1], 2525, local_hostname="ns.test.example", timeout=60) as c:
    c.ehlo()
    if len(sys.argv) > 3 and sys.argv[3] == "tls":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c.starttls(context=ctx)
        c.ehlo()
    code, text = c.docmd("MAIL FROM:<alice@client.test.example>")
    assert code == 250, (code, text)
    code, text = c.docmd("RCPT TO:<bob@test.example>")
    assert code == 250, (code, text)
    code, text = c.data(data)
    assert code == 250, (code, text)
    print(text.decode())
"""


def test_ping(dpdk):
    # net_tap offers IPv4/TCP checksum offload: every test here sends
    # through it (net_memif, in test_dpdk_memif.py, has none: software).
    assert "tx_csum_offload=1" in dpdk.log(), dpdk.log()[-1500:]
    p = in_ns(dpdk, sys.executable, "-c", PING, ADDR, timeout=30)
    assert p.returncode == 0, f"ping {ADDR}: got no echo reply, want one:\n{p.stdout!r} {p.stderr!r}"


def test_ping6_global_address(dpdk):
    """dpdk.address6: the stack answers neighbour solicitation and echo on
    the configured global IPv6 address (the kernel resolves it by ND)."""
    p = in_ns(dpdk, sys.executable, "-c", PING6, ADDR6, timeout=40)
    assert p.returncode == 0, \
        f"ping {ADDR6}: got no echo reply, want one:\n{p.stdout!r} {p.stderr!r}\n{dpdk.log()[-1500:]}"


def test_swaks(dpdk, tmp_path):
    need("swaks", "swaks")
    body = tmp_path / "body.txt"
    body.write_bytes(b"first line\n.a line that starts with a dot\nlast line\n")
    p = in_ns(dpdk, "swaks", "--server", f"{ADDR}:{PORT}", "--helo", HELO, "--from", SENDER,
              "--to", "bob@test.example", "--timeout", "60", "--header", "Subject: over dpdk",
              "--body", "@" + str(body))
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 0, f"swaks: got exit {p.returncode}, want 0:\n{out}"
    qid = re.findall(r"^<[-~]\s+250[ -]\S*\s*Ok: queued as (\S+)", out, re.M)
    assert qid, f"got no 'queued as' in the swaks transcript, want one:\n{out[-3000:]}"
    m = wait_for_maildir(dpdk.maildir, 1)[0]
    check_received(m, helo=HELO, ip=PEER, qid=qid[-1], rcpt="bob@test.example")
    want = b"first line\n.a line that starts with a dot\nlast line\n"
    got = m.body.replace(b"\r\n", b"\n")
    assert got.startswith(want), f"got body {m.body[:300]!r}, want it to start {want!r}"


@pytest.mark.parametrize("size,tls", [(2000, False), (1 << 20, False), (1 << 20, True)])
def test_smtplib_exact_bytes(dpdk, tmp_path, size, tls):
    line = b"".join(bytes([0x21 + (i * 7 + j) % 90 for j in range(76)]) + b"\r\n"
                    for i in range(4))
    body = (line * (size // len(line) + 1))[:size]
    body = body[:body.rfind(b"\r\n") + 2]
    data = make_message(subject=f"dpdk {size}", body=body.decode())
    f = tmp_path / "msg.eml"
    f.write_bytes(data)
    p = in_ns(dpdk, sys.executable, "-c", SMTPLIB, ADDR, str(f), "tls" if tls else "plain")
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 0, f"smtplib: got exit {p.returncode}, want 0:\n{out[-3000:]}"
    msgs = wait_for_maildir(dpdk.maildir, 1)
    assert len(msgs) == 1, f"got {len(msgs)} messages, want 1"
    got = msgs[0].original()
    assert same_bytes(got, data), \
        f"got {len(got)} bytes ({got[:200]!r}...), want the {len(data)} bytes sent"
    check_received(msgs[0], helo=HELO, ip=PEER, tls=tls)


SUBMIT = r"""
import smtplib, sys
data = open(sys.argv[2], "rb").read()
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="submitter.test.example",
                  timeout=60) as c:
    refused = c.sendmail("carol@client.test.example", ["dave@test.example"], data)
    assert refused == {}, refused
"""


def test_postfix_relays_through_dpdk(dpdk, tmp_path):
    """A real MTA as the client: a private Postfix inside the namespace
    relays to sluiced over the tap, with STARTTLS (smtp_tls_security_level
    may), a small message and a 1 MB one."""
    need("postfix", "postfix")
    pf = Postfix({"test.example": f"smtp:[{ADDR}]:{PORT}"}, netns=dpdk.ns)
    try:
        pf.start()
        line = b"".join(bytes([0x21 + (i * 5 + j) % 90 for j in range(70)]) + b"\r\n"
                        for i in range(8))
        big = (line * ((1 << 20) // len(line) + 1))[:1 << 20]
        big = big[:big.rfind(b"\r\n") + 2]
        sent = []
        for n, body in enumerate([b"small one\r\n.dot line\r\n", big]):
            data = make_message(subject=f"via postfix {n}", body=body.decode())
            f = tmp_path / f"pf{n}.eml"
            f.write_bytes(data)
            p = in_ns(dpdk, sys.executable, "-c", SUBMIT, str(pf.port), str(f))
            assert p.returncode == 0, f"submit to Postfix: {p.stdout!r} {p.stderr!r}"
            sent.append(data)
        deadline = time.monotonic() + 90
        while len(re.findall(r"status=sent \(250 ", pf.log())) < 2:
            bad = re.findall(r"status=(?:deferred|bounced) .*", pf.log())
            assert not bad and time.monotonic() < deadline, \
                f"Postfix did not relay both into sluiced:\n{pf.log()[-4000:]}"
            time.sleep(0.3)
        log = pf.log()
        assert re.search(rf"Trusted|Anonymous TLS connection established to {re.escape(ADDR)}|"
                         rf"TLS connection established to \S*\[{re.escape(ADDR)}\]", log), \
            f"got no TLS from Postfix to sluice over DPDK, want it:\n{log[-3000:]}"
        msgs = wait_for_maildir(dpdk.maildir, 2, timeout=30)
        assert len(msgs) == 2, f"got {len(msgs)} messages, want 2"
        for m in msgs:
            check_received(m, helo="relay.test.example", ip=PEER, tls=True)
            subj = m.header("Subject")
            want = sent[int(subj.rsplit(" ", 1)[1])]
            body = want.split(b"\r\n\r\n", 1)[1]
            assert m.body.replace(b"\r\n", b"\n") == body.replace(b"\r\n", b"\n"), \
                f"{subj}: got {len(m.body)} body bytes, want the {len(body)} sent"
    finally:
        rc = pf.stop()
        pf.cleanup()
    assert rc == 0, f"got 'postfix stop' exit {rc}, want 0"
