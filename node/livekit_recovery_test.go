package node_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/node/nodetest"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekitproc"
)

// TestNodeManagedLiveKitRoomsRecreated: after kill -9 of the managed
// livekit-server, icebox recreates on the new child the room it had (known
// from its webhooks), so a participant's JWT from before the crash (join
// only; the room is created by icebox, auto_create is off) is still
// accepted: livekit-client's own reconnect can rejoin without a new
// /sfu/get. Before the rooms were recreated, LiveKit answered 404.
func TestNodeManagedLiveKitRoomsRecreated(t *testing.T) {
	requireLiveKit(t)
	hs := matrixtest.StartDendrite(t, matrixtest.WithConfig("global.disable_federation", false))
	alice, aliceTok, _ := hs.Register(t, "alice", "alice-password-1", false)

	stateDir := filepath.Join(t.TempDir(), "state")
	cfg := managedConfig(t, stateDir)
	cfg.MatrixRTC.FullAccessHomeservers = []string{hs.ServerName()}
	cfg.MatrixRTC.HomeserverURLs = map[string]string{hs.ServerName(): hs.URL()}
	reg := prometheus.NewRegistry()
	log := &syncBuffer{}
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.New(log), Registry: reg})
	poll(t, 30*time.Second, "/readyz 200 with livekit-server up", func() bool { return readyz(t, n) == http.StatusOK })
	keys, err := livekitproc.LoadKeys(filepath.Join(stateDir, "livekit"))
	if err != nil {
		t.Fatal(err)
	}
	lkHTTP := "http://127.0.0.1:" + itoa(cfg.MatrixRTC.LiveKit.Managed.Port)

	rooms := func() []string {
		t.Helper()
		jwt, err := auth.NewAccessToken(keys.APIKey, keys.APISecret).SetVideoGrant(&auth.VideoGrant{RoomList: true}).SetValidFor(time.Minute).ToJWT()
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, lkHTTP+"/twirp/livekit.RoomService/ListRooms", strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+jwt)
		code, body := lkDo(t, req)
		var out struct{ Rooms []struct{ Name string } }
		if code != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil {
			t.Fatalf("ListRooms: %d %s", code, body)
		}
		var names []string
		for _, r := range out.Rooms {
			names = append(names, r.Name)
		}
		return names
	}
	// LiveKit's check of a JWT before a client connects: 404 while its
	// room does not exist (the JWT cannot create it), 200 when it may join.
	validate := func(jwt string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, lkHTTP+"/rtc/validate?access_token="+url.QueryEscape(jwt), nil)
		return lkDo(t, req)
	}

	// Alice (full access) gets a JWT; the service creates the room.
	body, _ := json.Marshal(map[string]any{"room": "!call:localhost", "openid_token": openIDToken(t, hs.URL(), alice, aliceTok), "device_id": "ALICEDEV"})
	resp, err := http.Post("http://"+n.Addrs.HTTP+"/livekit/jwt/sfu/get", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ URL, JWT string }
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/sfu/get: %d %v", resp.StatusCode, err)
	}
	v, err := auth.ParseAPIToken(got.JWT)
	if err != nil {
		t.Fatal(err)
	}
	_, grant, err := v.Verify(keys.APISecret)
	if err != nil || grant.Video == nil || grant.Video.RoomCreate || !grant.Video.RoomJoin {
		t.Fatalf("alice's JWT: %v %+v; want roomJoin without roomCreate", err, grant)
	}
	room := grant.Video.Room
	if got := rooms(); !slices.Equal(got, []string{room}) {
		t.Fatalf("LiveKit has rooms %q, want [%q]", got, room)
	}
	// icebox learns of the room from LiveKit's room_started webhook.
	poll(t, 30*time.Second, "icebox_livekit_rooms = 1", func() bool { return gauge(t, reg, "icebox_livekit_rooms") == 1 })
	if code, body := validate(got.JWT); code != http.StatusOK {
		t.Fatalf("/rtc/validate before the crash: %d %s, want 200", code, body)
	}

	st, _ := n.LiveKit()
	pid := st.PID
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "restarted after kill -9", func() bool {
		st, _ := n.LiveKit()
		return st.Ready && st.PID != pid
	})
	ready := time.Since(killed)
	poll(t, 30*time.Second, "the room back on the new livekit-server", func() bool { return slices.Contains(rooms(), room) })
	t.Logf("kill -9 to livekit-server ready again: %v; to its room recreated: %v", ready.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))

	// The JWT from before the crash joins again without a new /sfu/get.
	if code, body := validate(got.JWT); code != http.StatusOK {
		t.Errorf("/rtc/validate of the pre-crash JWT after the restart: %d %s, want 200", code, body)
	}
	if got := counter(t, reg, "icebox_livekit_rooms_recreated_total", "recreated"); got != 1 {
		t.Errorf(`icebox_livekit_rooms_recreated_total{result="recreated"} = %v, want 1`, got)
	}
	if got := counter(t, reg, "icebox_livekit_rooms_recreated_total", "failed"); got != 0 {
		t.Errorf(`icebox_livekit_rooms_recreated_total{result="failed"} = %v, want 0`, got)
	}
	// The new child's room_started puts it back in the gauge.
	poll(t, 30*time.Second, "icebox_livekit_rooms = 1 again", func() bool { return gauge(t, reg, "icebox_livekit_rooms") == 1 })
	if !strings.Contains(log.String(), `"recreated":1`) {
		t.Error("the recreation was not logged")
	}
	if strings.Contains(log.String(), keys.APISecret) || strings.Contains(log.String(), got.JWT) {
		t.Error("the log holds the API secret or a JWT")
	}
}

// counter is the value of name's series with result=label (-1: none).
func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

func lkDo(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
