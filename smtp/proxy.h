/*
 * proxy.h - PROXY protocol header parser, versions 1 and 2 (sans-IO).
 *
 * Contract
 *   A listener with proxy_protocol enabled expects one PROXY header before
 *   the first SMTP byte (HAProxy "PROXY protocol" specification). The
 *   transport glue calls smtp_proxy_parse() on the bytes received so far,
 *   from the first byte of the connection, each time more arrive:
 *
 *     > 0      the header is complete and that many bytes belong to it;
 *              *out is filled; SMTP starts at p[ret].
 *     0        every byte so far is a valid prefix of a header: wait for
 *              more (the caller enforces its own timeout and buffer limit;
 *              SMTP_PROXY_MAX bytes always suffice).
 *     -EINVAL  not a valid header (the caller drops the connection). Bytes
 *              that cannot start a header are refused at once, so a client
 *              that speaks SMTP ("EHLO") is rejected without waiting.
 *
 *   *out is written only when the return is > 0. The function is pure: no
 *   allocation, no globals, no I/O; any thread may call it; p is only read.
 *
 *   Version 1: "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" or "PROXY UNKNOWN"
 *   followed by anything up to "\r\n", at most 107 bytes in all. Strict:
 *   single spaces, addresses as inet_pton() takes them for the stated
 *   family, ports decimal 0..65535 without sign or leading zero, only CRLF
 *   ends the line (a bare LF or CR is -EINVAL).
 *   Version 2: the 12-byte signature, version 2, command LOCAL or PROXY,
 *   family INET or INET6 over STREAM. The length must cover the address
 *   block; TLVs after it are skipped unread. LOCAL (any family, including
 *   UNSPEC) and a PROXY over AF_UNIX set local: the connection's real
 *   endpoints stand. PROXY over UNSPEC, DGRAM, or unknown nibbles: -EINVAL.
 *
 *   Addresses come out as sockaddr_in / sockaddr_in6 with ports in network
 *   byte order; when local is true, src and dst are zeroed (AF_UNSPEC).
 */
#ifndef SMTP_PROXY_H
#define SMTP_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define SMTP_PROXY_V1_MAX 107u                 /* incl. CRLF */
#define SMTP_PROXY_V2_MAX (16u + 65535u)       /* fixed part + 16-bit length */
#define SMTP_PROXY_MAX SMTP_PROXY_V2_MAX

struct smtp_proxy_hdr {
	int version;                    /* 1 or 2 */
	bool local;                     /* v2 LOCAL command / v1 "UNKNOWN": keep the real addresses */
	struct sockaddr_storage src, dst;
};

/* >0: header length consumed, *out filled; 0: need more bytes; -EINVAL: not a valid header. */
ssize_t smtp_proxy_parse(const uint8_t *p, size_t n, struct smtp_proxy_hdr *out);

#endif
