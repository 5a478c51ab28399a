// bench/accept.py: the clients are on loopback; answer the lookup_rdns hook
// ourselves so that Haraka asks no DNS server (Postfix is configured the same
// way with smtpd_peername_lookup = no).
exports.hook_lookup_rdns = function (next) {
    next(OK, 'localhost')
}
