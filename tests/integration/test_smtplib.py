"""Python's smtplib and hand-made byte streams against sluiced: extensions,
BDAT, pipelining, SMTP smuggling, STARTTLS injection, limits, PROXY protocol,
early talkers."""

import email.message
import re
import smtplib
import socket
import struct
import time

import pytest

from conftest import (HOSTNAME, SmtpConn, check_received, check_return_path,
                      client_tls_context, dot_stuff, greet, make_message, queue_id,
                      read_maildir, same_bytes)

HELO = "py.test.example"
SENDER = "sender@client.test.example"
RCPT = "rcpt@test.example"


def smtp(port):
    return smtplib.SMTP("127.0.0.1", port, local_hostname=HELO, timeout=30)


def data_qid(reply):
    code, text = reply
    assert code == 250, f"got {code} {text!r} at end of data, want 250"
    return queue_id(text.decode())


# --- smtplib ---------------------------------------------------------------

def test_ehlo_extensions(sluice):
    with smtp(sluice.port) as s:
        code, _ = s.ehlo()
        assert code == 250, f"got EHLO {code}, want 250"
        for ext in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes",
                    "dsn", "chunking", "starttls"):
            assert s.has_extn(ext), f"got EHLO extensions {sorted(s.esmtp_features)}, want {ext}"
        assert s.esmtp_features["size"] == str(10 * 1024 * 1024), \
            f"got SIZE {s.esmtp_features['size']!r}, want {10 * 1024 * 1024}"


def test_no_starttls_without_certificate(sluice_factory):
    s0 = sluice_factory(tls=False, proxy=False)
    with smtp(s0.port) as s:
        s.ehlo()
        assert not s.has_extn("starttls"), "got STARTTLS advertised without tls config, want none"
        code, msg = s.docmd("STARTTLS")
        assert 500 <= code <= 599, f"got {code} {msg!r} to STARTTLS without tls, want 5xx"


def test_plain_sendmail(sluice):
    msg = make_message("smtplib plain", "body via smtplib\r\n")
    with smtp(sluice.port) as s:
        s.ehlo()
        code, _ = s.mail(SENDER)
        assert code == 250, f"got MAIL {code}, want 250"
        code, _ = s.rcpt(RCPT)
        assert code == 250, f"got RCPT {code}, want 250"
        qid = data_qid(s.data(msg))
    m = sluice.wait_for_maildir(1)[0]
    check_return_path(m, SENDER)
    check_received(m, helo=HELO, ip="127.0.0.1", qid=qid, rcpt=RCPT)
    assert same_bytes(m.original(), msg), f"got {m.original()!r}, want {msg!r}"


def test_starttls_sendmail(sluice):
    msg = make_message("smtplib tls", "secret body\r\n")
    with smtp(sluice.port) as s:
        s.ehlo()
        code, _ = s.starttls(context=client_tls_context())
        assert code == 220, f"got STARTTLS {code}, want 220"
        s.ehlo()
        assert not s.has_extn("starttls"), "got STARTTLS advertised inside TLS, want not (RFC 3207)"
        s.mail(SENDER)
        s.rcpt(RCPT)
        qid = data_qid(s.data(msg))
    m = sluice.wait_for_maildir(1)[0]
    check_received(m, helo=HELO, ip="127.0.0.1", qid=qid, tls=True)
    assert same_bytes(m.original(), msg), f"got {m.original()!r}, want {msg!r}"
    assert re.search(r"tls", sluice.events(), re.I), "got no TLS mention in the log, want the session's TLS"


def test_send_message_many_recipients(sluice_factory, tmp_path):
    s0 = sluice_factory(maildir=str(tmp_path / "md" / "%u"))
    rcpts = [f"r{i:03d}@test.example" for i in range(60)]
    msg = email.message.EmailMessage()
    msg["From"] = SENDER
    msg["To"] = "undisclosed-recipients:;"
    msg["Subject"] = "sixty recipients"
    msg.set_content("one message, sixty recipients\n")
    with smtp(s0.port) as s:
        refused = s.send_message(msg, from_addr=SENDER, to_addrs=rcpts)
    assert refused == {}, f"got refused recipients {refused}, want none"
    for r in rcpts:
        msgs = s0.wait_for_maildir(1, settle=0, path=str(tmp_path / "md" / r.split("@")[0]))
        assert len(msgs) == 1, f"{r}: got {len(msgs)} messages, want 1"
        assert msgs[0].header("Subject") == "sixty recipients"
    time.sleep(1)
    for r in rcpts:
        n = len(read_maildir(tmp_path / "md" / r.split("@")[0]))
        assert n == 1, f"{r}: got {n} messages after settling, want 1"


