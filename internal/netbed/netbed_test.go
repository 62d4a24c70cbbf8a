//go:build linux

package netbed

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// TestNetbedMasquerade builds server <- NAT <- client and checks that the
// server sees the NAT's address, that the server cannot reach the LAN, and
// that everything is gone after cleanup.
func TestNetbedMasquerade(t *testing.T) {
	t.Parallel()
	var names []string
	t.Run("bed", func(t *testing.T) {
		b := New(t)
		srv, nat, cli := b.Namespace("srv"), b.Namespace("nat"), b.Namespace("cli")
		names = []string{srv.Name, nat.Name, cli.Name}
		Link(srv, "eth0", "198.18.0.10/24", nat, "wan", "198.18.0.21/24")
		Link(nat, "lan", "198.19.1.1/24", cli, "eth0", "198.19.1.10/24")
		cli.DefaultRoute("198.19.1.1")
		nat.Masquerade("wan")

		var server net.PacketConn
		if err := srv.Do(func() (err error) {
			server, err = net.ListenPacket("udp4", "198.18.0.10:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		var client net.PacketConn
		if err := cli.Do(func() (err error) {
			client, err = net.ListenPacket("udp4", "0.0.0.0:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		if _, err := client.WriteTo([]byte("hi"), server.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 16)
		n, from, err := server.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "hi" {
			t.Fatalf("server read %q from %v: %v", buf[:n], from, err)
		}
		if ip := from.(*net.UDPAddr).IP.String(); ip != "198.18.0.21" {
			t.Errorf("server saw the client as %s, want the NAT's 198.18.0.21", ip)
		}
		if out, err := srv.Try("ip", "route", "get", "198.19.1.10"); err == nil {
			t.Errorf("the server has a route to the LAN: %s", out)
		}
		out := cli.Run("ip", "-4", "-o", "addr", "show", "eth0")
		if !strings.Contains(out, "198.19.1.10/24") {
			t.Errorf("client address: %s", out)
		}
	})
	for _, n := range names {
		if _, err := os.Stat("/run/netns/" + n); err == nil {
			t.Errorf("namespace %s still exists after cleanup", n)
		}
	}
}
