"""Greylisting at RCPT (control/greylist.c) with its state in a real Redis
that this test starts on a loopback port, clients on distinct loopback
addresses (127.0.0.0/8 is all loopback on Linux), Python's smtplib as the
client, redis-cli to read what sluiced stored."""

import re
import smtplib
import subprocess
import time

import pytest

from conftest import free_port, need

SENDER, RCPT = "a@example.org", "b@example.test"


class Redis:
    def __init__(self, root):
        self.root = root
        self.port = free_port()
        self.proc = None

    def start(self):
        exe = need("redis-server", "redis-server")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root), "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.cli("PING").strip() == "PONG":
                return self
            time.sleep(0.05)
        self.stop()  # a fixture that fails here never reaches its teardown
        raise AssertionError(f"redis-server on {self.port}: no PONG within 10 s")

    def cli(self, *args):
        exe = need("redis-cli", "redis-tools")
        out = subprocess.run([exe, "-p", str(self.port), *args], capture_output=True, text=True,
                             timeout=10)
        return out.stdout

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()


def gl_server(sluice_factory, redis_port, admin_sock=None, **extra):
    s = sluice_factory(tls=False, proxy=False, start=False)
    conf = {"enabled": "true", "redis": f'"127.0.0.1:{redis_port}"', "delay": "2s",
            "retry_window": "1h", "pass_ttl": "7d", "skip": '"127.0.2.0/24"',
            "timeout": "300ms"}
    conf.update(extra)
    s.config_path.write_text(s.config_text() +
                             (f"admin: {{socket: {admin_sock}}}\n" if admin_sock else "") +
                             "greylist:\n" + "".join(f"  {k}: {v}\n" for k, v in conf.items()))
    s.start()
    return s


def attempt(port, src, sender=SENDER, rcpts=(RCPT,), send=True):
    """(RCPT codes, texts, DATA code or None) for one transaction from src."""
    c = smtplib.SMTP(timeout=20, source_address=(src, 0))
    c.connect("127.0.0.1", port)
    try:
        c.ehlo("client.example.org")
        code, _ = c.mail(sender)
        assert code == 250
        codes, texts = [], []
        for r in rcpts:
            code, text = c.rcpt(r)
            codes.append(code)
            texts.append(text.decode())
        data = None
        if send and 250 in codes:
            data, _ = c.data(f"From: {sender}\r\nTo: {rcpts[0]}\r\nSubject: g\r\n\r\nhi\r\n")
        c.quit()
        return codes, texts, data
    finally:
        c.close()


