package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
)

const sessionsUsage = `usage:
  icebox sessions list [--user U] [--call C] [--json]
  icebox sessions kill <id> | --user U | --call C
  icebox sessions bandwidth <user> [--set BPS | --clear]

list shows a running icebox's TURN allocations (admin token); kill closes
one by ID, or every allocation of a user or of a call (the credential stays
valid: revoke the call to refuse it); bandwidth shows or overrides a user's
per-user bandwidth limit in bits per second (0 = unlimited; until --clear or
a restart).
`

// sessionsCmd administers a running icebox's TURN allocations and
// per-user bandwidth limits through its admin API.
func sessionsCmd(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) error {
	if len(args) > 0 && isHelp(args[0]) {
		_, err := io.WriteString(stdout, sessionsUsage)
		return err
	}
	if len(args) == 0 || (args[0] != "list" && args[0] != "kill" && args[0] != "bandwidth") {
		_, _ = io.WriteString(stderr, sessionsUsage)
		return usagef("sessions: want a subcommand: list | kill | bandwidth")
	}
	sub := args[0]
	fs := newFlagSet("sessions "+sub, "", stdout, stderr)
	fs.Usage = func() { _, _ = io.WriteString(fs.Output(), sessionsUsage); fs.PrintDefaults() }
	urlFlag := fs.String("url", "", urlFlagHelp)
	token := fs.String("token", "", "admin bearer token (default: $ICEBOX_ADMIN_TOKEN)")
	var user, call, set *string
	var asJSON, clear *bool
	if sub != "bandwidth" {
		user = fs.String("user", "", "only this user's allocations")
		call = fs.String("call", "", "only this call's allocations")
	}
	if sub == "list" {
		asJSON = fs.Bool("json", false, "print the admin API's JSON instead of a table")
	}
	if sub == "bandwidth" {
		set = fs.String("set", "", "override the user's limit: bits per second (0 = unlimited)")
		clear = fs.Bool("clear", false, "forget the override: turn.quotas.max_bps_per_user applies again")
	}
	// A positional argument (kill's ID, bandwidth's user) may come before
	// or after the flags.
	rest := args[1:]
	var pos string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		pos, rest = rest[0], rest[1:]
	}
	if err := fs.parse(rest); err != nil {
		return err
	}
	if fs.NArg() > 0 && pos == "" {
		pos = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return usagef("sessions %s: unexpected argument %q", sub, fs.Arg(0))
	}
	base, err := apiBase("sessions "+sub, *urlFlag, env)
	if err != nil {
		return err
	}
	if *token == "" {
		*token = lookupEnv(env, "ICEBOX_ADMIN_TOKEN", "")
	}
	if *token == "" {
		return usagef("sessions: an admin token is required (--token or ICEBOX_ADMIN_TOKEN)")
	}
	api := adminClient{base: base, token: *token, what: "sessions " + sub}

	switch sub {
	case "list":
		if pos != "" {
			return usagef("sessions list: unexpected argument %q", pos)
		}
		body, err := api.do(ctx, http.MethodGet, "/admin/allocations"+filterQuery(*user, *call), nil)
		if err != nil {
			return err
		}
		if *asJSON {
			_, err = stdout.Write(body)
			return err
		}
		return printSessions(stdout, body)
	case "kill":
		var path string
		switch {
		case pos != "" && (*user != "" || *call != ""):
			return usagef("sessions kill: give an ID or --user/--call, not both")
		case pos != "":
			path = "/admin/allocations/" + url.PathEscape(pos)
		case *user != "" || *call != "":
			path = "/admin/allocations" + filterQuery(*user, *call)
		default:
			return usagef("sessions kill: want an allocation ID, --user U or --call C")
		}
		body, err := api.do(ctx, http.MethodDelete, path, nil)
		if err != nil {
			return err
		}
		if pos != "" {
			_, err = fmt.Fprintf(stdout, "killed %s\n", pos)
			return err
		}
		var resp struct {
			Killed int `json:"killed"`
		}
		if err := json.Unmarshal(body, &resp); err != nil {
			return fmt.Errorf("sessions kill: %w", err)
		}
		_, err = fmt.Fprintf(stdout, "killed %d allocation(s)\n", resp.Killed)
		return err
	default: // bandwidth
		if pos == "" {
			return usagef("sessions bandwidth: want a user")
		}
		path := "/admin/users/" + url.PathEscape(pos) + "/bandwidth"
		method, reqBody := http.MethodGet, []byte(nil)
		switch {
		case *set != "" && *clear:
			return usagef("sessions bandwidth: --set or --clear, not both")
		case *clear:
			method = http.MethodDelete
		case *set != "":
			var bps int64
			if _, err := fmt.Sscan(*set, &bps); err != nil || bps < 0 {
				return usagef("sessions bandwidth: --set %q: want bits per second, 0 for unlimited", *set)
			}
			method = http.MethodPut
			reqBody, _ = json.Marshal(map[string]int64{"max_bps": bps})
		}
		body, err := api.do(ctx, method, path, reqBody)
		if err != nil {
			return err
		}
		_, err = stdout.Write(body)
		return err
	}
}

