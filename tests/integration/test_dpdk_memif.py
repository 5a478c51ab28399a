"""sluice-bench (DPDK) against sluiced (DPDK) over net_memif: tens of
thousands of SMTP sessions between two userspace TCP stacks, and every
message accounted for.

    sluice-bench (10.78.0.1, memif client) --unix socket-- sluiced (10.78.0.2, memif server)

Each message carries a unique Message-ID (run id + sequence number);
sluice-bench writes the sequence number of every message answered 250. The
test wants: every session ended with 221, every message sent answered, the
set of accepted sequence numbers equal to the set of Message-IDs in the
Maildir (none missing, none twice), and as many accepted event=txn lines in
sluiced's log. memif has no RSS, so sluiced runs one worker.

Skipped (with the reason) without root, when sluiced was built without
libdpdk, or when SLUICE_BENCH (set by meson where libdpdk is found) is
missing. Both EALs run with --no-huge --no-shconf --no-pci (DPDK 22.11
refuses --in-memory with --no-huge) and their own --file-prefix.
"""

import os
import re
import signal
import subprocess
import time

import pytest

from conftest import BAD_LOG, HOSTNAME, sluiced_path

SERVER = "10.78.0.2"
CLIENT = "10.78.0.1"
PORT = 2525
SESSIONS = 20000
CONCURRENCY = 64
# Bounds: no session starts after DURATION s, each is cut after SESSION_TIMEOUT s.
DURATION = 60
SESSION_TIMEOUT = 20


def bench_path():
    p = os.environ.get("SLUICE_BENCH")
    if not p:
        pytest.skip("SLUICE_BENCH is not set: sluice-bench is built only where libdpdk is found")
    if not os.access(p, os.X_OK):
        pytest.fail(f"SLUICE_BENCH={p}: not an executable file")
    return p


def eal(tag, role, sock, mac, lcore):
    return (f"--no-huge --no-shconf --no-pci -l {lcore} --file-prefix {tag} "
            f"--vdev=net_memif0,role={role},socket={sock},mac={mac} --log-level=notice")


def parse_summary(out):
    m = re.search(r"^bench_summary (.*)$", out, re.M)
    assert m, f"got no bench_summary line from sluice-bench, want one:\n{out[-3000:]}"
    return {k: v for k, v in (kv.split("=", 1) for kv in m.group(1).split())}


@pytest.fixture
def memif_sluiced(tmp_path):
    exe = sluiced_path()
    bench = bench_path()
    if os.geteuid() != 0:
        pytest.skip("needs root (EAL)")
    tag = f"slmemif{os.getpid()}"
    sock = tmp_path / "memif.sock"
    maildir = tmp_path / "Maildir"
    logf = tmp_path / "sluiced.log"
    conf = tmp_path / "sluice.conf"
    conf.write_text(
        f"server: {{hostname: {HOSTNAME}, workers: 1, transport: dpdk}}\n"
        "listen:\n"
        f"  - address: 0.0.0.0:{PORT}\n"
        "smtp: {greet_pause: 0}\n"
        f"spool: {{directory: {tmp_path / 'spool'}, sync: false}}\n"
        f"delivery: {{method: maildir, maildir: {maildir}, retry_min: 1s}}\n"
        "dpdk:\n"
        f'  eal: "{eal(tag + "s", "server", sock, "02:00:00:78:00:02", 0)}"\n'
        "  port: 0\n"
        f"  address: {SERVER}/24\n"
        "log: {level: info}\n")
    chk = subprocess.run([exe, "--check", "-c", str(conf)], capture_output=True, timeout=60)
    out = (chk.stdout + chk.stderr).decode(errors="replace")
    if "built without libdpdk" in out:
        pytest.skip("sluiced was built without libdpdk (no DPDK transport)")
    assert chk.returncode == 0, f"sluiced --check: got exit {chk.returncode}, want 0:\n{out}"

    logfh = open(logf, "ab")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=logfh,
                            stderr=subprocess.STDOUT, start_new_session=True)

    def log():
        return logf.read_text(errors="replace")

    try:
        deadline = time.monotonic() + 60
        while "event=start" not in log():
            assert proc.poll() is None, \
                f"sluiced exited with {proc.returncode} at start; log:\n{log()[-4000:]}"
            assert time.monotonic() < deadline, f"got no event=start in 60 s; log:\n{log()[-4000:]}"
            time.sleep(0.1)
        yield {"bench": bench, "tag": tag, "sock": sock, "maildir": maildir, "log": log,
               "dir": tmp_path, "proc": proc}
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError("sluiced: got no exit 30 s after SIGTERM, want exit 0")
        assert rc == 0, f"sluiced: got exit code {rc} after SIGTERM, want 0:\n{log()[-3000:]}"
        bad = [l for l in log().splitlines() if BAD_LOG.search(l)]
        assert not bad, "got error lines in the log, want none:\n" + "\n".join(bad[:20])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        logfh.close()


