"""swaks (a real, independent SMTP client) against sluiced."""

import re
import subprocess
import time

from conftest import need, check_received, check_return_path, read_maildir

HELO = "swaks.test.example"
SENDER = "alice@client.test.example"


def swaks(port, *args, to="bob@test.example", timeout=120):
    need("swaks", "swaks")
    cmd = ["swaks", "--server", "127.0.0.1", "--port", str(port),
           "--helo", HELO, "--from", SENDER, "--to", to,
           "--timeout", "60", *args]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    out = p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")
    return p.returncode, out


def qid_from(out):
    m = re.findall(r"^<[-~]\s+250[ -]\S*\s*Ok: queued as (\S+)", out, re.M)
    assert m, f"got no '250 ... queued as QID' in the swaks transcript:\n{out[-3000:]}\nwant one"
    return m[-1]


def norm(b):
    return b.replace(b"\r\n", b"\n")


def test_plain_delivery(sluice, tmp_path):
    body = tmp_path / "body.txt"
    body.write_bytes(b"first line\n.a line that starts with a dot\n..two dots\n.\nlast line\n")
    rc, out = swaks(sluice.port, "--header", "Subject: swaks plain", "--body", "@" + str(body))
    assert rc == 0, f"got swaks exit {rc}, want 0:\n{out}"
    qid = qid_from(out)
    msgs = sluice.wait_for_maildir(1)
    assert len(msgs) == 1, f"got {len(msgs)} messages, want 1"
    m = msgs[0]
    check_return_path(m, SENDER)
    check_received(m, helo=HELO, ip="127.0.0.1", qid=qid, rcpt="bob@test.example")
    assert m.header("Subject") == "swaks plain", f"got Subject {m.header('Subject')!r}, want 'swaks plain'"
    want = b"first line\n.a line that starts with a dot\n..two dots\n.\nlast line\n"
    assert norm(m.body).startswith(want), f"got body {m.body[:300]!r}, want it to start {want!r}"
    assert f"qid={qid}" in sluice.log(), f"got no 'qid={qid}' in the log, want the txn line"


def test_pipelining(sluice):
    rc, out = swaks(sluice.port, "--pipeline", "--header", "Subject: pipelined")
    assert rc == 0, f"got swaks exit {rc}, want 0:\n{out}"
    assert "PIPELINING" in out, f"got no PIPELINING in the EHLO reply, want it:\n{out}"
    qid = qid_from(out)
    m = sluice.wait_for_maildir(1)[0]
    check_received(m, helo=HELO, ip="127.0.0.1", qid=qid)
    assert m.header("Subject") == "pipelined", f"got Subject {m.header('Subject')!r}, want 'pipelined'"


def test_starttls(sluice):
    rc, out = swaks(sluice.port, "--tls", "--header", "Subject: over tls")
    assert rc == 0, f"got swaks exit {rc}, want 0:\n{out}"
    assert re.search(r"^<-\s+220 ", out, re.M), f"got no 220 to STARTTLS, want one:\n{out}"
    assert re.search(r"^\s*~>\s+EHLO", out, re.M), f"got no EHLO inside TLS, want one:\n{out}"
    qid = qid_from(out)
    m = sluice.wait_for_maildir(1)[0]
    check_received(m, helo=HELO, ip="127.0.0.1", qid=qid, tls=True)


def test_utf8_8bit_body(sluice, tmp_path):
    text = "Grüße aus Zürich — ΑΒΓ — 日本語 — emoji 📨\n"
    body = tmp_path / "body.txt"
    body.write_bytes(text.encode("utf-8"))
    rc, out = swaks(sluice.port, "--header", "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=",
                    "--header", "MIME-Version: 1.0",
                    "--header", "Content-Type: text/plain; charset=utf-8",
                    "--header", "Content-Transfer-Encoding: 8bit",
                    "--body", "@" + str(body))
    assert rc == 0, f"got swaks exit {rc}, want 0:\n{out}"
    assert "8BITMIME" in out and "SMTPUTF8" in out, \
        f"got EHLO without 8BITMIME/SMTPUTF8, want both:\n{out}"
    m = sluice.wait_for_maildir(1)[0]
    assert text.encode("utf-8") in norm(m.body), \
        f"got body {m.body[:300]!r}, want the UTF-8 text byte for byte"


def test_multiple_recipients(sluice_factory, tmp_path):
    rcpts = [f"user{i}@test.example" for i in range(5)]
    # One Maildir per local part (%u): each recipient must get exactly one copy.
    s = sluice_factory(maildir=str(tmp_path / "md-%u"))
    rc, out = swaks(s.port, "--header", "Subject: many", to=",".join(rcpts))
    assert rc == 0, f"got swaks exit {rc}, want 0:\n{out}"
    n = len(re.findall(r"^ ?[-~]>\s+RCPT TO", out, re.M))
    assert n == 5, f"got {n} RCPT commands in the transcript, want 5"
    qid = qid_from(out)
    for r in rcpts:
        path = str(tmp_path / ("md-" + r.split("@")[0]))
        msgs = s.wait_for_maildir(1, path=path)
        assert len(msgs) == 1, f"Maildir of {r}: got {len(msgs)} messages, want 1"
        check_received(msgs[0], helo=HELO, ip="127.0.0.1", qid=qid)
        assert msgs[0].header("Subject") == "many", f"got Subject {msgs[0].header('Subject')!r}, want 'many'"
    # No stray Maildir named after the literal template.
    assert not (tmp_path / "md-%u").exists(), "got a Maildir named 'md-%u', want %u expanded"


def test_five_megabytes(sluice, tmp_path):
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-.,;:!?+*/=\n"
    n = 5 * 1024 * 1024 // len(line)
    body = b"".join(b"%07d " % i + line for i in range(n))
    f = tmp_path / "big.txt"
    f.write_bytes(body)
    t0 = time.monotonic()
    rc, out = swaks(sluice.port, "--header", "Subject: big", "--body", "@" + str(f),
                    "--silent", "1")
    assert rc == 0, f"got swaks exit {rc}, want 0:\n{out[-3000:]}"
    m = sluice.wait_for_maildir(1, timeout=60)[0]
    got = norm(m.body)
    assert got.startswith(body), \
        f"got a body of {len(got)} bytes (first difference at " \
        f"{next((i for i, (a, b) in enumerate(zip(got, body)) if a != b), min(len(got), len(body)))}), " \
        f"want the {len(body)} bytes sent ({time.monotonic() - t0:.1f}s)"


def test_over_size_refused(sluice_factory, tmp_path):
    s = sluice_factory(message_size_max="1m")
    f = tmp_path / "big.txt"
    f.write_bytes((b"x" * 75 + b"\n") * (2 * 1024 * 1024 // 76))
    rc, out = swaks(s.port, "--header", "Subject: too big", "--body", "@" + str(f))
    assert re.search(r"^<-\s+250-SIZE 1048576\s*$", out, re.M), \
        f"got EHLO without 'SIZE 1048576', want it:\n{out[:1500]}"
    assert rc != 0, "got swaks exit 0 for a 2 MB message over SIZE 1m, want a failure"
    assert re.search(r"^<\*\*\s+552[ -]", out, re.M), \
        f"got no 552 reply for the oversized message, want one:\n{out[-1500:]}"
    time.sleep(2)
    msgs = read_maildir(s.maildir)
    assert not msgs, f"got {len(msgs)} messages delivered, want 0"
    # The session is usable after the refusal: a small message still goes through.
    rc, out = swaks(s.port, "--header", "Subject: small after big")
    assert rc == 0, f"got swaks exit {rc} for a small message, want 0:\n{out}"
