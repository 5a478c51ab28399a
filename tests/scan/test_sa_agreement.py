"""SpamAssassin as a peer (issue 4, part 6): do sluice's rule engine and the
installed spamassassin agree, rule by rule, on which regex rules hit each
message of tests/scan/messages/?

Both engines load the same rule files (Debian's /usr/share/spamassassin).
SpamAssassin runs through its Perl API (sa_hits.pl: local tests only,
dns_available no, no Bayes, no AWL/TxRep), which gives every rule that hit,
__ subrules included; its X-Spam-Status tests= list (spamassassin -t) leaves
the subrules out, and most regex rules are subrules. sluice runs through
sa_agree_hits (the same engine and cache as sluice-rules; it prints the
subrules too), and sluice-rules -l gives each rule's type and class.

Compared: the header/body/rawbody/full/uri regex rules that both engines run
(sluice: active, in Hyperscan or PCRE2; SpamAssassin: defined with a non-zero
score in score set 0), minus the exclusions below, each printed with its
reason. Agreement = |both hit| / |either hit| over (message, rule) pairs;
the issue's bar is 95%; this test holds 99%, which sluice reaches since
its BODY is rendered as SpamAssassin renders it (paragraphs as lines),
its URIs keep SpamAssassin's TLD check for text and take html tags'
attributes, and ALL is the header block (100% on 2026-11-24), so that
a step back shows. Every disagreement is printed per rule.

Environment: SLUICE_RULES (sluice-rules), SLUICE_SA_HITS (sa_agree_hits),
SLUICE_RULES_CACHE (Hyperscan cache file; the first build takes ~2 minutes),
SA_RULES_DIR (default /usr/share/spamassassin).
"""

import collections
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MSG_DIR = HERE / "messages"
SA_DRIVER = HERE / "sa_hits.pl"
RULES_DIR = Path(os.environ.get("SA_RULES_DIR", "/usr/share/spamassassin"))
BAR = 0.99
REGEX_TYPES = {"header", "body", "rawbody", "full", "uri"}
SLUICE_IN_EFFECT = {"hyperscan", "pcre2-gated", "pcre2-prefilter", "pcre2-always"}

# Headers SpamAssassin synthesises from its Received-header parser and its
# trust path (trusted_networks / internal_networks). sluice does not build
# them (docs/SCAN-RULES.md: "Not synthesised"), so a rule on them sees an
# absent header in sluice: a known, documented gap, not a matching
# difference. Excluded, and counted in the report.
PSEUDO_HEADERS = {
    "X-Spam-Relays-External": "built by SA's Received parser (relay list), not synthesised by sluice",
    "X-Spam-Relays-Untrusted": "built by SA's Received parser (relay list), not synthesised by sluice",
    "X-Spam-Relays-Trusted": "built by SA's Received parser (relay list), not synthesised by sluice",
    "X-Spam-Relays-Internal": "built by SA's Received parser (relay list), not synthesised by sluice",
    "ALL-EXTERNAL": "headers added by external relays only (SA's trust path), not modelled by sluice",
    "ALL-UNTRUSTED": "headers added by untrusted relays only (SA's trust path), not modelled by sluice",
    "ALL-TRUSTED": "headers added by trusted relays only (SA's trust path), not modelled by sluice",
    "ALL-INTERNAL": "headers added by internal relays only (SA's trust path), not modelled by sluice",
}
HEADER_RULE = re.compile(r"^\s*header\s+(\w+)\s+([A-Za-z0-9_.-]+)")


def need(cond, why):
    if not cond:
        pytest.skip(why)


def pseudo_header_rules():
    """rule name -> reason, for header rules on SA-synthesised headers (the
    last definition of a name wins, as in both engines)."""
    out = {}
    for cf in sorted(RULES_DIR.glob("*.cf")):
        for line in cf.read_text(encoding="utf-8", errors="replace").splitlines():
            m = HEADER_RULE.match(line)
            if not m:
                continue
            name, hdr = m.group(1), m.group(2).split(":")[0]
            if hdr in PSEUDO_HEADERS:
                out[name] = "header %s: %s" % (hdr, PSEUDO_HEADERS[hdr])
            else:
                out.pop(name, None)
    return out


def run(argv, env=None, timeout=1100):
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError("%s: exit %d\n%s" % (argv[0], p.returncode, p.stderr[-3000:]))
    return p.stdout


