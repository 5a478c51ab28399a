"""Backpressure: when the spool nears spool.limit (backends down, mail
piling up), sluiced answers 452 4.3.1 before it can fail, and takes mail
again by itself once the queue drains."""

import shutil
import time

from conftest import SmtpConn, greet, make_message, read_maildir, send_raw

SENDER = "bp@client.test.example"
BODY = ("x" * 70 + "\r\n") * 280  # ~20 KB


def try_mail(port):
    """MAIL FROM on a fresh session; returns the reply code."""
    with SmtpConn(port) as c:
        greet(c)
        r = c.cmd(f"MAIL FROM:<{SENDER}>")
        c.send(b"QUIT\r\n")
        return r


def test_spool_full_gives_452_then_recovers(sluice_factory, tmp_path):
    blocked = tmp_path / "blocked"
    s = sluice_factory(start=False, proxy=False, tls=False, maildir=str(blocked),
                       spool_limit="200k")
    blocked.mkdir()
    for sub in ("tmp", "new", "cur"):
        (blocked / sub).write_text("not a directory\n")
    s.allow_errors = True  # failed deliveries are logged as errors on purpose
    s.start()

    accepted = 0
    refused = None
    for i in range(40):
        r = try_mail(s.port)
        if r.code != 250:
            refused = r
            break
        send_raw(s.port, SENDER, [f"r{i}@test.example"], make_message(f"bp {i}", BODY))
        accepted += 1
    assert refused is not None, f"got 250 to MAIL after {accepted} queued 20 KB messages " \
                                f"with spool.limit 200k, want 452"
    assert refused.code == 452 and "4.3.1" in refused.text, \
        f"got {refused!r} with the spool full, want 452 4.3.1"
    assert 5 <= accepted <= 12, f"got {accepted} messages accepted before 452, want about 9"
    s.wait_log(r"event=spool_full")

    # The backend comes back: the queue drains and mail is taken again.
    for sub in ("tmp", "new", "cur"):
        (blocked / sub).unlink()
    msgs = s.wait_for_maildir(accepted, timeout=60, settle=0)
    assert len(msgs) == accepted, f"got {len(msgs)} delivered, want {accepted}"
    deadline = time.monotonic() + 30
    while True:
        r = try_mail(s.port)
        if r.code == 250:
            break
        assert time.monotonic() < deadline, f"got {r!r} 30 s after the queue drained, want 250"
        time.sleep(0.5)
    send_raw(s.port, SENDER, ["after@test.example"], make_message("after", "ok\r\n"))
    s.wait_for_maildir(accepted + 1, timeout=30, settle=0)
