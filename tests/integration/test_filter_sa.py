"""SMTP-time filtering with the real rule corpus: a real sluiced loads every
rule file of Debian's spamassassin package (/usr/share/spamassassin), scores
mail while DATA streams in and acts on the verdict under its default policy
(headers and {SPAM?} from 5, {SPAM!} from 10, 550 5.7.1 from 15).

Each message of tests/scan/messages that this file uses is also scored by
`sluice-rules -s` (the same engine reading the file whole), and the test
asserts that sluiced, fed in TCP-sized pieces, finds the same rules.

The compiled databases come from the cache that the scan_hs_sa unit test
fills (SLUICE_HS_SA_CACHE, set by scripts/test.sh); without it the first
load compiles Debian's rules, a few minutes."""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SmtpConn, greet, same_bytes

SA_RULES = Path("/usr/share/spamassassin")
MSGS = Path(__file__).resolve().parent.parent / "scan" / "messages"
SENDER = "sa@client.test.example"


def sluice_rules_exe():
    exe = Path(os.environ["SLUICED"]).resolve().parent.parent / "scan" / "sluice-rules"
    assert exe.exists(), f"{exe} not built"
    return exe


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory):
    env = os.environ.get("SLUICE_HS_SA_CACHE")
    if env:
        Path(env).parent.mkdir(parents=True, exist_ok=True)
        return env
    return str(tmp_path_factory.mktemp("sa") / "scan.cache")


@pytest.fixture
def sa_server(sluice_factory, cache_path):
    if not any(SA_RULES.glob("*.cf")):
        pytest.fail(f"no rule files in {SA_RULES}: install Debian's spamassassin package")
    s = sluice_factory(start=False, proxy=False, tls=False)
    text = s.config_text() + (
        "filter:\n"
        "  enabled: true\n"
        f"  rules: [{SA_RULES}]\n"
        f"  cache: {cache_path}\n"
        "  tag: 0\n"
        "  slots: 8\n")
    s.config_path.write_text(text)
    s.start()
    # a cold compile of Debian's rules takes minutes on this machine
    s.wait_log(r"event=filter_ready generation=1", timeout=900)
    return s


def send(port, data, chunk=1400):
    """One transaction; the body goes out in chunk-sized writes so the
    scanner sees it in pieces, as from a real client."""
    lines = data.split(b"\r\n")
    data = b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    with SmtpConn(port, timeout=60) as c:
        greet(c)
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd("RCPT TO:<rcpt@test.example>", 250)
        c.cmd("DATA", 354)
        data += b".\r\n"
        for i in range(0, len(data), chunk):
            c.send(data[i:i + chunk])
            time.sleep(0.002)
        r = c.read_reply(timeout=60)
        c.cmd("QUIT", 221)
        return r


