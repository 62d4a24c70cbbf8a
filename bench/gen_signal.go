//go:build linux

package main

// Signaling latency: alice and bob on WebSockets in one conversation; alice
// sends the "initiate" command, and the latency is the time until bob's
// CallInvite event for it arrives. Then alice hangs up (over the socket) and
// both sides see the hangup before the next call starts, so every call
// starts from the same state.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

const sigOffer = "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=bench offer\r\nt=0 0\r\n"

// sigResult is what `bench siglat` prints.
type sigResult struct {
	Calls      int     `json:"calls"`
	Seconds    float64 `json:"seconds"`
	InviteP50  float64 `json:"invite_p50_us"`   // initiate sent → bob's CallInvite
	InviteP99  float64 `json:"invite_p99_us"`   //
	InviteMax  float64 `json:"invite_max_us"`   //
	ReplyP50   float64 `json:"reply_p50_us"`    // initiate sent → alice's reply
	ReplyP99   float64 `json:"reply_p99_us"`    //
	HangupP50  float64 `json:"hangup_p50_us"`   // hangup sent → bob's CallHangup
	FirstError string  `json:"error,omitempty"` // why it stopped early
}

// wsMsg is the part of a server message the generator reads.
type wsMsg struct {
	Type   string `json:"type"`
	Ref    string `json:"ref"`
	CallID string `json:"call_id"`
	Result struct {
		ID string `json:"id"`
	} `json:"result"`
	Error *struct {
		Code string `json:"code"`
	} `json:"error"`
	at time.Time
}

type wsPeer struct {
	user string
	conn *websocket.Conn
	msgs chan wsMsg
	done chan error
}

const sigWait = 5 * time.Second // any single event

func dialPeer(ctx context.Context, base, user, token string) (*wsPeer, error) {
	conn, _, err := websocket.Dial(ctx, "ws://"+base+"/ws", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + token}},
	})
	if err != nil {
		return nil, fmt.Errorf("dial /ws as %s: %w", user, err)
	}
	conn.SetReadLimit(1 << 20)
	p := &wsPeer{user: user, conn: conn, msgs: make(chan wsMsg, 1024), done: make(chan error, 1)}
	go func() {
		for {
			_, data, err := conn.Read(context.Background())
			if err != nil {
				p.done <- err
				close(p.msgs)
				return
			}
			m := wsMsg{at: time.Now()}
			if json.Unmarshal(data, &m) == nil {
				p.msgs <- m
			}
		}
	}()
	return p, nil
}

func (p *wsPeer) send(ctx context.Context, cmd map[string]any) error {
	data, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	return p.conn.Write(ctx, websocket.MessageText, data)
}

// await returns the first message match accepts, dropping the others.
func (p *wsPeer) await(what string, match func(wsMsg) bool) (wsMsg, error) {
	timer := time.NewTimer(sigWait)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-p.msgs:
			if !ok {
				return wsMsg{}, fmt.Errorf("%s: WebSocket closed while waiting for %s", p.user, what)
			}
			if match(m) {
				return m, nil
			}
		case <-timer.C:
			return wsMsg{}, fmt.Errorf("%s: no %s within %s", p.user, what, sigWait)
		}
	}
}

// sync sends a "get" of a call that does not exist and waits for its
// not_found error: then the hub has registered the connection.
func (p *wsPeer) sync(ctx context.Context) error {
	ref := p.user + "-sync"
	if err := p.send(ctx, map[string]any{"type": "get", "ref": ref, "call_id": "no-such-call"}); err != nil {
		return err
	}
	_, err := p.await("the sync reply", func(m wsMsg) bool { return m.Ref == ref })
	return err
}

func cmdSigLat(args []string) error {
	fs := flag.NewFlagSet("siglat", flag.ContinueOnError)
	base := fs.String("addr", httpAddr, "icebox HTTP address")
	calls := fs.Int("calls", 300, "calls to make")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tok := map[string]string{
		"alice": os.Getenv("BENCH_ALICE_TOKEN"),
		"bob":   os.Getenv("BENCH_BOB_TOKEN"),
		"admin": os.Getenv("BENCH_ADMIN_TOKEN"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The conversation alice calls bob in.
	body, _ := json.Marshal(map[string]any{"participants": []string{"alice", "bob"}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+*base+"/admin/conversations/bench", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok["admin"])
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("PUT /admin/conversations/bench: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("PUT /admin/conversations/bench: status %d", resp.StatusCode)
	}

	alice, err := dialPeer(ctx, *base, "alice", tok["alice"])
	if err != nil {
		return err
	}
	defer alice.conn.Close(websocket.StatusNormalClosure, "bench done")
	bob, err := dialPeer(ctx, *base, "bob", tok["bob"])
	if err != nil {
		return err
	}
	defer bob.conn.Close(websocket.StatusNormalClosure, "bench done")
	for _, p := range []*wsPeer{alice, bob} {
		if err := p.sync(ctx); err != nil {
			return err
		}
	}

	var invite, reply, hangup []time.Duration
	res := sigResult{}
	start := time.Now()
	for i := range *calls {
		if err := oneCall(ctx, alice, bob, i, &invite, &reply, &hangup); err != nil {
			res.FirstError = err.Error()
			break
		}
	}
	res.Seconds = time.Since(start).Seconds()
	res.Calls = len(invite)
	us := func(ds []time.Duration, p float64) float64 {
		slices.Sort(ds)
		return float64(percentile(ds, p)) / float64(time.Microsecond)
	}
	res.InviteP50, res.InviteP99, res.InviteMax = us(invite, 50), us(invite, 99), us(invite, 100)
	res.ReplyP50, res.ReplyP99 = us(reply, 50), us(reply, 99)
	res.HangupP50 = us(hangup, 50)
	if err := printJSON(res); err != nil {
		return err
	}
	if res.Calls == 0 {
		return errors.New("siglat: no call completed: " + res.FirstError)
	}
	return nil
}

func oneCall(ctx context.Context, alice, bob *wsPeer, i int, invite, reply, hangup *[]time.Duration) error {
	ref := "init-" + strconv.Itoa(i)
	t0 := time.Now()
	if err := alice.send(ctx, map[string]any{"type": "initiate", "ref": ref, "conversation_id": "bench", "sdp_offer": sigOffer}); err != nil {
		return err
	}
	inv, err := bob.await("CallInvite", func(m wsMsg) bool { return m.Type == "CallInvite" })
	if err != nil {
		return err
	}
	rep, err := alice.await("the initiate reply", func(m wsMsg) bool { return m.Ref == ref })
	if err != nil {
		return err
	}
	if rep.Type != "reply" || rep.Result.ID != inv.CallID {
		code := ""
		if rep.Error != nil {
			code = rep.Error.Code
		}
		return fmt.Errorf("initiate %d: %s %s (call %q), bob was invited to %q", i, rep.Type, code, rep.Result.ID, inv.CallID)
	}
	*invite = append(*invite, inv.at.Sub(t0))
	*reply = append(*reply, rep.at.Sub(t0))

	href := "hangup-" + strconv.Itoa(i)
	t1 := time.Now()
	if err := alice.send(ctx, map[string]any{"type": "hangup", "ref": href, "call_id": inv.CallID}); err != nil {
		return err
	}
	h, err := bob.await("CallHangup", func(m wsMsg) bool { return m.Type == "CallHangup" && m.CallID == inv.CallID })
	if err != nil {
		return err
	}
	if _, err := alice.await("the hangup reply", func(m wsMsg) bool { return m.Ref == href }); err != nil {
		return err
	}
	*hangup = append(*hangup, h.at.Sub(t1))
	return nil
}
