package authservice

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// FuzzRequestBody feeds request bodies to both endpoints' decoding and
// checks: any body is either refused with a 400 in lk-jwt-service's
// errcodes, or yields the fields the verification needs.
func FuzzRequestBody(f *testing.F) {
	f.Add(`{"room":"!r:x","openid_token":{"access_token":"t","matrix_server_name":"x"},"device_id":"D"}`)
	f.Add(`{"room_id":"!r:x","slot_id":"m.call#ROOM","openid_token":{"access_token":"t","matrix_server_name":"x"},"member":{"id":"m","claimed_user_id":"@u:x","claimed_device_id":"D"},"delay_id":"d","delay_timeout":5}`)
	f.Add(`{`)
	f.Add(`{"room":1}`)
	f.Fuzz(func(t *testing.T, body string) {
		for _, req := range []interface{ validate() error }{&legacySFURequest{}, &sfuRequest{}} {
			r, _ := http.NewRequest(http.MethodPost, "/", strings.NewReader(body))
			err := decode(r, req)
			if err == nil {
				err = req.validate()
			}
			if err != nil {
				var me *matrixError
				if !errors.As(err, &me) || me.status != http.StatusBadRequest || (me.errcode != "M_NOT_JSON" && me.errcode != "M_BAD_JSON") {
					t.Fatalf("body %q: %v, want a 400 M_NOT_JSON/M_BAD_JSON", body, err)
				}
				continue
			}
			var tok openIDToken
			switch v := req.(type) {
			case *legacySFURequest:
				tok = v.OpenIDToken
				_ = RoomAlias(v.Room, LegacySlot)
			case *sfuRequest:
				tok = v.OpenIDToken
				_ = Identity(v.Member.ClaimedUserID, v.Member.ClaimedDeviceID, v.Member.ID)
			}
			if tok.AccessToken == "" || tok.MatrixServerName == "" {
				t.Fatalf("body %q accepted without an OpenID token", body)
			}
		}
	})
}
