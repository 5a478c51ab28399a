"""Per-client limits (control/perclient.c) on a real sluiced: open
connections per client address and messages per minute, with clients on
distinct loopback addresses (127.0.0.0/8 is all loopback on Linux)."""

import re
import socket
import time

from conftest import SmtpConn, greet


def conn_from(port, src):
    c = SmtpConn(port, connect=False)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(src, 0))
    return c, c.read_reply()


def limits_server(sluice_factory, **lim):
    s = sluice_factory(tls=False, proxy=False, start=False)
    s.config_path.write_text(s.config_text() + "limits:\n" +
                             "".join(f"  {k}: {v}\n" for k, v in lim.items()))
    s.start()
    return s


def test_connections_per_client(sluice_factory):
    s = limits_server(sluice_factory, connections_per_client=3, skip='"127.0.3.0/24"')
    held = []
    for _ in range(3):
        c, r = conn_from(s.port, "127.0.0.4")
        assert r.code == 220, r
        held.append(c)
    c, r = conn_from(s.port, "127.0.0.4")
    assert r.code == 421 and "too many connections from [127.0.0.4]" in r.text, r
    c.sock.close()
    # another client has its own count; a skipped one has none
    c, r = conn_from(s.port, "127.0.0.5")
    assert r.code == 220, r
    held.append(c)
    for _ in range(5):
        c, r = conn_from(s.port, "127.0.3.9")
        assert r.code == 220, r
        held.append(c)
    # one closes: room for one more
    held[0].send("QUIT\r\n")
    held[0].read_reply()
    held[0].sock.close()
    deadline = time.monotonic() + 5
    while True:
        c, r = conn_from(s.port, "127.0.0.4")
        if r.code == 220 or time.monotonic() > deadline:
            break
        c.sock.close()
        time.sleep(0.05)
    assert r.code == 220, f"got {r} after one of three closed, want 220"
    c.sock.close()
    for h in held[1:]:
        h.sock.close()
    s.wait_log(r"event=limit_connections worker=\d+ client=127\.0\.0\.4 max=3")


def test_messages_per_minute(sluice_factory):
    s = limits_server(sluice_factory, messages_per_minute=2)
    # stay inside one minute window
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    c, r = conn_from(s.port, "127.0.0.6")
    assert r.code == 220
    c.cmd("EHLO client.example.org", 250)
    for i in range(2):
        c.cmd("MAIL FROM:<a@example.org>", 250)
        c.cmd("RCPT TO:<b@example.test>", 250)
        c.cmd("DATA", 354)
        c.send(f"Subject: {i}\r\n\r\nx\r\n.\r\n")
        assert c.read_reply().code == 250
    c.send("MAIL FROM:<a@example.org>\r\n")
    r = c.read_reply()
    assert r.code == 450 and r.text.startswith("4.7.1 Error: too many messages from [127.0.0.6]"), r
    c.cmd("QUIT", 221)
    # another client is not held back
    c, r = conn_from(s.port, "127.0.0.7")
    c.cmd("EHLO client.example.org", 250)
    c.cmd("MAIL FROM:<a@example.org>", 250)
    c.cmd("QUIT", 221)
    assert len(s.wait_for_maildir(2)) == 2


def test_early_talker_rejected(sluice_factory):
    """smtp.early_talker: reject with a greet pause: a client that sends
    before the greeting gets 554 5.5.1 instead of it; a patient one 220."""
    s = sluice_factory(tls=False, proxy=False, start=False, greet_pause="700ms")
    s.config_path.write_text(s.config_text().replace("smtp:\n", "smtp:\n  early_talker: reject\n", 1))
    s.start()
    c = SmtpConn(s.port)
    c.send("EHLO eager.example.org\r\n")
    r = c.read_reply()
    assert r.code == 554 and "5.5.1" in r.text and "talked before the greeting" in r.text, r
    assert c.read_reply().code == 503  # its EHLO
    c.cmd("QUIT", 221)
    c = SmtpConn(s.port)
    r = c.read_reply()
    assert r.code == 220, r
    c.cmd("EHLO patient.example.org", 250)
    c.cmd("QUIT", 221)
    s.wait_log(r"event=early_talker worker=\d+ client=127\.0\.0\.1")