def maildir_ids(maildir, run_id):
    """Sequence numbers of the Message-IDs of this run in the Maildir."""
    pat = re.compile(rb"^Message-ID: <" + re.escape(run_id.encode()) + rb"\.(\d+)@", re.M | re.I)
    ids = []
    for sub in ("new", "cur"):
        d = maildir / sub
        if not d.is_dir():
            continue
        for f in d.iterdir():
            with open(f, "rb") as fh:
                m = pat.search(fh.read(4096))
            assert m, f"got no Message-ID of run {run_id} in {f}, want one"
            ids.append(int(m.group(1)))
    return ids


def maildir_count(maildir):
    return sum(len(os.listdir(maildir / s)) for s in ("new", "cur") if (maildir / s).is_dir())


def test_memif_sessions_all_accounted(memif_sluiced):
    s = memif_sluiced
    run_id = f"memif{os.getpid()}"
    ids_file = s["dir"] / "accepted.ids"
    argv = [s["bench"], "--eal", eal(s["tag"] + "c", "client", s["sock"], "02:00:00:78:00:01", 1),
            "--local", f"{CLIENT}/24", "--server", f"{SERVER}:{PORT}",
            "--sessions", str(SESSIONS), "--concurrency", str(CONCURRENCY), "--messages", "1",
            "--body-size", "1024", "--pipelining", "on", "--duration", str(DURATION),
            "--timeout", str(SESSION_TIMEOUT), "--run-id", run_id, "--ids", str(ids_file)]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, timeout=DURATION + SESSION_TIMEOUT + 60)
    out = (p.stdout + p.stderr).decode(errors="replace")
    sm = parse_summary(out)
    assert p.returncode == 0, f"sluice-bench: got exit {p.returncode}, want 0:\n{out[-3000:]}"
    got = {k: int(sm[k]) for k in ("sessions", "sessions_ok", "sessions_failed", "messages_sent",
                                    "accepted", "rejected", "tempfailed", "refused", "lost")}
    want = dict(sessions=SESSIONS, sessions_ok=SESSIONS, sessions_failed=0, messages_sent=SESSIONS,
                accepted=SESSIONS, rejected=0, tempfailed=0, refused=0, lost=0)
    assert got == want, f"got {got}, want {want}; sluice-bench output:\n{out[-3000:]}"

    accepted = [int(x) for x in ids_file.read_text().split()]
    assert len(accepted) == SESSIONS, f"got {len(accepted)} accepted ids in {ids_file}, want {SESSIONS}"

    # Delivery runs after the 250 (spool, then the queue manager): wait for it.
    deadline = time.monotonic() + 60
    while maildir_count(s["maildir"]) < len(accepted) and time.monotonic() < deadline:
        time.sleep(0.2)
    ids = maildir_ids(s["maildir"], run_id)
    dup = len(ids) - len(set(ids))
    missing = sorted(set(accepted) - set(ids))
    extra = sorted(set(ids) - set(accepted))
    assert not dup and not missing and not extra, (
        f"Maildir: got {len(ids)} messages ({dup} duplicated), {len(missing)} accepted ids "
        f"missing (e.g. {missing[:5]}), {len(extra)} not accepted (e.g. {extra[:5]}); "
        f"want exactly the {len(accepted)} accepted")

    log = s["log"]()
    txn = len(re.findall(r"event=txn .*verdict=accepted", log))
    assert txn == SESSIONS, f"got {txn} accepted event=txn lines in sluiced's log, want {SESSIONS}"
    disc = len(re.findall(r"event=disconnect ", log))
    assert disc == SESSIONS, f"got {disc} event=disconnect lines, want {SESSIONS}"
    print(f"{SESSIONS} sessions in {time.monotonic() - t0:.1f} s: {sm.get('txn_per_s')} txn/s "
          f"(elapsed {sm.get('elapsed_s')} s, latency p50 {sm.get('lat_ms_p50')} ms)")
