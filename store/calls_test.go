package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
)

func TestCallRoundTrip(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		full := signaling.Call{
			ID:                  "call-full",
			ConversationID:      "c",
			RoomID:              "!room:example.org",
			Initiator:           "@alice:example.org",
			Invitee:             "@bob:example.org",
			PartyID:             "ALICEPARTY",
			Status:              signaling.StatusEnded,
			SDPOffer:            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n",
			SDPAnswer:           "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\n",
			Answerer:            "@bob:example.org",
			AnswerPartyID:       "BOBPARTY",
			LifetimeMS:          90000,
			Version:             signaling.VoIPVersion,
			CreatedAt:           at(0),
			AnsweredAt:          ptr(at(3 * time.Second)),
			EndedAt:             ptr(at(time.Minute)),
			EndReason:           signaling.ReasonUserHangup,
			EndedBy:             "@bob:example.org",
			MatrixInviteEventID: "$invite:example.org",
			MatrixPartyID:       "MXPARTY",
			RevokedUntil:        ptr(at(time.Hour)),
		}
		tests := []struct {
			name string
			call signaling.Call
		}{
			{"minimal", signaling.Call{ID: "call-min", ConversationID: "c"}},
			{"ringing", ringingCall("call-ringing", "c", 0)},
			{"full", full},
		}
		s := d.open(t, t.TempDir())
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := s.CreateCall(t.Context(), tt.call); err != nil {
					t.Fatalf("CreateCall: %v", err)
				}
				got, err := s.Call(t.Context(), tt.call.ID)
				if err != nil {
					t.Fatalf("Call: %v", err)
				}
				if !reflect.DeepEqual(got, tt.call) {
					t.Errorf("got %+v\nwant %+v", got, tt.call)
				}
			})
		}
		// A call created already revoked carries its revocation too.
		if got, want := storedRevocations(t, s), map[string]time.Time{"call-full": at(time.Hour)}; !reflect.DeepEqual(got, want) {
			t.Errorf("revocations: got %v, want %v", got, want)
		}
		checkIndexes(t, s)
	})
}

func TestCallErrors(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		orig := ringingCall("dup", "c", 0)
		mustCreate(t, s, orig)
		tests := []struct {
			name    string
			do      func() error
			want    error
			wantMsg string
		}{
			{"create existing ID", func() error {
				other := ringingCall("dup", "other", time.Hour)
				return s.CreateCall(t.Context(), other)
			}, signaling.ErrConflict, `store: create call "dup": already exists`},
			{"create empty ID", func() error { return s.CreateCall(t.Context(), ringingCall("", "c", 0)) },
				signaling.ErrInvalid, `store: create call: invalid request: call ID is empty`},
			{"create without conversation", func() error { return s.CreateCall(t.Context(), ringingCall("x", "", 0)) },
				signaling.ErrInvalid, `store: create call "x": invalid request: conversation ID is empty`},
			{"create NUL in conversation", func() error { return s.CreateCall(t.Context(), ringingCall("x", "c\x00d", 0)) },
				signaling.ErrInvalid, `store: create call "x": invalid request: conversation ID contains NUL`},
			{"get missing", func() error { _, err := s.Call(t.Context(), "nope"); return err },
				signaling.ErrNotFound, `store: get call "nope": not found`},
			{"update missing", func() error {
				_, err := s.UpdateCall(t.Context(), "nope", func(*signaling.Call) error {
					t.Error("fn called for a missing call")
					return nil
				})
				return err
			}, signaling.ErrNotFound, `store: update call "nope": not found`},
			{"list without conversation", func() error { _, err := s.Calls(t.Context(), signaling.CallFilter{}); return err },
				signaling.ErrInvalid, `store: list calls: invalid request: conversation ID is empty`},
			{"list negative limit", func() error {
				_, err := s.Calls(t.Context(), signaling.CallFilter{ConversationID: "c", Limit: -1})
				return err
			}, signaling.ErrInvalid, `store: list calls: invalid request: limit -1 is negative`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := tt.do()
				if !errors.Is(err, tt.want) {
					t.Fatalf("got %v, want %v", err, tt.want)
				}
				if err.Error() != tt.wantMsg {
					t.Errorf("got message %q, want %q", err, tt.wantMsg)
				}
			})
		}
		if got, err := s.Call(t.Context(), "dup"); err != nil || !reflect.DeepEqual(got, orig) {
			t.Errorf("call after failed create: got %+v, %v; want %+v", got, err, orig)
		}
		checkIndexes(t, s)
	})
}

