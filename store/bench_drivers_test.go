package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store/postgres"
)

// BenchmarkCallLifecycle measures whole calls on each driver: create with
// its invite's outbox entry, answer and hang up (each with an entry; the
// hangup writes the revocation), as the calls service commits them; one
// at a time and from 32 goroutines (calls/s is b.N / time). PostgreSQL runs
// as pgtest starts it (fsync off): its numbers are its CPU and round trips,
// not a disk's. postgres-feed is PostgreSQL as nodes run it: each
// transition also writes its WebSocket event and revocation to the feed,
// under the feed's lock, in its transaction.
func BenchmarkCallLifecycle(b *testing.B) {
	for _, name := range []string{"bbolt", "postgres", "postgres-feed"} {
		for _, par := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/parallel=%v", name, par), func(b *testing.B) {
				s := benchStore(b, name)
				ctx := context.Background()
				var n atomic.Int64
				call := func() {
					ctx := ctx
					id := fmt.Sprintf("b-%d", n.Add(1))
					if name == "postgres-feed" {
						var j *signaling.TxEvents
						ctx, j = signaling.WithTxEvents(ctx)
						j.Set(signaling.Event{Type: "CallInvite", CallID: id, ConversationID: "conv", Recipients: []string{"a", "b"}, Payload: map[string]string{"call_id": id}})
					}
					c := ringingCall(id, "conv", 0)
					out := []signaling.OutboxEntry{{CallID: id, RoomID: "!r:x", EventType: "m.call.invite", Content: json.RawMessage(`{"call_id":"` + id + `"}`)}}
					if err := s.CreateCallOutbox(ctx, c, out); err != nil {
						b.Fatal(err)
					}
					for _, st := range []signaling.Status{signaling.StatusAnswered, signaling.StatusEnded} {
						_, err := s.UpdateCallOutbox(ctx, id, func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
							c.Status = st
							if st == signaling.StatusEnded {
								until := time.Now().Add(time.Hour)
								c.RevokedUntil = &until
							}
							return out, nil
						})
						if err != nil {
							b.Fatal(err)
						}
					}
				}
				if par {
					b.SetParallelism(16) // 16 goroutines per GOMAXPROCS (2 here: 32)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							call()
						}
					})
				} else {
					for b.Loop() {
						call()
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
			})
		}
	}
}

func benchStore(b *testing.B, name string) testStore {
	if name == "bbolt" {
		s, err := Open(b.TempDir(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		return s
	}
	if pgServer == nil {
		b.Skip("PostgreSQL is not installed")
	}
	sum := sha256.Sum256([]byte(b.Name() + time.Now().String()))
	dsn, err := pgServer.CreateDatabase("b" + hex.EncodeToString(sum[:12]))
	if err != nil {
		b.Fatal(err)
	}
	s, err := postgres.Open(context.Background(), postgres.Options{DSN: dsn, Records: Records{}, MaxConns: 32, Feed: name == "postgres-feed"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}
