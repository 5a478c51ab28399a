/*
 * exception.h - the exception path's Linux side: a TAP interface through
 * which frames the userspace stack does not serve (stack.h, io->exception)
 * reach the kernel, and the kernel's frames come back to be sent on the
 * port. Knows nothing of DPDK; the DPDK binding (dpdk.c) owns the one tap
 * of a port.
 *
 * Contract
 *   dp_exc_tap_open() creates (or attaches to) the TAP interface `name`
 *   (no packet-information header, no offloads: each read or write is one
 *   whole Ethernet frame with its checksums done), gives it `mac` and `mtu`,
 *   brings it up and returns a non-blocking descriptor, or -errno with a
 *   reason in err. Start-up only (it calls ioctl and may fail for want of
 *   CAP_NET_ADMIN or /dev/net/tun). The interface lives as long as the
 *   descriptor: close() it to remove it.
 *   dp_exc_tap_write() and dp_exc_tap_read() never block: one write or read
 *   system call each. Any thread may write (the kernel takes each frame
 *   whole); one thread at a time reads.
 */
#ifndef DP_EXCEPTION_H
#define DP_EXCEPTION_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

int dp_exc_tap_open(const char *name, const uint8_t mac[6], unsigned mtu, char *err,
                    size_t errlen);
/* 0, or -errno (-EAGAIN: the kernel's queue is full; the frame is lost). */
int dp_exc_tap_write(int fd, const uint8_t *frame, size_t len);
/* One frame into buf: its length, 0 if none is waiting, -errno. A frame
 * longer than cap is cut (the caller drops what is longer than it sends). */
ssize_t dp_exc_tap_read(int fd, uint8_t *buf, size_t cap);

#endif
