package authservice_test

// matrixrtc.require_joined and the verification cache, against a real
// Dendrite: membership asked as a service user of the homeserver, the
// refusals and their reasons; how many userinfo requests reach the
// homeserver with the cache on and off.

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/authservice"
)

// matrixUser is a registered user with a client.
type matrixUser struct {
	id  string
	tok string
	cli *mautrix.Client
}

func newUser(t *testing.T, hs *matrixtest.Homeserver, localpart string) matrixUser {
	t.Helper()
	uid, tok, _ := hs.Register(t, localpart, localpart+"-password-1", false)
	cli, err := mautrix.NewClient(hs.URL(), id.UserID(uid), tok)
	if err != nil {
		t.Fatal(err)
	}
	return matrixUser{id: uid, tok: tok, cli: cli}
}

func (u matrixUser) createRoom(t *testing.T, invite ...matrixUser) string {
	t.Helper()
	var ids []id.UserID
	for _, v := range invite {
		ids = append(ids, id.UserID(v.id))
	}
	resp, err := u.cli.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: ids})
	if err != nil {
		t.Fatalf("%s creates a room: %v", u.id, err)
	}
	return resp.RoomID.String()
}

func (u matrixUser) join(t *testing.T, roomID string) {
	t.Helper()
	if _, err := u.cli.JoinRoomByID(context.Background(), id.RoomID(roomID)); err != nil {
		t.Fatalf("%s joins %s: %v", u.id, roomID, err)
	}
}