func TestUpdateCallFnErrorWritesNothing(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		sentinel := errors.New("boom")
		transition := &signaling.TransitionError{Code: "call_ended", Status: signaling.StatusRinging, Msg: "no"}
		tests := []struct {
			name  string
			fnErr error
		}{
			{"plain error", sentinel},
			{"wrapped sentinel", fmt.Errorf("answer: %w", signaling.ErrForbidden)},
			{"typed error", transition},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := d.open(t, t.TempDir())
				orig := ringingCall("k", "c", 0)
				mustCreate(t, s, orig)
				before := txID(t, s)

				got, err := s.UpdateCall(t.Context(), "k", func(c *signaling.Call) error {
					// Change everything a real fn could, then fail.
					c.Status = signaling.StatusEnded
					c.CreatedAt = at(time.Hour)
					c.RevokedUntil = ptr(at(2 * time.Hour))
					c.EndedAt = ptr(at(time.Hour))
					return tt.fnErr
				})
				if err != tt.fnErr { //nolint:errorlint // the very same error is the contract
					t.Errorf("got error %v, want fn's error %v unchanged", err, tt.fnErr)
				}
				if !errors.Is(err, tt.fnErr) {
					t.Errorf("errors.Is(%v, %v) = false", err, tt.fnErr)
				}
				if !reflect.DeepEqual(got, signaling.Call{}) {
					t.Errorf("got call %+v, want zero", got)
				}
				if after := txID(t, s); after != before {
					t.Errorf("a transaction was committed (tx %v → %v)", before, after)
				}
				reread, err := s.Call(t.Context(), "k")
				if err != nil || !reflect.DeepEqual(reread, orig) {
					t.Errorf("re-read: got %+v, %v; want %+v", reread, err, orig)
				}
				if revs := storedRevocations(t, s); len(revs) != 0 {
					t.Errorf("revocations: got %v, want none", revs)
				}
				ringing, err := s.RingingCalls(t.Context())
				if err != nil || !reflect.DeepEqual(ids(ringing), []string{"k"}) {
					t.Errorf("RingingCalls: got %v, %v; want [k]", ids(ringing), err)
				}
				checkIndexes(t, s)
			})
		}
		t.Run("errors.As", func(t *testing.T) {
			s := d.open(t, t.TempDir())
			mustCreate(t, s, ringingCall("k", "c", 0))
			_, err := s.UpdateCall(t.Context(), "k", func(*signaling.Call) error { return transition })
			var te *signaling.TransitionError
			if !errors.As(err, &te) || te.Code != "call_ended" {
				t.Errorf("errors.As: got %v", err)
			}
		})
	})
}

func TestUpdateCallKeepsIdentity(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		tests := []struct {
			name    string
			fn      func(*signaling.Call)
			wantMsg string
		}{
			{"ID", func(c *signaling.Call) { c.ID = "other" },
				`store: update call "k": invalid request: the update changed the call's ID or conversation`},
			{"conversation", func(c *signaling.Call) { c.ConversationID = "other" },
				`store: update call "k": invalid request: the update changed the call's ID or conversation`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := d.open(t, t.TempDir())
				orig := ringingCall("k", "c", 0)
				mustCreate(t, s, orig)
				_, err := s.UpdateCall(t.Context(), "k", func(c *signaling.Call) error {
					tt.fn(c)
					// Would be revoked too: the revocation must roll back with the call.
					c.Status = signaling.StatusEnded
					c.RevokedUntil = ptr(at(time.Hour))
					return nil
				})
				if !errors.Is(err, signaling.ErrInvalid) {
					t.Fatalf("got %v, want ErrInvalid", err)
				}
				if err.Error() != tt.wantMsg {
					t.Errorf("got message %q, want %q", err, tt.wantMsg)
				}
				if got, err := s.Call(t.Context(), "k"); err != nil || !reflect.DeepEqual(got, orig) {
					t.Errorf("re-read: got %+v, %v; want %+v", got, err, orig)
				}
				if _, err := s.Call(t.Context(), "other"); !errors.Is(err, signaling.ErrNotFound) {
					t.Errorf("Call(other): got %v, want ErrNotFound", err)
				}
				if revs := storedRevocations(t, s); len(revs) != 0 {
					t.Errorf("revocations: got %v, want none", revs)
				}
				checkIndexes(t, s)
			})
		}
	})
}

