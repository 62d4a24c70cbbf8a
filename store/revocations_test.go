package store

import (
	"reflect"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
)

func TestRevocationsPrune(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		untils := map[string]time.Duration{
			"gone1": -time.Hour,
			"gone2": 0, // Until == now: no longer in force
			"live1": time.Nanosecond,
			"live2": time.Hour,
		}
		for id, d := range untils {
			mustCreate(t, s, ringingCall(id, "c", 0))
			if _, err := s.UpdateCall(ctx, id, func(c *signaling.Call) error {
				c.Status = signaling.StatusEnded
				c.RevokedUntil = ptr(at(d))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}

		steps := []struct {
			name      string
			now       time.Time
			want      []signaling.Revocation
			wantKept  []string
			wantWrite bool
		}{
			{"prunes expired", at(0),
				[]signaling.Revocation{{CallID: "live1", Until: at(time.Nanosecond)}, {CallID: "live2", Until: at(time.Hour)}},
				[]string{"live1", "live2"}, true},
			{"nothing to prune is read-only", at(0),
				[]signaling.Revocation{{CallID: "live1", Until: at(time.Nanosecond)}, {CallID: "live2", Until: at(time.Hour)}},
				[]string{"live1", "live2"}, false},
			{"later", at(time.Minute),
				[]signaling.Revocation{{CallID: "live2", Until: at(time.Hour)}},
				[]string{"live2"}, true},
			{"all expired", at(time.Hour), nil, nil, true},
			{"empty", at(time.Hour), nil, nil, false},
		}
		for _, st := range steps {
			before := txID(t, s)
			got, err := s.Revocations(ctx, st.now)
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if !reflect.DeepEqual(got, st.want) {
				t.Errorf("%s: got %+v, want %+v", st.name, got, st.want)
			}
			var kept []string
			for id := range storedRevocations(t, s) {
				kept = append(kept, id)
			}
			if len(kept) != len(st.wantKept) {
				t.Errorf("%s: stored %v, want %v", st.name, kept, st.wantKept)
			}
			for _, id := range st.wantKept {
				if _, ok := storedRevocations(t, s)[id]; !ok {
					t.Errorf("%s: %s was pruned", st.name, id)
				}
			}
			if wrote := txID(t, s) != before; wrote != st.wantWrite {
				t.Errorf("%s: committed = %v, want %v", st.name, wrote, st.wantWrite)
			}
		}

		// Pruning a revocation does not touch its call.
		c, err := s.Call(ctx, "gone1")
		if err != nil || c.RevokedUntil == nil || !c.RevokedUntil.Equal(at(-time.Hour)) {
			t.Errorf("call after prune: %+v, %v", c, err)
		}
	})
}
