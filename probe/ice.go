package probe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// maxClockSkew is how far the API server's Date may be from our clock
// before it is worth a warning (credentials' expiries are judged by it).
const maxClockSkew = 30 * time.Second

// iceServer is one entry of an RTCConfiguration's iceServers; urls may be a
// string or a list.
type iceServer struct {
	URLs       json.RawMessage `json:"urls"`
	Username   string          `json:"username"`
	Credential string          `json:"credential"`
}

// iceServersBody is the body of icebox's GET /calls/ice_servers.
type iceServersBody struct {
	ICEServers []iceServer `json:"ice_servers"`
	TTL        int64       `json:"ttl"`
	ExpiresAt  time.Time   `json:"expires_at"`
}

// ICEServers is what FetchICEServers found.
type ICEServers struct {
	Targets  []Target
	Warnings []string
}

// FetchICEServers GETs an icebox /calls/ice_servers URL with a bearer token
// and returns its STUN and TURN URLs with their credentials: exactly what a
// client is given. The token is never part of an error.
func FetchICEServers(ctx context.Context, hc *http.Client, url, token string, now func() time.Time) (*ICEServers, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("ice servers: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ice servers: GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("ice servers: GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		msg := fmt.Sprintf("ice servers: GET %s: %s", url, resp.Status)
		if e.Error.Code != "" {
			msg += fmt.Sprintf(" (%s: %s)", e.Error.Code, e.Error.Message)
		}
		if resp.StatusCode == http.StatusUnauthorized {
			msg += "; check --token"
		}
		return nil, errors.New(msg)
	}
	var b iceServersBody
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("ice servers: GET %s: not an ice_servers response: %w", url, err)
	}
	out := &ICEServers{}
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		// Date has second precision: allow for it.
		if skew := d.Sub(now()); skew > maxClockSkew || skew < -maxClockSkew-time.Second {
			out.Warnings = append(out.Warnings, fmt.Sprintf(
				"the API server's clock is %s this machine's (Date: %s): credentials' expiries are judged by different clocks",
				describeSkew(skew), d.UTC().Format(time.RFC3339)))
		}
	}
	if !b.ExpiresAt.IsZero() && !b.ExpiresAt.After(now()) {
		out.Warnings = append(out.Warnings, fmt.Sprintf("the API issued credentials that expired at %s, before they were fetched",
			b.ExpiresAt.UTC().Format(time.RFC3339)))
	}
	for i, s := range b.ICEServers {
		urls, err := urlList(s.URLs)
		if err != nil {
			return nil, fmt.Errorf("ice servers: entry %d: %w", i, err)
		}
		for _, u := range urls {
			t, err := ParseURL(u)
			if err != nil {
				out.Warnings = append(out.Warnings, fmt.Sprintf("skipped an ICE server URL: %v", err))
				continue
			}
			t.Username, t.Password = s.Username, s.Credential
			out.Targets = append(out.Targets, t)
		}
	}
	if len(out.Targets) == 0 {
		return nil, fmt.Errorf("ice servers: GET %s: no usable STUN or TURN URL in the response", url)
	}
	return out, nil
}

func urlList(raw json.RawMessage) ([]string, error) {
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, errors.New("urls is neither a string nor a list of strings")
	}
	return many, nil
}

func describeSkew(d time.Duration) string {
	if d > 0 {
		return d.Round(time.Second).String() + " ahead of"
	}
	return (-d).Round(time.Second).String() + " behind"
}