func TestUpdateCallWritesRevocation(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		mustCreate(t, s, ringingCall("k", "c", 0), ringingCall("other", "c", time.Second))

		// Answer: no revocation yet.
		got, err := s.UpdateCall(ctx, "k", func(c *signaling.Call) error {
			c.Status = signaling.StatusAnswered
			c.AnsweredAt = ptr(at(time.Second))
			return nil
		})
		if err != nil || got.Status != signaling.StatusAnswered {
			t.Fatalf("answer: got %+v, %v", got, err)
		}
		if revs := storedRevocations(t, s); len(revs) != 0 {
			t.Fatalf("revocations after answer: got %v, want none", revs)
		}

		steps := []struct {
			name  string
			until *time.Time
			want  time.Time
		}{
			{"end sets RevokedUntil", ptr(at(time.Hour)), at(time.Hour)},
			{"unchanged", ptr(at(time.Hour)), at(time.Hour)},
			{"moved later extends", ptr(at(2 * time.Hour)), at(2 * time.Hour)},
			{"moved earlier keeps the longer", ptr(at(30 * time.Minute)), at(2 * time.Hour)},
			{"cleared keeps it", nil, at(2 * time.Hour)},
		}
		for _, st := range steps {
			got, err := s.UpdateCall(ctx, "k", func(c *signaling.Call) error {
				c.Status = signaling.StatusEnded
				c.EndedAt = ptr(at(time.Minute))
				c.RevokedUntil = st.until
				return nil
			})
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if !reflect.DeepEqual(got.RevokedUntil, st.until) {
				t.Errorf("%s: returned RevokedUntil %v, want %v", st.name, got.RevokedUntil, st.until)
			}
			reread, err := s.Call(ctx, "k")
			if err != nil || !reflect.DeepEqual(reread, got) {
				t.Errorf("%s: re-read %+v, %v; want %+v", st.name, reread, err, got)
			}
			if revs, want := storedRevocations(t, s), map[string]time.Time{"k": st.want}; !reflect.DeepEqual(revs, want) {
				t.Errorf("%s: revocations %v, want %v", st.name, revs, want)
			}
		}

		// fn mutating the stored pointer in place is seen as a change.
		if _, err := s.UpdateCall(ctx, "k", func(c *signaling.Call) error {
			c.RevokedUntil = ptr(at(time.Hour))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateCall(ctx, "k", func(c *signaling.Call) error {
			*c.RevokedUntil = at(3 * time.Hour)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if revs, want := storedRevocations(t, s), map[string]time.Time{"k": at(3 * time.Hour)}; !reflect.DeepEqual(revs, want) {
			t.Errorf("after in-place change: revocations %v, want %v", revs, want)
		}
		checkIndexes(t, s)
	})
}

func TestCallsListing(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		// Inserted out of order; "c" is a prefix of "c1", and "z" sorts last.
		calls := []signaling.Call{
			ringingCall("b", "c", 2*time.Minute),
			ringingCall("a", "c", 3*time.Minute),
			ringingCall("d", "c", 0),
			ringingCall("e", "c", time.Minute),
			ringingCall("old", "c", -60*365*24*time.Hour), // before 1970
			ringingCall("tie1", "c", 90*time.Second),
			ringingCall("tie2", "c", 90*time.Second),
			ringingCall("x1", "c1", 10*time.Minute),
			ringingCall("z1", "z", time.Minute),
			ringingCall("z2", "z", 2*time.Minute),
		}
		mustCreate(t, s, calls...)
		// a answered, e ended, d expired, tie1 rejected.
		for id, st := range map[string]signaling.Status{
			"a": signaling.StatusAnswered, "e": signaling.StatusEnded,
			"d": signaling.StatusExpired, "tie1": signaling.StatusRejected,
		} {
			if _, err := s.UpdateCall(ctx, id, func(c *signaling.Call) error { c.Status = st; return nil }); err != nil {
				t.Fatal(err)
			}
		}

		tests := []struct {
			name string
			f    signaling.CallFilter
			want []string
		}{
			{"all newest first", signaling.CallFilter{ConversationID: "c"},
				[]string{"a", "b", "tie2", "tie1", "e", "d", "old"}},
			{"limit", signaling.CallFilter{ConversationID: "c", Limit: 2}, []string{"a", "b"}},
			{"limit above count", signaling.CallFilter{ConversationID: "c", Limit: 100},
				[]string{"a", "b", "tie2", "tie1", "e", "d", "old"}},
			{"active only", signaling.CallFilter{ConversationID: "c", ActiveOnly: true},
				[]string{"a", "b", "tie2", "old"}},
			{"active only, limit", signaling.CallFilter{ConversationID: "c", ActiveOnly: true, Limit: 3},
				[]string{"a", "b", "tie2"}},
			{"prefix conversation", signaling.CallFilter{ConversationID: "c1"}, []string{"x1"}},
			{"last conversation in key order", signaling.CallFilter{ConversationID: "z"}, []string{"z2", "z1"}},
			{"first conversation in key order", signaling.CallFilter{ConversationID: "A"}, []string{}},
			{"unknown conversation", signaling.CallFilter{ConversationID: "nope"}, []string{}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := s.Calls(ctx, tt.f)
				if err != nil {
					t.Fatalf("Calls: %v", err)
				}
				if !slices.Equal(ids(got), tt.want) {
					t.Errorf("got %v, want %v", ids(got), tt.want)
				}
			})
		}

		t.Run("full values", func(t *testing.T) {
			got, err := s.Calls(ctx, signaling.CallFilter{ConversationID: "z"})
			if err != nil {
				t.Fatal(err)
			}
			want := []signaling.Call{calls[9], calls[8]}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
		})

		t.Run("without SDPs", func(t *testing.T) {
			got, err := s.Calls(ctx, signaling.CallFilter{ConversationID: "z", NoSDP: true})
			if err != nil {
				t.Fatal(err)
			}
			want := []signaling.Call{calls[9], calls[8]}
			for i := range want {
				want[i].SDPOffer, want[i].SDPAnswer = "", ""
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
		})

		t.Run("CreatedAt changed by update", func(t *testing.T) {
			if _, err := s.UpdateCall(ctx, "old", func(c *signaling.Call) error {
				c.CreatedAt = at(time.Hour)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			got, err := s.Calls(ctx, signaling.CallFilter{ConversationID: "c", Limit: 2})
			if err != nil || !slices.Equal(ids(got), []string{"old", "a"}) {
				t.Errorf("got %v, %v; want [old a]", ids(got), err)
			}
			checkIndexes(t, s)
		})
	})
}

func TestRingingCallsFollowStatus(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		mustCreate(t, s,
			ringingCall("r1", "c", 0), ringingCall("r2", "c", time.Second),
			ringingCall("r3", "d", 2*time.Second), ringingCall("r4", "d", 3*time.Second))

		steps := []struct {
			name   string
			id     string
			status signaling.Status
			want   []string
		}{
			{"start", "", "", []string{"r1", "r2", "r3", "r4"}},
			{"answer r2", "r2", signaling.StatusAnswered, []string{"r1", "r3", "r4"}},
			{"reject r3", "r3", signaling.StatusRejected, []string{"r1", "r4"}},
			{"expire r1", "r1", signaling.StatusExpired, []string{"r4"}},
			{"r4 back to ringing stays once", "r4", signaling.StatusRinging, []string{"r4"}},
			{"end r4", "r4", signaling.StatusEnded, []string{}},
		}
		for _, st := range steps {
			if st.id != "" {
				if _, err := s.UpdateCall(ctx, st.id, func(c *signaling.Call) error { c.Status = st.status; return nil }); err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
			}
			got, err := s.RingingCalls(ctx)
			if err != nil {
				t.Fatalf("%s: RingingCalls: %v", st.name, err)
			}
			if !slices.Equal(ids(got), st.want) {
				t.Errorf("%s: got %v, want %v", st.name, ids(got), st.want)
			}
			for _, c := range got {
				if c.Status != signaling.StatusRinging {
					t.Errorf("%s: %s has status %s", st.name, c.ID, c.Status)
				}
			}
			checkIndexes(t, s)
		}
	})
}

