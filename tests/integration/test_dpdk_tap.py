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

import re
import sys
import time

import pytest

from conftest import check_received, make_message, need, same_bytes, wait_for_maildir
from dpdk_netns import ADDR, PEER, PORT, dpdk_netns, in_ns, run
from postfix_instance import Postfix

ADDR6 = "2001:db8:77::2"
PEER6 = "2001:db8:77::1"
HELO = "ns.test.example"
SENDER = "alice@client.test.example"


@pytest.fixture
def dpdk(tmp_path, tls_cert):
    with dpdk_netns(tmp_path, cert=tls_cert, dpdk_extra=f"  address6: {ADDR6}/64\n") as s:
        run("ip", "netns", "exec", s.ns, "ip", "-6", "addr", "add", f"{PEER6}/64", "dev", s.tap,
            "nodad")
        yield s


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