func filterQuery(user, call string) string {
	q := url.Values{}
	if user != "" {
		q.Set("user", user)
	}
	if call != "" {
		q.Set("call", call)
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// adminClient calls a running icebox's admin API.
type adminClient struct {
	base, token, what string
}

// do sends the request and returns the body of a 2xx answer; any other is
// an error carrying the API's error code and message.
func (a adminClient) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return nil, usagef("%s: %v", a.what, err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.what, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.what, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(out, &e) == nil && e.Error.Code != "" {
			return nil, fmt.Errorf("%s: %s: %s", a.what, e.Error.Code, e.Error.Message)
		}
		return nil, fmt.Errorf("%s: %s", a.what, resp.Status)
	}
	return out, nil
}

// sessionRow is what the table shows of an allocation.
type sessionRow struct {
	ID              string  `json:"id"`
	User            string  `json:"user"`
	CallID          string  `json:"call_id"`
	ClientAddr      string  `json:"client_addr"`
	Transport       string  `json:"transport"`
	RelayAddr       string  `json:"relay_addr"`
	AgeSeconds      float64 `json:"age_seconds"`
	BytesToPeer     uint64  `json:"bytes_to_peer"`
	BytesFromPeer   uint64  `json:"bytes_from_peer"`
	PacketsToPeer   uint64  `json:"packets_to_peer"`
	PacketsFromPeer uint64  `json:"packets_from_peer"`
	BPSToPeer       uint64  `json:"bps_to_peer"`
	BPSFromPeer     uint64  `json:"bps_from_peer"`
}

func printSessions(w io.Writer, body []byte) error {
	var resp struct {
		Allocations []sessionRow `json:"allocations"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return fmt.Errorf("sessions list: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tCALL\tCLIENT\tRELAY\tAGE\tTO PEER\tFROM PEER\tRATE TO/FROM")
	for _, a := range resp.Allocations {
		call := a.CallID
		if call == "" {
			call = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s/%s\t%s\t%s\t%s %dp\t%s %dp\t%s/%s\n",
			a.ID, a.User, call, a.Transport, a.ClientAddr, a.RelayAddr,
			(time.Duration(a.AgeSeconds) * time.Second).String(),
			humanBytes(a.BytesToPeer), a.PacketsToPeer, humanBytes(a.BytesFromPeer), a.PacketsFromPeer,
			humanBPS(a.BPSToPeer), humanBPS(a.BPSFromPeer))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d allocation(s)\n", len(resp.Allocations))
	return err
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

func humanBPS(n uint64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1fGb/s", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fMb/s", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.0fkb/s", float64(n)/1e3)
	}
	return fmt.Sprintf("%db/s", n)
}
