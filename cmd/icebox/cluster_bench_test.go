package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// TestClusterBench measures whole calls through the API (issue 18's
// benchmark): calls/s (initiate → answer → hang up, each a REST request)
// and initiate → CallInvite on the callee's WebSocket, p50 and p99, for one
// node on bbolt, one node on PostgreSQL and three nodes on PostgreSQL
// (caller, callee and answer each on another node), with 10 and 100 calls
// at once. A measurement, not a check: opt in with ICEBOX_CLUSTER_BENCH=1
// (it runs for about half a minute); it reports, and fails only when a
// call fails. Known: with 100 WebSockets over three in-process nodes, a
// node's stop at cleanup sometimes exceeds the HTTP server's 5 s shutdown
// (nodetest: stop: context deadline exceeded); likely a connection the
// test client's transport dialled under load and never used: the server
// counts such a connection (StateNew) as busy for 5 s.
func TestClusterBench(t *testing.T) {
	if os.Getenv("ICEBOX_CLUSTER_BENCH") != "1" {
		t.Skip("a measurement: set ICEBOX_CLUSTER_BENCH=1 to run it")
	}
	for _, setup := range []struct {
		name  string
		nodes int
		pg    bool
	}{{"1 node, bbolt", 1, false}, {"1 node, PostgreSQL", 1, true}, {"3 nodes, PostgreSQL", 3, true}} {
		for _, conc := range []int{10, 100} {
			t.Run(fmt.Sprintf("%s, %d at once", setup.name, conc), func(t *testing.T) {
				benchCalls(t, setup.nodes, setup.pg, conc)
			})
		}
	}
}

func benchCalls(t *testing.T, nodes int, pg bool, conc int) {
	tok := newAPITokens()
	for i := range conc {
		tok[fmt.Sprintf("caller%d", i)] = fmt.Sprintf("bench-caller-%d-token", i)
		tok[fmt.Sprintf("callee%d", i)] = fmt.Sprintf("bench-callee-%d-token", i)
	}
	extra := "  initiate_rate: 1000\n  initiate_burst: 1000\n"
	var dsn string
	if pg {
		dsn = pgtest.Start(t).NewDatabase(t)
	}
	envs := make([]*callsEnv, nodes)
	for i := range envs {
		cfg := callsConfig(filepath.Join(t.TempDir(), "state"), extra)
		if pg {
			cfg += "store:\n  driver: postgres\n  postgres:\n    dsn: " + strconv.Quote(dsn) + "\n    max_conns: 20\n"
		}
		envs[i] = startCalls(t, cfg, tok)
	}
	const perWorker = 5
	ws := make([]*wsClient, conc)
	for i := range conc {
		envs[0].putConversation(t, fmt.Sprintf("bench%d", i), fmt.Sprintf("caller%d", i), fmt.Sprintf("callee%d", i))
		ws[i] = envs[(i+1)%nodes].dialWS(t, fmt.Sprintf("callee%d", i), false)
	}
	var (
		mu  sync.Mutex
		lat []time.Duration
		wg  sync.WaitGroup
	)
	start := time.Now()
	for i := range conc {
		wg.Go(func() {
			caller, callee := fmt.Sprintf("caller%d", i), fmt.Sprintf("callee%d", i)
			for range perWorker {
				t0 := time.Now()
				c := envs[i%nodes].initiate(t, caller, fmt.Sprintf("bench%d", i), nil)
				ws[i].await(t, "CallInvite", event("CallInvite", c.ID))
				d := time.Since(t0)
				envs[(i+2)%nodes].answer(t, callee, c.ID)
				envs[i%nodes].mustAPI(t, caller, http.MethodPost, "/calls/"+c.ID+"/hangup", nil, http.StatusOK)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[min(int(q*float64(len(lat))), len(lat)-1)] }
	t.Logf("%d calls in %s: %.0f calls/s; initiate → callee's CallInvite p50 %s, p99 %s",
		len(lat), elapsed.Round(time.Millisecond), float64(len(lat))/elapsed.Seconds(),
		p(0.5).Round(100*time.Microsecond), p(0.99).Round(100*time.Microsecond))
}