def sluice_rule_list(tool, cache):
    """name -> (type, class) from sluice-rules -l; the class field may carry
    how the rule runs after a comma ("hyperscan,deferred-squeeze"), which
    does not change whether it is in effect."""
    out = {}
    for line in run([tool, "-r", str(RULES_DIR), "-c", cache, "-l"]).splitlines():
        f = line.split()
        if len(f) >= 3:
            out[f[0]] = (f[1], f[2].split(",")[0])
    return out


def sluice_hits(helper, cache, msgs):
    hits = {}
    for line in run([helper, "-r", str(RULES_DIR), "-c", cache] + [str(m) for m in msgs]).splitlines():
        f = line.split("\t")
        if f[0] == "hit":
            hits[f[1]] = set(x for x in f[2].split(",") if x)
    return hits


def sluice_scored(tool, cache, msgs):
    """The scored rules per message from sluice-rules -s (its tests= list)."""
    argv = [tool, "-r", str(RULES_DIR), "-c", cache]
    for m in msgs:
        argv += ["-s", str(m)]
    out = {}
    for line in run(argv).splitlines():
        m = re.match(r"^(\S+) -?[\d.]+ \S+ tests=(\S*)$", line)
        if m:
            out[m.group(1)] = set(x for x in m.group(2).split(",") if x)
    return out


def sa_run(msgs):
    """(score set, {name: type} SA runs, {msg: hits}) from sa_hits.pl."""
    state = tempfile.mkdtemp(prefix="sluice-sa-")
    try:
        env = dict(os.environ, HOME=state, LANG="C", LC_ALL="C")
        out = run(["/usr/bin/perl", str(SA_DRIVER), state] + [str(m) for m in msgs], env=env)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    sset, rules, hits = None, {}, {}
    for line in out.splitlines():
        f = line.split("\t")
        if f[0] == "set":
            sset = int(f[1])
        elif f[0] == "rule":
            rules[f[2]] = f[1]
        elif f[0] == "hit":
            hits[f[1]] = set(x for x in f[2].split(",") if x)
    return sset, rules, hits


def agreement(msgs, rules, sl, sa):
    both = either = 0
    only_sa = collections.defaultdict(list)
    only_sl = collections.defaultdict(list)
    for m in msgs:
        a = sl[str(m)] & rules
        b = sa[str(m)] & rules
        both += len(a & b)
        either += len(a | b)
        for r in b - a:
            only_sa[r].append(m.name)
        for r in a - b:
            only_sl[r].append(m.name)
    return both, either, only_sa, only_sl


