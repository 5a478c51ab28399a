"""Recipient checks at RCPT: recipients.domains (an MX takes mail for its
own domains only) and recipients.verify, which asks a real Dovecot over
LMTP whether the mailbox exists (tests/integration/test_lmtp_dovecot.py's
private Dovecot: users alice, bob, carol; unix socket for the default route,
TCP for tcp.test)."""

import re
import time

import pytest

from conftest import SmtpConn, greet
from test_lmtp_dovecot import LmtpSluice, dovecot  # noqa: F401  (the fixture)


def server(tmp_path, dovecot, extra):
    s = LmtpSluice(tmp_path / "s", dovecot, extra=extra)
    s.write_config()
    s.start()
    return s


def rcpts(port, *addrs):
    c = SmtpConn(port)
    greet(c)
    c.cmd("MAIL FROM:<sender@example.org>", 250)
    out = []
    for a in addrs:
        c.send(f"RCPT TO:<{a}>\r\n")
        out.append(c.read_reply())
    c.send("QUIT\r\n")
    c.read_reply()
    return out


def test_domains_and_verification(tmp_path, dovecot):
    s = server(tmp_path, dovecot,
               "recipients:\n"
               "  domains: \"mail.test, .sub.test tcp.test\"\n"
               "  verify: true\n"
               "  verify_timeout: 5s\n")
    try:
        got = rcpts(s.port, "alice@mail.test", "nobody@mail.test", "bob@tcp.test",
                    "carol@x.sub.test", "alice@other.test", "alice@sub.test", "ALICE@MAIL.TEST")
        codes = [r.code for r in got]
        assert codes == [250, 550, 250, 250, 550, 550, 250], got
        # unknown mailbox: the backend's own status and reason
        assert re.match(r"5\.1\.1 <nobody@mail\.test>: Recipient address rejected: ", got[1].text), got[1]
        # not one of our domains
        assert got[4].text.startswith("5.7.1 <alice@other.test>: Relay access denied"), got[4]
        assert got[5].text.startswith("5.7.1"), "sub.test itself is not .sub.test"
        s.wait_log(r"event=rcpt_unknown worker=\d+ rcpt=nobody@mail\.test cached=0 reply=\"550 5\.1\.1\"")

        # a message to a known and an unknown recipient reaches the known one
        c = SmtpConn(s.port)
        greet(c)
        c.cmd("MAIL FROM:<sender@example.org>", 250)
        c.cmd("RCPT TO:<alice@mail.test>", 250)
        c.cmd("RCPT TO:<ghost@mail.test>", 550)
        c.cmd("DATA", 354)
        c.send("Subject: v\r\n\r\nverified\r\n.\r\n")
        assert c.read_reply().code == 250
        c.cmd("QUIT", 221)
        new = dovecot.maildir("alice") / "new"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (new.exists() and any(new.iterdir())):
            time.sleep(0.1)
        assert new.exists() and any(new.iterdir()), "alice got nothing"

        # answers are cached: with Dovecot gone, known and unknown recipients
        # are still answered; a recipient never asked gets 451 4.4.1
        dovecot.stop()
        got = rcpts(s.port, "alice@mail.test", "nobody@mail.test", "carol@mail.test")
        assert [r.code for r in got] == [250, 550, 451], got
        assert got[2].text.startswith("4.4.1 Recipient verification unavailable"), got[2]
        s.wait_log(r"event=verify_unavailable backend=unix:\S+ rcpt=carol@mail\.test")
    finally:
        s.allow_errors = False
        assert s.stop() == 0


def test_domains_without_verification(sluice_factory):
    s = sluice_factory(tls=False, proxy=False, start=False)
    s.config_path.write_text(s.config_text() + "recipients: {domains: \"example.test\"}\n")
    s.start()
    got = rcpts(s.port, "any@example.test", "any@example.org")
    assert [r.code for r in got] == [250, 550], got


def test_verify_needs_lmtp(tmp_path):
    import subprocess
    from conftest import sluiced_path
    p = tmp_path / "c.conf"
    p.write_text("listen: [{address: 127.0.0.1:2525}]\nrecipients: {verify: true}\n")
    out = subprocess.run([sluiced_path(), "-c", str(p), "--check"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0
    assert re.search(r":2: recipients\.verify: needs delivery\.method lmtp", out.stderr), out.stderr
    p.write_text("listen: [{address: 127.0.0.1:2525}]\nrecipients: {domains: \"a.test, -bad-\"}\n")
    out = subprocess.run([sluiced_path(), "-c", str(p), "--check"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0 and "recipients.domains: '-bad-' is no domain" in out.stderr, out.stderr
