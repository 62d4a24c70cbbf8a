package main

// MatrixRTC calls on the livekit-server icebox runs (matrixrtc.livekit.mode:
// managed, issue 16 items 2 and 3), on rtc_bed_test.go's bed after
// manage(): the SFU on icebox's own address, icebox's relay as its TURN
// with credentials scoped to the SFU's media ports, and the SFU killed
// mid-call.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/credentials/keystore"
)

// rtcRestartWait bounds icebox's restart of a killed livekit-server: its
// first backoff (0.5 s) and a start (about 0.1 s idle; 30 s at most
// before the supervisor gives up on it).
const rtcRestartWait = 30 * time.Second

// rtcLiveKitRestarts counts icebox's restarts of its livekit-server.
const rtcLiveKitRestarts = `icebox_livekit_restarts_total`

// scopedRelayCall: two participants, relay-forced, on the managed SFU at
// icebox's own address (groupCall: their relay candidates are icebox's,
// the SFU's candidates icebox's address, and every byte they receive came
// through allocations of the scoped credentials livekit-server minted from
// icebox's SFU secret — an ordinary credential cannot reach a port of
// icebox's host). Then the SFU is killed mid-call (livekit-killed), and
// its TURN secret rotated (sfu-secret-rotated).
func (b *rtcBed) scopedRelayCall(t *testing.T) {
	pages, identity := b.groupCall(t, "managed-relay", 2, true, true)
	t.Run("livekit-killed", func(t *testing.T) { b.liveKitKilled(t, pages, identity) })
	t.Run("sfu-secret-rotated", func(t *testing.T) { b.sfuSecretRotated(t, pages, identity) })
}

// liveKitKilled: livekit-server is killed (SIGKILL, by PID) mid-call.
// icebox starts a new one (icebox_livekit_restarts_total +1, /readyz 200
// again). livekit-client tries to resume, then to join again with its
// JWT; the new server refuses while the room does not exist (rooms are
// made by the authorization service only, and the old one died with the
// old server), and livekit-client gives up. A page whose livekit-client
// gave up joins LiveKit again as a client re-running its join does — a new
// /sfu/get, which makes the room again, and a new connection — with its
// MatrixRTC session and keys unchanged; a page whose livekit-client tries
// after that succeeds by itself. Either counts: the test logs which.
// Media must flow again, relayed as before, decrypted with no E2EE failure
// once the keys reached the new connections.
func (b *rtcBed) liveKitKilled(t *testing.T, pages []rtcPage, identity map[string]string) {
	pid := b.liveKitPID(t)
	if pid == 0 {
		t.Fatal("no livekit-server below icebox")
	}
	m0 := b.metrics(t)
	killedAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 livekit-server (pid %d): %v", pid, err)
	}
	notReady, newPID := false, 0
	if !waitFor(rtcRestartWait, func() bool {
		code := b.readyz()
		notReady = notReady || code != 200
		newPID = b.liveKitPID(t)
		return code == 200 && newPID != 0 && newPID != pid
	}) {
		t.Fatalf("livekit-server not restarted within %v (pid %d, /readyz %d); icebox's output:\n%s", rtcRestartWait, newPID, b.readyz(), tail(b.icebox.out.String(), 30))
	}
	restartedAt := time.Now()
	if d := b.metrics(t)[rtcLiveKitRestarts] - m0[rtcLiveKitRestarts]; d != 1 {
		t.Errorf("icebox_livekit_restarts_total grew by %v, want 1", d)
	}

	how := b.connectedAgain(t, pages, killedAt)
	flowingAt, _ := b.mediaFlows(t, pages, identity, true)
	for _, p := range pages {
		t.Logf("%s after the kill: %s", p.name, how[p.name])
	}
	t.Logf("kill -9 livekit-server (pid %d): new pid %d after %v (/readyz not 200 seen: %v); media flowing again %v after the kill, %v after the restart",
		pid, newPID, restartedAt.Sub(killedAt).Round(time.Millisecond), notReady,
		flowingAt.Sub(killedAt).Round(time.Millisecond), flowingAt.Sub(restartedAt).Round(time.Millisecond))
}

