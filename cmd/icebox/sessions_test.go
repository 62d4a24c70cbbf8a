package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSessionsCLI: `icebox sessions` lists a running icebox's allocations
// (table and JSON, filtered), kills them by ID and by call, and overrides
// a user's bandwidth limit; turn.quotas.max_bps_per_user reaches the relay
// (a burst above it is dropped and counted).
func TestSessionsCLI(t *testing.T) {
	t.Parallel()
	const adminTok, aliceTok = "sessions-admin-token-0123", "sessions-alice-token-0123"
	tokens := func(tok, user string) string {
		sum := sha256.Sum256([]byte(tok))
		return hex.EncodeToString(sum[:]) + ":" + user
	}
	env := "ICEBOX_AUTH_STATIC_TOKENS=" + tokens(adminTok, "ops") + ":admin," + tokens(aliceTok, "alice")
	cfg := testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{})
	cfg = strings.Replace(cfg, "    total: 1000\n",
		"    total: 1000\n    max_bps_per_user: 2000000\n    bandwidth_burst: 100ms\n", 1)
	in := startIcebox(t, cfg, env)
	base := in.httpURL("")
	sessions := func(args ...string) (string, string, int) {
		t.Helper()
		return runIcebox(t, 10*time.Second, append(append([]string{"sessions"}, args...), "--url", base, "--token", adminTok)...)
	}

	creds := func(user, call string) credsOut {
		out, errOut, code := runIcebox(t, exitTimeout, "creds", "--config", in.cfgPath, "--user", user, "--call", call)
		if code != 0 {
			t.Fatalf("creds: exit %d: %s", code, errOut)
		}
		var c credsOut
		if err := json.Unmarshal([]byte(out), &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	const callA, callB = "5d1c0e6a-sessions-a", "5d1c0e6a-sessions-b"
	ac := creds("alice", callA)
	alice, err := allocate(t, "udp", in.turnAddr(), nil, ac.Username, ac.Password)
	if err != nil {
		t.Fatal(err)
	}
	peer := listenPeer(t)
	relayRoundTrip(t, alice, peer)
	bc := creds("bob", callB)
	for tr, addr := range map[string]string{"udp": in.turnAddr(), "tcp": in.turnTCPAddr()} {
		if _, err := allocate(t, tr, addr, nil, bc.Username, bc.Password); err != nil {
			t.Fatal(err)
		}
	}

	type row struct {
		ID, User, Transport string
		CallID              string `json:"call_id"`
		ClientAddr          string `json:"client_addr"`
		RelayAddr           string `json:"relay_addr"`
		PacketsToPeer       int    `json:"packets_to_peer"`
	}
	list := func(args ...string) []row {
		t.Helper()
		out, errOut, code := sessions(append([]string{"list", "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("sessions list: exit %d: %s", code, errOut)
		}
		var resp struct{ Allocations []row }
		if err := json.Unmarshal([]byte(out), &resp); err != nil {
			t.Fatalf("sessions list --json printed %q: %v", out, err)
		}
		return resp.Allocations
	}
	all := list()
	if len(all) != 3 {
		t.Fatalf("sessions list: %d allocations, want 3: %+v", len(all), all)
	}
	var aliceRow row
	for _, r := range all {
		if r.User == "alice" {
			aliceRow = r
		}
	}
	if aliceRow.CallID != callA || aliceRow.Transport != "udp" || aliceRow.RelayAddr != alice.relay.LocalAddr().String() ||
		!strings.HasPrefix(aliceRow.ClientAddr, "127.0.0.1:") || aliceRow.PacketsToPeer < 1 || len(aliceRow.ID) != 24 {
		t.Fatalf("alice's row: %+v", aliceRow)
	}
	if got := list("--call", callB); len(got) != 2 || got[0].User != "bob" || got[1].User != "bob" {
		t.Fatalf("sessions list --call %s: %+v", callB, got)
	}
	table, _, code := sessions("list", "--user", "alice")
	if code != 0 || !strings.Contains(table, aliceRow.ID) || strings.Contains(table, "bob") ||
		!strings.Contains(table, "1 allocation(s)") || !strings.HasPrefix(table, "ID ") {
		t.Fatalf("sessions list --user alice (exit %d):\n%s", code, table)
	}

	// The per-user limit is on: a burst far above it is cut, and counted.
	payload := make([]byte, 1000)
	for range 300 {
		if _, err := alice.relay.WriteTo(payload, peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	if !waitFor(5*time.Second, func() bool { return droppedBy(in.metrics(t), "user") > 0 }) {
		t.Fatal("a 300 kB burst over a 2 Mbit/s per-user limit dropped nothing")
	}

	// Bandwidth overrides.
	out, errOut, code := sessions("bandwidth", "alice", "--set", "1000000")
	if code != 0 || !strings.Contains(out, `"max_bps":1000000`) || !strings.Contains(out, `"override":true`) {
		t.Fatalf("sessions bandwidth --set: exit %d: %s %s", code, out, errOut)
	}
	out, _, _ = sessions("bandwidth", "alice", "--clear")
	if !strings.Contains(out, `"max_bps":2000000`) || !strings.Contains(out, `"override":false`) {
		t.Fatalf("sessions bandwidth --clear: %s", out)
	}

	// Kills: an unknown ID, alice's by ID, bob's by call.
	if _, errOut, code := sessions("kill", "0123456789abcdef01234567"); code == 0 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("kill of an unknown ID: exit %d: %s", code, errOut)
	}
	if out, _, code := runIcebox(t, 10*time.Second, "sessions", "--help"); code != 0 || !strings.Contains(out, "icebox sessions list") {
		t.Fatalf("sessions --help: exit %d: %s", code, out)
	}
	if _, _, code := sessions("kill"); code != exitConfig {
		t.Fatalf("kill without a target: exit %d, want %d", code, exitConfig)
	}
	if out, errOut, code := sessions("kill", aliceRow.ID); code != 0 || !strings.Contains(out, "killed "+aliceRow.ID) {
		t.Fatalf("kill %s: exit %d: %s %s", aliceRow.ID, code, out, errOut)
	}
	if out, errOut, code := sessions("kill", "--call", callB); code != 0 || !strings.Contains(out, "killed 2 allocation(s)") {
		t.Fatalf("kill --call: exit %d: %s %s", code, out, errOut)
	}
	if got := list(); len(got) != 0 {
		t.Fatalf("after the kills: %+v", got)
	}
	// The killed allocation relays nothing more: the peer hears nothing of
	// what alice sends (pion deleted the allocation with its socket).
	_ = peer.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	for {
		if _, _, err := peer.ReadFrom(make([]byte, 1500)); err != nil {
			break // drained what came before the kill
		}
	}
	_, _ = alice.relay.WriteTo([]byte("after the kill"), peer.LocalAddr())
	_ = peer.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, _, err := peer.ReadFrom(make([]byte, 1500)); err == nil {
		t.Fatalf("the peer got %d bytes through a killed allocation", n)
	}
	m := in.metrics(t)
	if m["icebox_turn_allocations_killed_total"] != 3 {
		t.Fatalf("allocations_killed_total = %v, want 3", m["icebox_turn_allocations_killed_total"])
	}

	// The API: a kill names its target; only admins see or kill.
	req, _ := http.NewRequest(http.MethodDelete, in.httpURL("/admin/allocations"), nil)
	req.Header.Set("Authorization", "Bearer "+adminTok)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("DELETE /admin/allocations without a filter: %v %v", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}
	for _, body := range []string{`{"max_bps":-1}`, `{"max_bps":7}`, `{}`, `{"max_bps":"1M"}`} {
		req, _ := http.NewRequest(http.MethodPut, in.httpURL("/admin/users/alice/bandwidth"), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminTok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("PUT bandwidth %s: %d, want 400", body, resp.StatusCode)
		}
	}
	if code, _ := httpGet(t, in.httpURL("/admin/allocations"), aliceTok); code != http.StatusForbidden {
		t.Fatalf("GET /admin/allocations as a user: %d, want 403", code)
	}
	if code, body := httpGet(t, in.httpURL("/admin/users/%40carol%3Aexample.org/bandwidth"), adminTok); code != http.StatusOK ||
		!strings.Contains(string(body), `"user":"@carol:example.org"`) {
		t.Fatalf("GET bandwidth of an escaped Matrix ID: %d %s", code, body)
	}
}

// droppedBy sums icebox_turn_bandwidth_dropped_total{limit=limit}.
func droppedBy(m map[string]float64, limit string) float64 {
	var n float64
	for k, v := range m {
		if strings.HasPrefix(k, "icebox_turn_bandwidth_dropped_total{") && strings.Contains(k, `limit="`+limit+`"`) {
			n += v
		}
	}
	return n
}
