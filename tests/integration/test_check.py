"""sluiced -c FILE --check: 0 for a good file, FILE:LINE: reason otherwise."""

import socket
import subprocess

import pytest

from conftest import SRCDIR, Sluice, sluiced_path


def check(path):
    p = subprocess.run([sluiced_path(), "-c", str(path), "--check"],
                       capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    return p.returncode, p.stderr.decode("utf-8", "replace") + p.stdout.decode("utf-8", "replace")


def base_lines(tmp_path, tls_cert):
    s = Sluice(tmp_path / "base", tls_cert)
    return s, s.config_text().splitlines()


def test_good_config(tmp_path, tls_cert):
    s, _ = base_lines(tmp_path, tls_cert)
    rc, out = check(s.config_path)
    assert rc == 0, f"got exit {rc} for a good config, want 0: {out}"
    # --check only validates: it must not have taken the port.
    with socket.socket() as so:
        so.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        so.bind(("127.0.0.1", s.port))


def insert_after(lines, anchor, new):
    i = next(i for i, l in enumerate(lines) if l.startswith(anchor))
    out = lines[:i + 1] + [new] + lines[i + 1:]
    return out, i + 2  # 1-based line number of the new line


def replace_line(lines, prefix, new):
    i = next(i for i, l in enumerate(lines) if l.strip().startswith(prefix))
    out = list(lines)
    out[i] = new
    return out, i + 1


CASES = {
    "unknown-key": lambda L: insert_after(L, "smtp:", "  bogus_key: 1"),
    "unknown-section": lambda L: insert_after(L, "log:", "frobnicate: {a: 1}"),
    "bad-size": lambda L: replace_line(L, "message_size_max:", "  message_size_max: 10q"),
    "bad-number": lambda L: replace_line(L, "recipients_max:", "  recipients_max: many"),
    "bad-duration": lambda L: replace_line(L, "greet_pause:", "  greet_pause: soon"),
    "bad-port": lambda L: replace_line(L, "- address:", "  - address: 127.0.0.1:99999"),
    "bad-bool": lambda L: replace_line(L, "proxy_protocol:", "    proxy_protocol: perhaps"),
    "bad-transport": lambda L: replace_line(L, "server:", "server: {hostname: mx.test.example, workers: 1, transport: carrier-pigeon}"),
    "missing-cert": lambda L: replace_line(L, "tls:", "tls: {certificate: /nonexistent/cert.pem, key: /nonexistent/key.pem}"),
    "bad-delivery": lambda L: replace_line(L, "delivery:", "delivery: {method: teleport, maildir: /tmp/x, retry_min: 1s}"),
    "bad-shed": lambda L: (L + ["filter: {shed_percent: 7}"], len(L) + 1),
    "bad-ascii-share": lambda L: (L + ["filter: {ascii_share: 1.5}"], len(L) + 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config(tmp_path, tls_cert, case):
    s, lines = base_lines(tmp_path, tls_cert)
    lines, n = CASES[case](lines)
    bad = tmp_path / f"{case}.conf"
    bad.write_text("\n".join(lines) + "\n")
    rc, out = check(bad)
    assert rc != 0, f"got exit 0 for {case} at line {n}, want non-zero\n" + "\n".join(lines)
    want = f"{bad}:{n}:"
    assert want in out, f"got {out.strip()!r}, want '{want} reason'"
    line = next(l for l in out.splitlines() if want in l)
    assert len(line.split(want, 1)[1].strip()) > 3, f"got {line!r}, want a reason after {want}"


def test_yaml_syntax_error(tmp_path, tls_cert):
    s, lines = base_lines(tmp_path, tls_cert)
    lines, n = insert_after(lines, "smtp:", '  banner: "unterminated')
    bad = tmp_path / "syntax.conf"
    bad.write_text("\n".join(lines) + "\n")
    rc, out = check(bad)
    assert rc != 0, "got exit 0 for a YAML syntax error, want non-zero"
    assert f"{bad}:" in out, f"got {out.strip()!r}, want '{bad}:LINE: reason'"


def test_missing_file(tmp_path):
    rc, out = check(tmp_path / "nope.conf")
    assert rc != 0, "got exit 0 for a missing config file, want non-zero"
    assert "nope.conf" in out, f"got {out.strip()!r}, want the file named"


def test_shipped_config(tmp_path):
    conf = SRCDIR / "etc" / "sluice.conf"
    assert conf.is_file(), f"got no {conf}, want the shipped configuration"
    rc, out = check(conf)
    assert rc == 0, f"got exit {rc} for {conf}, want 0: {out}"
