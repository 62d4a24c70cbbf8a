package store

import (
	"errors"
	"reflect"
	"testing"

	"github.com/icebox-voip/icebox/signaling"
)

func TestConversationRoundTrip(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		tests := []struct {
			name string
			conv signaling.Conversation
		}{
			{"minimal", signaling.Conversation{ID: "c1"}},
			{"full", signaling.Conversation{
				ID:           "team-standup_2",
				Participants: []string{"@alice:example.org", "@bob:example.org", "@zoë:example.org"},
				RoomID:       "!room:example.org",
				CallProtocol: signaling.CallProtocolAuto,
				CreatedAt:    at(0),
				UpdatedAt:    at(5e9),
			}},
		}
		s := d.open(t, t.TempDir())
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := s.PutConversation(t.Context(), tt.conv); err != nil {
					t.Fatalf("PutConversation: %v", err)
				}
				got, err := s.Conversation(t.Context(), tt.conv.ID)
				if err != nil {
					t.Fatalf("Conversation: %v", err)
				}
				if !reflect.DeepEqual(got, tt.conv) {
					t.Errorf("got %+v, want %+v", got, tt.conv)
				}
			})
		}

		t.Run("replace", func(t *testing.T) {
			want := signaling.Conversation{ID: "c1", Participants: []string{"@carol:example.org"}, UpdatedAt: at(1e9)}
			if err := s.PutConversation(t.Context(), want); err != nil {
				t.Fatal(err)
			}
			got, err := s.Conversation(t.Context(), "c1")
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v, %v; want %+v", got, err, want)
			}
		})
	})
}

func TestConversationErrors(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		if err := s.PutConversation(t.Context(), signaling.Conversation{ID: "kept"}); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name    string
			do      func() error
			want    error
			wantMsg string
		}{
			{"get missing", func() error { _, err := s.Conversation(t.Context(), "nope"); return err },
				signaling.ErrNotFound, `store: get conversation "nope": not found`},
			{"get empty ID", func() error { _, err := s.Conversation(t.Context(), ""); return err },
				signaling.ErrNotFound, `store: get conversation "": not found`},
			{"delete missing", func() error { return s.DeleteConversation(t.Context(), "nope") },
				signaling.ErrNotFound, `store: delete conversation "nope": not found`},
			{"put empty ID", func() error { return s.PutConversation(t.Context(), signaling.Conversation{}) },
				signaling.ErrInvalid, `store: put conversation: invalid request: conversation ID is empty`},
			{"put NUL in ID", func() error { return s.PutConversation(t.Context(), signaling.Conversation{ID: "a\x00b"}) },
				signaling.ErrInvalid, `store: put conversation: invalid request: conversation ID contains NUL`},
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
	})
}

func TestDeleteConversationKeepsCalls(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		if err := s.PutConversation(ctx, signaling.Conversation{ID: "c"}); err != nil {
			t.Fatal(err)
		}
		call := ringingCall("k1", "c", 0)
		mustCreate(t, s, call)

		if err := s.DeleteConversation(ctx, "c"); err != nil {
			t.Fatalf("DeleteConversation: %v", err)
		}
		if _, err := s.Conversation(ctx, "c"); !errors.Is(err, signaling.ErrNotFound) {
			t.Errorf("Conversation after delete: got %v, want ErrNotFound", err)
		}
		if err := s.DeleteConversation(ctx, "c"); !errors.Is(err, signaling.ErrNotFound) {
			t.Errorf("second DeleteConversation: got %v, want ErrNotFound", err)
		}
		got, err := s.Call(ctx, "k1")
		if err != nil || !reflect.DeepEqual(got, call) {
			t.Errorf("Call after conversation delete: got %+v, %v; want %+v", got, err, call)
		}
		list, err := s.Calls(ctx, signaling.CallFilter{ConversationID: "c"})
		if err != nil || !reflect.DeepEqual(ids(list), []string{"k1"}) {
			t.Errorf("Calls after conversation delete: got %v, %v; want [k1]", ids(list), err)
		}
		checkIndexes(t, s)
	})
}