def test_recipients_max(sluice_factory):
    s0 = sluice_factory(recipients_max=100, proxy=False)
    with SmtpConn(s0.port) as c:
        greet(c)
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        for i in range(100):
            c.cmd(f"RCPT TO:<u{i}@test.example>", 250)
        r = c.cmd("RCPT TO:<u100@test.example>")
        assert r.code == 452, f"got {r!r} for recipient 101 of 100, want 452 (RFC 5321 4.5.3.1.10)"
        c.cmd("DATA", 354)
        c.send(make_message("100 rcpts") + b".\r\n")
        c.expect(250)


def test_dsn_parameters(sluice):
    msg = make_message("dsn", "dsn params\r\n")
    with smtp(sluice.port) as s:
        refused = s.sendmail(SENDER, [RCPT, "other@test.example"], msg,
                             mail_options=["RET=HDRS", "ENVID=QQ314159+2Bx"],
                             rcpt_options=["NOTIFY=SUCCESS,FAILURE",
                                           "ORCPT=rfc822;" + RCPT])
        assert refused == {}, f"got refused {refused}, want none"
        refused = s.sendmail(SENDER, [RCPT], msg, mail_options=["RET=FULL"],
                             rcpt_options=["NOTIFY=NEVER"])
        assert refused == {}, f"got refused {refused}, want none"
        code, text = s.docmd("MAIL FROM:<a@client.test.example> RET=SOMETIMES")
        assert 500 <= code <= 599, f"got {code} {text!r} for RET=SOMETIMES, want 501/555"
        s.docmd("RSET")
        s.docmd(f"MAIL FROM:<{SENDER}>")
        code, text = s.docmd(f"RCPT TO:<{RCPT}> NOTIFY=NEVER,SUCCESS")
        assert 500 <= code <= 599, f"got {code} {text!r} for NOTIFY=NEVER,SUCCESS, want 5xx (RFC 3461 4.1)"
    msgs = sluice.wait_for_maildir(2)
    assert len(msgs) >= 2, f"got {len(msgs)} messages, want 2 or more"