def test_first_attempt_greylisted_retry_after_delay_passes(sluice_factory, redis, short_dir):
    sock = str(short_dir / "a.sock")
    s = gl_server(sluice_factory, redis.port, admin_sock=sock)
    codes, texts, _ = attempt(s.port, "127.0.0.4", rcpts=(RCPT, "c@example.test"))
    assert codes == [451, 451], (codes, texts)
    assert re.search(r"4\.7\.1 Greylisted, try again in [12] seconds", texts[0]), texts
    # too early: still greylisted, with less to wait
    codes, texts, _ = attempt(s.port, "127.0.0.4")
    assert codes == [451], texts
    key = f"sluice:gl:127.0.0.0/24|{SENDER}|{RCPT}"
    assert redis.cli("GET", key).startswith("f:"), redis.cli("KEYS", "*")
    assert 0 < int(redis.cli("PTTL", key)) <= 3600 * 1000
    time.sleep(3)
    codes, texts, data = attempt(s.port, "127.0.0.4")
    assert codes == [250] and data == 250, (codes, texts, data)
    assert redis.cli("GET", key).strip() == "p"
    assert int(redis.cli("PTTL", key)) > 6 * 86400 * 1000, "the pass should last pass_ttl (7d)"
    s.wait_for_maildir(1)

    # another host of the same /24, the sender with a BATV tag and in
    # other case: the same triplet, passes at once
    codes, texts, data = attempt(s.port, "127.0.0.9", sender="prvs=0123abcd=A@Example.ORG")
    assert codes == [250] and data == 250, (codes, texts)
    # another /24: a new triplet
    codes, texts, _ = attempt(s.port, "127.0.1.4")
    assert codes == [451], texts
    # greylist.skip: never greylisted
    codes, texts, data = attempt(s.port, "127.0.2.4", rcpts=("new@example.test",))
    assert codes == [250] and data == 250, (codes, texts)
    s.wait_for_maildir(3)
    # sluicectl greylist counts what happened: 4 greylisted (two recipients,
    # the early retry, the other /24), 2 passed, 1 skipped
    import os
    out = subprocess.run([os.environ["SLUICECTL"], "-c", str(s.config_path), "greylist"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
    assert re.search(r"^greylisted 4$", out.stdout, re.M), out.stdout
    assert re.search(r"^passed 2$", out.stdout, re.M), out.stdout
    assert re.search(r"^skipped 1$", out.stdout, re.M), out.stdout
    assert s.wait_log(r"event=greylisted worker=\d+ client=127\.0\.0\.4 from=a@example\.org "
                      r"to=b@example\.test wait_s=2")


def test_redis_down_fails_open_or_tempfails(sluice_factory, redis):
    s_open = gl_server(sluice_factory, redis.port)
    s_closed = gl_server(sluice_factory, redis.port, on_error="tempfail")
    redis.stop()
    codes, texts, data = attempt(s_open.port, "127.0.0.4", rcpts=("x@example.test",))
    assert codes == [250] and data == 250, (codes, texts, "on_error accept: fails open")
    s_open.wait_log(r"event=greylist_redis_(down|error)")
    codes, texts, _ = attempt(s_closed.port, "127.0.0.4", rcpts=("x@example.test",))
    assert codes == [451], texts
    assert "4.3.0 Greylisting unavailable" in texts[0], texts
    s_open.wait_for_maildir(1)


def test_check_rejects_bad_greylist_config(tmp_path):
    from conftest import check_config_errors
    cases = [
        ("greylist: {enabled: true, redis: \"redis.example:6379\"}\n",
         "greylist.redis: expected address:port"),
        ("greylist: {enabled: true, delay: 2h, retry_window: 1h}\n",
         "greylist.retry_window: must be longer than greylist.delay"),
        ("greylist: {ipv4_prefix: 33}\n", "greylist.ipv4_prefix"),
        ("greylist: {on_error: maybe}\n", "expected one of accept, tempfail"),
        ("greylist: {skip: \"10.0.0.0/40\"}\n", "greylist.skip: '10.0.0.0/40' is no address"),
    ]
    check_config_errors(tmp_path, cases)


def test_access_lists(sluice_factory, redis):
    """access.senders_deny / recipients_deny refuse with 550 5.7.1;
    senders_allow / recipients_allow are never greylisted."""
    s = sluice_factory(tls=False, proxy=False, start=False)
    s.config_path.write_text(
        s.config_text() +
        f"greylist: {{enabled: true, redis: \"127.0.0.1:{redis.port}\", delay: 1h, "
        "retry_window: 2h}\n"
        "access:\n"
        "  senders_deny: \"@junk.test spam@bad.test\"\n"
        "  senders_allow: \"@friend.test\"\n"
        "  recipients_deny: \"noreply@example.test\"\n"
        "  recipients_allow: \"postmaster@\"\n")
    s.start()
    c = smtplib.SMTP("127.0.0.1", s.port, timeout=20)
    c.ehlo("client.example.org")
    code, text = c.mail("x@junk.test")
    assert code == 550 and b"5.7.1 <x@junk.test>: Sender address rejected" in text, (code, text)
    code, _ = c.mail("ham@bad.test")
    assert code == 250
    code, text = c.rcpt("noreply@example.test")
    assert code == 550 and b"Recipient address rejected: Access denied" in text, (code, text)
    code, _ = c.rcpt("someone@example.test")
    assert code == 451, "an unlisted pair is greylisted"
    code, _ = c.rcpt("postmaster@example.test")
    assert code == 250, "recipients_allow: never greylisted"
    c.rset()
    code, _ = c.mail("buddy@friend.test")
    assert code == 250
    code, _ = c.rcpt("someone@example.test")
    assert code == 250, "senders_allow: never greylisted"
    c.quit()


def test_passed_triplets_cached(sluice_factory, redis):
    """A triplet that passed is answered from sluiced's own cache: with Redis
    gone (and on_error: tempfail), it still passes; a new one gets 451."""
    s = gl_server(sluice_factory, redis.port, on_error="tempfail", delay="1s")
    codes, _, _ = attempt(s.port, "127.0.0.4")
    assert codes == [451]
    time.sleep(2.2)
    codes, texts, data = attempt(s.port, "127.0.0.4")
    assert codes == [250] and data == 250, (codes, texts)
    redis.stop()
    codes, texts, data = attempt(s.port, "127.0.0.4")
    assert codes == [250] and data == 250, (codes, texts, "from the cache, Redis gone")
    codes, texts, _ = attempt(s.port, "127.0.0.4", rcpts=("new@example.test",))
    assert codes == [451] and "4.3.0" in texts[0], (codes, texts)
    s.wait_for_maildir(2)
