package turnserver

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// addrEvents subscribes to the kernel's address changes (RTMGRP_IPV4_IFADDR,
// RTMGRP_IPV6_IFADDR) in the network namespace of the calling thread, so an
// address added to the host is protected within milliseconds, not at the
// next periodic re-read. changed gets a (coalesced) value after each
// message; stop closes the socket and waits for its reader.
func addrEvents() (changed <-chan struct{}, stop func(), err error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nil, fmt.Errorf("turnserver: netlink socket: %w", err)
	}
	sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR}
	if err := unix.Bind(fd, sa); err != nil {
		_ = unix.Close(fd)
		return nil, nil, fmt.Errorf("turnserver: netlink bind: %w", err)
	}
	// Non-blocking, so the runtime poller waits for it and Close wakes
	// the reader.
	f := os.NewFile(uintptr(fd), "netlink-route")
	ch := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 32<<10)
		for {
			_, err := f.Read(buf)
			// ENOBUFS: events were lost; re-read all the same. Any other
			// error ends the subscription: the periodic re-read remains.
			if err != nil && !errors.Is(err, unix.ENOBUFS) {
				return
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return ch, func() { _ = f.Close(); <-done }, nil
}