def crlf(path):
    raw = path.read_bytes()
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def reference(path, cache):
    """Rules that sluice-rules finds in the file (the whole file at once)."""
    p = subprocess.run([str(sluice_rules_exe()), "-r", str(SA_RULES), "-c", cache, "-s", str(path)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode in (0, 1), f"sluice-rules failed ({p.returncode}): {p.stderr[-800:]}"
    m = re.search(r"^\S+ (-?[0-9.]+) (\w+) tests=(\S*)$", p.stdout, re.M)
    assert m, f"no score line in sluice-rules output: {p.stdout[-800:]}"
    return float(m.group(1)), set(filter(None, m.group(3).split(",")))


def txn_line(s, qid_or_none=None, n=1):
    deadline = time.time() + 30
    while time.time() < deadline:
        lines = [l for l in s.events().splitlines() if "event=txn " in l and "filter=" in l]
        if len(lines) >= n:
            return lines[n - 1]
        time.sleep(0.1)
    pytest.fail(f"no transaction log line #{n} with filter=: {s.events()[-1000:]}")


def logged_rules(line):
    m = re.search(r"filter=(\w+) score=(-?[0-9.]+) rules=(\S*) truncated=(\d)", line)
    assert m, f"no verdict in {line!r}"
    rules = set(filter(None, m.group(3).split(","))) - {"-"}   # "-": none
    return m.group(1), float(m.group(2)), rules, m.group(4) == "1"


def test_debian_corpus_loads(sa_server):
    m = re.search(r"event=filter_load rules=(\d+) active=(\d+) diagnostics=\d+ cache=(\w+)",
                  sa_server.events())
    assert m, sa_server.events()[-800:]
    rules, active = int(m.group(1)), int(m.group(2))
    # Debian 12's spamassassin 4.0 ships about 3,000 rules, 1,300 regex rules active
    assert rules > 2000 and active > 1200, f"got rules={rules} active={active}"


@pytest.mark.parametrize("name,action,needles", [
    # advance-fee fraud: many Debian body rules; over 15, rejected
    ("08-spam-advance-fee", "reject", {"ADVANCE_FEE_5_NEW_MONEY", "LOTTO_DEPT"}),
    # pills in HTML with URIs: over 10, the upper tag
    ("07-spam-html-uris", "tag_upper", {"DRUGS_ERECTILE", "NORMAL_HTTP_TO_IP"}),
    # SpamAssassin's own sample spam carries GTUBE
    ("01-sa-sample-spam", "reject", {"GTUBE"}),
])
def test_spam_acted_on(sa_server, cache_path, name, action, needles):
    path = MSGS / f"{name}.eml"
    data = crlf(path)
    ref_score, ref_rules = reference(path, cache_path)
    r = send(sa_server.port, data)
    verdict, score, rules, truncated = logged_rules(txn_line(sa_server))
    assert verdict == action, f"{name}: got filter={verdict} score={score} rules={sorted(rules)}, want {action}"
    assert needles <= rules, f"{name}: got rules {sorted(rules)}, want {sorted(needles)} among them"
    if not truncated:
        assert rules == ref_rules, (f"{name}: streamed through sluiced {sorted(rules)} vs read whole "
                                    f"by sluice-rules {sorted(ref_rules)}")
        assert abs(score - ref_score) < 0.05, f"{name}: score {score} streamed vs {ref_score} whole"
    if action == "reject":
        assert r.code == 550 and r.text.startswith("5.7.1"), f"{name}: got {r!r}, want 550 5.7.1"
        assert sa_server.messages() == [], f"{name}: a rejected message was delivered"
    else:
        assert r.code == 250, f"{name}: got {r!r}, want 250"
        m = sa_server.wait_for_maildir(1)[0]
        tag = "{SPAM!} " if action == "tag_upper" else "{SPAM?} "
        assert (m.header("Subject") or "").startswith(tag), f"{name}: got Subject {m.header('Subject')!r}"
        st = m.header("X-Spam-Status") or ""
        assert st.startswith("Yes, score="), f"{name}: got X-Spam-Status {st!r}"
        for rule in needles:
            assert rule in st, f"{name}: got X-Spam-Status {st!r}, want {rule}"


def test_scr_attachment_acted_on(sa_server):
    # the rules alone find nothing in it; the attachment check does
    r = send(sa_server.port, crlf(MSGS / "12-attach-scr.eml"))
    assert r.code == 250, f"got {r!r}"
    verdict, score, rules, _ = logged_rules(txn_line(sa_server))
    assert "ATTACH_DANGEROUS_EXT" in rules, f"got rules {sorted(rules)} for a .scr attachment"
    m = sa_server.wait_for_maildir(1)[0]
    assert "ATTACH_DANGEROUS_EXT" in (m.header("X-Spam-Status") or ""), m.header("X-Spam-Status")


def test_ham_arrives_unchanged_but_headers(sa_server, cache_path):
    path = MSGS / "04-ham-plain.eml"
    want = crlf(path)
    ref_score, ref_rules = reference(path, cache_path)
    r = send(sa_server.port, want, chunk=97)
    assert r.code == 250, f"got {r!r}"
    verdict, score, rules, _ = logged_rules(txn_line(sa_server))
    assert score < 5.0 and verdict in ("headers", "accept"), f"ham: got {verdict} {score} {sorted(rules)}"
    assert rules == ref_rules, f"ham: streamed {sorted(rules)} vs whole {sorted(ref_rules)}"
    m = sa_server.wait_for_maildir(1)[0]
    orig = m.original().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    lines = orig.split(b"\r\n")
    assert lines[0].startswith(b"X-Spam-Score: ") and lines[1].startswith(b"X-Spam-Status: No, "), orig[:300]
    i = 2
    while lines[i].startswith((b" ", b"\t")):   # a folded X-Spam-Status
        i += 1
    rest = b"\r\n".join(lines[i:])
    assert same_bytes(rest, want), f"got {rest[:300]!r}, want the message as sent"