def test_smtputf8_and_8bitmime(sluice):
    body = "Grüße, 日本語\r\n"
    msg = make_message("utf8", body, ["MIME-Version: 1.0",
                                      "Content-Type: text/plain; charset=utf-8",
                                      "Content-Transfer-Encoding: 8bit"])
    sender = "jürgen@client.test.example"
    with smtp(sluice.port) as s:
        refused = s.sendmail(sender, ["zoë@test.example"], msg,
                             mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        assert refused == {}, f"got refused {refused}, want none"
    m = sluice.wait_for_maildir(1)[0]
    raw_rp = re.search(rb"^Return-Path: (.*?)\r?$", m.raw, re.M)
    assert raw_rp and raw_rp.group(1) == f"<{sender}>".encode(), \
        f"got Return-Path {raw_rp and raw_rp.group(1)!r}, want <{sender}> in UTF-8"
    assert same_bytes(m.original(), msg), f"got {m.original()!r}, want {msg!r}"


def test_size_declared_too_big(sluice_factory):
    s0 = sluice_factory(message_size_max="1m", proxy=False)
    with SmtpConn(s0.port) as c:
        greet(c)
        r = c.cmd(f"MAIL FROM:<{SENDER}> SIZE={2 * 1024 * 1024}")
        assert r.code == 552, f"got {r!r} for SIZE above the limit, want 552 (RFC 1870)"
        r = c.cmd(f"MAIL FROM:<{SENDER}> SIZE=1000", 250)
    # smtplib declares SIZE itself.
    with smtp(s0.port) as s:
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail(SENDER, [RCPT], b"Subject: big\r\n\r\n" + b"y" * (2 * 1024 * 1024))
        assert e.value.smtp_code == 552, f"got {e.value.smtp_code}, want 552"


# --- BDAT (RFC 3030) through a raw socket -----------------------------------

def bdat_content():
    return (b"From: <sender@client.test.example>\r\nTo: <rcpt@test.example>\r\n"
            b"Subject: bdat\r\n\r\nline one\r\n.\r\n..two dots stay two\r\n.\r\n"
            + b"".join(b"%05d " % i + b"z" * 70 + b"\r\n" for i in range(1000))
            + b"Tail line\r\n")


def test_bdat_chunks(sluice):
    content = bdat_content()
    # Cut inside a CRLF (a chunk ends in CR, the next begins with LF) and
    # right after the lone-dot line: neither is bare, neither ends anything.
    cut1 = content.index(b"line one\r\n") + len(b"line one\r")
    cut2 = content.index(b"..two") + 1
    chunks = [content[:cut1], content[cut1:cut2], content[cut2:]]
    with SmtpConn(sluice.port) as c:
        greet(c)
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd(f"RCPT TO:<{RCPT}>", 250)
        for ch in chunks[:-1]:
            c.send(b"BDAT %d\r\n" % len(ch) + ch)
            c.expect(250)
        c.send(b"BDAT %d LAST\r\n" % len(chunks[-1]) + chunks[-1])
        qid = queue_id(c.expect(250).text)
        c.cmd("QUIT", 221)
    m = sluice.wait_for_maildir(1)[0]
    check_received(m, helo="client.test.example", ip="127.0.0.1", qid=qid)
    assert same_bytes(m.original(), content), \
        f"got {len(m.original())} bytes {m.original()[:200]!r}..., want {len(content)} bytes {content[:200]!r}..."


def test_bdat_pipelined_and_zero_last(sluice):
    content = bdat_content()
    chunks = [content[i:i + 1000] for i in range(0, len(content), 1000)]
    wire = b"".join(b"BDAT %d\r\n" % len(ch) + ch for ch in chunks) + b"BDAT 0 LAST\r\n"
    with SmtpConn(sluice.port) as c:
        greet(c)
        c.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\n".encode() + wire)
        c.expect(250)
        c.expect(250)
        for _ in chunks:
            c.expect(250)
        qid = queue_id(c.expect(250).text)
        c.cmd("QUIT", 221)
    m = sluice.wait_for_maildir(1)[0]
    check_received(m, helo="client.test.example", ip="127.0.0.1", qid=qid)
    assert same_bytes(m.original(), content), f"got {len(m.original())} bytes, want {len(content)} exactly"


def test_bdat_bare_lf_refused(sluice):
    with SmtpConn(sluice.port) as c:
        greet(c)
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd(f"RCPT TO:<{RCPT}>", 250)
        ch = b"Subject: x\r\n\r\nbare\nlf\r\n"
        c.send(b"BDAT %d LAST\r\n" % len(ch) + ch)
        r = c.read_reply()
        assert r.code == 550 and r.text.startswith("5.6.0"), f"got {r!r}, want 550 5.6.0"
        c.cmd("QUIT", 221)
    time.sleep(2)
    assert not read_maildir(sluice.maildir), "got a message with a bare LF delivered, want none"


# --- pipelining through a raw socket ----------------------------------------

def test_raw_pipelining(sluice):
    msg = make_message("raw pipeline", "pipelined body\r\n")
    with SmtpConn(sluice.port) as c:
        c.expect(220)
        # EHLO is last in its group; then the whole envelope and DATA in one write.
        c.send("EHLO client.test.example\r\n")
        c.expect(250)
        c.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\n"
               f"RCPT TO:<second@test.example>\r\nDATA\r\n")
        codes = [c.read_reply().code for _ in range(4)]
        assert codes == [250, 250, 250, 354], f"got {codes}, want [250, 250, 250, 354]"
        c.send(msg + b".\r\nQUIT\r\n")
        qid = queue_id(c.expect(250).text)
        c.expect(221)
    m = sluice.wait_for_maildir(1)[0]
    check_received(m, helo="client.test.example", ip="127.0.0.1", qid=qid)
    assert same_bytes(m.original(), msg), f"got {m.original()!r}, want {msg!r}"


