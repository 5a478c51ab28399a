"""The admin socket (sluicectl) and the Prometheus endpoint (GET /metrics):
a real sluiced with a small rule file, mail sent with smtplib, the metrics
read over HTTP with urllib and parsed with prometheus_client's own parser
(python3-prometheus-client), sluicectl run as an operator would."""

import os
import re
import smtplib
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port

RULES = """\
body     SLUICE_REJECTME  /REJECTME/
score    SLUICE_REJECTME  20
"""


def sluicectl_path():
    p = os.environ.get("SLUICECTL")
    if not p:
        pytest.skip("SLUICECTL is not set (run through meson test)")
    return p


def ctl(*args, timeout=30):
    return subprocess.run([sluicectl_path(), *args], capture_output=True, text=True,
                          timeout=timeout)


def metrics(port):
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        ctype = r.headers.get("Content-Type", "")
        assert ctype.startswith("text/plain; version=0.0.4"), ctype
        text = r.read().decode()
    got = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}"
                            if s.labels else "")
            got[key] = s.value
    return got, text


def admin_server(sluice_factory, tmp_path, short_dir, filter_on=True):
    s = sluice_factory(start=False, proxy=False, tls=False)
    s.http_port = free_port()
    s.sock = short_dir / "admin.sock"
    text = s.config_text() + (
        f"admin: {{socket: {s.sock}, http: \"127.0.0.1:{s.http_port}\"}}\n")
    if filter_on:
        rf = tmp_path / "rules.cf"
        rf.write_text(RULES)
        text += (f"filter: {{enabled: true, rules: {rf}, cache: {tmp_path / 'cache'}, "
                 "reject: 15}\n")
    s.config_path.write_text(text)
    s.start()
    if filter_on:
        s.wait_log(r"event=filter_ready generation=1", timeout=60)
    return s


def send(port, body):
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
        c.ehlo("client.example.org")
        msg = f"From: a@example.org\r\nTo: b@example.test\r\nSubject: t\r\n\r\n{body}\r\n"
        try:
            c.sendmail("a@example.org", ["b@example.test"], msg)
            return 250
        except smtplib.SMTPDataError as e:
            return e.smtp_code


def test_metrics_count_what_happened(sluice_factory, tmp_path, short_dir):
    s = admin_server(sluice_factory, tmp_path, short_dir)
    before, _ = metrics(s.http_port)
    assert before["sluice_workers"] == 1
    assert before['sluice_messages_total{result=accepted}'] == 0
    assert send(s.port, "hello") == 250
    assert send(s.port, "hello again") == 250
    assert send(s.port, "please REJECTME now") == 550
    s.wait_for_maildir(2)
    got, text = metrics(s.http_port)
    assert got['sluice_messages_total{result=accepted}'] == 2, text
    assert got['sluice_messages_total{result=rejected}'] == 1, text
    assert got['sluice_messages_total{result=tempfail}'] == 0, text
    # the harness's wait for the port and the three clients, at least
    assert got["sluice_connections_total"] >= before["sluice_connections_total"] + 3
    assert got["sluice_accepted_bytes_total"] > 0
    assert got["sluice_delivered_total"] >= 2
    assert "sluice_queue_messages" in got
    # anything else is 404, and says where the metrics are
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}/", timeout=10)
    assert e.value.code == 404


