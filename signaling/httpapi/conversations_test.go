package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
)

type conversationsPage struct {
	Conversations []struct {
		ID           string   `json:"id"`
		Participants []string `json:"participants"`
		CreatedAt    string   `json:"created_at"`
		Resolved     *struct {
			Protocol string `json:"protocol"`
			Source   string `json:"source"`
		} `json:"call_protocol_resolved"`
	} `json:"conversations"`
	More       bool   `json:"more"`
	NextCursor string `json:"next_cursor"`
}

func (e *apiEnv) conversations(t *testing.T, token, query string) conversationsPage {
	t.Helper()
	var p conversationsPage
	if err := json.Unmarshal(e.mustDo(t, token, "GET", "/conversations"+query, "", http.StatusOK), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// allConversations follows the cursors from the first page of limit.
func (e *apiEnv) allConversations(t *testing.T, token string, limit int) []string {
	t.Helper()
	out := []string{}
	query := fmt.Sprintf("?limit=%d", limit)
	for range 50 {
		p := e.conversations(t, token, query)
		if len(p.Conversations) > limit {
			t.Fatalf("a page of %d has %d conversations", limit, len(p.Conversations))
		}
		for _, c := range p.Conversations {
			out = append(out, c.ID)
		}
		if !p.More {
			if p.NextCursor != "" {
				t.Errorf("the last page has a next_cursor %q", p.NextCursor)
			}
			return out
		}
		query = fmt.Sprintf("?limit=%d&cursor=%s", limit, url.QueryEscape(p.NextCursor))
	}
	t.Fatal("the list did not end in 50 pages")
	return nil
}

// TestListConversations: GET /conversations with a user's token lists the
// conversations that user takes part in — no one else's — newest first,
// with their participants and resolved call protocol, page by page; the
// admin routes answer as before (a user is 403 there).
func TestListConversations(t *testing.T) {
	e := newAPIEnv(t) // c1: alice, bob; c2: carol
	for i := range 5 {
		e.mustDo(t, adminToken, "PUT", fmt.Sprintf("/admin/conversations/a%d", i), `{"participants":["alice","carol"]}`, http.StatusOK)
	}
	e.mustDo(t, adminToken, "PUT", "/admin/conversations/legacy1", `{"participants":["bob"],"call_protocol":"legacy"}`, http.StatusOK)

	p := e.conversations(t, userToken("alice"), "")
	if len(p.Conversations) != 6 || p.More || p.NextCursor != "" {
		t.Fatalf("alice's conversations: %+v", p)
	}
	if got := p.Conversations[len(p.Conversations)-1]; got.ID != "c1" || !slices.Equal(got.Participants, []string{"alice", "bob"}) || got.CreatedAt == "" {
		t.Errorf("alice's oldest conversation: %+v, want c1 with alice and bob", got)
	}
	if r := p.Conversations[0].Resolved; r == nil || r.Protocol != "legacy" || r.Source != "default" {
		t.Errorf("call_protocol_resolved of %s: %+v, want legacy from the default", p.Conversations[0].ID, r)
	}
	want := map[string][]string{
		"alice": {"a4", "a3", "a2", "a1", "a0", "c1"},
		"bob":   {"legacy1", "c1"},
		"carol": {"a4", "a3", "a2", "a1", "a0", "c2"},
		"ops":   {}, // the admin takes part in none
	}
	tokens := map[string]string{"alice": userToken("alice"), "bob": userToken("bob"), "carol": userToken("carol"), "ops": adminToken}
	for user, w := range want {
		for _, limit := range []int{1, 2, 50} {
			if got := e.allConversations(t, tokens[user], limit); !slices.Equal(got, w) {
				t.Errorf("%s in pages of %d: %v, want %v", user, limit, got, w)
			}
		}
	}
	b := e.conversations(t, userToken("bob"), "?limit=1")
	if len(b.Conversations) != 1 || b.Conversations[0].ID != "legacy1" || b.Conversations[0].Resolved == nil ||
		b.Conversations[0].Resolved.Source != "conversation" || !b.More {
		t.Errorf("bob's first page of 1: %+v", b)
	}

	// The admin routes are unchanged: a user is refused, the admin reads
	// one conversation; there is no admin list.
	e.mustDo(t, userToken("alice"), "GET", "/admin/conversations/c1", "", http.StatusForbidden)
	e.mustDo(t, adminToken, "GET", "/admin/conversations/c1", "", http.StatusOK)
	e.mustDo(t, "", "GET", "/conversations", "", http.StatusUnauthorized)
}

// TestListConversationsBadInput: a limit out of range or a cursor this
// server did not make is 400 with a code, and nothing is listed.
func TestListConversationsBadInput(t *testing.T) {
	e := newAPIEnv(t)
	for _, tt := range []struct{ query, code string }{
		{"?limit=0", "invalid_request"},
		{"?limit=101", "invalid_request"},
		{"?limit=-1", "invalid_request"},
		{"?limit=ten", "invalid_request"},
		{"?cursor=not*base64", "invalid_cursor"},
		{"?cursor=" + url.QueryEscape("eyJpZCI6MX0"), "invalid_cursor"}, // base64 of JSON
		{"?cursor=MTIzNDU2", "invalid_cursor"},                          // "123456": no ID
		{"?cursor=MTIzLmJhZCBpZA", "invalid_cursor"},                    // "123.bad id"
		{"?cursor=eC5jMQ", "invalid_cursor"},                            // "x.c1"
		{"?limit=2&cursor=QQ", "invalid_cursor"},                        // "A"
	} {
		code, body := e.do(t, userToken("alice"), "GET", "/conversations"+tt.query, nil)
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		if code != http.StatusBadRequest || errorCode(m) != tt.code {
			t.Errorf("GET /conversations%s: %d %s, want 400 %s", tt.query, code, body, tt.code)
		}
	}
	// A cursor from a page still works after its conversation is deleted.
	e.mustDo(t, adminToken, "PUT", "/admin/conversations/c3", `{"participants":["alice"]}`, http.StatusOK)
	p := e.conversations(t, userToken("alice"), "?limit=1")
	if len(p.Conversations) != 1 || p.Conversations[0].ID != "c3" || p.NextCursor == "" {
		t.Fatalf("alice's first page: %+v", p)
	}
	e.mustDo(t, adminToken, "DELETE", "/admin/conversations/c3", "", http.StatusNoContent)
	next := e.conversations(t, userToken("alice"), "?limit=1&cursor="+url.QueryEscape(p.NextCursor))
	if len(next.Conversations) != 1 || next.Conversations[0].ID != "c1" || next.More {
		t.Errorf("the page after the deleted c3: %+v, want c1 and no more", next)
	}
}
