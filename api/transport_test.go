package api

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTransport_DeadPeerBounds: every connection of Cube's transport carries
// TCP_USER_TIMEOUT = DeadPeerTimeout (Linux), with or without a source
// address, and connects are bounded by DialTimeout.
func TestTransport_DeadPeerBounds(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_USER_TIMEOUT is Linux's")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for _, src := range []string{"", "127.0.0.1"} {
		tr := newTransport(src)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := tr.DialContext(ctx, "tcp", ln.Addr().String())
		cancel()
		if err != nil {
			t.Fatalf("source %q: dial: %v", src, err)
		}
		raw, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var got int
		var gerr error
		if err := raw.Control(func(fd uintptr) {
			got, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
		}); err != nil || gerr != nil {
			t.Fatalf("getsockopt: %v %v", err, gerr)
		}
		c.Close()
		if want := int(DeadPeerTimeout.Milliseconds()); got != want {
			t.Errorf("source %q: TCP_USER_TIMEOUT = %d ms, want %d", src, got, want)
		}
	}
}
