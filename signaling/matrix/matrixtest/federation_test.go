package matrixtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestFederation: two homeservers of StartFederation serve federation over
// TLS with certificates of the test CA (a client that trusts only the
// system roots is refused), and an encrypted room of a user on the first
// carries a message, decrypted, to a user on the second. A namespace
// attached to the bed's bridge reaches both client APIs.
func TestFederation(t *testing.T) {
	begin := time.Now()
	fed := StartFederation(t, 2)
	a, b := fed.Homeservers[0], fed.Homeservers[1]
	if a.ServerName() != "198.18.0.1" || b.ServerName() != "198.18.0.2" {
		t.Fatalf("server names %q, %q", a.ServerName(), b.ServerName())
	}
	if !strings.HasPrefix(a.URL(), "http://127.0.0.1:") {
		t.Errorf("URL() = %q, want the forwarder on 127.0.0.1", a.URL())
	}

	// b's federation port, from a's namespace: the test CA verifies it.
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(fed.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("no certificate in %s", fed.CAFile)
	}
	var keys struct {
		ServerName string `json:"server_name"`
	}
	if err := fed.getTLS(0, b.ServerName(), pool, "/_matrix/key/v2/server", &keys); err != nil {
		t.Fatalf("b's server keys over TLS with the test CA: %v", err)
	}
	if keys.ServerName != b.ServerName() {
		t.Errorf("b's keys name %q, want %q", keys.ServerName, b.ServerName())
	}
	var unknown x509.UnknownAuthorityError
	if err := fed.getTLS(0, b.ServerName(), nil, "/_matrix/key/v2/server", &keys); !errors.As(err, &unknown) {
		t.Errorf("with the system roots, b's federation port gave %v; want an unknown authority", err)
	}

	checkAttachNamespace(t, fed)

	aliceID, _, _ := a.Register(t, "alice", "alice-password", false)
	bobID, _, _ := b.Register(t, "bob", "bob-password", false)
	if bobID != "@bob:198.18.0.2" {
		t.Errorf("bob is %q", bobID)
	}
	alice := a.NewE2EEUser(t, aliceID, "alice-password")
	bob := b.NewE2EEUser(t, bobID, "bob-password")
	setup := time.Now()
	room := alice.CreateEncryptedRoom(t, bobID)
	bob.Join(t, room)
	alice.WaitJoined(t, room, bobID, fedTimeout)
	sent := time.Now()
	evID := alice.Send(t, room, "m.call.invite", json.RawMessage(fedInvite))
	ev := bob.WaitEvent(t, room, func(ev Event) bool { return ev.ID == evID }, fedTimeout)
	var got, want any
	if err := json.Unmarshal(ev.Content, &got); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal([]byte(fedInvite), &want)
	if !ev.Encrypted || ev.Sender != aliceID || !reflect.DeepEqual(got, want) {
		t.Errorf("bob received %s from %s (encrypted %v); want %s from %s, encrypted", ev.Content, ev.Sender, ev.Encrypted, fedInvite, aliceID)
	}
	t.Logf("setup %v, room and join %v, encrypted event across federation %v",
		setup.Sub(begin).Round(time.Millisecond), sent.Sub(setup).Round(time.Millisecond), time.Since(sent).Round(time.Millisecond))
}

// fedInvite is an m.call.invite's content.
const fedInvite = `{"call_id":"c-secret-123","party_id":"p1","version":"1","lifetime":60000,"offer":{"type":"offer","sdp":"v=0 SECRET-SDP"}}`

const fedTimeout = 30 * time.Second

// getTLS GETs path from the federation port of serverName, dialled from
// homeserver from's namespace, verifying its certificate against roots (nil: the system's).
func (f *Federation) getTLS(from int, serverName string, roots *x509.CertPool, path string, out any) error {
	tr := &http.Transport{
		DialContext:     f.dialFrom[from],
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: serverName},
	}
	defer tr.CloseIdleConnections()
	cli := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+net.JoinHostPort(serverName, federationPort)+path, nil)
	if err != nil {
		return err
	}
	resp, err := cli.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status + ": " + string(body))
	}
	return json.Unmarshal(body, out)
}
