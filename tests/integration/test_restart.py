"""Durability: what was answered 250 survives a crash (SIGKILL) and is
delivered exactly once after the restart (DESIGN.md, "Durable accept")."""

import time

from conftest import SmtpConn, greet, make_message, read_maildir, send_raw

SENDER = "durable@client.test.example"


def send_n(port, n, tag):
    sent = {}
    for i in range(n):
        subj = f"{tag} {i}"
        qid = send_raw(port, SENDER, [f"rcpt{i}@test.example"],
                       make_message(subj, f"message {i} of {n}\r\n"))
        assert qid not in sent, f"got queue id {qid} twice, want unique ids"
        sent[qid] = subj
    return sent


def delivered(msgs):
    """{qid: [subjects]} from the sluice Received headers."""
    out = {}
    for m in msgs:
        rec = m.received[0] if m.received else ""
        qid = rec.split(" id ", 1)[1].split()[0].rstrip(";") if " id " in rec else "?"
        out.setdefault(qid, []).append(m.header("Subject"))
    return out


def test_queued_messages_survive_sigkill(sluice_factory, tmp_path):
    # A Maildir whose tmp/ and new/ are regular files: every delivery
    # attempt fails, so the messages stay queued.
    blocked = tmp_path / "blocked"
    s = sluice_factory(start=False, proxy=False, tls=False, maildir=str(blocked))
    blocked.mkdir()
    for sub in ("tmp", "new", "cur"):
        (blocked / sub).write_text("not a directory\n")
    s.start()
    sent = send_n(s.port, 5, "durable")
    time.sleep(3)  # retry_min is 1s: at least one failed delivery attempt
    assert (blocked / "new").is_file(), "got blocked/new replaced, want it untouched"
    s.kill()

    # Fix the Maildir path and start over the same spool.
    s.maildir = str(tmp_path / "Maildir")
    s.write_config()
    s.check_from = s.logf.stat().st_size  # errors before the crash are expected
    s.start()
    msgs = s.wait_for_maildir(len(sent), timeout=60, settle=3)
    got = delivered(msgs)
    assert set(got) == set(sent), f"got queue ids {sorted(got)}, want {sorted(sent)}"
    for qid, subjects in got.items():
        assert subjects == [sent[qid]], f"{qid}: got {subjects}, want [{sent[qid]!r}] exactly once"
    for m in msgs:
        assert m.return_path == [f"<{SENDER}>"], f"got Return-Path {m.return_path}, want <{SENDER}>"

    # A clean restart delivers nothing a second time.
    rc = s.stop()
    assert rc == 0, f"got exit {rc} after SIGTERM, want 0"
    s.start()
    time.sleep(3)
    n = len(read_maildir(s.maildir))
    assert n == len(sent), f"got {n} messages after a clean restart, want {len(sent)} (no redelivery)"


def test_sigkill_right_after_accept(sluice_factory):
    """Kill at once after the last 250: every accepted message arrives."""
    s = sluice_factory(proxy=False, tls=False)
    sent = send_n(s.port, 20, "burst")
    s.kill()
    s.start()
    msgs = s.wait_for_maildir(len(sent), timeout=60, settle=3)
    got = delivered(msgs)
    missing = sorted(set(sent) - set(got))
    assert not missing, f"got {len(got)} of {len(sent)} accepted messages, missing {missing}"
    dups = {q: v for q, v in got.items() if len(v) > 1}
    # A crash between the Maildir write and the delivered mark may repeat a
    # message; report it, but only a loss is a failure here.
    if dups:
        print(f"note: delivered twice after the crash: {dups}")


def test_sigterm_with_open_sessions(sluice_factory):
    """SIGTERM while clients are idle, mid-envelope and mid-DATA: exit 0,
    nothing half-received is delivered."""
    s = sluice_factory(proxy=False, tls=False)
    conns = [SmtpConn(s.port) for _ in range(3)]
    try:
        greet(conns[0])
        greet(conns[1])
        conns[1].cmd(f"MAIL FROM:<{SENDER}>", 250)
        greet(conns[2])
        conns[2].cmd(f"MAIL FROM:<{SENDER}>", 250)
        conns[2].cmd("RCPT TO:<half@test.example>", 250)
        conns[2].cmd("DATA", 354)
        conns[2].send(b"Subject: half\r\n\r\nnot finished\r\n")
        time.sleep(0.3)
        rc = s.stop()
        assert rc == 0, f"got exit {rc} after SIGTERM with open sessions, want 0"
        for c in conns:
            c.wait_closed(10)
    finally:
        for c in conns:
            c.close()
    assert not read_maildir(s.maildir), "got a half-received message delivered, want none"
