package node_test

import (
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/syncbuf"
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
type syncBuffer = syncbuf.Buffer
