package node_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
)

func itoa(i int) string { return strconv.Itoa(i) }

func livekitAccessToken(key, secret string) (string, error) {
	return auth.NewAccessToken(key, secret).SetValidFor(time.Minute).SetSha256("AAAA").ToJWT()
}

// signWebhook signs body as livekit-server signs its webhooks.
func signWebhook(t *testing.T, body []byte, key, secret string) string {
	t.Helper()
	sum := sha256.Sum256(body)
	tok, err := auth.NewAccessToken(key, secret).SetValidFor(time.Minute).SetSha256(base64.StdEncoding.EncodeToString(sum[:])).ToJWT()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// syncBuffer is a log writer tests read while the node writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
