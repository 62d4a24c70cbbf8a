package node_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/node/nodetest"
)

// TestNodeReloadInitiateRate: calls.initiate_burst and calls.initiate_rate
// changed in the configuration apply on SIGHUP to the running limiter, and
// are named as applied, not as needing a restart. A user who spent their
// burst before the reload is still refused after it (their bucket is not
// refilled), a user who had not started any call gets the new burst, and
// the new rate then refills the first user's bucket.
func TestNodeReloadInitiateRate(t *testing.T) {
	const (
		adminToken = "reload-calls-admin-token"
		aliceToken = "reload-calls-alice-token"
		bobToken   = "reload-calls-bob-token"
	)
	cfg := nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret)
	cfg.Auth.StaticTokens = []config.StaticToken{staticToken(adminToken, "ops"), staticToken(aliceToken, "alice"), staticToken(bobToken, "bob")}
	cfg.Calls.InitiateRate = 0.001 // one token every 1000 s: none comes back during the test
	cfg.Calls.InitiateBurst = 1
	auth, err := authFromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	current := cfg
	logs := &syncBuffer{}
	reload := make(chan struct{}, 1)
	n := nodetest.Start(t, cfg, node.Options{
		Logger: zerolog.New(logs), Auth: auth, Reload: reload, BuildAuth: authFromConfig,
		LoadConfig: func() (config.Config, error) { mu.Lock(); defer mu.Unlock(); return current, nil },
	})
	base := "http://" + n.Addrs.HTTP
	if code, body := doReq(t, adminToken, http.MethodPut, base+"/admin/conversations/c1", `{"participants":["alice","bob"]}`); code != http.StatusOK {
		t.Fatalf("PUT conversation: %d %s", code, body)
	}
	const initiate = `{"conversation_id":"c1","sdp_offer":"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}`
	// calls makes up to tries initiations as token's user and returns how
	// many were created before the first 429.
	calls := func(token string, tries int) int {
		t.Helper()
		for i := range tries {
			code, body := doReq(t, token, http.MethodPost, base+"/calls/initiate", initiate)
			if code == http.StatusTooManyRequests {
				return i
			}
			if code != http.StatusCreated {
				t.Fatalf("initiate %d: %d %s", i+1, code, body)
			}
		}
		return tries
	}
	reloadWith := func(mutate func(*config.Config)) reloadLine {
		t.Helper()
		mu.Lock()
		mutate(&current)
		mu.Unlock()
		before := strings.Count(logs.String(), "configuration reloaded")
		reload <- struct{}{}
		poll(t, 10*time.Second, "the reload's summary", func() bool {
			return strings.Count(logs.String(), "configuration reloaded") > before
		})
		lines := strings.Split(logs.String(), "\n")
		for i := len(lines) - 1; i > 0 && !strings.Contains(lines[i], "configuration reloaded"); i-- {
			lines = lines[:i]
		}
		return reloadSummary(t, lines[len(lines)-1])
	}

	if got := calls(aliceToken, 2); got != 1 {
		t.Fatalf("before the reload: alice started %d calls, want 1 (the burst)", got)
	}

	s := reloadWith(func(c *config.Config) { c.Calls.InitiateBurst = 4 })
	if !contains(s.Applied, "calls.initiate_burst") || len(s.Restart) != 0 {
		t.Errorf("reload of calls.initiate_burst: applied %q, needs_restart %q", s.Applied, s.Restart)
	}
	if got := calls(aliceToken, 1); got != 0 {
		t.Errorf("after raising the burst: alice, who spent hers, started %d calls, want 0 (a reload does not refill a bucket)", got)
	}
	if got := calls(bobToken, 5); got != 4 {
		t.Errorf("after raising the burst to 4: bob started %d calls, want 4", got)
	}

	s = reloadWith(func(c *config.Config) { c.Calls.InitiateRate = 1000 })
	if !contains(s.Applied, "calls.initiate_rate") || len(s.Restart) != 0 {
		t.Errorf("reload of calls.initiate_rate: applied %q, needs_restart %q", s.Applied, s.Restart)
	}
	poll(t, 10*time.Second, "alice's bucket refilled at the new rate", func() bool { return calls(aliceToken, 1) == 1 })
}
