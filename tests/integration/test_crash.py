"""Crash test under load (issue 5): sluiced is killed with SIGKILL at random
moments while several clients send mail, restarted on the same spool each
time, and at the end every message whose client got `250` must be in the
Maildir. None may be lost; duplicates are allowed but must be rare.

Why duplicates are possible at all (docs/SPOOL.md, "What is guaranteed"):
the queue thread delivers a round of up to 64 messages (Maildir: file fsync,
rename, fsync of new/) and only then appends their delivered marks. A kill
after a delivery and before its mark means that message is delivered again
after the restart. So a kill repeats at most the deliveries of the round it
interrupts (at most 64), and that is what is asserted. As a fraction of the
accepted mail the duplicates depend only on how often the server is killed:
here a kill every 0.05-0.7 s under a load that keeps the delivery rounds
full gives about 35-40 duplicates per kill, i.e. about 6 % of the accepted
messages (printed on every run); with a crash per day it is nothing. A loss,
on the other hand, is a broken durability contract (250 before the record
was on disk, a recovery that drops valid records, a mark written before its
delivery) and fails the test.

Knobs (environment): SLUICE_CRASH_ROUNDS (kills, default 15),
SLUICE_CRASH_SEED (random seed, printed on every run), SLUICE_CRASH_CLIENTS
(client threads, default 6).

Everything goes to 127.0.0.1; every wait is bounded (about 30 s in total on
the shared CI machine with the defaults).
"""

import os
import random
import re
import socket
import threading
import time

from conftest import read_maildir

SENDER = "crash@client.test.example"
ROUNDS = int(os.environ.get("SLUICE_CRASH_ROUNDS", "15"))
CLIENTS = int(os.environ.get("SLUICE_CRASH_CLIENTS", "6"))
SEED = int(os.environ.get("SLUICE_CRASH_SEED", str(int(time.time() * 1000) % 1000000)))
KILL_DELAY = (0.05, 0.7)          # seconds of load between a restart and the next kill
QUEUE_BATCH = 64                  # control/queue.c: deliveries per round, marked after it
REPLY_TIMEOUT = 10.0
DEADLINE = 150.0                  # the whole test; CI bound is 3 minutes


class Unexpected(Exception):
    """A reply that no crash explains (5xx, malformed): fails the test."""


class ConnGone(Exception):
    """Connection refused, reset, closed or silent: expected around a kill."""


class TempFail(ConnGone):
    """A 4xx reply: the message is not accepted, the client goes on."""


class Client:
    """Raw SMTP, one command at a time; every read bounded."""

    def __init__(self, port):
        try:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT)
        except OSError as e:
            raise ConnGone(f"connect: {e}") from None
        self.buf = b""

    def reply(self):
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                try:
                    chunk = self.sock.recv(65536)
                except OSError as e:            # reset, timeout
                    raise ConnGone(f"recv: {e}") from None
                if not chunk:
                    raise ConnGone("closed")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            m = re.match(rb"^([2-5]\d\d)([ -])(.*)$", line)
            if not m:
                raise Unexpected(f"malformed reply line {line!r}")
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) == b" ":
                return int(m.group(1)), "\n".join(lines)

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise ConnGone(f"send: {e}") from None

    def cmd(self, line, want):
        if line is not None:
            self.send(line.encode() + b"\r\n")
        code, text = self.reply()
        if code != want:
            if 400 <= code < 500:
                raise TempFail(f"{line!r}: {code} {text}")   # counted, not accepted
            raise Unexpected(f"{line!r}: got {code} {text!r}, want {want}")
        return text

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Load:
    """CLIENTS threads sending until stopped; each message has a unique
    Message-ID. Records what got 250 (with its queue id) and what did not."""

    def __init__(self, port, run_id):
        self.port = port
        self.run_id = run_id
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.accepted = {}          # msgid -> qid
        self.unanswered = set()     # msgids sent (or partly sent) without a 250
        self.conn_errors = 0
        self.tempfails = 0
        self.failures = []          # Unexpected, with the thread
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(CLIENTS)]

    def message(self, t, n):
        msgid = f"<crash.{self.run_id}.{t}.{n}@client.test.example>"
        body = "".join(f"line {k} of message {t}.{n}\r\n" for k in range(1 + (n * 7 + t) % 40))
        data = (f"From: <{SENDER}>\r\nTo: <rcpt{t}@test.example>\r\n"
                f"Subject: crash {t}.{n}\r\nMessage-ID: {msgid}\r\n\r\n{body}").encode()
        return msgid, data

    def run(self, t):
        rnd = random.Random(SEED * 1000 + t)
        n = 0
        while not self.stop.is_set():
            c = None
            msgid = None
            try:
                c = Client(self.port)
                c.cmd(None, 220)
                c.cmd("EHLO client.test.example", 250)
                for _ in range(rnd.randint(1, 3)):     # 1..3 messages per connection
                    if self.stop.is_set():
                        break
                    n += 1
                    msgid, data = self.message(t, n)
                    with self.lock:
                        self.unanswered.add(msgid)
                    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
                    c.cmd(f"RCPT TO:<rcpt{t}@test.example>", 250)
                    c.cmd("DATA", 354)
                    c.send(data + b".\r\n")
                    text = c.cmd(None, 250)
                    m = re.search(r"queued as (\S+)", text)
                    if not m:
                        raise Unexpected(f"end-of-data reply {text!r}, want '... queued as QID'")
                    with self.lock:
                        self.unanswered.discard(msgid)
                        self.accepted[msgid] = m.group(1)
                    msgid = None
                c.send(b"QUIT\r\n")
            except ConnGone as e:
                with self.lock:
                    if isinstance(e, TempFail):
                        self.tempfails += 1
                    else:
                        self.conn_errors += 1
                time.sleep(0.01)          # the server is down or restarting
            except Unexpected as e:
                with self.lock:
                    self.failures.append(f"client {t}: {e}")
                self.stop.set()
            finally:
                if c is not None:
                    c.close()

    def start(self):
        for th in self.threads:
            th.start()

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join(REPLY_TIMEOUT + 5)
        alive = [th.name for th in self.threads if th.is_alive()]
        assert not alive, f"got client threads {alive} still running, want all stopped"

    def count(self):
        with self.lock:
            return len(self.accepted)


