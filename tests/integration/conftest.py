"""Integration harness: a real sluiced on loopback, driven by real clients.

Environment (set by tests/integration/meson.build):
  SLUICED        path to the sluiced binary (tests are skipped without it)
  SLUICE_SRCDIR  the source tree (for etc/sluice.conf)

Every server started here gets its own directory (config, spool, Maildir,
log, self-signed certificate) and its own free loopback ports. On teardown it
is stopped with SIGTERM and must exit 0 with a log free of errors and
sanitizer reports. Every wait is bounded.
"""

import email
import email.policy
import email.utils
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

HOSTNAME = "mx.test.example"
HERE = Path(__file__).resolve().parent
SRCDIR = Path(os.environ.get("SLUICE_SRCDIR", HERE.parent.parent))

# Log lines that must never appear in a healthy run.
BAD_LOG = re.compile(r"\bERROR\b|level=error\b|AddressSanitizer|LeakSanitizer|"
                     r"runtime error|ThreadSanitizer|Assertion .* failed")


def sluiced_path():
    p = os.environ.get("SLUICED")
    if not p:
        pytest.skip("SLUICED is not set (run through meson test, or export it)")
    if not os.access(p, os.X_OK):
        pytest.fail(f"SLUICED={p}: not an executable file")
    return p


def need(tool, package):
    """A client the tests drive; missing means the setup is incomplete."""
    import shutil
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if not path:
        pytest.fail(f"got no '{tool}' on PATH, want it (Debian package {package})")
    return path


def free_port():
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0, proc=None, logf=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            log = Path(logf).read_text(errors="replace") if logf else ""
            raise AssertionError(f"sluiced exited with {proc.returncode} before "
                                 f"listening on {port}; log:\n{log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port}: got no listener within {timeout}s, want one")


def make_cert(directory):
    """Self-signed certificate for mx.test.example; returns (cert, key)."""
    d = Path(directory)
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=" + HOSTNAME,
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def client_tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ---------------------------------------------------------------------------
# A raw SMTP client: exact bytes out, replies parsed, every read bounded.

class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines          # text after "NNN-" / "NNN "

    @property
    def text(self):
        return "\n".join(self.lines)

    def __repr__(self):
        return f"{self.code} {self.text!r}"


class SmtpConn:
    def __init__(self, port, timeout=10.0, connect=True):
        self.port = port
        self.timeout = timeout
        self.buf = b""
        self.sock = None
        if connect:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.sock.settimeout(left)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError()
        self.buf += chunk

    def read_reply(self, timeout=None):
        """One (possibly multi-line) reply; AssertionError on timeout or EOF."""
        deadline = time.monotonic() + (timeout or self.timeout)
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                try:
                    self._fill(deadline)
                except socket.timeout:
                    raise AssertionError(f"got no complete reply within "
                                         f"{timeout or self.timeout}s (partial {lines!r} "
                                         f"{self.buf[:200]!r}), want one") from None
                except (EOFError, ConnectionResetError):
                    raise AssertionError(f"got connection closed (partial {lines!r} "
                                         f"{self.buf[:200]!r}), want a reply") from None
            line, self.buf = self.buf.split(b"\r\n", 1)
            m = re.match(rb"^([2-5]\d\d)([ -])(.*)$", line)
            assert m, f"got malformed reply line {line!r}, want NNN[ -]text"
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) == b" ":
                return Reply(int(m.group(1)), lines)

    def expect(self, code, timeout=None):
        r = self.read_reply(timeout)
        assert r.code == code, f"got {r!r}, want {code}"
        return r

    def cmd(self, line, code=None):
        self.send(line + "\r\n")
        r = self.read_reply()
        if code is not None:
            assert r.code == code, f"{line!r}: got {r!r}, want {code}"
        return r

    def quiet_for(self, seconds):
        """Bytes that arrive within `seconds` (b"" if none, None on EOF)."""
        deadline = time.monotonic() + seconds
        got = self.buf
        self.buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return got
            if not chunk:
                return got if got else None
            got += chunk

    def wait_closed(self, timeout=10.0):
        """Read until EOF; returns everything read. Fails if not closed in time."""
        deadline = time.monotonic() + timeout
        got = self.buf
        self.buf = b""
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"got connection still open after {timeout}s (read {got[:300]!r}), want closed"
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return got
            if not chunk:
                return got
            got += chunk

    def starttls(self, ctx=None):
        assert self.buf == b"", f"got bytes before the TLS handshake {self.buf!r}, want none"
        ctx = ctx or client_tls_context()
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=HOSTNAME)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def greet(conn, helo="client.test.example"):
    """Banner then EHLO; returns the EHLO reply."""
    conn.expect(220)
    return conn.cmd("EHLO " + helo, 250)