def test_pipelining_many_replies(sluice_factory):
    """More pipelined commands than the server's reply buffer holds: every
    one is answered (the server must go on reading after flushing replies).
    400 NOOPs: past smtp.junk_max's default of 100, so the limit is off."""
    n = 400
    sluice = sluice_factory(junk_max=0)
    with SmtpConn(sluice.port) as c:
        greet(c)
        c.send(b"NOOP\r\n" * n + b"QUIT\r\n")
        got = 0
        try:
            for _ in range(n):
                r = c.read_reply(timeout=10)
                assert r.code == 250, f"got {r!r} to NOOP {got + 1}, want 250"
                got += 1
        except AssertionError as e:
            raise AssertionError(f"got {got} replies to {n} pipelined NOOPs, want {n} ({e})") from None
        c.expect(221)


def test_raw_pipelining_rejected_rcpt_then_data(sluice):
    """A refused RCPT in the group: DATA must fail (no valid recipients) and
    the dot line that follows must not be taken for commands."""
    with SmtpConn(sluice.port) as c:
        greet(c)
        c.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<not-an-address>\r\nDATA\r\n")
        codes = [c.read_reply().code for _ in range(3)]
        assert codes[0] == 250 and codes[1] >= 500 and codes[2] in (503, 554), \
            f"got {codes}, want [250, 5xx, 503/554]"
        c.cmd("QUIT", 221)


# --- SMTP smuggling ----------------------------------------------------------

SMUGGLE_ENDS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r.\r",
                b"\n.\r", b"\r\n.\r\r\n", b"\r\n\x00.\r\n"]


@pytest.mark.parametrize("fake_end", SMUGGLE_ENDS, ids=lambda b: repr(b)[2:-1])
def test_smuggling(sluice, fake_end):
    smuggled = (b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@test.example>\r\n"
                b"DATA\r\nFrom: <ceo@test.example>\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n")
    with SmtpConn(sluice.port) as c:
        greet(c)
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd(f"RCPT TO:<{RCPT}>", 250)
        c.cmd("DATA", 354)
        c.send(b"Subject: carrier\r\n\r\nlegit body\r\n" + fake_end + smuggled + b".\r\n")
        r = c.read_reply(timeout=15)
        if fake_end == b"\r\n\x00.\r\n":
            # No bare CR/LF here: one message, whatever the NUL policy.
            assert r.code in (250, 550, 554), f"got {r!r}, want one reply for the whole message"
        else:
            assert r.code == 550 and r.text.startswith("5.6.0"), \
                f"got {r!r} after a message with {fake_end!r}, want 550 5.6.0"
        c.send("QUIT\r\n")
        r2 = c.read_reply(timeout=15)
        assert r2.code == 221, f"got {r2!r} to QUIT, want 221 (nothing smuggled in between)"
    time.sleep(2)
    msgs = read_maildir(sluice.maildir)
    for m in msgs:
        assert m.return_path == [f"<{SENDER}>"], f"got Return-Path {m.return_path}, want <{SENDER}> only"
        assert b"smuggled body" in m.raw, "got the smuggled part split from its carrier, want one message"
    want = 1 if fake_end == b"\r\n\x00.\r\n" and r.code == 250 else 0
    assert len(msgs) == want, f"got {len(msgs)} messages, want {want}"


def test_dot_stuffing_and_real_end(sluice):
    body = b"..leading dot (stuffed)\r\n.\r\n"  # wire form; unstuffed: ".leading", then end
    with SmtpConn(sluice.port) as c:
        greet(c)
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd(f"RCPT TO:<{RCPT}>", 250)
        c.cmd("DATA", 354)
        c.send(b"Subject: dots\r\n\r\n" + body)
        c.expect(250)
        c.cmd("QUIT", 221)
    m = sluice.wait_for_maildir(1)[0]
    assert same_bytes(m.original(), b"Subject: dots\r\n\r\n.leading dot (stuffed)\r\n"), \
        f"got {m.original()!r}, want the dot unstuffed once"


