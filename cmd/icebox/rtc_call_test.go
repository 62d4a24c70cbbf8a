package main

// Group calls as Element Call makes them, on icebox (issue 16, "How it is
// tested"): in Chromium, each participant runs matrix-js-sdk's
// MatrixRTCSession (org.matrix.msc3401.call.member memberships, media keys
// over encrypted to-device messages) and livekit-client with
// per-participant E2EE keyed from that session, gets its LiveKit JWT from
// icebox's /sfu/get, and sends and receives audio and video through the
// real livekit-server (rtc_bed_test.go).

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Bounds of one call: joining (MatrixRTC membership, /sfu/get, LiveKit
// signalling, ICE, first keys) takes a few seconds on an idle machine; the
// media window is how long inbound RTP must keep growing.
const (
	rtcMediaStartWait = 60 * time.Second
	rtcMediaWindow    = 3 * time.Second
	rtcMediaGrowWait  = 20 * time.Second
)

// Growth over the media window that counts as media flowing: Chromium's
// fake camera sends tens of kB/s even at LiveKit's lowest layer, its fake
// microphone a few kB/s of Opus.
const (
	rtcMinVideoGrowth = 4000
	rtcMinAudioGrowth = 1000
)

// TestMatrixRTCBrowser runs every MatrixRTC browser test on one bed
// (rtc_bed_test.go): first with icebox in external mode (livekit-server on
// another address), then, restarted in managed mode, with the
// livekit-server icebox runs on its own address and hands icebox's relay
// with scoped credentials as its TURN (rtc_managed_test.go).
func TestMatrixRTCBrowser(t *testing.T) {
	t.Parallel() // its own namespaces, Dendrite, livekit-servers and Chromium
	b := newRTCBed(t)
	t.Run("three-relay", func(t *testing.T) { b.groupCall(t, "three-relay", 3, true, false) })
	t.Run("refusals", func(t *testing.T) { b.refusals(t) })
	t.Run("element-call-embedded", func(t *testing.T) { b.elementCall(t) })
	if t.Failed() {
		return
	}
	b.manage(t)
	t.Run("managed/two", func(t *testing.T) { b.groupCall(t, "managed-two", 2, false, false) })
	t.Run("managed/two-relay", func(t *testing.T) { b.scopedRelayCall(t) })
}

// groupCall: n participants, each in a page of its own, in a new encrypted
// room; relay forces their media through icebox's TURN, where LiveKit's
// credentials are the SFU's scoped ones: every byte the pages receive must
// then have come through scoped allocations. With rejoin, a page joins
// LiveKit again when its connection is lost.
func (b *rtcBed) groupCall(t *testing.T, name string, n int, relay, rejoin bool) ([]rtcPage, map[string]string) {
	begin := time.Now()
	m0 := b.metrics(t)
	room, pages := b.callPages(t, name, n)
	identity, states := b.rtcCall(t, room, pages, relay, rejoin)
	if relay {
		m1 := b.metrics(t)
		var inbound int64
		for _, p := range pages {
			for _, r := range states[p.name].Remotes {
				for _, tr := range r.Tracks {
					inbound += tr.Bytes
				}
			}
		}
		to, from := m1[rtcScopedToPeer]-m0[rtcScopedToPeer], m1[rtcScopedFromPeer]-m0[rtcScopedFromPeer]
		// The relayed bytes hold the RTP payloads the pages count and
		// their headers, SRTP tags, RTCP, DTLS and ICE checks: more.
		if from < float64(inbound) || to <= 0 {
			t.Errorf("scoped relayed bytes: %v to the SFU, %v from it; want >0 and at least the %d bytes of media the pages received", to, from, inbound)
		}
		t.Logf("scoped TURN: %.0f B relayed to the SFU, %.0f B from it (the pages received %d B of media); scoped refusals %v",
			to, from, inbound, scopedRefusals(m1)-scopedRefusals(m0))
	}
	t.Logf("%s: %d participants, relay %v, LiveKit %s, %v", name, n, relay, b.lkURL, time.Since(begin).Round(time.Millisecond))
	return pages, identity
}

// Series of icebox's /metrics the relayed calls read.
const (
	rtcScopedToPeer   = `icebox_turn_scoped_relayed_bytes_total{direction="to_peer"}`
	rtcScopedFromPeer = `icebox_turn_scoped_relayed_bytes_total{direction="from_peer"}`
)

// scopedRefusals sums icebox_turn_scoped_refusals_total over its stages.
func scopedRefusals(m map[string]float64) float64 {
	var n float64
	for k, v := range m {
		if strings.HasPrefix(k, "icebox_turn_scoped_refusals_total") {
			n += v
		}
	}
	return n
}

// callPages makes an encrypted room of the first n users and opens a page
// for each.
func (b *rtcBed) callPages(t *testing.T, name string, n int) (string, []rtcPage) {
	t.Helper()
	users := b.users[:n]
	room := b.encryptedRoom(t, name, users)
	var pages []rtcPage
	for _, u := range users {
		pages = append(pages, b.openParticipant(t, "rtc-"+name+"-"+strings.SplitN(strings.TrimPrefix(u, "@"), ":", 2)[0], u, room))
	}
	return room, pages
}

// rtcCall joins every page to the MatrixRTC session of room and checks that
// each receives and decrypts every other's audio and video, with no E2EE
// failure; with relay, over icebox's TURN only. With rejoin, a page whose
// LiveKit connection is lost joins LiveKit again (rtc.js's join). It
// returns each page's LiveKit identity and its last state.
func (b *rtcBed) rtcCall(t *testing.T, room string, pages []rtcPage, relay, rejoin bool) (map[string]string, map[string]rtcState) {
	t.Helper()
	identity := map[string]string{} // page → LiveKit identity
	for _, p := range pages {
		var j struct {
			URL         string `json:"url"`
			Identity    string `json:"identity"`
			LiveKitRoom string `json:"livekitRoom"`
			Sub         string `json:"sub"`
		}
		b.browser.call(t, p.name, "rtc.join", &j, map[string]any{"roomId": room, "serviceUrl": b.service, "relay": relay, "rejoin": rejoin})
		// lk-jwt-service's identity for /sfu/get is user:device, the
		// identity the MatrixRTC session keys the member's media for.
		if want := p.user + ":" + p.device; j.Identity != want || j.Sub != want || j.URL != b.lkURL {
			t.Fatalf("%s joined LiveKit %s as %q (JWT sub %q), want %s as %q", p.name, j.URL, j.Identity, j.Sub, b.lkURL, want)
		}
		identity[p.name] = j.Identity
		t.Logf("%s: LiveKit room %s, identity %s", p.name, j.LiveKitRoom, j.Identity)
	}
	t.Cleanup(func() {
		for _, p := range pages {
			_ = b.browser.try(t, p.name, "rtc.leave", nil)
		}
	})
	_, states := b.mediaFlows(t, pages, identity, relay)
	b.logFirstFrames(t, pages, relay)
	return identity, states
}

// mediaFlows waits until every page receives and decodes every other's
// audio and video, then checks that inbound RTP keeps growing over the
// media window, encrypted and keyed by the MatrixRTC session, with no E2EE
// failure; with relay, over a relay candidate on icebox. It returns when
// media was first seen flowing and the pages' last states.
func (b *rtcBed) mediaFlows(t *testing.T, pages []rtcPage, identity map[string]string, relay bool) (time.Time, map[string]rtcState) {
	t.Helper()
	// Every page receives every other's audio and video, decoded.
	flowing := func(s rtcState, self string) string {
		for _, o := range pages {
			if o.name == self {
				continue
			}
			for _, kind := range []string{"audio", "video"} {
				tr, ok := s.track(identity[o.name], kind)
				switch {
				case !ok:
					return kind + " of " + o.name + " not subscribed"
				case tr.Bytes == 0:
					return "no " + kind + " bytes from " + o.name
				case kind == "video" && tr.FramesDecoded == 0:
					return "no video frame of " + o.name + " decoded"
				case kind == "audio" && tr.AudioEnergy == 0:
					return "no audio energy from " + o.name
				}
			}
		}
		return ""
	}
	states := map[string]rtcState{}
	var why string
	if !waitFor(rtcMediaStartWait, func() bool {
		for _, p := range pages {
			s := b.state(t, p.name)
			states[p.name] = s
			if why = flowing(s, p.name); why != "" {
				why = p.name + ": " + why
				return false
			}
		}
		return true
	}) {
		for _, p := range pages {
			var ev []struct {
				What string `json:"what"`
			}
			_ = b.browser.try(t, p.name, "rtc.events", &ev, 0)
			t.Logf("%s: state %+v\nevents %v", p.name, b.state(t, p.name), ev)
		}
		t.Fatalf("media not flowing within %v: %s", rtcMediaStartWait, why)
	}
	flowingAt := time.Now()

	// Every key has reached every page's livekit-client: from now on a
	// MissingKey is a failure too.
	for _, p := range pages {
		b.browser.call(t, p.name, "rtc.markSteady", nil)
	}

	// Inbound RTP keeps growing over the media window (not just a first
	// burst), and decoding with it.
	first := map[string]rtcState{}
	for _, p := range pages {
		first[p.name] = b.state(t, p.name)
	}
	windowEnd := time.Now().Add(rtcMediaWindow)
	if !waitFor(rtcMediaGrowWait, func() bool {
		if time.Now().Before(windowEnd) {
			return false
		}
		for _, p := range pages {
			s := b.state(t, p.name)
			states[p.name] = s
			for _, o := range pages {
				if o.name == p.name {
					continue
				}
				v0, _ := first[p.name].track(identity[o.name], "video")
				a0, _ := first[p.name].track(identity[o.name], "audio")
				v, _ := s.track(identity[o.name], "video")
				a, _ := s.track(identity[o.name], "audio")
				if v.Bytes-v0.Bytes < rtcMinVideoGrowth || a.Bytes-a0.Bytes < rtcMinAudioGrowth || v.FramesDecoded <= v0.FramesDecoded || a.AudioEnergy <= a0.AudioEnergy {
					why = p.name + " from " + o.name + ": video " + rtcGrowth(v0.Bytes, v.Bytes) + ", audio " + rtcGrowth(a0.Bytes, a.Bytes)
					return false
				}
			}
		}
		return true
	}) {
		t.Fatalf("inbound RTP not growing over %v: %s", rtcMediaWindow, why)
	}

	for _, p := range pages {
		s := states[p.name]
		var row []string
		for _, o := range pages {
			if o.name == p.name {
				continue
			}
			v, _ := s.track(identity[o.name], "video")
			a, _ := s.track(identity[o.name], "audio")
			row = append(row, strings.TrimPrefix(o.name, "rtc-")+": video "+rtcItoa(v.Bytes)+" B ("+rtcItoa(v.FramesDecoded)+" frames), audio "+rtcItoa(a.Bytes)+" B")
			if !v.Encrypted || !a.Encrypted {
				t.Errorf("%s: tracks of %s not end-to-end encrypted (video %v, audio %v)", p.name, o.name, v.Encrypted, a.Encrypted)
			}
			if s.Keys[identity[o.name]] == 0 {
				t.Errorf("%s: no media key of %s from the MatrixRTC session (keys %v)", p.name, o.name, s.Keys)
			}
			if relay {
				for _, tr := range []rtcTrack{v, a} {
					if tr.Local == nil || tr.Local.Type != "relay" || tr.Local.Address != browserBedIP {
						t.Errorf("%s: %s of %s over %+v, want a relay candidate on icebox (%s)", p.name, tr.Kind, o.name, tr.Local, browserBedIP)
					}
				}
			}
			if b.managed {
				// The SFU is icebox's child, on icebox's address.
				for _, tr := range []rtcTrack{v, a} {
					if tr.Remote == nil || tr.Remote.Address != browserBedIP {
						t.Errorf("%s: %s of %s from %+v, want the managed SFU on %s", p.name, tr.Kind, o.name, tr.Remote, browserBedIP)
					}
				}
			}
		}
		if !s.E2EE || !s.Joined || len(s.Memberships) != len(pages) {
			t.Errorf("%s: e2ee %v, MatrixRTC joined %v with %d memberships, want e2ee, joined, %d", p.name, s.E2EE, s.Joined, len(s.Memberships), len(pages))
		}
		if s.DecryptFailures != 0 {
			t.Errorf("%s: livekit-client reported %d E2EE failures, e.g. %+v", p.name, s.DecryptFailures, s.ErrorSamples)
		}
		if i := slices.IndexFunc(s.Publishing, func(x struct {
			Kind      string `json:"kind"`
			Encrypted bool   `json:"encrypted"`
		}) bool {
			return !x.Encrypted
		}); i >= 0 {
			t.Errorf("%s publishes %s unencrypted", p.name, s.Publishing[i].Kind)
		}
		t.Logf("%s received (E2EE failures %d, MissingKey while keys were in flight %d): %s", p.name, s.DecryptFailures, s.WaitingForKey, strings.Join(row, "; "))
	}
	return flowingAt, states
}

// rtcRefusal is the authorization service's answer as the page got it.
type rtcRefusal struct {
	Status int `json:"status"`
	Body   struct {
		Errcode string `json:"errcode"`
		Error   string `json:"error"`
		JWT     string `json:"jwt"`
	} `json:"body"`
	Raw string `json:"raw"`
}

// refusals: what the authorization service refuses, asked by a page as
// Element Call asks (a cross-origin request from the browser); each
// refusal is lk-jwt-service's answer, counted under its reason, and the
// same page's genuine request is then accepted (the refusal is the
// request's, not the bed's).
func (b *rtcBed) refusals(t *testing.T) {
	room := b.encryptedRoom(t, "refusals", b.users[:2])
	p := b.openParticipant(t, "rtc-refusals", b.users[0], room)
	t.Run("forged-openid", func(t *testing.T) { b.forgedOpenID(t, p, room) })
	t.Run("claimed-user", func(t *testing.T) { b.claimedUser(t, p, room) })
	t.Run("homeserver-down", func(t *testing.T) { b.homeserverDown(t, p, room) })
}

// refusedDelta is how much icebox_matrixrtc_tokens_refused_total grew for
// endpoint and reason between two scrapes.
func refusedDelta(m0, m1 map[string]float64, endpoint, reason string) float64 {
	k := `icebox_matrixrtc_tokens_refused_total{endpoint="` + endpoint + `",reason="` + reason + `"}`
	return m1[k] - m0[k]
}

// forgedOpenID: an OpenID token the homeserver did not issue gets
// lk-jwt-service's 401 M_UNAUTHORIZED.
func (b *rtcBed) forgedOpenID(t *testing.T, p rtcPage, room string) {
	var tok map[string]any
	b.browser.call(t, p.name, "rtc.openID", &tok)
	tok["access_token"] = "forged" + strings.Repeat("x", 20)
	m0 := b.metrics(t)
	var got rtcRefusal
	b.browser.call(t, p.name, "rtc.sfuGet", &got, b.service, room, tok)
	if got.Status != http.StatusUnauthorized || got.Body.Errcode != "M_UNAUTHORIZED" {
		t.Errorf("/sfu/get with a forged OpenID token: %d %s, want 401 M_UNAUTHORIZED", got.Status, got.Body.Errcode)
	}
	if d := refusedDelta(m0, b.metrics(t), "sfu_get", "invalid_token"); d != 1 {
		t.Errorf("tokens refused for invalid_token grew by %v, want 1", d)
	}
	b.browser.call(t, p.name, "rtc.openID", &tok)
	b.browser.call(t, p.name, "rtc.sfuGet", &got, b.service, room, tok)
	if got.Status != http.StatusOK {
		t.Errorf("/sfu/get with the page's own OpenID token: %d, want 200", got.Status)
	}
}

// claimedUser: a /get_token (MSC4195) whose member.claimed_user_id is
// another user than the OpenID token's gets lk-jwt-service's 401
// M_UNAUTHORIZED; the same token claiming its own user gets a JWT.
func (b *rtcBed) claimedUser(t *testing.T, p rtcPage, room string) {
	var tok map[string]any
	b.browser.call(t, p.name, "rtc.openID", &tok)
	body := func(claimed string) map[string]any {
		return map[string]any{
			"room_id": room, "slot_id": "m.call#ROOM", "openid_token": tok,
			"member": map[string]any{"id": "member-" + p.device, "claimed_user_id": claimed, "claimed_device_id": p.device},
		}
	}
	other := b.users[1]
	m0 := b.metrics(t)
	var got rtcRefusal
	b.browser.call(t, p.name, "rtc.getToken", &got, b.service, body(other))
	if got.Status != http.StatusUnauthorized || got.Body.Errcode != "M_UNAUTHORIZED" || got.Body.JWT != "" {
		t.Errorf("/get_token for %s claiming %s: %d %s %q, want 401 M_UNAUTHORIZED", p.user, other, got.Status, got.Body.Errcode, got.Raw)
	}
	if d := refusedDelta(m0, b.metrics(t), "get_token", "user_mismatch"); d != 1 {
		t.Errorf("tokens refused for user_mismatch grew by %v, want 1", d)
	}
	b.browser.call(t, p.name, "rtc.getToken", &got, b.service, body(p.user))
	if got.Status != http.StatusOK || got.Body.JWT == "" {
		t.Errorf("/get_token claiming the token's own user: %d %s, want 200 with a JWT", got.Status, got.Body.Errcode)
	}
}

// homeserverDown: while the homeserver does not answer (its reverse proxy
// answers 502), a genuine OpenID token cannot be verified: lk-jwt-service
// answers every verification failure with 401 M_UNAUTHORIZED, icebox an
// unreachable homeserver with 503 naming it (the token may be good); its
// metrics say why. The
// same token is accepted once the homeserver is back (a failure is not
// cached).
func (b *rtcBed) homeserverDown(t *testing.T, p rtcPage, room string) {
	var tok map[string]any
	b.browser.call(t, p.name, "rtc.openID", &tok)
	m0 := b.metrics(t)
	b.hsProxy.down.Store(true)
	var got rtcRefusal
	b.browser.call(t, p.name, "rtc.sfuGet", &got, b.service, room, tok)
	b.hsProxy.down.Store(false)
	if got.Status != http.StatusServiceUnavailable || got.Body.Errcode != "M_UNKNOWN" || !strings.Contains(got.Body.Error, b.hs.ServerName()) {
		t.Errorf("/sfu/get while the homeserver is down: %d %s %q, want 503 M_UNKNOWN naming %s", got.Status, got.Body.Errcode, got.Body.Error, b.hs.ServerName())
	}
	m1 := b.metrics(t)
	if d := refusedDelta(m0, m1, "sfu_get", "homeserver_unreachable"); d != 1 {
		t.Errorf("tokens refused for homeserver_unreachable grew by %v, want 1", d)
	}
	k := `icebox_matrixrtc_openid_verify_failures_total{homeserver="` + b.hs.ServerName() + `",reason="homeserver_unreachable"}`
	if d := m1[k] - m0[k]; d != 1 {
		t.Errorf("%s grew by %v, want 1", k, d)
	}
	b.browser.call(t, p.name, "rtc.sfuGet", &got, b.service, room, tok)
	if got.Status != http.StatusOK {
		t.Errorf("/sfu/get with the same token once the homeserver is back: %d %s, want 200", got.Status, got.Body.Errcode)
	}
}

func rtcGrowth(from, to int64) string { return rtcItoa(from) + "→" + rtcItoa(to) }

func rtcItoa(n int64) string { return strconv.FormatInt(n, 10) }
