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

func TestMatrixRTCBrowser(t *testing.T) {
	b := newRTCBed(t)
	for _, tc := range []struct {
		name  string
		n     int
		relay bool
	}{
		{"two", 2, false},
		{"two-relay", 2, true},
		{"three-relay", 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			begin := time.Now()
			users := b.users[:tc.n]
			room := b.encryptedRoom(t, tc.name, users)
			var pages []rtcPage
			for _, u := range users {
				pages = append(pages, b.openParticipant(t, "rtc-"+tc.name+"-"+strings.SplitN(strings.TrimPrefix(u, "@"), ":", 2)[0], u, room))
			}
			b.rtcCall(t, room, pages, tc.relay)
			t.Logf("%s: %d participants, relay %v, %v", tc.name, tc.n, tc.relay, time.Since(begin).Round(time.Millisecond))
		})
	}
	t.Run("forged-openid", func(t *testing.T) { b.forgedOpenID(t) })
	t.Run("element-call-embedded", func(t *testing.T) { b.elementCall(t) })
}

// rtcCall joins every page to the MatrixRTC session of room and checks that
// each receives and decrypts every other's audio and video, with no E2EE
// failure; with relay, over icebox's TURN only.
func (b *rtcBed) rtcCall(t *testing.T, room string, pages []rtcPage, relay bool) {
	t.Helper()
	identity := map[string]string{} // page → LiveKit identity
	for _, p := range pages {
		var j struct {
			URL         string `json:"url"`
			Identity    string `json:"identity"`
			LiveKitRoom string `json:"livekitRoom"`
			Sub         string `json:"sub"`
		}
		b.browser.call(t, p.name, "rtc.join", &j, map[string]any{"roomId": room, "serviceUrl": b.service, "relay": relay})
		// lk-jwt-service's identity for /sfu/get is user:device, the
		// identity the MatrixRTC session keys the member's media for.
		if want := p.user + ":" + p.device; j.Identity != want || j.Sub != want || j.URL != b.lk.URL {
			t.Fatalf("%s joined LiveKit %s as %q (JWT sub %q), want %s as %q", p.name, j.URL, j.Identity, j.Sub, b.lk.URL, want)
		}
		identity[p.name] = j.Identity
		t.Logf("%s: LiveKit room %s, identity %s", p.name, j.LiveKitRoom, j.Identity)
	}
	t.Cleanup(func() {
		for _, p := range pages {
			_ = b.browser.try(t, p.name, "rtc.leave", nil)
		}
	})

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
}

// forgedOpenID: the authorization service refuses an OpenID token the
// homeserver did not issue with lk-jwt-service's 401 M_UNAUTHORIZED, to the
// browser's cross-origin request as Element Call sends it.
func (b *rtcBed) forgedOpenID(t *testing.T) {
	room := b.encryptedRoom(t, "forged", b.users[:2])
	p := b.openParticipant(t, "rtc-forged", b.users[0], room)
	var tok map[string]any
	b.browser.call(t, p.name, "rtc.openID", &tok)
	tok["access_token"] = "forged" + strings.Repeat("x", 20)
	var got struct {
		Status int `json:"status"`
		Body   struct {
			Errcode string `json:"errcode"`
		} `json:"body"`
	}
	b.browser.call(t, p.name, "rtc.sfuGet", &got, b.service, room, tok)
	if got.Status != http.StatusUnauthorized || got.Body.Errcode != "M_UNAUTHORIZED" {
		t.Errorf("/sfu/get with a forged OpenID token: %d %s, want 401 M_UNAUTHORIZED", got.Status, got.Body.Errcode)
	}
	// The genuine token of the same page is accepted: the refusal is the
	// token's, not the bed's.
	b.browser.call(t, p.name, "rtc.openID", &tok)
	b.browser.call(t, p.name, "rtc.sfuGet", &got, b.service, room, tok)
	if got.Status != http.StatusOK {
		t.Errorf("/sfu/get with the page's own OpenID token: %d, want 200", got.Status)
	}
}

func rtcGrowth(from, to int64) string { return rtcItoa(from) + "→" + rtcItoa(to) }

func rtcItoa(n int64) string { return strconv.FormatInt(n, 10) }