def test_sa_agreement():
    tool = os.environ.get("SLUICE_RULES")
    helper = os.environ.get("SLUICE_SA_HITS")
    need(tool and os.access(tool, os.X_OK), "SLUICE_RULES (sluice-rules) not set")
    need(helper and os.access(helper, os.X_OK), "SLUICE_SA_HITS (sa_agree_hits) not set")
    need((RULES_DIR / "72_active.cf").exists(), "%s: Debian spamassassin rules not installed" % RULES_DIR)
    need(subprocess.run(["/usr/bin/perl", "-MMail::SpamAssassin", "-e", "1"],
                        capture_output=True).returncode == 0, "Mail::SpamAssassin not installed")
    cache = (os.environ.get("SLUICE_HS_SA_CACHE") or os.environ.get("SLUICE_RULES_CACHE")
             or os.path.join(tempfile.gettempdir(), "sluice-sa-agree.cache"))
    msgs = sorted(p for p in MSG_DIR.iterdir() if p.is_file() and p.suffix == ".eml")
    assert len(msgs) >= 20, "message set too small: %d" % len(msgs)

    sl_rules = sluice_rule_list(tool, cache)           # first: builds or loads the cache
    sl = sluice_hits(helper, cache, msgs)
    scored = sluice_scored(tool, cache, msgs)
    sset, sa_rules, sa = sa_run(msgs)
    assert sset == 0, "SpamAssassin used score set %s, want 0 (no network, no Bayes)" % sset
    assert len(sa_rules) > 1000 and len(sl_rules) > 1000
    assert set(sl) == set(sa) == set(str(m) for m in msgs)

    # the helper reads the engine as sluice-rules does: same scored hits
    for m in msgs:
        mine = set(r for r in sl[str(m)] if not r.startswith("__"))
        assert mine == scored[str(m)] - {"GTUBE"} or mine == scored[str(m)], \
            "%s: sa_agree_hits %s, sluice-rules %s" % (m.name, sorted(mine), sorted(scored[str(m)]))

    # the compared rule set, and what is left out (with reasons)
    sl_regex = {n for n, (t, c) in sl_rules.items() if t in REGEX_TYPES and c in SLUICE_IN_EFFECT}
    excluded = {}
    for n, (t, c) in sl_rules.items():
        if t in REGEX_TYPES and c not in SLUICE_IN_EFFECT and n in sa_rules:
            excluded[n] = "sluice class %s: not run by sluice (%s)" % (
                c, "Hyperscan and PCRE2 both refused it" if c == "failed" else
                "score 0 in set 0" if c == "score0" else "did not parse")
    for n in sl_regex - set(sa_rules):
        excluded[n] = "not run by SpamAssassin (score 0 in set 0, or defined in a block " \
            "SpamAssassin skips)"
    for n in set(sa_rules) - set(sl_rules):
        excluded[n] = "not loaded by sluice (in an ifplugin block for a plugin sluice does " \
            "not load, or outside the rule directory: /etc/spamassassin)"
    for n in sl_regex & set(sa_rules):
        if sl_rules[n][0] != sa_rules[n]:
            excluded[n] = "type differs: sluice %s, SpamAssassin %s" % (sl_rules[n][0], sa_rules[n])
    pseudo = {n: why for n, why in pseudo_header_rules().items() if n in sl_regex and n in sa_rules}
    excluded.update(pseudo)
    compared = (sl_regex & set(sa_rules)) - set(excluded)

    both, either, only_sa, only_sl = agreement(msgs, compared, sl, sa)
    ratio = both / either if either else 1.0
    pb, pe, _, _ = agreement(msgs, compared | set(pseudo), sl, sa)
    unrun = {n for n, v in excluded.items() if v.startswith("sluice class")}
    ub, ue, _, _ = agreement(msgs, compared | unrun, sl, sa)

    print()
    print("== sluice vs SpamAssassin (%s), %d messages, score set %d" % (RULES_DIR, len(msgs), sset))
    print("rules: sluice regex in effect %d, SpamAssassin regex run %d, compared %d" % (
        len(sl_regex), len(sa_rules), len(compared)))
    print("compared by type: %s" % ", ".join("%s %d" % (t, n) for t, n in sorted(
        collections.Counter(sa_rules[r] for r in compared).items())))
    why = collections.Counter(v if not v.startswith("header ") else v.split(":", 1)[1].strip()
                              for v in excluded.values())
    print("excluded (%d rules):" % len(excluded))
    for w, n in why.most_common():
        print("  %4d  %s" % (n, w))
    for n in sorted(excluded):
        if excluded[n].startswith(("sluice class", "type differs")):
            print("    %s: %s" % (n, excluded[n]))
    print("  pseudo-header rules: %s" % " ".join(sorted(pseudo)))
    print("agreement: %d of %d (message, rule) pairs hit by either engine: %.2f%% (bar %.0f%%)" % (
        both, either, 100 * ratio, 100 * BAR))
    print("  with the %d pseudo-header rules included: %d of %d: %.2f%%" % (
        len(pseudo), pb, pe, 100 * pb / pe if pe else 100))
    print("  with the %d rules sluice does not run included: %d of %d: %.2f%%" % (
        len(unrun), ub, ue, 100 * ub / ue if ue else 100))
    print("per message (both / sluice only / SpamAssassin only):")
    for m in msgs:
        a, b = sl[str(m)] & compared, sa[str(m)] & compared
        print("  %-40s %4d %4d %4d" % (m.name, len(a & b), len(a - b), len(b - a)))
    dis = sorted(set(only_sa) | set(only_sl))
    print("disagreements, per rule (%d rules):" % len(dis))
    for r in dis:
        t, c = sl_rules[r]
        if only_sa.get(r):
            print("  %-32s %-7s %-15s SpamAssassin only: %s" % (r, t, c, " ".join(only_sa[r])))
        if only_sl.get(r):
            print("  %-32s %-7s %-15s sluice only:       %s" % (r, t, c, " ".join(only_sl[r])))
    assert ratio >= BAR, "agreement %.2f%% < %.0f%%" % (100 * ratio, 100 * BAR)
