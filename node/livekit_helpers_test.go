package node_test

import (
	"strconv"
	"time"

	"github.com/livekit/protocol/auth"
)

func itoa(i int) string { return strconv.Itoa(i) }

func livekitAccessToken(key, secret string) (string, error) {
	return auth.NewAccessToken(key, secret).SetValidFor(time.Minute).SetSha256("AAAA").ToJWT()
}
