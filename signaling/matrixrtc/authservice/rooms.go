package authservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/livekit/protocol/auth"
)

// RoomCreator creates (or finds) a LiveKit room by name.
type RoomCreator interface {
	CreateRoom(ctx context.Context, name string) error
}

// Room timeouts lk-jwt-service creates rooms with.
const (
	roomEmptyTimeout     = 5 * 60 // s: keep a room nobody joined yet for 5 minutes
	roomDepartureTimeout = 20     // s: keep a room 20 s after the last one left
)

// twirpRooms calls LiveKit's RoomService.CreateRoom (Twirp, JSON) — the
// one call lk-jwt-service makes through server-sdk-go, without pulling
// that SDK and its WebRTC stack into icebox.
type twirpRooms struct {
	endpoint    string
	key, secret string
	client      *http.Client
}

func newTwirpRooms(liveKitURL, key, secret string) (*twirpRooms, error) {
	u, err := url.Parse(liveKitURL)
	if err != nil {
		return nil, fmt.Errorf("authservice: livekit url: %w", err)
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	case "http", "https":
	default:
		return nil, fmt.Errorf("authservice: livekit room service url %q: want http://, https://, ws:// or wss://", liveKitURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/twirp/livekit.RoomService/CreateRoom"
	return &twirpRooms{endpoint: u.String(), key: key, secret: secret, client: &http.Client{Timeout: 10 * time.Second}}, nil
}

func (t *twirpRooms) CreateRoom(ctx context.Context, name string) error {
	at := auth.NewAccessToken(t.key, t.secret)
	at.SetVideoGrant(&auth.VideoGrant{RoomCreate: true, Room: name}).SetValidFor(time.Minute)
	jwt, err := at.ToJWT()
	if err != nil {
		return fmt.Errorf("create room: %w", err)
	}
	body, _ := json.Marshal(map[string]any{"name": name, "empty_timeout": roomEmptyTimeout, "departure_timeout": roomDepartureTimeout})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.endpoint, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("create room: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+jwt)
	resp, err := t.client.Do(req)
	if err != nil {
		return fmt.Errorf("create room: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("create room: %w: status %d", errRoomService, resp.StatusCode)
	}
	return nil
}

var errRoomService = errors.New("livekit room service refused")

// CloseIdleConnections drops idle connections to LiveKit (Service.Close).
func (t *twirpRooms) CloseIdleConnections() { t.client.CloseIdleConnections() }
