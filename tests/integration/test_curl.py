"""curl's SMTP client (libcurl) against sluiced, plain and STARTTLS."""

import subprocess

from conftest import need, check_received, check_return_path, make_message, same_bytes


def curl(port, msgfile, *extra, rcpts=("carol@test.example",)):
    need("curl", "curl")
    cmd = ["curl", "--silent", "--show-error", "--max-time", "60",
           "--url", f"smtp://127.0.0.1:{port}/curl.test.example",
           "--mail-from", "dave@client.test.example", "--upload-file", str(msgfile)]
    for r in rcpts:
        cmd += ["--mail-rcpt", r]
    cmd += list(extra)
    p = subprocess.run(cmd, capture_output=True, timeout=90)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def test_curl_plain(sluice, tmp_path):
    msg = make_message("from curl", "sent by curl\r\n.leading dot\r\n")
    f = tmp_path / "msg.eml"
    f.write_bytes(msg)
    rc, out = curl(sluice.port, f, rcpts=("carol@test.example", "erin@test.example"))
    assert rc == 0, f"got curl exit {rc}, want 0: {out}"
    m = sluice.wait_for_maildir(1)[0]
    check_return_path(m, "dave@client.test.example")
    check_received(m, helo="curl.test.example", ip="127.0.0.1")
    assert same_bytes(m.original(), msg), f"got {m.original()!r}, want {msg!r}"


def test_curl_starttls(sluice, tmp_path):
    msg = make_message("from curl over tls", "sent by curl with STARTTLS\r\n")
    f = tmp_path / "msg.eml"
    f.write_bytes(msg)
    rc, out = curl(sluice.port, f, "--ssl-reqd", "-k")
    assert rc == 0, f"got curl exit {rc}, want 0: {out}"
    m = sluice.wait_for_maildir(1)[0]
    check_received(m, helo="curl.test.example", ip="127.0.0.1", rcpt="carol@test.example", tls=True)
    assert same_bytes(m.original(), msg), f"got {m.original()!r}, want {msg!r}"


def test_curl_ssl_reqd_without_tls_fails(sluice_factory, tmp_path):
    """No certificate configured: no STARTTLS, and curl must not fall back."""
    s = sluice_factory(tls=False, proxy=False)
    f = tmp_path / "msg.eml"
    f.write_bytes(make_message("must not arrive"))
    rc, out = curl(s.port, f, "--ssl-reqd", "-k")
    assert rc != 0, "got curl exit 0 with --ssl-reqd and no STARTTLS offered, want a failure"
    assert not s.messages(), "got a message delivered, want none"
