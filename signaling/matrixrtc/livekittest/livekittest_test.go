package livekittest_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekittest"
)

// TestStart runs the real server on loopback and creates a room through
// its RoomService with the generated key: the key file and the API work.
func TestStart(t *testing.T) {
	s := livekittest.Start(t, livekittest.Config{NodeIP: "127.0.0.1"})
	at := auth.NewAccessToken(s.APIKey, s.APISecret).SetVideoGrant(&auth.VideoGrant{RoomCreate: true, RoomList: true}).SetValidFor(time.Minute)
	jwt, err := at.ToJWT()
	if err != nil {
		t.Fatal(err)
	}
	post := func(method, body string) (int, string) {
		req, err := http.NewRequest(http.MethodPost, s.HTTPURL+"/twirp/livekit.RoomService/"+method, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+jwt)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, body := post("CreateRoom", `{"name":"livekittest-room"}`); code != http.StatusOK {
		t.Fatalf("CreateRoom: %d %s", code, body)
	}
	if code, body := post("ListRooms", `{}`); code != http.StatusOK || !strings.Contains(body, "livekittest-room") {
		t.Fatalf("ListRooms: %d %s", code, body)
	}
	s.Stop()
	if !s.Exited() {
		t.Error("livekit-server still running after Stop")
	}
}