def test_data_byte_by_byte(sluice):
    """Every split point: CR and LF in separate segments, the final dot
    alone; the message must arrive intact and end only at CRLF.CRLF."""
    msg = make_message("bytewise", "a\r\n.b\r\n\r\nc.\r\n.\r\nd\r\n")
    wire = dot_stuff(msg) + b".\r\n"
    with SmtpConn(sluice.port) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        greet(c)
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd(f"RCPT TO:<{RCPT}>", 250)
        c.cmd("DATA", 354)
        for i in range(len(wire)):
            c.send(wire[i:i + 1])
            if i % 8 == 0:
                time.sleep(0.002)
        qid = queue_id(c.expect(250).text)
        c.cmd("QUIT", 221)
    m = sluice.wait_for_maildir(1)[0]
    check_received(m, helo="client.test.example", ip="127.0.0.1", qid=qid)
    assert same_bytes(m.original(), msg), f"got {m.original()!r}, want {msg!r}"


# --- STARTTLS command injection (CVE-2011-0411 class) -------------------------

def test_starttls_injection(sluice):
    with SmtpConn(sluice.port) as c:
        greet(c)
        c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@attacker.example>\r\n")
        c.expect(220)
        extra = c.quiet_for(1.0)
        assert extra == b"", f"got {extra!r} after the 220 to STARTTLS, want nothing (plaintext executed)"
        c.starttls()
        c.send("EHLO client.test.example\r\n")
        r = c.read_reply()
        assert r.code == 250 and r.lines[0].startswith(HOSTNAME), \
            f"got {r!r} as the first reply inside TLS, want the EHLO reply (buffered RSET must be discarded)"
        r = c.cmd(f"RCPT TO:<{RCPT}>")
        assert r.code == 503, f"got {r!r} to RCPT without MAIL inside TLS, want 503 (injected MAIL discarded)"
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd(f"RCPT TO:<{RCPT}>", 250)
        c.cmd("DATA", 354)
        c.send(make_message("after injection") + b".\r\n")
        c.expect(250)
        c.cmd("QUIT", 221)
    m = sluice.wait_for_maildir(1)[0]
    check_return_path(m, SENDER)
    sluice.wait_log(r"discard", flags=re.I)


def test_starttls_resets_session(sluice):
    """RFC 3207 4.2: after TLS the client must EHLO again, state is reset.
    STARTTLS inside a transaction may also be refused (503, as Postfix does)."""
    with SmtpConn(sluice.port) as c:
        greet(c)
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        r = c.cmd("STARTTLS")
        assert r.code in (220, 503), f"got {r!r} to STARTTLS inside a transaction, want 220 or 503"
        if r.code == 503:
            r = c.cmd("RCPT TO:<" + RCPT + ">")
            assert r.code == 250, f"got {r!r} to RCPT after a refused STARTTLS, want 250 (transaction kept)"
            return
        c.starttls()
        c.cmd("EHLO client.test.example", 250)
        r = c.cmd(f"RCPT TO:<{RCPT}>")
        assert r.code == 503, f"got {r!r} for RCPT after STARTTLS, want 503 (MAIL from before TLS forgotten)"


# --- limits -----------------------------------------------------------------

def test_long_command_line(sluice):
    with SmtpConn(sluice.port) as c:
        greet(c)
        c.send(b"NOOP " + b"x" * 20000 + b"\r\n")
        r = c.read_reply()
        assert r.code == 500 and r.text.startswith("5.5.2"), f"got {r!r}, want 500 5.5.2"
        # The rest of the long line is skipped, not read as new commands.
        r = c.cmd("NOOP")
        assert r.code == 250, f"got {r!r} to NOOP after the long line, want 250"
        c.cmd("QUIT", 221)


