// Command webrtcpeer is a pion/webrtc peer for the namespace test bed: run
// one as the offerer and one as the answerer (each inside its own network
// namespace with `ip netns exec`), both with a relay-only ICE policy
// through one TURN server. They exchange the SDP offer and answer as files
// in a shared directory (non-trickle: each waits for ICE gathering to
// complete), open a DataChannel, and trade a ping for a pong. It prints one
// JSON line with what it saw and exits 0 only if the exchange worked, or 1
// when -timeout passes.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pion/webrtc/v4"
)

// pollEvery is how often a peer looks for the other's file.
const pollEvery = 20 * time.Millisecond

type result struct {
	Role   string `json:"role"`
	OK     bool   `json:"ok"`
	Local  string `json:"local,omitempty"`  // selected local candidate
	Remote string `json:"remote,omitempty"` // selected remote candidate
	Got    string `json:"got,omitempty"`    // the message received
	Error  string `json:"error,omitempty"`
	MS     int64  `json:"ms"` // time to the end of the exchange
}

func main() {
	role := flag.String("role", "", "offer or answer")
	dir := flag.String("dir", "", "directory shared with the other peer (offer.sdp, answer.sdp, done)")
	turnURL := flag.String("turn", "", "TURN URL(s), comma-separated")
	user := flag.String("username", "", "TURN username")
	pass := flag.String("password", "", "TURN password (or $WEBRTCPEER_PASSWORD)")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after this long")
	flag.Parse()
	if *pass == "" {
		*pass = os.Getenv("WEBRTCPEER_PASSWORD")
	}
	start := time.Now()
	res := result{Role: *role}
	err := run(*role, *dir, strings.Split(*turnURL, ","), *user, *pass, start.Add(*timeout), &res)
	res.MS = time.Since(start).Milliseconds()
	if err != nil {
		res.Error = err.Error()
	} else {
		res.OK = true
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	if err != nil {
		os.Exit(1)
	}
}

func run(role, dir string, urls []string, user, pass string, deadline time.Time, res *result) error {
	if role != "offer" && role != "answer" {
		return errors.New("-role must be offer or answer")
	}
	if dir == "" || len(urls) == 0 || urls[0] == "" {
		return errors.New("-dir and -turn are required")
	}
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{
		ICEServers:         []webrtc.ICEServer{{URLs: urls, Username: user, Credential: pass}},
		ICETransportPolicy: webrtc.ICETransportPolicyRelay,
	})
	if err != nil {
		return err
	}
	defer pc.Close()

	got := make(chan string, 1)
	opened := make(chan *webrtc.DataChannel, 1)
	onMessage := func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(m webrtc.DataChannelMessage) {
			select {
			case got <- string(m.Data):
			default:
			}
		})
	}
	if role == "offer" {
		dc, err := pc.CreateDataChannel("check", nil)
		if err != nil {
			return err
		}
		onMessage(dc)
		dc.OnOpen(func() { opened <- dc })
		if err := negotiate(pc, dir, true, deadline); err != nil {
			return err
		}
	} else {
		pc.OnDataChannel(func(dc *webrtc.DataChannel) {
			onMessage(dc)
			dc.OnOpen(func() { opened <- dc })
		})
		if err := negotiate(pc, dir, false, deadline); err != nil {
			return err
		}
	}

	wait := time.Until(deadline)
	var dc *webrtc.DataChannel
	select {
	case dc = <-opened:
	case <-time.After(wait):
		return fmt.Errorf("the DataChannel did not open (ICE %s)", pc.ICEConnectionState())
	}
	selected(pc, res)
	if role == "offer" {
		if err := dc.SendText("ping from " + role); err != nil {
			return err
		}
	}
	select {
	case m := <-got:
		res.Got = m
	case <-time.After(time.Until(deadline)):
		return errors.New("no message over the DataChannel")
	}
	if role == "answer" {
		if err := dc.SendText("pong from " + role); err != nil {
			return err
		}
		// Stay until the offerer has the pong (it writes done), so that
		// closing does not cut the message off.
		return waitFile(filepath.Join(dir, "done"), deadline)
	}
	return writeFile(filepath.Join(dir, "done"), "done")
}

// negotiate exchanges the complete SDP (all candidates gathered) through
// files in dir.
func negotiate(pc *webrtc.PeerConnection, dir string, offerer bool, deadline time.Time) error {
	gathered := webrtc.GatheringCompletePromise(pc)
	if offerer {
		offer, err := pc.CreateOffer(nil)
		if err != nil {
			return err
		}
		if err := pc.SetLocalDescription(offer); err != nil {
			return err
		}
		if err := waitGathered(gathered, deadline); err != nil {
			return err
		}
		if err := writeSDP(filepath.Join(dir, "offer.sdp"), pc.LocalDescription()); err != nil {
			return err
		}
		answer, err := readSDP(filepath.Join(dir, "answer.sdp"), deadline)
		if err != nil {
			return err
		}
		return pc.SetRemoteDescription(answer)
	}
	offer, err := readSDP(filepath.Join(dir, "offer.sdp"), deadline)
	if err != nil {
		return err
	}
	if err := pc.SetRemoteDescription(offer); err != nil {
		return err
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return err
	}
	if err := pc.SetLocalDescription(answer); err != nil {
		return err
	}
	if err := waitGathered(gathered, deadline); err != nil {
		return err
	}
	return writeSDP(filepath.Join(dir, "answer.sdp"), pc.LocalDescription())
}

func waitGathered(done <-chan struct{}, deadline time.Time) error {
	select {
	case <-done:
		return nil
	case <-time.After(time.Until(deadline)):
		return errors.New("ICE gathering did not complete")
	}
}

func selected(pc *webrtc.PeerConnection, res *result) {
	sctp := pc.SCTP()
	if sctp == nil {
		return
	}
	pair, err := sctp.Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return
	}
	res.Local = fmt.Sprintf("%s %s:%d", pair.Local.Typ, pair.Local.Address, pair.Local.Port)
	res.Remote = fmt.Sprintf("%s %s:%d", pair.Remote.Typ, pair.Remote.Address, pair.Remote.Port)
}

func writeSDP(path string, sd *webrtc.SessionDescription) error {
	b, err := json.Marshal(sd)
	if err != nil {
		return err
	}
	return writeFile(path, string(b))
}

// writeFile writes atomically, so the other peer never reads half a file.
func writeFile(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readSDP(path string, deadline time.Time) (webrtc.SessionDescription, error) {
	var sd webrtc.SessionDescription
	if err := waitFile(path, deadline); err != nil {
		return sd, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return sd, err
	}
	return sd, json.Unmarshal(b, &sd)
}

// waitFile polls for path until deadline.
func waitFile(path string, deadline time.Time) error {
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear in time", filepath.Base(path))
		}
		time.Sleep(pollEvery)
	}
}