func TestRequireJoined(t *testing.T) {
	hs := matrixtest.StartDendrite(t, matrixtest.WithConfig("global.disable_federation", false))
	alice, bob, carol, dave := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol"), newUser(t, hs, "dave")
	svc := newUser(t, hs, "icebox") // icebox's Matrix service user
	overrides := map[string]string{hs.ServerName(): hs.URL()}

	// The call's room: icebox's user and bob joined, dave only invited,
	// carol never asked. The other room: icebox's user is not in it.
	room := alice.createRoom(t, svc, bob, dave)
	svc.join(t, room)
	bob.join(t, room)
	hidden := alice.createRoom(t)

	members, err := authservice.NewMatrixMembership(hs.URL(), svc.tok, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	withMembers := func(m authservice.Membership) func(*authservice.Config) {
		return func(c *authservice.Config) { c.Membership = m }
	}
	b := newBed(t, hs, nil, overrides, withMembers(members))

	sfuGet := func(u matrixUser, roomID string) map[string]any {
		return map[string]any{"room": roomID, "openid_token": requestOpenID(t, hs, u.id, u.tok), "device_id": "DEV"}
	}
	getToken := func(u matrixUser, roomID string) map[string]any {
		return map[string]any{"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": requestOpenID(t, hs, u.id, u.tok),
			"member": map[string]string{"id": "m1", "claimed_user_id": u.id, "claimed_device_id": "DEV"}}
	}
	expect := func(t *testing.T, b *bed, path string, body any, status int, errcode, msgPart, reason string) {
		t.Helper()
		got, out, _ := b.post(t, path, body)
		if got != status || (errcode != "" && out["errcode"] != errcode) || !strings.Contains(out["error"], msgPart) {
			t.Errorf("%s: %d %v, want %d %s %q", path, got, out, status, errcode, msgPart)
		}
		if reason == "" {
			return
		}
		ep := strings.ReplaceAll(strings.TrimPrefix(path, "/"), "/", "_")
		if v := metricValue(t, b.reg, "icebox_matrixrtc_tokens_refused_total", ep, reason); v < 1 {
			t.Errorf("refused{%s,%s} = %v, want ≥ 1", ep, reason, v)
		}
	}

	t.Run("joined user gets a token", func(t *testing.T) {
		for path, body := range map[string]any{"/sfu/get": sfuGet(bob, room), "/get_token": getToken(bob, room)} {
			if status, out, _ := b.post(t, path, body); status != 200 || out["jwt"] == "" {
				t.Errorf("%s: %d %v; log: %s", path, status, out, b.log)
			}
		}
	})
	t.Run("never a member", func(t *testing.T) {
		expect(t, b, "/sfu/get", sfuGet(carol, room), 401, "M_UNAUTHORIZED", carol.id+" is not joined to "+room, "not_joined")
		expect(t, b, "/get_token", getToken(carol, room), 401, "M_UNAUTHORIZED", "is not joined to", "not_joined")
	})
	t.Run("invited, not joined", func(t *testing.T) {
		expect(t, b, "/sfu/get", sfuGet(dave, room), 401, "M_UNAUTHORIZED", "is not joined to", "not_joined")
	})
	t.Run("left", func(t *testing.T) {
		leaver := newUser(t, hs, "erin")
		if _, err := alice.cli.InviteUser(context.Background(), id.RoomID(room), &mautrix.ReqInviteUser{UserID: id.UserID(leaver.id)}); err != nil {
			t.Fatal(err)
		}
		leaver.join(t, room)
		if status, out, _ := b.post(t, "/sfu/get", sfuGet(leaver, room)); status != 200 {
			t.Fatalf("joined erin: %d %v", status, out)
		}
		if _, err := leaver.cli.LeaveRoom(context.Background(), id.RoomID(room)); err != nil {
			t.Fatal(err)
		}
		expect(t, b, "/sfu/get", sfuGet(leaver, room), 401, "M_UNAUTHORIZED", "is not joined to", "not_joined")
	})
	t.Run("icebox not in the room", func(t *testing.T) {
		expect(t, b, "/sfu/get", sfuGet(alice, hidden), 401, "M_UNAUTHORIZED",
			"room membership cannot be checked, as this service's Matrix user is not in "+hidden, "membership_unknown")
		if !strings.Contains(b.log.String(), "icebox's Matrix user is not in the room") {
			t.Errorf("the log does not say why: %s", b.log)
		}
	})
	t.Run("homeserver down", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := "http://" + l.Addr().String()
		l.Close()
		down, err := authservice.NewMatrixMembership(dead, svc.tok, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		bd := newBed(t, hs, nil, overrides, withMembers(down))
		expect(t, bd, "/sfu/get", sfuGet(bob, room), 503, "M_UNKNOWN", "Room membership could not be checked", "membership_failed")
	})
	t.Run("off by default", func(t *testing.T) {
		// As lk-jwt-service: without the policy, anyone with a valid token
		// gets one for any room.
		off := newBed(t, hs, nil, overrides)
		if status, out, _ := off.post(t, "/sfu/get", sfuGet(carol, room)); status != 200 {
			t.Errorf("policy off: %d %v", status, out)
		}
	})
	for _, s := range []string{svc.tok, alice.tok, bob.tok} {
		if strings.Contains(b.log.String(), s) {
			t.Fatal("an access token is in the log")
		}
	}
}

// userinfoCounter is a reverse proxy in front of the homeserver that
// counts the OpenID userinfo requests reaching it.
type userinfoCounter struct {
	srv *httptest.Server
	n   atomic.Int64
}

func countUserinfo(t *testing.T, hs *matrixtest.Homeserver) *userinfoCounter {
	t.Helper()
	target, err := url.Parse(hs.URL())
	if err != nil {
		t.Fatal(err)
	}
	c := &userinfoCounter{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_matrix/federation/v1/openid/userinfo" {
			c.n.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// clock is a test clock for the cache.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestVerifyCache(t *testing.T) {
	hs := matrixtest.StartDendrite(t, matrixtest.WithConfig("global.disable_federation", false))
	alice := newUser(t, hs, "alice")
	counter := countUserinfo(t, hs)
	overrides := map[string]string{hs.ServerName(): counter.srv.URL}
	clk := &clock{t: time.Now()}
	cached := func(ttl time.Duration) func(*authservice.Config) {
		return func(c *authservice.Config) { c.VerifyCacheTTL, c.Now = ttl, clk.now }
	}
	const roomID = "!call:localhost"
	sfuGet := func(tok openID) map[string]any {
		return map[string]any{"room": roomID, "openid_token": tok, "device_id": "DEV"}
	}
	getToken := func(tok openID, claimed string) map[string]any {
		return map[string]any{"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": tok,
			"member": map[string]string{"id": "m1", "claimed_user_id": claimed, "claimed_device_id": "DEV"}}
	}
	asks := func(t *testing.T, b *bed, want int64, reqs ...func() (int, map[string]string)) {
		t.Helper()
		before := counter.n.Load()
		for i, r := range reqs {
			if status, out := r(); status != 200 {
				t.Fatalf("request %d: %d %v; log: %s", i, status, out, b.log)
			}
		}
		if got := counter.n.Load() - before; got != want {
			t.Errorf("%d requests asked the homeserver %d times, want %d", len(reqs), got, want)
		}
	}
	post := func(b *bed, path string, body any) func() (int, map[string]string) {
		return func() (int, map[string]string) { s, out, _ := b.post(t, path, body); return s, out }
	}

	t.Run("hits", func(t *testing.T) {
		b := newBed(t, hs, nil, overrides, cached(time.Minute))
		tok := requestOpenID(t, hs, alice.id, alice.tok)
		asks(t, b, 1, post(b, "/sfu/get", sfuGet(tok)), post(b, "/get_token", getToken(tok, alice.id)), post(b, "/sfu/get", sfuGet(tok)))
		if got := metricValue(t, b.reg, "icebox_matrixrtc_openid_cache_hits_total"); got != 2 {
			t.Errorf("cache hits = %v, want 2", got)
		}
		// A hit still checks the claimed user.
		status, _, _ := b.post(t, "/get_token", getToken(tok, "@mallory:localhost"))
		if status != 401 || metricValue(t, b.reg, "icebox_matrixrtc_tokens_refused_total", "get_token", "user_mismatch") != 1 {
			t.Errorf("claimed user mismatch on a cached token: %d", status)
		}
		// Another server name with the same token is another entry (and
		// the foreign answer is not cached).
		other := tok
		other.MatrixServerName = "other.invalid"
		bo := newBed(t, hs, nil, map[string]string{hs.ServerName(): counter.srv.URL, "other.invalid": counter.srv.URL}, cached(time.Minute))
		asks(t, bo, 1, post(bo, "/sfu/get", sfuGet(tok)))
		before := counter.n.Load()
		for range 2 {
			if status, _, _ := bo.post(t, "/sfu/get", sfuGet(other)); status != 401 {
				t.Errorf("token of localhost claimed for other.invalid: %d, want 401", status)
			}
		}
		if got := counter.n.Load() - before; got != 2 {
			t.Errorf("refused token asked %d times in 2 requests, want 2 (failures are not cached)", got)
		}
		if strings.Contains(b.log.String(), tok.AccessToken) {
			t.Fatal("the token is in the log")
		}
	})

	t.Run("failures are not cached", func(t *testing.T) {
		b := newBed(t, hs, nil, overrides, cached(time.Minute))
		forged := openID{AccessToken: "forgedforgedforged", TokenType: "Bearer", MatrixServerName: hs.ServerName(), ExpiresIn: 3600}
		before := counter.n.Load()
		for range 3 {
			if status, _, _ := b.post(t, "/sfu/get", sfuGet(forged)); status != 401 {
				t.Errorf("forged token: %d, want 401", status)
			}
		}
		if got := counter.n.Load() - before; got != 3 {
			t.Errorf("forged token asked %d times in 3 requests, want 3", got)
		}
	})

	t.Run("expiry", func(t *testing.T) {
		b := newBed(t, hs, nil, overrides, cached(time.Minute))
		tok := requestOpenID(t, hs, alice.id, alice.tok)
		asks(t, b, 1, post(b, "/sfu/get", sfuGet(tok)), post(b, "/sfu/get", sfuGet(tok)))
		clk.add(time.Minute)
		asks(t, b, 1, post(b, "/sfu/get", sfuGet(tok)))
		// expires_in shorter than the TTL bounds the entry.
		short := requestOpenID(t, hs, alice.id, alice.tok)
		short.ExpiresIn = 10
		asks(t, b, 1, post(b, "/sfu/get", sfuGet(short)), post(b, "/sfu/get", sfuGet(short)))
		clk.add(10 * time.Second)
		asks(t, b, 1, post(b, "/sfu/get", sfuGet(short)))
	})

	t.Run("off", func(t *testing.T) {
		b := newBed(t, hs, nil, overrides, cached(0))
		tok := requestOpenID(t, hs, alice.id, alice.tok)
		asks(t, b, 3, post(b, "/sfu/get", sfuGet(tok)), post(b, "/sfu/get", sfuGet(tok)), post(b, "/get_token", getToken(tok, alice.id)))
	})
}