def dot_stuff(data):
    lines = data.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines)


def send_raw(port, mail_from, rcpts, data, helo="client.test.example", mail_params=""):
    """One transaction over a raw socket (no pipelining); returns the queue id."""
    with SmtpConn(port) as c:
        greet(c, helo)
        c.cmd(f"MAIL FROM:<{mail_from}>{mail_params}", 250)
        for r in rcpts:
            c.cmd(f"RCPT TO:<{r}>", 250)
        c.cmd("DATA", 354)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        c.send(dot_stuff(data) + b".\r\n")
        r = c.expect(250, timeout=60)
        c.cmd("QUIT", 221)
        return queue_id(r.text)


def queue_id(text):
    m = re.search(r"queued as (\S+)", text)
    assert m, f"got end-of-data reply {text!r}, want '... queued as QID'"
    return m.group(1)


def make_message(subject="test", body="hello\r\n", extra_headers=(), msgid=None):
    hdr = ["From: <sender@client.test.example>",
           "To: <rcpt@test.example>",
           f"Subject: {subject}",
           f"Date: {email.utils.formatdate(localtime=False)}",
           f"Message-ID: {msgid or email.utils.make_msgid(domain='client.test.example')}"]
    hdr += list(extra_headers)
    text = "\r\n".join(hdr) + "\r\n\r\n" + body
    return text.encode("utf-8")


# ---------------------------------------------------------------------------
# Messages as delivered into a Maildir.

class Msg:
    def __init__(self, path):
        self.path = Path(path)
        self.raw = self.path.read_bytes()
        self.msg = email.message_from_bytes(self.raw, policy=email.policy.compat32)

    @staticmethod
    def _unfold(v):
        return re.sub(r"\r?\n[ \t]+", " ", str(v)).strip()

    @property
    def received(self):
        """Received headers, unfolded, top first."""
        return [self._unfold(v) for v in (self.msg.get_all("Received") or [])]

    @property
    def return_path(self):
        v = self.msg.get_all("Return-Path") or []
        return [self._unfold(x) for x in v]

    def header(self, name):
        v = self.msg.get(name)
        return None if v is None else self._unfold(v)

    def header_fields(self):
        """(name, raw field bytes) of the header section in order."""
        head = re.split(rb"\r?\n\r?\n", self.raw, maxsplit=1)[0]
        fields = []
        for line in re.split(rb"(?<=\n)", head):
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1][1] += line
            elif line:
                fields.append([line.split(b":", 1)[0].decode("latin-1"), line])
        return fields

    def original(self):
        """The bytes after the trace fields sluice prepended (Return-Path,
        delivery trace such as Delivered-To, and its own Received: the first
        of each, at the top)."""
        fields = self.header_fields()
        skip = 0
        seen = set()
        for name, raw in fields:
            n = name.lower()
            if (n in DELIVERY_TRACE or n == "received") and n not in seen:
                seen.add(n)
                skip += len(raw)
            else:
                break
        return self.raw[skip:]

    @property
    def body(self):
        parts = re.split(rb"\r?\n\r?\n", self.raw, maxsplit=1)
        return parts[1] if len(parts) > 1 else b""

    def __repr__(self):
        return f"<Msg {self.path.name} {self.raw[:120]!r}>"


def same_bytes(got, want):
    """Maildir may store LF line ends (the usual convention) or CRLF."""
    return got == want or got == want.replace(b"\r\n", b"\n")


def read_maildir(path):
    new = Path(path) / "new"
    if not new.is_dir():
        return []
    return [Msg(p) for p in sorted(new.iterdir()) if p.is_file()]


def wait_for_maildir(path, n, timeout=30.0, settle=1.0):
    """Wait until Maildir `path` holds at least n messages in new/, then
    `settle` seconds more to see extra copies; returns all messages."""
    deadline = time.monotonic() + timeout
    while True:
        msgs = read_maildir(path)
        if len(msgs) >= n:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"Maildir {path}: got {len(msgs)} messages after "
                                 f"{timeout}s, want {n}")
        time.sleep(0.1)
    if settle:
        time.sleep(settle)
        msgs = read_maildir(path)
    return msgs