def test_too_many_errors(sluice_factory):
    s0 = sluice_factory(errors_max=3, proxy=False, tls=False)
    with SmtpConn(s0.port) as c:
        greet(c)
        codes = []
        for i in range(6):
            try:
                c.send(f"BOGUS{i}\r\n")
                codes.append(c.read_reply().code)
            except (AssertionError, OSError):
                break
            if codes[-1] == 421:
                break
        assert 421 in codes, f"got {codes}, want 421 after 3 errors"
        assert codes.index(421) in (2, 3) and all(500 <= x <= 599 for x in codes[:-1]), \
            f"got {codes}, want 5xx then 421 at the 3rd or 4th error"
        rest = c.wait_closed(10)
        assert rest == b"", f"got {rest!r} after the 421, want the connection closed"


def test_junk_commands(sluice_factory):
    """smtp.junk_max: past 5 NOOP/RSET in a session without an accepted
    message, each counts as an error; the 3rd error (errors_max) is 421 and
    the close. A session that delivers a message starts the count again."""
    s0 = sluice_factory(errors_max=3, junk_max=5, proxy=False, tls=False)
    with SmtpConn(s0.port) as c:
        greet(c)
        codes = []
        for i in range(12):
            try:
                c.send("NOOP\r\n" if i % 2 else "RSET\r\n")
                codes.append(c.read_reply().code)
            except (AssertionError, OSError):
                break
            if codes[-1] == 421:
                break
        assert codes == [250] * 7 + [421], f"got {codes}, want 7 x 250 then 421"
        rest = c.wait_closed(10)
        assert rest == b"", f"got {rest!r} after the 421, want the connection closed"
    with smtplib.SMTP("127.0.0.1", s0.port, timeout=30) as s:
        s.ehlo("client.test")
        for _ in range(4):
            assert s.noop()[0] == 250
        s.sendmail(SENDER, [RCPT], b"Subject: j\r\n\r\nbody\r\n")
        for _ in range(7):      # the count starts again after the message
            assert s.noop()[0] == 250


# --- PROXY protocol ----------------------------------------------------------

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(src, dst, sport, dport, tlv=b"", cmd=0x21):
    if ":" in src:
        fam, addr = 0x21, socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam, addr = 0x11, socket.inet_aton(src) + socket.inet_aton(dst)
    body = addr + struct.pack("!HH", sport, dport) + tlv
    return V2_SIG + bytes([cmd, fam]) + struct.pack("!H", len(body)) + body


def proxied_message(sluice, header, split=None):
    """Send header (optionally in two writes), then one message; returns qid."""
    with SmtpConn(sluice.proxy_port) as c:
        if split:
            c.send(header[:split])
            time.sleep(0.3)
            c.send(header[split:])
        else:
            c.send(header)
        greet(c, "proxied.test.example")
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd(f"RCPT TO:<{RCPT}>", 250)
        c.cmd("DATA", 354)
        c.send(make_message("proxied") + b".\r\n")
        qid = queue_id(c.expect(250).text)
        c.cmd("QUIT", 221)
        return qid


@pytest.mark.parametrize("kind", ["v1", "v1-split", "v2", "v2-split-tlv", "v2-ipv6", "v1-ipv6"])
def test_proxy_header(sluice, kind):
    if kind == "v1":
        hdr, ip, split = b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 25\r\n", "192.0.2.10", None
    elif kind == "v1-split":
        hdr, ip, split = b"PROXY TCP4 192.0.2.11 127.0.0.1 40001 25\r\n", "192.0.2.11", 13
    elif kind == "v1-ipv6":
        hdr, ip, split = b"PROXY TCP6 2001:db8::10 2001:db8::1 40000 25\r\n", "IPv6:2001:db8::10", None
    elif kind == "v2":
        hdr, ip, split = proxy_v2("198.51.100.7", "127.0.0.1", 50000, 25), "198.51.100.7", None
    elif kind == "v2-split-tlv":
        tlv = b"\x02" + struct.pack("!H", 16) + b"mx.test.example!"
        hdr, ip, split = proxy_v2("198.51.100.8", "127.0.0.1", 50001, 25, tlv), "198.51.100.8", 10
    else:
        hdr, ip, split = proxy_v2("2001:db8::7", "2001:db8::1", 50000, 25), "IPv6:2001:db8::7", None
    qid = proxied_message(sluice, hdr, split)
    m = sluice.wait_for_maildir(1)[0]
    check_received(m, helo="proxied.test.example", ip=ip, qid=qid)
    shown = ip.replace("IPv6:", "")
    assert re.search(rf"client=\[?(IPv6:)?{re.escape(shown)}\b", sluice.events()), \
        f"got no 'client={shown}' in the log, want the proxied address"