def test_sluicectl_status_stats_reload(sluice_factory, tmp_path, short_dir):
    s = admin_server(sluice_factory, tmp_path, short_dir)
    conf = str(s.config_path)

    out = ctl("-c", conf, "status")
    assert out.returncode == 0, out
    assert re.search(rf"^pid {s.proc.pid}$", out.stdout, re.M), out.stdout
    assert re.search(r"^filter on$", out.stdout, re.M), out.stdout
    assert re.search(r"^workers 1$", out.stdout, re.M), out.stdout
    assert out.stdout.rstrip().endswith("ok")

    assert send(s.port, "x") == 250
    out = ctl("-s", str(s.sock), "stats")
    assert out.returncode == 0, out
    assert re.search(r'^sluice_messages_total\{result="accepted"\} 1$', out.stdout, re.M), out.stdout

    # reload swaps the rules: REJECTME no longer scores, OTHER does
    (tmp_path / "rules.cf").write_text(RULES.replace("REJECTME", "OTHERWORD"))
    out = ctl("-c", conf, "reload")
    assert out.returncode == 0, out
    assert "the filter rules (event=filter_ready)" in out.stdout, out.stdout
    s.wait_log(r"event=filter_ready generation=2", timeout=60)
    assert send(s.port, "please REJECTME now") == 250
    assert send(s.port, "an OTHERWORD here") == 550

    out = ctl("-c", conf, "queue")
    assert out.returncode == 0 and re.search(r"^waiting \d+$", out.stdout, re.M), out

    out = ctl("-c", conf, "frobnicate")
    assert out.returncode == 1, out
    assert "error: unknown command 'frobnicate'" in out.stdout


def test_reload_applies_lists(sluice_factory, tmp_path, short_dir):
    """sluicectl reload reads the file again: the access lists and
    recipients.domains change while connections stay; a file that does not
    load changes nothing."""
    s = admin_server(sluice_factory, tmp_path, short_dir, filter_on=False)
    base = s.config_path.read_text()

    def rcpt_code(sender, rcpt):
        with smtplib.SMTP("127.0.0.1", s.port, timeout=20) as c:
            c.ehlo("client.example.org")
            code, _ = c.mail(sender)
            if code != 250:
                return code
            return c.rcpt(rcpt)[0]

    s.config_path.write_text(base + "access: {senders_deny: \"@a.test\"}\n"
                             "recipients: {domains: \"one.test\"}\n")
    out = ctl("-c", str(s.config_path), "reload")
    assert out.returncode == 0 and "access" in out.stdout, out
    s.wait_log(r"event=reload applied=.* senders_deny=1 .* domains=1")
    # a connection open across the next reload sees it at its next command
    held = smtplib.SMTP("127.0.0.1", s.port, timeout=20)
    held.ehlo("client.example.org")
    assert rcpt_code("x@a.test", "u@one.test") == 550
    assert rcpt_code("x@b.test", "u@one.test") == 250
    assert rcpt_code("x@b.test", "u@two.test") == 550

    s.config_path.write_text(base + "access: {senders_deny: \"@b.test\"}\n"
                             "recipients: {domains: \"two.test\"}\n")
    assert ctl("-s", str(s.sock), "reload").returncode == 0
    s.wait_log(r"event=reload applied=.* senders_deny=1 .* domains=1[^\n]*\n(.|\n)*"
               r"event=reload applied=")
    assert held.mail("x@b.test")[0] == 550, "the open connection sees the new list"
    held.quit()
    assert rcpt_code("x@a.test", "u@two.test") == 250
    assert rcpt_code("x@a.test", "u@one.test") == 550

    s.config_path.write_text(base + "access: {senders_deny: [broken\n")
    assert ctl("-s", str(s.sock), "reload").returncode == 0
    s.wait_log(r"event=reload_failed error=\"[^\"]*sluice\.conf:\d+: ")
    assert rcpt_code("x@b.test", "u@two.test") == 550, "the running lists stay"
    # the reload_failed line is level=error on purpose; nothing else may be
    s.allow_errors = True
    assert [l for l in s.bad_log_lines() if "event=reload_failed" not in l] == []


def test_sluicectl_errors(sluice_factory, tmp_path, short_dir):
    s = admin_server(sluice_factory, tmp_path, short_dir, filter_on=False)
    assert s.stop() == 0
    # sluiced removes its socket when it stops; sluicectl says so
    assert not s.sock.exists()
    out = ctl("-c", str(s.config_path), "status")
    assert out.returncode == 2, out
    assert "cannot reach sluiced" in out.stderr
    out = ctl("status")
    assert out.returncode == 2 and "usage" in out.stderr