# Fields a delivery agent may put above the Received of the receiving MTA.
DELIVERY_TRACE = ("return-path", "delivered-to", "x-original-to")


def check_received(m, *, helo, ip, qid=None, rcpt=None, tls=False, hostname=HOSTNAME):
    """The topmost Received is sluice's, shaped as RFC 5321 4.4 says."""
    rec = m.received
    assert rec, f"got no Received header in {m.raw[:400]!r}, want one"
    r = rec[0]
    assert re.match(rf"from {re.escape(helo)} \(", r), \
        f"got top Received {r!r}, want 'from {helo} (...'"
    assert f"[{ip}]" in r, f"got top Received {r!r}, want client address [{ip}]"
    assert f"by {hostname} (sluice)" in r, f"got top Received {r!r}, want 'by {hostname} (sluice)'"
    proto = re.search(r"\bwith (\S+)", r)
    assert proto, f"got top Received {r!r}, want 'with PROTO'"
    want = r"ESMTPSA?" if tls else r"ESMTPA?"
    assert re.fullmatch(want, proto.group(1)), \
        f"got protocol {proto.group(1)!r} in {r!r}, want {want}"
    if qid:
        assert re.search(rf"\bid {re.escape(qid)}\b", r), f"got top Received {r!r}, want 'id {qid}'"
    if rcpt:
        assert f"for <{rcpt}>" in r, f"got top Received {r!r}, want 'for <{rcpt}>'"
    date = r.rsplit(";", 1)
    assert len(date) == 2, f"got top Received {r!r}, want '; date' at the end"
    when = email.utils.parsedate_to_datetime(date[1].strip())
    age = abs(time.time() - when.timestamp())
    assert age < 3600, f"got Received date {date[1]!r} ({age:.0f}s off), want now"
    # sluice's Received is at the top: before any other header field.
    names = [n.lower() for n, _ in m.header_fields()]
    first_other = next((i for i, n in enumerate(names) if n not in DELIVERY_TRACE + ("received",)), len(names))
    assert "received" in names[:first_other], f"got header order {names[:6]}, want Received at the top"


def check_return_path(m, sender):
    rp = m.return_path
    assert rp == [f"<{sender}>"], f"got Return-Path {rp}, want ['<{sender}>']"


# ---------------------------------------------------------------------------
# The server under test.