def maildir_index(path):
    """{msgid: [qid from sluice's Received, ...]} and the files without one."""
    got, strangers = {}, []
    for m in read_maildir(path):
        mid = m.header("Message-ID")
        rec = m.received[0] if m.received else ""
        q = re.search(r"\bid (\S+?);?(?:\s|$)", rec)
        if mid is None or q is None:
            strangers.append(m.path.name)
            continue
        got.setdefault(mid, []).append(q.group(1))
    return got, strangers


def test_sigkill_under_load_loses_nothing(sluice_factory, capsys):
    def report(text):
        # past pytest's capture: the figures belong in the log of a passing run too
        with capsys.disabled():
            print(text, flush=True)

    t_start = time.monotonic()
    rnd = random.Random(SEED)
    report(f"\ncrash test: seed {SEED} (SLUICE_CRASH_SEED), {ROUNDS} kills "
          f"(SLUICE_CRASH_ROUNDS), {CLIENTS} client threads")
    s = sluice_factory(proxy=False, tls=False, workers=2)
    load = Load(s.port, f"{SEED}x{os.getpid()}")
    load.start()
    kills = []
    try:
        for i in range(ROUNDS):
            if load.stop.is_set() or time.monotonic() - t_start > DEADLINE - 60:
                break
            before = load.count()
            delay = rnd.uniform(*KILL_DELAY)
            time.sleep(delay)
            s.kill()
            kills.append((delay, load.count() - before))
            # Errors logged by a killed process's successor about the
            # crash itself would show up as level=warn (spool_torn); the
            # teardown still fails on any error line.
            s.start()
        # some load on the last incarnation too, then stop the clients
        time.sleep(0.3)
    finally:
        load.finish()
    assert not load.failures, "got replies no crash explains:\n" + "\n".join(load.failures[:10])
    assert len(kills) == ROUNDS, \
        f"got {len(kills)} kills within the time bound, want {ROUNDS} (machine too slow?)"

    accepted = dict(load.accepted)
    assert len(accepted) >= 10 * ROUNDS, \
        f"got only {len(accepted)} messages accepted over {ROUNDS} rounds, want a real load"

    # Drain: wait until every accepted message is in the Maildir, bounded
    # (and given up after 15 s without a new delivery: what is missing then
    # is lost), then a little more for stragglers and duplicates.
    deadline = time.monotonic() + max(30.0, DEADLINE - (time.monotonic() - t_start))
    files, progress = -1, time.monotonic()
    while True:
        got, strangers = maildir_index(s.maildir)
        missing = [m for m in accepted if m not in got]
        now = time.monotonic()
        n = sum(len(v) for v in got.values())
        if n != files:
            files, progress = n, now
        if not missing or now > deadline or now - progress > 15:
            break
        assert s.running(), f"sluiced exited with {s.proc.returncode} during the drain"
        time.sleep(0.2)
    time.sleep(2.0)
    got, strangers = maildir_index(s.maildir)

    missing = sorted(m for m in accepted if m not in got)
    wrong_qid = sorted((m, accepted[m], got[m]) for m in accepted
                       if m in got and any(q != accepted[m] for q in got[m]))
    known = set(accepted) | load.unanswered
    unknown = sorted(m for m in got if m not in known)
    dups = {m: len(v) for m, v in got.items() if len(v) > 1}
    extra_copies = sum(n - 1 for n in dups.values())
    unacked_delivered = sorted(m for m in got if m in load.unanswered)

    report(f"crash test: {len(kills)} kills (delays "
          f"{min(d for d, _ in kills) * 1000:.0f}–{max(d for d, _ in kills) * 1000:.0f} ms, "
          f"accepted per round {min(a for _, a in kills)}–{max(a for _, a in kills)}), "
          f"{len(accepted)} messages accepted (250), {len(missing)} lost, "
          f"{len(dups)} delivered more than once ({extra_copies} extra copies, "
          f"{100.0 * extra_copies / len(accepted):.2f}% of accepted), "
          f"{len(unacked_delivered)} delivered without a 250 (killed after the commit, "
          f"before the reply: allowed), {load.conn_errors} connection errors, {load.tempfails} 4xx replies, "
          f"{time.monotonic() - t_start:.1f} s")
    if dups:
        report("crash test: duplicates: " + ", ".join(f"{m} x{n}" for m, n in sorted(dups.items())[:20]))

    assert not missing, (f"got {len(missing)} of {len(accepted)} messages answered 250 missing "
                         f"from the Maildir after the drain, want none lost: {missing[:20]}")
    assert not wrong_qid, f"got messages delivered under another queue id than their 250 said: {wrong_qid[:10]}"
    assert not strangers, f"got Maildir files without Message-ID or sluice Received: {strangers[:10]}"
    assert not unknown, f"got messages in the Maildir that no client sent: {unknown[:10]}"
    # Rare: a kill repeats at most the delivery round it interrupts (marks
    # are appended after the round, see the top of this file).
    assert extra_copies <= QUEUE_BATCH * len(kills), \
        (f"got {extra_copies} duplicate deliveries for {len(kills)} kills, want at most "
         f"{QUEUE_BATCH} per kill (one delivery round)")
    assert time.monotonic() - t_start < 170, "crash test took longer than its CI bound"
