"""DNS block and allow lists at connect time (control/rbl.c), against a real
DNS server: rbldnsd on a loopback port this test picks, serving a block list,
a second block list with return codes, and an allow list. Clients connect
from distinct loopback addresses (127.0.0.0/8 is all loopback on Linux), so
each address plays one kind of sender; swaks and raw sockets are the clients.
No query leaves the machine: sluiced's resolver is pointed at rbldnsd only.
"""

import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import SmtpConn, free_port, need

BL, BL2, WL = "bl.sluice.test", "codes.sluice.test", "wl.sluice.test"
LISTED = "127.0.0.2"        # in BL: refused
WHITE = "127.0.0.3"         # in BL and in WL: the allow list wins
CLEAN = "127.0.0.4"         # nowhere
CODE_HIT = "127.0.0.5"      # in BL2 with 127.0.0.4 (counted entry)
CODE_MISS = "127.0.0.6"     # in BL2 with 127.0.0.10 (an entry not counted)
SKIPPED = "127.0.0.7"       # in BL, but in rbl.skip
REFUSAL = "127.0.0.8"       # BL answers 127.255.255.254 (a list's refusal)


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rbldnsd:
    def __init__(self, root):
        self.root = root
        self.port = free_udp_port()
        self.proc = None
        (root / "bl.zone").write_text(
            ":127.0.0.2:Listed in the test block list\n"
            f"{LISTED}\n{WHITE}\n{SKIPPED}\n"
            f"{REFUSAL} :127.255.255.254:refused\n")
        (root / "codes.zone").write_text(
            f"{CODE_HIT} :127.0.0.4:exploited host\n"
            f"{CODE_MISS} :127.0.0.10:end-user range\n")
        (root / "wl.zone").write_text(f":127.0.10.2:allowed\n{WHITE}\n")

    def start(self):
        exe = need("rbldnsd", "rbldnsd")
        self.proc = subprocess.Popen(
            [exe, "-n", "-b", f"127.0.0.1/{self.port}", "-w", str(self.root), "-t", "60",
             f"{BL}:ip4set:bl.zone", f"{BL2}:ip4set:codes.zone", f"{WL}:ip4set:wl.zone"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()  # a fixture that fails here never reaches its teardown
            raise
        return self

    def wait_ready(self, timeout=10.0):
        """A query for 2.0.0.127.BL answered: rbldnsd has loaded its zones."""
        q = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" +
             b"".join(bytes([len(p)]) + p.encode() for p in ("2.0.0.127." + BL).split(".")) +
             b"\x00\x00\x01\x00\x01")
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"rbldnsd exited with {self.proc.returncode}")
                s.sendto(q, ("127.0.0.1", self.port))
                try:
                    a = s.recv(512)
                except socket.timeout:
                    continue
                if a[:2] == b"\x12\x34" and a[7] >= 1:  # one answer or more
                    return
        raise AssertionError(f"rbldnsd on 127.0.0.1:{self.port}: no answer in {timeout}s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def dns(tmp_path):
    d = tmp_path / "dns"
    d.mkdir()
    r = Rbldnsd(d).start()
    yield r
    r.stop()


def rbl_config(s, servers, smtp_extra="", admin="", **extra):
    conf = {
        "enabled": "true",
        "zones": "{" + f"{BL}: 1, {BL2}=127.0.0.4: 1, {BL2}=127.0.0.11: 1, {WL}: -5" + "}",
        "threshold": "1",
        "servers": f'"{servers}"',
        "timeout": "1s",
        "skip": f'"{SKIPPED} 192.0.2.0/24"',
    }
    conf.update(extra)
    text = s.config_text().replace("smtp:\n", "smtp:\n" + smtp_extra, 1)
    s.config_path.write_text(text + admin + "rbl:\n" +
                             "".join(f"  {k}: {v}\n" for k, v in conf.items()))


def greeting_from(port, src, timeout=10.0):
    """The first reply to a client bound to src, and the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(src, 0))
    c = SmtpConn(port, timeout=timeout, connect=False)
    c.sock = sock
    return c.read_reply(), c


def swaks_from(port, src, to="user@example.test"):
    exe = need("swaks", "swaks")
    return subprocess.run([exe, "--server", f"127.0.0.1:{port}", "--local-interface", src,
                           "--from", "sender@example.org", "--to", to,
                           "--helo", "client.example.org", "--timeout", "20"],
                          capture_output=True, text=True, timeout=60)


def test_listed_refused_clean_accepted_allowlist_wins(sluice_factory, dns):
    s = sluice_factory(tls=False, start=False)
    rbl_config(s, f"127.0.0.1:{dns.port}")
    s.start()

    # listed: 554 at the greeting, then only QUIT (RFC 5321 3.1)
    r, c = greeting_from(s.port, LISTED)
    assert r.code == 554, f"got {r}, want 554 for a client in {BL}"
    assert BL in r.text and LISTED in r.text, f"got {r}, want the list and the address named"
    c.send("EHLO client.example.org\r\n")
    r2 = c.read_reply()
    assert r2.code == 503, f"got {r2} to EHLO after a 554 greeting, want 503"
    c.send("QUIT\r\n")
    assert c.read_reply().code == 221
    s.wait_log(rf"event=rbl_reject worker=\d+ client={re.escape(LISTED)} score=1\.00 "
               rf"zones={re.escape(BL)} cached=0")

    # swaks from the listed address: no mail goes through
    out = swaks_from(s.port, LISTED)
    assert out.returncode != 0 and "554" in out.stdout, out.stdout[-2000:]

    # clean: mail arrives
    out = swaks_from(s.port, CLEAN)
    assert out.returncode == 0, out.stdout[-2000:]
    # listed in BL but on the allow list (weight -5): accepted
    out = swaks_from(s.port, WHITE)
    assert out.returncode == 0, out.stdout[-2000:]
    msgs = s.wait_for_maildir(2)
    assert len(msgs) == 2
    assert re.search(rf"event=disconnect .*client={re.escape(CLEAN)} .*rbl=pass", s.events())

    # return codes: only the counted answer refuses
    r, c = greeting_from(s.port, CODE_HIT)
    assert r.code == 554 and f"{BL2}=127.0.0.4" in r.text, f"got {r}"
    c.sock.close()
    r, c = greeting_from(s.port, CODE_MISS)
    assert r.code == 220, f"got {r}, want 220: 127.0.0.10 is not a counted code"
    c.send("QUIT\r\n")
    c.sock.close()

    # skipped: never asked, accepted
    r, c = greeting_from(s.port, SKIPPED)
    assert r.code == 220, f"got {r}, want 220 for an address in rbl.skip"
    c.send("QUIT\r\n")
    c.read_reply()
    c.sock.close()
    s.wait_log(rf"event=disconnect .*client={re.escape(SKIPPED)} .*rbl=skipped")

    # a list's refusal answer is not a listing, and is logged with a hint
    r, c = greeting_from(s.port, REFUSAL)
    assert r.code == 220, f"got {r}, want 220: 127.255.255.254 is a refusal, not a listing"
    c.sock.close()
    s.wait_log(r"event=rbl_refused zone=" + re.escape(BL) + r" answer=127\.255\.255\.254")
    s.allow_errors = False


def test_cache_answers_without_asking_again(sluice_factory, dns):
    """The first answer is cached (for the zone's TTL, 60 s here): with the
    DNS server gone, the same client is still refused, and a new one, which
    the cache does not hold, gets 421."""
    s = sluice_factory(tls=False, start=False)
    rbl_config(s, f"127.0.0.1:{dns.port}")
    s.start()
    r, c = greeting_from(s.port, LISTED)
    assert r.code == 554, f"got {r}"
    c.sock.close()
    dns.stop()
    for _ in range(2):
        r, c = greeting_from(s.port, LISTED)
        assert r.code == 554, f"got {r}, want 554 from the cache with the DNS server gone"
        c.sock.close()
    s.wait_log(rf"event=rbl_reject .*client={re.escape(LISTED)} .*cached=1")
    r, c = greeting_from(s.port, CLEAN)
    assert r.code == 421, f"got {r}, want 421: not cached, and the lists cannot be asked"
    c.sock.close()
    assert s.stop() == 0
    m = re.search(r"event=rbl_stats checks=(\d+) cache_hits=(\d+) queries=(\d+) listed=(\d+) "
                  r"passed=\d+ tempfail=(\d+)", s.events())
    assert m, "got no event=rbl_stats line at stop"
    # checks: 127.0.0.1 (the harness's wait for the port), LISTED, LISTED
    # twice from the cache, CLEAN; 3 distinct zones asked for each of the
    # three that were not cached
    assert tuple(int(x) for x in m.groups()) == (5, 2, 9, 3, 1), m.group(0)


def test_dns_down_tempfails_never_accepts(sluice_factory, tmp_path):
    # a port nothing answers on: every block list fails
    dead = free_udp_port()
    s = sluice_factory(tls=False, start=False)
    rbl_config(s, f"127.0.0.1:{dead}", timeout="300ms")
    s.start()
    t0 = time.monotonic()
    r, c = greeting_from(s.port, CLEAN)
    took = time.monotonic() - t0
    assert r.code == 421, f"got {r}, want 421: the lists could not be asked"
    assert "4.7.0" in r.text
    assert took < 5, f"the 421 took {took:.1f}s, want it within about rbl.timeout"
    with pytest.raises((AssertionError, ConnectionError, OSError)):
        c.send("EHLO x\r\n")
        c.read_reply(timeout=5)
    s.wait_log(rf"event=rbl_tempfail .*client={re.escape(CLEAN)} .*failed=")
    out = swaks_from(s.port, CLEAN)
    assert out.returncode != 0 and "421" in out.stdout, out.stdout[-2000:]
    assert s.messages() == []


def test_failed_allowlist_alone_cannot_refuse(sluice_factory, dns, tmp_path):
    """Only the allow list lives on a dead server: a client that no block list
    lists cannot be refused whatever it would say, so it is accepted; a listed
    one could have been saved by it, so it gets 421."""
    dead = free_udp_port()
    s = sluice_factory(tls=False, start=False)
    # c-ares takes one server list for every zone; so the allow list here
    # is a zone rbldnsd does not serve (REFUSED): it fails like a dead one.
    rbl_config(s, f"127.0.0.1:{dns.port}",
               zones="{" + f"{BL}: 1, allow.unserved.test: -5" + "}")
    s.start()
    r, c = greeting_from(s.port, CLEAN)
    assert r.code == 220, f"got {r}, want 220: only the allow list failed"
    c.sock.close()
    r, c = greeting_from(s.port, LISTED)
    assert r.code == 421, f"got {r}, want 421: the failed allow list could have saved it"
    c.sock.close()


def test_check_rejects_bad_rbl_config(tmp_path):
    from conftest import check_config_errors
    cases = [
        ("rbl: {enabled: true}\n", "rbl.zones: must name at least one zone"),
        ("rbl: {enabled: true, zones: {bl.test=10.0.0.1: 1}}\n",
         "must be an address in 127.0.0.0/8"),
        ("rbl: {enabled: true, zones: {bl.test: heavy}}\n", "expected a weight"),
        ("rbl: {enabled: true, zones: {bl.test: 1}, skip: \"10.0.0.0/33\"}\n",
         "rbl.skip: '10.0.0.0/33' is no address or network"),
        ("rbl: {enabled: true, zones: {bl.test: 1}, servers: \"dns.example\"}\n",
         "rbl.servers: expected addresses of DNS servers"),
        ("rbl: {enabled: true, zones: {bl.test: 1}, threshold: 0}\n", "must be above 0"),
    ]
    check_config_errors(tmp_path, cases)


def test_tarpit_holds_listed_clients_for_almost_nothing(sluice_factory, dns, short_dir):
    """rbl.tarpit: a listed client is held (a continuation line of its 554
    every smtp.tarpit_interval) before the reply ends; many held at once
    cost the server no thread and no lag for the others."""
    import os
    sock = str(short_dir / "a.sock")
    s = sluice_factory(tls=False, start=False)
    rbl_config(s, f"127.0.0.1:{dns.port}", smtp_extra="  tarpit_interval: 300ms\n",
               admin=f"admin: {{socket: {sock}}}\n", tarpit="2s")
    s.start()

    sock_ = socket.create_connection(("127.0.0.1", s.port), timeout=10,
                                     source_address=(LISTED, 0))
    t0 = time.monotonic()
    buf = b""
    while not re.search(rb"(^|\n)554 [^\n]*\n", buf):
        chunk = sock_.recv(4096)
        assert chunk, f"closed before the reply ended; got {buf!r}"
        buf += chunk
    took = time.monotonic() - t0
    lines = buf.decode().splitlines()
    cont = [l for l in lines if l.startswith("554-5.7.1 ")]
    assert len(cont) >= 4, lines
    assert lines[-1].startswith("554 5.7.1 Service unavailable") and BL in lines[-1], lines
    assert took >= 1.8, f"the reply ended after {took:.2f}s, want the 2 s hold"
    sock_.sendall(b"EHLO x\r\n")
    assert sock_.recv(4096).startswith(b"503 "), "after the hold only QUIT is served"
    sock_.close()

    # 100 held at once; a clean client is still served at once
    held = [socket.create_connection(("127.0.0.1", s.port), timeout=10,
                                     source_address=(LISTED, 0)) for _ in range(100)]
    try:
        for h in held:
            assert h.recv(4096).startswith(b"554-"), "every listed client is held"
        out = subprocess.run([os.environ["SLUICECTL"], "-s", sock, "tarpit"], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out
        assert re.search(r"^held_now 100$", out.stdout, re.M), out.stdout
        t0 = time.monotonic()
        r, c = greeting_from(s.port, CLEAN)
        assert r.code == 220 and time.monotonic() - t0 < 1.5, (r, time.monotonic() - t0)
        c.sock.close()
    finally:
        for h in held:
            h.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run([os.environ["SLUICECTL"], "-s", sock, "tarpit"], capture_output=True,
                             text=True, timeout=30)
        if re.search(r"^held_now 0$", out.stdout, re.M):
            break
        time.sleep(0.1)
    assert re.search(r"^held_now 0$", out.stdout, re.M), out.stdout
    assert re.search(r"^held_total 101$", out.stdout, re.M), out.stdout