class Sluice:
    def __init__(self, root, cert=None, proxy=True, **opts):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proxy_port = free_port() if proxy else None
        self.cert = cert
        # may hold %u / %d (per-recipient Maildirs, control/spool.h)
        self.maildir = opts.pop("maildir", None) or str(self.root / "Maildir")
        self.spool = str(self.root / "spool")
        self.config_path = self.root / "sluice.conf"
        self.logf = self.root / "sluiced.log"
        self.opts = dict(message_size_max="10m", recipients_max=100, errors_max=10,
                         greet_pause="0", workers=1)
        self.opts.update(opts)
        self.proc = None
        self.allow_errors = False
        self.check_from = 0             # log offset from which errors count
        self.write_config()

    def config_text(self):
        o = self.opts
        lines = [
            f"server: {{hostname: {HOSTNAME}, workers: {o['workers']}, transport: kernel}}",
            "listen:",
            f"  - address: 127.0.0.1:{self.port}",
            "    proxy_protocol: false",
        ]
        if self.proxy_port:
            lines += [f"  - address: 127.0.0.1:{self.proxy_port}",
                      "    proxy_protocol: true"]
        lines += [
            "smtp:",
            '  banner: "ESMTP sluice"',
            f"  message_size_max: {o['message_size_max']}",
            f"  recipients_max: {o['recipients_max']}",
            f"  errors_max: {o['errors_max']}",
        ] + ([f"  junk_max: {o['junk_max']}"] if "junk_max" in o else []) + [
            f"  greet_pause: {o['greet_pause']}",
            "  timeouts: {command: 5m, data: 3m, tls_handshake: 1m}",
        ]
        if self.cert:
            lines.append(f"tls: {{certificate: {self.cert[0]}, key: {self.cert[1]}}}")
        lines += [
            f"spool: {{directory: {self.spool}, sync: true"
            + (f", limit: {o['spool_limit']}" if o.get("spool_limit") else "") + "}",
            f"delivery: {{method: maildir, maildir: {self.maildir}, retry_min: 1s}}",
            "log: {level: info}",
        ]
        return "\n".join(lines) + "\n"

    def write_config(self):
        self.config_path.write_text(self.config_text())

    def start(self, timeout=20.0):
        exe = sluiced_path()
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
        # Report and go on: the teardown fails the test on any "runtime error"
        # line, and the rest of the run still shows how the server behaves.
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=0")
        # Append: a restarted server keeps one log.
        self._logfh = open(self.logf, "ab")
        self._log_start = self.logf.stat().st_size
        self.proc = subprocess.Popen([exe, "-c", str(self.config_path)],
                                     stdin=subprocess.DEVNULL, stdout=self._logfh,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        try:
            for p in (self.port, self.proxy_port):
                if p:
                    wait_port(p, timeout, self.proc, self.logf)
        except AssertionError:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
            self._logfh.close()
            self.proc = None
            raise
        return self

    def log(self):
        return self.logf.read_text(errors="replace") if self.logf.exists() else ""

    def events(self):
        """The log with the test's directory names masked: they hold the test
        name, which must not match patterns such as 'early'."""
        return self.log().replace(str(self.root.parent), "<tmp>")

    def wait_log(self, pattern, timeout=10.0, flags=0):
        deadline = time.monotonic() + timeout
        while True:
            log = self.events()
            m = re.search(pattern, log, flags)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"got no log line matching {pattern!r} after {timeout}s, "
                                     f"want one; log tail:\n{log[-3000:]}")
            time.sleep(0.1)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=20.0):
        """SIGTERM; returns the exit code (killing it if it hangs)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self._logfh.close()
                self.proc = None
                raise AssertionError(f"sluiced: got no exit {timeout}s after SIGTERM, want exit 0")
        rc = self.proc.returncode
        self._logfh.close()
        self.proc = None
        return rc

    def kill(self):
        """SIGKILL: a crash, as far as the spool is concerned."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._logfh.close()
        self.proc = None

    def bad_log_lines(self):
        log = self.events()
        if self.check_from:
            log = self.logf.read_bytes()[self.check_from:].decode("utf-8", "replace")
        return [l for l in log.splitlines() if BAD_LOG.search(l)]

    def messages(self, path=None):
        return read_maildir(path or self.maildir)

    def wait_for_maildir(self, n, timeout=30.0, settle=1.0, path=None):
        return wait_for_maildir(path or self.maildir, n, timeout, settle)


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("cert"))


@pytest.fixture
def sluice_factory(tmp_path, tls_cert):
    """make(tls=True, proxy=True, start=True, **smtp_opts) -> Sluice."""
    made = []

    def make(tls=True, proxy=True, start=True, **opts):
        s = Sluice(tmp_path / f"sluice{len(made)}", tls_cert if tls else None, proxy, **opts)
        made.append(s)
        if start:
            s.start()
        return s

    yield make
    problems = []
    for s in made:
        if s.proc is None:
            continue
        try:
            rc = s.stop()
        except AssertionError as e:
            problems.append(f"{s.root.name}: {e}")
            continue
        if rc != 0:
            problems.append(f"{s.root.name}: got exit code {rc} after SIGTERM, want 0")
        if not s.allow_errors:
            bad = s.bad_log_lines()
            if bad:
                problems.append(f"{s.root.name}: got error lines in the log, want none:\n" +
                                "\n".join(bad[:20]))
    if problems:
        for s in made:
            print(f"---- {s.logf} (tail)\n{s.log()[-4000:]}")
        pytest.fail("\n".join(problems))


@pytest.fixture
def sluice(sluice_factory):
    return sluice_factory()


@pytest.fixture
def short_dir():
    """A directory under /tmp with a short path: unix socket paths are
    limited to 107 bytes, and pytest's tmp_path may be longer."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="sl", dir="/tmp") as d:
        yield Path(d)


def check_config_errors(directory, cases):
    """cases: (YAML text after a listen line, what the error must say).
    `sluiced --check` must refuse each, saying FILE:LINE: and that text."""
    for i, (text, want) in enumerate(cases):
        p = Path(directory) / f"check{i}.conf"
        p.write_text("listen: [{address: 127.0.0.1:2525}]\n" + text)
        out = subprocess.run([sluiced_path(), "-c", str(p), "--check"], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode != 0, f"{text!r}: --check passed, want an error"
        assert want in out.stderr and re.search(rf"{re.escape(str(p))}:\d+:", out.stderr), \
            f"{text!r}: got {out.stderr!r}, want FILE:LINE: ... {want!r}"