def test_proxy_v2_local(sluice):
    """LOCAL (health checks): the real endpoints stand."""
    hdr = V2_SIG + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    qid = proxied_message(sluice, hdr)
    m = sluice.wait_for_maildir(1)[0]
    check_received(m, helo="proxied.test.example", ip="127.0.0.1", qid=qid)


BAD_PROXY = {
    "smtp-first": b"EHLO client.test.example\r\n",
    "v1-bad-port": b"PROXY TCP4 192.0.2.1 127.0.0.1 99999 25\r\n",
    "v1-bare-lf": b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 25\nEHLO x\r\n",
    "v1-bad-addr": b"PROXY TCP4 192.0.2.300 127.0.0.1 1000 25\r\n",
    "v1-too-long": b"PROXY TCP4 " + b"1" * 200 + b"\r\n",
    "v2-bad-version": V2_SIG + bytes([0x31, 0x11]) + struct.pack("!H", 12) + bytes(12),
    "v2-short-length": V2_SIG + bytes([0x21, 0x11]) + struct.pack("!H", 4) + bytes(4),
}


@pytest.mark.parametrize("name", list(BAD_PROXY))
def test_bad_proxy_header(sluice, name):
    with SmtpConn(sluice.proxy_port) as c:
        c.send(BAD_PROXY[name])
        got = c.wait_closed(10)
        assert not got.startswith(b"220"), f"got banner {got[:80]!r} after a bad PROXY header, want a close without banner"
        assert got == b"", f"got {got[:120]!r}, want the connection closed without a reply"
    # The listener still works.
    proxied_message(sluice, b"PROXY TCP4 192.0.2.20 127.0.0.1 40000 25\r\n")
    assert len(sluice.wait_for_maildir(1)) == 1


def test_proxy_header_on_plain_listener_is_not_trusted(sluice):
    with SmtpConn(sluice.port) as c:
        c.expect(220)
        r = c.cmd("PROXY TCP4 192.0.2.66 127.0.0.1 40000 25")
        assert 500 <= r.code <= 599, f"got {r!r}, want 5xx for PROXY on a plain listener"
        c.cmd("EHLO client.test.example", 250)
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd(f"RCPT TO:<{RCPT}>", 250)
        c.cmd("DATA", 354)
        c.send(make_message("plain") + b".\r\n")
        c.expect(250)
    m = sluice.wait_for_maildir(1)[0]
    assert "192.0.2.66" not in m.received[0], f"got {m.received[0]!r}, want the real client address"


# --- early talker --------------------------------------------------------------

def test_early_talker(sluice_factory):
    s0 = sluice_factory(greet_pause="500ms", proxy=False, tls=False)
    # A polite client waits and is not flagged.
    with SmtpConn(s0.port) as c:
        t0 = time.monotonic()
        c.expect(220, timeout=5)
        waited = time.monotonic() - t0
        assert waited >= 0.4, f"got the banner after {waited:.3f}s, want >= 0.5s greet pause"
        c.cmd("QUIT", 221)
    time.sleep(0.3)
    assert not re.search(r"early", no_early_zero(s0.events()), re.I), \
        f"got an early-talker log line for a polite client, want none:\n{s0.events()[-2000:]}"
    # An impatient one is.
    with SmtpConn(s0.port) as c:
        c.send("EHLO impatient.test.example\r\n")
        try:
            c.read_reply(timeout=5)
        except AssertionError:
            pass
    deadline = time.monotonic() + 10
    while not re.search(r"early", no_early_zero(s0.events()), re.I):
        assert time.monotonic() < deadline, \
            f"got no early-talker mark in the log, want one:\n{s0.events()[-2000:]}"
        time.sleep(0.1)


def no_early_zero(log):
    """The log without 'early_talker=0' (a field on every disconnect line)."""
    return re.sub(r"early_talker=0\b", "", log)
