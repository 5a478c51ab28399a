"""LMTP handoff against a real Dovecot: delivery, per-recipient 4xx/5xx,
retries, DSN bounces, a backend that is down, and sluice-queue.

Each test starts its own Dovecot (`dovecot -c CONF -F`, Debian packages
dovecot-core and dovecot-lmtpd) with everything (base_dir, state, logs,
mailboxes) in a private directory, LMTP on a unix socket and on a loopback
port, users from a passwd-file. sluiced routes the domain tcp.test to the
TCP listener and everything else to the unix socket (the default route).
"""

import email
import email.policy
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import Sluice, free_port, make_message, read_maildir, same_bytes, send_raw, \
    wait_for_maildir, SmtpConn, greet, dot_stuff, queue_id

DOMAIN = "mail.test"


def dovecot_path():
    for p in ("/usr/sbin/dovecot", shutil.which("dovecot") or ""):
        if p and os.access(p, os.X_OK):
            return p
    pytest.fail("got no dovecot, want it (Debian packages dovecot-core dovecot-lmtpd)")


class Dovecot:
    """A private Dovecot with LMTP only. Users: name -> quota rule or None."""

    def __init__(self, users):
        # Mail is written as an unprivileged user when we are root, so the
        # tree must be reachable by it: a directory of its own under /tmp.
        self.root = Path(tempfile.mkdtemp(prefix="sluice-dovecot-"))
        os.chmod(self.root, 0o755)
        self.sock = self.root / "lmtp.sock"
        self.port = free_port()
        self.users = dict(users)
        self.proc = None
        if os.getuid() == 0:
            pw = pwd.getpwnam("nobody")
            self.uid, self.gid, self.internal = pw.pw_uid, pw.pw_gid, "root"
        else:
            self.uid, self.gid = os.getuid(), os.getgid()
            self.internal = pwd.getpwuid(os.getuid()).pw_name
        for d in ("mail", "home"):
            (self.root / d).mkdir()
            os.chown(self.root / d, self.uid, self.gid)
        self.write_users()
        self.conf = self.root / "dovecot.conf"
        self.conf.write_text(f"""
protocols = lmtp
instance_name = sluice-test-{self.port}
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
default_internal_user = {self.internal}
default_login_user = {self.internal}
ssl = no
listen = 127.0.0.1
auth_username_format = %Ln
mail_location = maildir:{self.root}/mail/%u
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = {self.root}/users
}}
userdb {{
  driver = passwd-file
  args = {self.root}/users
  default_fields = uid={self.uid} gid={self.gid} home={self.root}/home/%u
}}
service lmtp {{
  unix_listener {self.sock} {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
mail_plugins = quota
plugin {{
  quota = maildir:User quota
}}
quota_full_tempfail = yes
lmtp_rcpt_check_quota = yes
lmtp_add_received_header = no
""")

    def write_users(self):
        lines = []
        for name, rule in self.users.items():
            extra = f"userdb_quota_rule=*:storage={rule}" if rule else ""
            lines.append(f"{name}:{{PLAIN}}secret::::::{extra}")
        tmp = self.root / "users.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.root / "users")
        # passwd-file is re-read when its mtime changes: make sure it does.
        t = time.time() + 2
        os.utime(self.root / "users", (t, t))

    def start(self, timeout=20.0):
        self.proc = subprocess.Popen([dovecot_path(), "-c", str(self.conf), "-F"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        import socket
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, \
                f"dovecot exited with {self.proc.returncode}; log:\n{self.log()}"
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(2)
                    s.connect(str(self.sock))
                with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"dovecot: got no LMTP listener within {timeout}s; log:\n{self.log()}")

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        # Its children (lmtp, auth) exit with the master; wait for the socket
        # to be gone so that a restart binds cleanly.
        for _ in range(100):
            if not (self.root / "run" / "master.pid").exists():
                break
            time.sleep(0.05)

    def log(self):
        p = self.root / "dovecot.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def maildir(self, user):
        return self.root / "mail" / user

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class LmtpSluice(Sluice):
    def __init__(self, root, dovecot, **opts):
        self.dovecot = dovecot
        self.extra = opts.pop("extra", "")
        super().__init__(root, None, False, **opts)

    def config_text(self):
        text = super().config_text()
        text = re.sub(r"delivery: \{[^\n]*\}",
                      "delivery: {method: lmtp, retry_min: 1s, retry_max: 2s, "
                      "bounce_return_max: 64k}\n"
                      "lmtp:\n"
                      f"  default: unix:{self.dovecot.sock}\n"
                      "  timeout: 30s\n"
                      "  routes:\n"
                      f"    tcp.test: 127.0.0.1:{self.dovecot.port}\n", text)
        return text + self.extra


def sluice_queue_path():
    p = os.environ.get("SLUICE_QUEUE")
    if not p and os.environ.get("SLUICED"):
        p = str(Path(os.environ["SLUICED"]).with_name("sluice-queue"))
    if not p or not os.access(p, os.X_OK):
        pytest.fail(f"got no sluice-queue at {p!r}, want the built tool (SLUICE_QUEUE)")
    return p


def sluice_queue(s, *args):
    r = subprocess.run([sluice_queue_path(), "-c", str(s.config_path), *args],
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture
def dovecot():
    d = Dovecot({"alice": None, "bob": None, "carol": None, "full": "1K"})
    d.start()
    yield d
    d.cleanup()


@pytest.fixture
def lmtp_sluice(tmp_path, dovecot):
    made = []

    def make(start=True, **opts):
        s = LmtpSluice(tmp_path / f"sluice{len(made)}", dovecot, **opts)
        made.append(s)
        if start:
            try:
                s.start()
            except AssertionError:
                if re.search(r"event=fatal what=queue", s.log()):
                    pytest.fail("sluiced refused delivery.method lmtp: main.c must fill the "
                                "queue configuration with ctl_queue_conf_from_config()")
                raise
        return s

    yield make
    problems = []
    for s in made:
        if s.proc is None:
            continue
        rc = s.stop()
        if rc != 0:
            problems.append(f"{s.root.name}: got exit code {rc} after SIGTERM, want 0")
        bad = s.bad_log_lines()
        if bad:
            problems.append(f"{s.root.name}: got error lines in the log, want none:\n" +
                            "\n".join(bad[:20]))
    if problems:
        for s in made:
            print(f"---- {s.logf} (tail)\n{s.log()[-4000:]}")
        print(f"---- dovecot log (tail)\n{dovecot.log()[-3000:]}")
        pytest.fail("\n".join(problems))


def parse(m):
    return email.message_from_bytes(m.raw, policy=email.policy.compat32)


def test_delivery_exact_bytes_both_routes(lmtp_sluice, dovecot):
    s = lmtp_sluice()
    data = make_message(subject="lmtp exact", body="line one\r\n.leading dot\r\n..two\r\nend\r\n")
    qid = send_raw(s.port, f"sender@{DOMAIN}", [f"alice@{DOMAIN}", "bob@tcp.test"], data)
    for user in ("alice", "bob"):
        msgs = wait_for_maildir(dovecot.maildir(user), 1, timeout=30)
        assert len(msgs) == 1, f"{user}: got {len(msgs)} messages, want 1"
        m = msgs[0]
        assert m.return_path == [f"<sender@{DOMAIN}>"], \
            f"{user}: got Return-Path {m.return_path}, want <sender@{DOMAIN}>"
        assert same_bytes(m.original(), data), \
            f"{user}: got body {m.original()[:300]!r}, want {data[:300]!r}"
        assert re.search(rf"\bid {qid}\b", m.received[0]), f"got {m.received[0]!r}, want id {qid}"
    s.wait_log(rf"event=delivered qid={qid} to=alice@{DOMAIN} lmtp=unix:\S+ dsn=2\.0\.0")
    s.wait_log(rf"event=delivered qid={qid} to=bob@tcp\.test lmtp=127\.0\.0\.1:{dovecot.port} dsn=2\.0\.0")


def test_connection_reuse(lmtp_sluice, dovecot):
    s = lmtp_sluice()
    before = dovecot.log().count("Connect from local")
    for i in range(4):
        send_raw(s.port, f"sender@{DOMAIN}", [f"carol@{DOMAIN}"], make_message(subject=f"reuse {i}"))
    wait_for_maildir(dovecot.maildir("carol"), 4, timeout=30, settle=0.5)
    conns = dovecot.log().count("Connect from local") - before
    assert 1 <= conns <= 2, f"got {conns} LMTP connections for 4 messages, want them reused (1..2)"


def test_over_quota_retried_until_quota_raised(lmtp_sluice, dovecot):
    s = lmtp_sluice()
    data = make_message(subject="big", body=("x" * 70 + "\r\n") * 50)
    qid = send_raw(s.port, f"sender@{DOMAIN}", [f"full@{DOMAIN}"], data)
    s.wait_log(rf"event=deferred qid={qid} to=full@{DOMAIN} \S+ dsn=4\.2\.2 .*attempts=1", timeout=30)
    s.wait_log(rf"event=deferred qid={qid} to=full@{DOMAIN} \S+ dsn=4\.2\.2 .*attempts=2", timeout=30)
    assert read_maildir(dovecot.maildir("full")) == [], "got a delivery over quota, want none"
    # sluice-queue sees it, with the live retry state.
    rc, out, err = sluice_queue(s, "list")
    assert rc == 0, f"sluice-queue list: got {rc} ({err}), want 0"
    assert qid in out and f"<full@{DOMAIN}>" in out and "attempts=" in out, \
        f"sluice-queue list: got {out!r}, want {qid} with its recipient and attempts"
    rc, out, err = sluice_queue(s, "show", qid)
    assert rc == 0 and f"rcpt: <full@{DOMAIN}> pending" in out and "Subject: big" in out, \
        f"sluice-queue show: got {rc} {out!r} {err!r}"
    dovecot.users["full"] = "10M"
    dovecot.write_users()
    rc, out, err = sluice_queue(s, "flush")
    assert rc == 0 and "flushed" in out, f"sluice-queue flush: got {rc} {out!r} {err!r}"
    msgs = wait_for_maildir(dovecot.maildir("full"), 1, timeout=30)
    assert len(msgs) == 1 and same_bytes(msgs[0].original(), data)
    s.wait_log(rf"event=delivered qid={qid} to=full@{DOMAIN}")
    assert "bounced" not in s.events(), "got a bounce for a temporary failure, want none"


def test_unknown_user_bounces_to_sender(lmtp_sluice, dovecot):
    s = lmtp_sluice()
    data = make_message(subject="to nobody", body="hello nobody\r\n")
    with SmtpConn(s.port) as c:
        greet(c)
        c.cmd(f"MAIL FROM:<alice@{DOMAIN}> RET=HDRS ENVID=env+2Bid-42", 250)
        c.cmd(f"RCPT TO:<nobody@{DOMAIN}> NOTIFY=FAILURE ORCPT=rfc822;Nobody+40{DOMAIN}", 250)
        c.cmd(f"RCPT TO:<bob@{DOMAIN}>", 250)
        c.cmd("DATA", 354)
        c.send(dot_stuff(data) + b".\r\n")
        qid = queue_id(c.expect(250, timeout=60).text)
        c.cmd("QUIT", 221)
    wait_for_maildir(dovecot.maildir("bob"), 1, timeout=30)
    dsns = wait_for_maildir(dovecot.maildir("alice"), 1, timeout=30)
    assert len(dsns) == 1, f"got {len(dsns)} messages for the sender, want 1 DSN"
    m = dsns[0]
    assert m.return_path == ["<>"], f"got DSN Return-Path {m.return_path}, want <>"
    msg = parse(m)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == \
        ["text/plain", "message/delivery-status", "text/rfc822-headers"], \
        f"got parts {[p.get_content_type() for p in parts]}"
    # message/delivery-status: per-message block, then per-recipient blocks.
    report = parts[1].get_payload()
    blocks = [b for b in report] if isinstance(report, list) else []
    fields = {}
    for b in blocks:
        for k, v in b.items():
            fields[k.lower()] = re.sub(r"\s+", " ", v).strip()
    assert fields.get("reporting-mta") == "dns; mx.test.example", fields
    assert fields.get("original-envelope-id") == "env+id-42", fields
    assert fields.get("final-recipient") == f"rfc822; nobody@{DOMAIN}", fields
    assert fields.get("original-recipient") == f"rfc822;Nobody@{DOMAIN}", fields
    assert fields.get("action") == "failed", fields
    assert fields.get("status") == "5.1.1", fields
    assert re.match(r"smtp; 550 5\.1\.1 ", fields.get("diagnostic-code", "")), fields
    # RET=HDRS: the header only.
    returned = parts[2].get_payload()
    assert "Subject: to nobody" in returned and "hello nobody" not in returned, returned
    assert "bob@" not in str(fields.get("final-recipient")), "got bob in the report, want only nobody"
    s.wait_log(rf"event=bounced qid={qid} to=nobody@{DOMAIN} dsn=5\.1\.1 dsn_qid=\S+ from=alice@{DOMAIN}")


def test_no_bounce_of_bounce_and_notify_never(lmtp_sluice, dovecot):
    s = lmtp_sluice()
    q1 = send_raw(s.port, "", [f"nobody@{DOMAIN}"], make_message(subject="from null"))
    s.wait_log(rf"level=warn event=bounce_dropped qid={q1} to=nobody@{DOMAIN}", timeout=30)
    with SmtpConn(s.port) as c:
        greet(c)
        c.cmd(f"MAIL FROM:<alice@{DOMAIN}>", 250)
        c.cmd(f"RCPT TO:<nobody@{DOMAIN}> NOTIFY=NEVER", 250)
        c.cmd("DATA", 354)
        c.send(dot_stuff(make_message(subject="never")) + b".\r\n")
        q2 = queue_id(c.expect(250, timeout=60).text)
        c.cmd("QUIT", 221)
    s.wait_log(rf"event=bounce_suppressed qid={q2} to=nobody@{DOMAIN} dsn=5\.1\.1 reason=notify",
               timeout=30)
    time.sleep(1.5)
    assert read_maildir(dovecot.maildir("alice")) == [], "got a DSN despite NOTIFY=NEVER, want none"
    rc, out, _ = sluice_queue(s, "list")
    assert rc == 0 and out.startswith("0 messages"), f"got queue {out!r}, want it empty"


def test_backend_down_then_back(lmtp_sluice, dovecot):
    dovecot.stop()
    s = lmtp_sluice()
    data = make_message(subject="while down")
    qid = send_raw(s.port, f"sender@{DOMAIN}", [f"alice@{DOMAIN}"], data)
    q2 = send_raw(s.port, f"sender@{DOMAIN}", [f"carol@{DOMAIN}"], make_message(subject="deleted"))
    s.wait_log(rf"event=deferred qid={qid} to=alice@{DOMAIN} \S+ dsn=4\.4\.1 .*attempts=1", timeout=30)
    rc, out, err = sluice_queue(s, "delete", q2)
    assert rc == 0 and f"deleted {q2}" in out, f"sluice-queue delete: got {rc} {out!r} {err!r}"
    s.wait_log(rf"event=deleted qid={q2}", timeout=10)
    dovecot.start()
    msgs = wait_for_maildir(dovecot.maildir("alice"), 1, timeout=30)
    assert len(msgs) == 1 and same_bytes(msgs[0].original(), data)
    time.sleep(1)
    assert read_maildir(dovecot.maildir("carol")) == [], "got the deleted message delivered"
    rc, out, _ = sluice_queue(s, "list")
    assert rc == 0 and out.startswith("0 messages"), f"got queue {out!r}, want it empty"


def test_restart_does_not_redeliver_done_recipients(lmtp_sluice, dovecot):
    """One recipient delivered, one over quota: after a restart only the
    second is tried again (per-recipient marks in the .done file)."""
    s = lmtp_sluice()
    data = make_message(subject="partial", body=("y" * 70 + "\r\n") * 50)
    qid = send_raw(s.port, f"sender@{DOMAIN}", [f"bob@{DOMAIN}", f"full@{DOMAIN}"], data)
    wait_for_maildir(dovecot.maildir("bob"), 1, timeout=30)
    s.wait_log(rf"event=deferred qid={qid} to=full@{DOMAIN}", timeout=30)
    assert s.stop() == 0
    dovecot.users["full"] = "10M"
    dovecot.write_users()
    s.start()
    wait_for_maildir(dovecot.maildir("full"), 1, timeout=30)
    msgs = read_maildir(dovecot.maildir("bob"))
    assert len(msgs) == 1, f"bob: got {len(msgs)} copies after the restart, want 1"
