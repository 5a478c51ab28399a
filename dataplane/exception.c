/*
 * exception.c - the TAP interface of the exception path; see exception.h.
 */
#include "dataplane/exception.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_tun.h>

static int
fail(int fd, int sock, int e, char *err, size_t errlen, const char *name, const char *what)
{
	snprintf(err, errlen, "exception interface %s: %s: %s", name, what, strerror(e));
	if (sock >= 0)
		close(sock);
	if (fd >= 0)
		close(fd);
	return -e;
}

int
dp_exc_tap_open(const char *name, const uint8_t mac[6], unsigned mtu, char *err, size_t errlen)
{
	struct ifreq ifr;
	if (name == NULL || name[0] == '\0' || strlen(name) >= IFNAMSIZ || strchr(name, '/') != NULL ||
	    strchr(name, ' ') != NULL || strchr(name, ':') != NULL)
		return fail(-1, -1, EINVAL, err, errlen, name ? name : "(none)",
		            "not an interface name (1-15 characters, no '/', ':' or blank)");
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return fail(-1, -1, errno, err, errlen, name, "open /dev/net/tun");
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	memcpy(ifr.ifr_name, name, strlen(name));
	if (ioctl(fd, TUNSETIFF, &ifr) < 0)
		return fail(fd, -1, errno, err, errlen, name, "TUNSETIFF");
	int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return fail(fd, -1, errno, err, errlen, name, "socket");
	memset(&ifr.ifr_ifru, 0, sizeof(ifr.ifr_ifru));
	ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
	memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
	if (ioctl(sock, SIOCSIFHWADDR, &ifr) < 0)
		return fail(fd, sock, errno, err, errlen, name, "set MAC address");
	memset(&ifr.ifr_ifru, 0, sizeof(ifr.ifr_ifru));
	ifr.ifr_mtu = (int)mtu;
	if (mtu != 0 && ioctl(sock, SIOCSIFMTU, &ifr) < 0)
		return fail(fd, sock, errno, err, errlen, name, "set MTU");
	memset(&ifr.ifr_ifru, 0, sizeof(ifr.ifr_ifru));
	if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
		return fail(fd, sock, errno, err, errlen, name, "get flags");
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)
		return fail(fd, sock, errno, err, errlen, name, "set up");
	close(sock);
	return fd;
}

int
dp_exc_tap_write(int fd, const uint8_t *frame, size_t len)
{
	ssize_t n = write(fd, frame, len);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

ssize_t
dp_exc_tap_read(int fd, uint8_t *buf, size_t cap)
{
	ssize_t n = read(fd, buf, cap);
	if (n >= 0)
		return n;
	return errno == EAGAIN || errno == EINTR ? 0 : -errno;
}