// sfuSecretRotated: POST /admin/keyring/rotate mid-call rotates the SFU
// TURN secret too, and icebox restarts its livekit-server to read the new
// one (a configured keyring, as the bed's, is not rotated: the answer says
// so, and that the SFU secret was). The pages connect again as after a
// kill (liveKitKilled), now relayed with credentials the new server mints
// from the new secret, and media flows again.
func (b *rtcBed) sfuSecretRotated(t *testing.T, pages []rtcPage, identity map[string]string) {
	pid := b.liveKitPID(t)
	secret0, err := os.ReadFile(keystore.SFUSecretPath(b.stateDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pages {
		if !b.mintedWith(t, p.name, secret0) {
			t.Fatalf("%s: LiveKit did not hand out icebox's TURN with a credential of the SFU secret", p.name)
		}
	}
	rotatedAt := time.Now()
	code, body := clientRequest(t, b.hc, http.MethodPost, "http://"+nsHTTP+"/admin/keyring/rotate", rtcAdminTok, map[string]any{})
	// The bed's keyring is configured (not icebox's to rotate): a partial
	// success, 200, saying the SFU secret rotated and the keyring not.
	var rot struct {
		Rotation struct {
			Keyring bool `json:"keyring"`
			SFU     bool `json:"sfu"`
		} `json:"rotation"`
	}
	if err := json.Unmarshal(body, &rot); code != http.StatusOK || err != nil || !rot.Rotation.SFU || rot.Rotation.Keyring {
		t.Errorf("POST /admin/keyring/rotate: %d %s; want 200 saying that the SFU TURN secret was rotated and the keyring not", code, body)
	}
	secret1, err := os.ReadFile(keystore.SFUSecretPath(b.stateDir))
	if err != nil || bytes.Equal(secret0, secret1) {
		t.Fatalf("the SFU secret file after the rotation: unchanged or unreadable (%v)", err)
	}
	newPID := 0
	if !waitFor(rtcRestartWait, func() bool {
		newPID = b.liveKitPID(t)
		return newPID != 0 && newPID != pid && b.readyz() == http.StatusOK
	}) {
		t.Fatalf("livekit-server not restarted within %v of the rotation (pid %d, /readyz %d)", rtcRestartWait, newPID, b.readyz())
	}
	restartedAt := time.Now()
	how := b.connectedAgain(t, pages, rotatedAt)
	flowingAt, _ := b.mediaFlows(t, pages, identity, true)
	for _, p := range pages {
		if !b.mintedWith(t, p.name, secret1) || b.mintedWith(t, p.name, secret0) {
			t.Errorf("%s: LiveKit's TURN credential is not one of the new SFU secret", p.name)
		}
	}
	for _, p := range pages {
		t.Logf("%s after the rotation: %s", p.name, how[p.name])
	}
	t.Logf("SFU secret rotated (POST /admin/keyring/rotate: %d): livekit-server pid %d → %d after %v; media flowing again %v after the rotation",
		code, pid, newPID, restartedAt.Sub(rotatedAt).Round(time.Millisecond), flowingAt.Sub(rotatedAt).Round(time.Millisecond))
}

// connectedAgain waits until every page's LiveKit connection came back
// after since (livekit-client's own reconnect, or the page's rejoin) and
// returns each page's connection events since then.
func (b *rtcBed) connectedAgain(t *testing.T, pages []rtcPage, since time.Time) map[string]string {
	t.Helper()
	ms := since.UnixMilli()
	how := map[string]string{}
	if !waitFor(rtcMediaStartWait, func() bool {
		for _, p := range pages {
			var seen []string
			back := ""
			for _, e := range b.state(t, p.name).LiveKitEvents {
				if e.T < ms {
					continue
				}
				seen = append(seen, e.What)
				if e.What == "rejoined" || e.What == "reconnected" {
					back = e.What
				}
			}
			how[p.name] = strings.Join(seen, ", ")
			if back == "" {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("not connected to LiveKit again within %v: %v", rtcMediaStartWait, how)
	}
	return how
}

// mintedWith reports whether LiveKit handed page icebox's TURN
// (turn:<icebox>:3478) with a credential it minted from secret: username
// "<expiry>:PA_…", password base64(HMAC-SHA1(secret, username)).
func (b *rtcBed) mintedWith(t *testing.T, page string, secret []byte) bool {
	t.Helper()
	for _, s := range b.state(t, page).ICEServers {
		if !slices.ContainsFunc(s.URLs, func(u string) bool { return strings.HasPrefix(u, "turn:"+browserBedIP+":"+browserBedTURN) }) {
			continue
		}
		_, user, _ := strings.Cut(s.Username, ":")
		mac := hmac.New(sha1.New, bytes.TrimSpace(secret))
		mac.Write([]byte(s.Username))
		if credentials.IsParticipantID(user) && s.Credential == base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
			return true
		}
	}
	return false
}
