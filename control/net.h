/*
 * net.h - client addresses as the policy checks see them: every address as
 * 16 bytes (IPv4 as ::ffff:a.b.c.d), and lists of networks to match them
 * against (rbl.skip, greylist.skip). Implemented in config.c, which parses
 * the lists.
 */
#ifndef CTL_NET_H
#define CTL_NET_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define CTL_NETS_MAX 64

struct ctl_net {
	uint8_t addr[16];              /* IPv4 as ::ffff:a.b.c.d */
	unsigned prefix;               /* of the 128 bits */
};

/* sa into addr; false for a family with no address (unix). */
bool ctl_addr16(const struct sockaddr *sa, uint8_t addr[16]);
/* addr is in one of the n networks. */
bool ctl_nets_match(const struct ctl_net *nets, unsigned n, const uint8_t addr[16]);
/* addr is an IPv4 address (::ffff:a.b.c.d). */
bool ctl_addr16_is_v4(const uint8_t addr[16]);

#endif
