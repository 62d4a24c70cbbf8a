package probe

import "testing"

// TestLiveKitHTTP: the LiveKit URL clients get, turned into the HTTP base
// the check asks (a reverse proxy's path kept).
func TestLiveKitHTTP(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "ws://127.0.0.1:7880", want: "http://127.0.0.1:7880"},
		{in: "wss://sfu.example.org", want: "https://sfu.example.org"},
		{in: "wss://rtc.example.org/livekit/sfu/", want: "https://rtc.example.org/livekit/sfu"},
		{in: "wss://rtc.example.org/livekit/sfu?x=1", want: "https://rtc.example.org/livekit/sfu"},
		{in: "turn:sfu.example.org", err: `LiveKit URL "turn:sfu.example.org" is not a URL`},
		{in: "ftp://sfu.example.org", err: `LiveKit URL "ftp://sfu.example.org": want ws:// or wss://`},
	} {
		got, err := liveKitHTTP(tc.in)
		switch {
		case tc.err != "" && (err == nil || err.Error() != tc.err):
			t.Errorf("liveKitHTTP(%q) error %v, want %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("liveKitHTTP(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