func TestDurableAcrossReopen(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		dir := t.TempDir()
		s := d.open(t, dir)
		ctx := t.Context()
		conv := signaling.Conversation{ID: "c", Participants: []string{"@a:x", "@b:x"}, CreatedAt: at(0), UpdatedAt: at(0)}
		if err := s.PutConversation(ctx, conv); err != nil {
			t.Fatal(err)
		}
		mustCreate(t, s, ringingCall("ringing", "c", 0), ringingCall("ended", "c", time.Second))
		ended, err := s.UpdateCall(ctx, "ended", func(c *signaling.Call) error {
			c.Status = signaling.StatusEnded
			c.EndedAt = ptr(at(time.Minute))
			c.RevokedUntil = ptr(at(time.Hour))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		s = d.open(t, dir)
		if got, err := s.Conversation(ctx, "c"); err != nil || !reflect.DeepEqual(got, conv) {
			t.Errorf("Conversation: got %+v, %v; want %+v", got, err, conv)
		}
		if got, err := s.Call(ctx, "ended"); err != nil || !reflect.DeepEqual(got, ended) {
			t.Errorf("Call: got %+v, %v; want %+v", got, err, ended)
		}
		if got, err := s.Calls(ctx, signaling.CallFilter{ConversationID: "c"}); err != nil || !slices.Equal(ids(got), []string{"ended", "ringing"}) {
			t.Errorf("Calls: got %v, %v", ids(got), err)
		}
		if got, err := s.RingingCalls(ctx); err != nil || !slices.Equal(ids(got), []string{"ringing"}) {
			t.Errorf("RingingCalls: got %v, %v", ids(got), err)
		}
		want := []signaling.Revocation{{CallID: "ended", Until: at(time.Hour)}}
		if got, err := s.Revocations(ctx, at(time.Minute)); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Revocations: got %+v, %v; want %+v", got, err, want)
		}
		checkIndexes(t, s)
	})
}

