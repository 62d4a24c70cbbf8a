package credentials

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/livekit/protocol/utils/guid"
)

// livekitCredential mints a TURN credential the way livekit-server v1.13.5
// does for rtc.turn_servers[].secret (pkg/service/roommanager.go): username
// "<unix expiry>:<participant ID>", credential base64(HMAC-SHA1(secret,
// username)). Written from livekit's formula, not through this package.
func livekitCredential(secret []byte, participantID string, expiry time.Time) (username, credential string) {
	username = fmt.Sprintf("%d:%s", expiry.Unix(), participantID)
	h := hmac.New(sha1.New, secret)
	h.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// TestParticipantIDForm: the participant-ID rule is LiveKit's own
// (alphabet, length, prefix), and LiveKit's generator only makes IDs of it.
func TestParticipantIDForm(t *testing.T) {
	if ParticipantAlphabet != guid.IDAlphabet || ParticipantIDLen != guid.Size || ParticipantPrefix != guid.ParticipantPrefix {
		t.Fatalf("participant-ID form drifted from livekit/protocol's guid package")
	}
	for range 1000 {
		if id := guid.New(guid.ParticipantPrefix); !IsParticipantID(id) {
			t.Fatalf("LiveKit participant ID %q not recognised", id)
		}
	}
	for _, u := range []string{"PA_", "PA_abc", "PA_0000000000000", "PA_AAAAAAAAAAAl", "pa_AAAAAAAAAAAA", "@PA_AAAAAAAAAAAA:hs", "PA_AAAAAAAAAAAAA", "RM_AAAAAAAAAAAA"} {
		if IsParticipantID(u) {
			t.Errorf("%q taken for a participant ID", u)
		}
	}
}

func sfuRing(t *testing.T, now time.Time, sfuKeys ...string) *Keyring {
	t.Helper()
	secrets := []Secret{{KID: "k1", Key: []byte("compat-secret-0123456789"), Compat: true}}
	for i, k := range sfuKeys {
		secrets = append(secrets, Secret{KID: fmt.Sprintf("sfu%d", len(sfuKeys)-i), Key: []byte(k), SFU: true})
	}
	kr, err := NewKeyring(secrets, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// TestSecuritySFUSecretScope: a LiveKit credential verifies with the SFU
// secret and is marked SFU; the same username signed with the compat secret
// is refused (a compat credential never gains SFU status); the SFU secret
// verifies no ordinary username, kid-less or with its own kid.
func TestSecuritySFUSecretScope(t *testing.T) {
	now := time.Now()
	sfuKey := []byte("sfu-secret-0123456789abcdef")
	compatKey := []byte("compat-secret-0123456789")
	kr := sfuRing(t, now, string(sfuKey))
	pid := guid.New(guid.ParticipantPrefix)

	user, pass := livekitCredential(sfuKey, pid, now.Add(4*time.Hour))
	c, err := kr.Verify(user, pass)
	if err != nil || !c.SFU || c.User != pid || c.KID != "" {
		t.Fatalf("LiveKit credential: %+v, %v", c, err)
	}
	t.Logf("LiveKit credential %s verified with the SFU secret, SFU=%t", user, c.SFU)

	if _, err := kr.Verify(user, Password(compatKey, user)); !errors.Is(err, ErrBadPassword) {
		t.Errorf("compat-signed PA_ username: %v, want ErrBadPassword", err)
	}
	// Same with a call: still the SFU's form, still not the compat secret's.
	callUser := fmt.Sprintf("%d:call-c1:%s", now.Add(time.Hour).Unix(), pid)
	if _, err := kr.Verify(callUser, Password(compatKey, callUser)); !errors.Is(err, ErrBadPassword) {
		t.Errorf("compat-signed per-call PA_ username: %v, want ErrBadPassword", err)
	}
	ordinary := fmt.Sprintf("%d:@alice:example.org", now.Add(time.Hour).Unix())
	if _, err := kr.Verify(ordinary, Password(sfuKey, ordinary)); !errors.Is(err, ErrBadPassword) {
		t.Errorf("SFU-signed ordinary username: %v, want ErrBadPassword", err)
	}
	if c, err := kr.Verify(ordinary, Password(compatKey, ordinary)); err != nil || c.SFU {
		t.Errorf("ordinary compat credential: %+v, %v", c, err)
	}
	withKID := fmt.Sprintf("%d.sfu1:%s", now.Add(time.Hour).Unix(), pid)
	if _, err := kr.Verify(withKID, Password(sfuKey, withKID)); !errors.Is(err, ErrUnknownKID) {
		t.Errorf("username naming the SFU secret's kid: %v, want ErrUnknownKID", err)
	}
	if got := kr.KIDs(); len(got) != 1 || got[0] != "k1" {
		t.Errorf("KIDs = %v: the SFU secret must not be among the signing/kid secrets", got)
	}
	cred, err := kr.Mint(Subject{User: pid}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := kr.Verify(cred.Username, cred.Password); err != nil || c.SFU {
		t.Errorf("icebox-minted credential for a PA_ user: %+v, %v; want verified, not SFU", c, err)
	}

	// Without an SFU secret a PA_ username is refused outright.
	plain, err := NewKeyring([]Secret{{KID: "k1", Key: compatKey, Compat: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Verify(user, Password(compatKey, user)); !errors.Is(err, ErrUnknownKID) {
		t.Errorf("PA_ username, no SFU secret: %v, want ErrUnknownKID", err)
	}
}

// TestSFURotationLookup: with two SFU secrets, SFUPasswords names each
// one's password and LookupSFU verifies with the one asked for.
func TestSFURotationLookup(t *testing.T) {
	now := time.Now()
	newKey, oldKey := "sfu-new-secret-0123456789", "sfu-old-secret-0123456789"
	kr := sfuRing(t, now, newKey, oldKey)
	if got := kr.SFUKIDs(); len(got) != 2 || got[0] != "sfu2" || got[1] != "sfu1" {
		t.Fatalf("SFUKIDs = %v", got)
	}
	user, pass := livekitCredential([]byte(oldKey), guid.New(guid.ParticipantPrefix), now.Add(time.Hour))
	pw := kr.SFUPasswords(user)
	if len(pw) != 2 || pw[1] != pass || pw[0] == pass {
		t.Fatalf("SFUPasswords did not single out the old secret")
	}
	if _, want, _ := kr.LookupSFU(user, "sfu1"); want != pass {
		t.Error("LookupSFU(sfu1) did not use the old secret")
	}
	if _, want, _ := kr.Lookup(user); want == pass {
		t.Error("Lookup used the old SFU secret; want the current one")
	}
	if kr.SFUPasswords("123:@alice:example.org") != nil {
		t.Error("SFUPasswords for an ordinary username")
	}
	if _, err := NewKeyring([]Secret{{KID: "sfu1", Key: []byte(newKey), SFU: true}}, nil); err == nil {
		t.Error("a keyring of SFU secrets only: want an error (nothing signs)")
	}
	if _, err := NewKeyring([]Secret{{KID: "k1", Key: []byte(newKey)}, {KID: "k1", Key: []byte(oldKey), SFU: true}}, nil); err == nil {
		t.Error("an SFU secret reusing a kid: want an error")
	}
}
