package matrix

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling"
)

// roomTimeout bounds room creation.
const roomTimeout = 30 * time.Second

// EnsureRoom returns conv's room, creating it when conv has none: a private
// room (preset private_chat: invite only, shared history) named
// "icebox: <conversation id>", with the participants that are Matrix users
// invited. Local participants (IDs that are not @name:server) have no
// Matrix presence: the service user stands for them in the room, so it
// counts as the call peer and is not listed in io.element.functional_members
// (Element offers 1:1 calls only with exactly two non-functional members).
//
// The caller stores the returned room ID on the conversation. Concurrent
// calls for one conversation share one creation.
func (b *Bridge) EnsureRoom(ctx context.Context, conv signaling.Conversation) (string, error) {
	if conv.RoomID != "" {
		return conv.RoomID, nil
	}
	v, err, _ := b.rooms.Do(conv.ID, func() (any, error) { return b.createRoom(ctx, conv) })
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

func (b *Bridge) createRoom(ctx context.Context, conv signaling.Conversation) (string, error) {
	var invite []id.UserID
	for _, p := range conv.Participants {
		if isMatrixUserID(p) && p != b.cfg.UserID && !slices.Contains(invite, id.UserID(p)) {
			invite = append(invite, id.UserID(p))
		}
	}
	req := &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		Name:   "icebox: " + conv.ID,
		Invite: invite,
	}
	// With encryption, the room is encrypted from its creation: no call
	// event can ever be sent into it in the clear.
	if b.cfg.Encryption != nil {
		req.InitialState = []*event.Event{encryptionState()}
	}
	ctx, cancel := context.WithTimeout(quiet(ctx), roomTimeout)
	defer cancel()
	resp, err := b.cli.CreateRoom(ctx, req)
	if err != nil {
		return "", fmt.Errorf("matrix: create the room of conversation %q on %s: %w", conv.ID, b.cfg.HomeserverURL, err)
	}
	b.log.Info().Str("conversation_id", conv.ID).Str("room_id", string(resp.RoomID)).
		Int("invited", len(invite)).Msg("matrix room created")
	return string(resp.RoomID), nil
}

// isMatrixUserID reports whether s looks like a Matrix user ID,
// @localpart:server. Anything else is a local icebox user.
func isMatrixUserID(s string) bool {
	return len(s) <= 255 && strings.HasPrefix(s, "@") && strings.Index(s, ":") > 1
}
