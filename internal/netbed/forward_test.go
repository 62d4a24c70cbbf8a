//go:build linux

package netbed

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestForward: a connection to the forwarder's loopback address reaches a
// server that listens only inside a namespace; each direction is
// half-closed on its own (the server's reply follows the client's EOF);
// a target nobody listens on resets the client; the listener is gone
// after cleanup.
func TestForward(t *testing.T) {
	t.Parallel()
	var addr string
	t.Run("bed", func(t *testing.T) {
		b := New(t)
		ns := b.Namespace("srv")
		var ln net.Listener
		if err := ns.Do(func() (err error) {
			ln, err = net.Listen("tcp", "127.0.0.1:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			got, _ := io.ReadAll(c) // until the client's half-close
			_, _ = c.Write(append([]byte("echo:"), got...))
		}()
		addr = ns.Forward(ln.Addr().String())

		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(c); err != nil || string(got) != "echo:hi" {
			t.Errorf("read %q, %v; want \"echo:hi\"", got, err)
		}

		nobody := ns.Forward("127.0.0.1:1")
		c2, err := net.DialTimeout("tcp", nobody, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		_ = c2.SetDeadline(time.Now().Add(10 * time.Second))
		if n, err := c2.Read(make([]byte, 1)); err == nil {
			t.Errorf("read %d bytes through a forward to nobody", n)
		}
	})
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("the forwarder %s still accepts after cleanup", addr)
	}
}