func TestCancelledContext(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		mustCreate(t, s, ringingCall("k", "c", 0))
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		before := txID(t, s)

		fnCalled := false
		tests := []struct {
			name string
			do   func() error
		}{
			{"PutConversation", func() error { return s.PutConversation(ctx, signaling.Conversation{ID: "new"}) }},
			{"Conversation", func() error { _, err := s.Conversation(ctx, "c"); return err }},
			{"DeleteConversation", func() error { return s.DeleteConversation(ctx, "c") }},
			{"CreateCall", func() error { return s.CreateCall(ctx, ringingCall("new", "c", 0)) }},
			{"UpdateCall", func() error {
				_, err := s.UpdateCall(ctx, "k", func(*signaling.Call) error { fnCalled = true; return nil })
				return err
			}},
			{"Call", func() error { _, err := s.Call(ctx, "k"); return err }},
			{"Calls", func() error { _, err := s.Calls(ctx, signaling.CallFilter{ConversationID: "c"}); return err }},
			{"RingingCalls", func() error { _, err := s.RingingCalls(ctx); return err }},
			{"Revocations", func() error { _, err := s.Revocations(ctx, t0); return err }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := tt.do()
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("got %v, want context.Canceled", err)
				}
			})
		}
		if fnCalled {
			t.Error("UpdateCall ran fn under a cancelled context")
		}
		if after := txID(t, s); after != before {
			t.Errorf("a transaction was committed under a cancelled context (tx %v → %v)", before, after)
		}
	})
}

// BenchmarkUpdateCall measures one durable UpdateCall (read, fn, write call
// and indexes, fsync) on a store holding 1000 calls.
func BenchmarkUpdateCall(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	})
	for i := range 1000 {
		mustCreate(b, s, ringingCall(fmt.Sprintf("call-%04d", i), fmt.Sprintf("conv-%02d", i%50), time.Duration(i)*time.Second))
	}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_, err := s.UpdateCall(ctx, "call-0500", func(c *signaling.Call) error {
			if i%2 == 0 {
				c.Status = signaling.StatusAnswered
			} else {
				c.Status = signaling.StatusRinging
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
