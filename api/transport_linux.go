package api

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// deadPeerControl sets TCP_USER_TIMEOUT to DeadPeerTimeout on a socket
// before it connects.
func deadPeerControl(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(DeadPeerTimeout.Milliseconds()))
	})
	if err != nil {
		return err
	}
	return serr
}
