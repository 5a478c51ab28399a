"""A real MTA in front: a private Postfix relays into sluiced, with STARTTLS
(smtp_tls_security_level=may) and in the clear."""

import re
import smtplib
import time

import pytest

from conftest import need, check_received, check_return_path, make_message
from postfix_instance import Postfix

SUBMIT_HELO = "submitter.test.example"


@pytest.fixture
def relay(sluice):
    need("postfix", "postfix")
    pf = Postfix({"test.example": f"smtp:[127.0.0.1]:{sluice.port}",
                  "plain.test.example": f"plain:[127.0.0.1]:{sluice.port}"})
    try:
        pf.start()
        yield pf
    finally:
        rc = pf.stop()
        log = pf.log()
        pf.cleanup()
        if rc != 0:
            print(log)
        assert rc == 0, f"got 'postfix stop' exit {rc}, want 0"


def submit(pf, sender, rcpts, msg):
    with smtplib.SMTP("127.0.0.1", pf.port, local_hostname=SUBMIT_HELO, timeout=30) as s:
        refused = s.sendmail(sender, rcpts, msg)
    assert refused == {}, f"got refused {refused} from Postfix, want none"


def postfix_sent(pf, n, timeout=60):
    """Wait for n 'status=sent' lines; returns the sluice queue ids named."""
    deadline = time.monotonic() + timeout
    while True:
        log = pf.log()
        qids = re.findall(r"status=sent \(250 2\.0\.0 Ok: queued as (\S+)\)", log)
        if len(qids) >= n:
            return qids
        bad = re.findall(r"status=(?:deferred|bounced) .*", log)
        if time.monotonic() > deadline or bad:
            raise AssertionError(f"got {len(qids)} relayed to sluice after "
                                 f"{timeout}s, want {n}; Postfix log:\n{log[-4000:]}")
        time.sleep(0.2)


def check_relayed(m, qid, rcpt, tls):
    check_received(m, helo="relay.test.example", ip="127.0.0.1", qid=qid, tls=tls)
    rec = m.received
    assert len(rec) >= 2, f"got {len(rec)} Received headers, want sluice's and Postfix's"
    assert "by relay.test.example (Postfix)" in rec[1], \
        f"got second Received {rec[1]!r}, want Postfix's below sluice's"
    assert re.match(rf"from {re.escape(SUBMIT_HELO)} ", rec[1]), \
        f"got second Received {rec[1]!r}, want 'from {SUBMIT_HELO}'"
    assert f"for <{rcpt}>" in rec[1], f"got {rec[1]!r}, want 'for <{rcpt}>'"


def test_relay_with_starttls(sluice, relay):
    msg = make_message("relayed over tls", "through postfix\r\n.leading dot\r\n")
    submit(relay, "origin@client.test.example", ["final@test.example"], msg)
    qid, = postfix_sent(relay, 1)
    assert re.search(r"TLS connection established to 127\.0\.0\.1", relay.log()), \
        f"got no TLS from Postfix to sluice, want it (STARTTLS offered):\n{relay.log()[-2000:]}"
    m = sluice.wait_for_maildir(1)[0]
    check_return_path(m, "origin@client.test.example")
    check_relayed(m, qid, "final@test.example", tls=True)
    assert m.body.replace(b"\r\n", b"\n") == b"through postfix\n.leading dot\n", \
        f"got body {m.body!r}, want it intact"


def test_relay_plain(sluice, relay):
    msg = make_message("relayed in the clear", "plain relay\r\n")
    submit(relay, "origin@client.test.example", ["someone@plain.test.example"], msg)
    qid, = postfix_sent(relay, 1)
    m = sluice.wait_for_maildir(1)[0]
    check_relayed(m, qid, "someone@plain.test.example", tls=False)


def test_relay_many_and_large(sluice, relay):
    n = 10
    big = "".join(f"{i:06d} " + "p" * 70 + "\r\n" for i in range(2 * 1024 * 1024 // 78))
    for i in range(n):
        body = big if i == 0 else f"message {i}\r\n"
        submit(relay, f"origin{i}@client.test.example", [f"r{i}@test.example", f"s{i}@plain.test.example"],
               make_message(f"batch {i}", body))
    qids = postfix_sent(relay, 2 * n, timeout=120)
    msgs = sluice.wait_for_maildir(len(set(qids)), timeout=60, settle=2)
    got = {}
    for m in msgs:
        got.setdefault(m.header("Subject"), []).append(m)
    for i in range(n):
        assert f"batch {i}" in got, f"got subjects {sorted(got)}, want 'batch {i}'"
    big_msgs = got["batch 0"]
    assert all(m.body.replace(b"\r\n", b"\n") == big.replace("\r\n", "\n").encode() for m in big_msgs), \
        "got the 2 MB body altered, want it intact"
