package httpapi

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/icebox-voip/icebox/signaling"
)

// GET /conversations: the conversations the caller takes part in, for a
// client to pick one to call in (an administrator creates them, or the
// Matrix rooms icebox joins do).

const conversationsLimitDefault = 50

// userConversation is a conversation as GET /conversations lists it: the
// stored fields, and the protocol its next call would use when that is
// known without asking the homeserver (absent for auto in a room: GET
// /admin/conversations/{id} resolves it).
type userConversation struct {
	signaling.Conversation
	CallProtocolResolved *signaling.ResolvedProtocol `json:"call_protocol_resolved,omitempty"`
}

// conversationsResponse is GET /conversations. NextCursor, present when
// More, is the cursor of the next page.
type conversationsResponse struct {
	Conversations []userConversation `json:"conversations"`
	More          bool               `json:"more"`
	NextCursor    string             `json:"next_cursor,omitempty"`
}

func (s *Server) routeConversations(g *echo.Group) {
	g.GET("/conversations", s.listConversations)
}

// listConversations serves GET /conversations[?limit=N][&cursor=C]: the
// caller's conversations, newest first (by creation), N (default 50,
// 1-100) at most, after the cursor a previous page returned.
func (s *Server) listConversations(c echo.Context) error {
	limit := conversationsLimitDefault
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > signaling.MaxConversationsListed {
			return apiError(http.StatusBadRequest, "invalid_request", "limit must be 1-"+strconv.Itoa(signaling.MaxConversationsListed))
		}
		limit = n
	}
	var after signaling.ConversationCursor
	if v := c.QueryParam("cursor"); v != "" {
		cur, ok := parseConversationCursor(v)
		if !ok {
			return apiError(http.StatusBadRequest, "invalid_cursor", "cursor is not one GET /conversations returned")
		}
		after = cur
	}
	ctx := c.Request().Context()
	convs, err := s.cfg.Calls.UserConversations(ctx, s.user(c), after, limit+1)
	if err != nil {
		return err
	}
	resp := conversationsResponse{Conversations: make([]userConversation, 0, min(len(convs), limit))}
	for i, conv := range convs {
		if i == limit {
			resp.More = true
			resp.NextCursor = conversationCursor(signaling.CursorAfter(convs[i-1]))
			break
		}
		resp.Conversations = append(resp.Conversations, userConversation{Conversation: conv, CallProtocolResolved: s.cfg.Calls.ListedCallProtocol(ctx, conv)})
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, resp)
}

// conversationCursor encodes a position as "<created unix ns>.<ID>" in
// unpadded base64url: opaque to clients, and safe in a query string.
func conversationCursor(cur signaling.ConversationCursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(cur.CreatedAt.UnixNano(), 10) + "." + cur.ID))
}

func parseConversationCursor(v string) (signaling.ConversationCursor, bool) {
	if len(v) > 128 {
		return signaling.ConversationCursor{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return signaling.ConversationCursor{}, false
	}
	ns, id, ok := strings.Cut(string(raw), ".")
	if !ok || !signaling.ValidID(id) {
		return signaling.ConversationCursor{}, false
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return signaling.ConversationCursor{}, false
	}
	return signaling.ConversationCursor{CreatedAt: time.Unix(0, n).UTC(), ID: id}, true
}
