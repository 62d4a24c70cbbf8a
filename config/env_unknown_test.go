package config

import (
	"errors"
	"strings"
	"testing"
)

// TestUnknownEnv: a misspelled ICEBOX_* variable is an error, as an unknown
// key in the file is, naming the variable and the one it is close to; the
// command line's own variables and the other programs' are left alone.
func TestUnknownEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     []string
		wantErr []string // each must appear; nil: no error
	}{
		{name: "typo in a key", env: []string{"ICEBOX_TURN_RELM=x"}, wantErr: []string{"ICEBOX_TURN_RELM is not a configuration variable (did you mean ICEBOX_TURN_REALM?)"}},
		{name: "typo in a section", env: []string{"ICEBOX_HTTP_LISTNE=127.0.0.1:1"}, wantErr: []string{"ICEBOX_HTTP_LISTNE", "did you mean ICEBOX_HTTP_LISTEN?"}},
		{name: "dedicated variable", env: []string{"ICEBOX_CREDENTIALS_SECRTE=abc"}, wantErr: []string{"did you mean ICEBOX_CREDENTIALS_SECRET?"}},
		{name: "far from everything", env: []string{"ICEBOX_FROBNICATE_EVERYTHING=1"}, wantErr: []string{"ICEBOX_FROBNICATE_EVERYTHING is not a configuration variable (a variable"}},
		{
			name:    "every unknown one, sorted, beside a good one",
			env:     []string{"ICEBOX_TURN_REALM=ok.test", "ICEBOX_LOG_LEVL=debug", "ICEBOX_STATEDIR=/x"},
			wantErr: []string{"ICEBOX_LOG_LEVL is not a configuration variable (did you mean ICEBOX_LOG_LEVEL?)", "ICEBOX_STATEDIR is not a configuration variable (did you mean ICEBOX_STATE_DIR?)"},
		},
		{name: "set but empty is still a mistake", env: []string{"ICEBOX_TURN_RELM="}, wantErr: []string{"ICEBOX_TURN_RELM"}},
		{
			name: "the command line's and the tests' variables",
			env: []string{
				"ICEBOX_ADMIN_TOKEN=t", "ICEBOX_CHECK_SECRET=s", "ICEBOX_CHECK_PASSWORD=p", "ICEBOX_CHECK_TOKEN=t",
				"ICEBOX_URL=http://127.0.0.1:1", "ICEBOX_CONFIG=/etc/icebox/icebox.yaml", "ICEBOX_SCREENSHOTS_DIR=/tmp",
				"ICEBOX_TEST_MATRIXRTC_FEDERATION_NODE=1", "ICEBOX_BENCH_RTC_FIRST_FRAME=3",
			},
		},
		{name: "other prefixes", env: []string{"ICEBOXTURN_REALM=x", "MY_ICEBOX_TURN_RELM=x", "icebox_turn_relm=x", "PATH=/bin"}},
		{name: "config variables of every family", env: []string{"ICEBOX_CREDENTIALS_SECRET=0123456789abcdef0123", "ICEBOX_CREDENTIALS_KID=k2", "ICEBOX_AUTH_STATIC_TOKENS=", "ICEBOX_MATRIX_VOIP_VERSION=1", "ICEBOX_DRAIN_TIMEOUT=5s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load("", tc.env)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load accepted %v", tc.env)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestNearestName: typos are matched, unrelated names are not.
func TestNearestName(t *testing.T) {
	known := map[string]bool{"ICEBOX_TURN_REALM": true, "ICEBOX_TURN_RELAY_MIN_PORT": true, "ICEBOX_LOG_LEVEL": true}
	for name, want := range map[string]string{
		"ICEBOX_TURN_REALM":         "ICEBOX_TURN_REALM",
		"ICEBOX_TURN_RELAM":         "ICEBOX_TURN_REALM",
		"ICEBOX_TURN_RELAY_MINPORT": "ICEBOX_TURN_RELAY_MIN_PORT",
		"ICEBOX_LOGLEVEL":           "ICEBOX_LOG_LEVEL",
		"ICEBOX_WHATEVER_ELSE":      "",
		"ICEBOX_X":                  "",
	} {
		if got := nearestName(name, known); got != want {
			t.Errorf("nearestName(%s) = %q, want %q", name, got, want)
		}
	}
}
