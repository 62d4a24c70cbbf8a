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

	"github.com/spf13/cobra"
)

// sessionsCommand administers a running icebox's TURN allocations and
// per-user bandwidth limits through its admin API.
func sessionsCommand(a *cli) *cobra.Command {
	sub := func(c *cobra.Command) *sessionsOptions {
		o := &sessionsOptions{sub: c.Name()}
		c.RunE = func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				o.pos = args[0]
			}
			return sessions(c.Context(), *o, a.stdout, a.env)
		}
		apiFlags(c.Flags(), &o.url, &o.token)
		return o
	}
	filters := func(c *cobra.Command, o *sessionsOptions) {
		c.Flags().StringVar(&o.user, "user", "", "only this user's allocations")
		c.Flags().StringVar(&o.call, "call", "", "only this call's allocations")
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "show a running icebox's TURN allocations (admin token)",
		Long: `Shows a running icebox's TURN allocations (admin token): ID, user, call,
client, relay, age, traffic and bit rate both ways, as a table or the admin
API's JSON.`,
		Args: noArgs,
	}
	lo := sub(list)
	filters(list, lo)
	list.Flags().BoolVar(&lo.json, "json", false, "print the admin API's JSON instead of a table")
	kill := &cobra.Command{
		Use:   "kill [flags] ID | --user U | --call C",
		Short: "close an allocation by ID, or all of a user or a call",
		Long: `Closes one allocation by ID, or every allocation of a user or of a call
(admin token). The credential stays valid: revoke the call to refuse it.`,
		Args: maxOneArg,
	}
	filters(kill, sub(kill))
	bw := &cobra.Command{
		Use:   "bandwidth [flags] USER",
		Short: "show or override a user's bandwidth limit",
		Long: `Shows or overrides a user's per-user bandwidth limit in bits per second
(0 = unlimited; an override lasts until --clear or a restart; admin token).`,
		Example: "  icebox sessions bandwidth alice --set 2000000",
		Args:    maxOneArg,
	}
	bo := sub(bw)
	bw.Flags().StringVar(&bo.set, "set", "", "override the user's limit: bits per second (0 = unlimited)")
	bw.Flags().BoolVar(&bo.clear, "clear", false, "forget the override: turn.quotas.max_bps_per_user applies again")
	return group("sessions", "list or kill TURN allocations, set bandwidth limits",
		`Lists a running icebox's TURN allocations, kills them, and shows or overrides
a user's bandwidth limit, through its admin API (admin token).`, list, kill, bw)
}

// sessionsOptions are the flags and the positional argument (kill's ID,
// bandwidth's user) of a sessions subcommand.
type sessionsOptions struct {
	sub, url, token, pos string
	user, call, set      string
	json, clear          bool
}

func sessions(ctx context.Context, o sessionsOptions, stdout io.Writer, env []string) error {
	sub, pos := o.sub, o.pos
	base, err := apiBase("sessions "+sub, o.url, env)
	if err != nil {
		return err
	}
	token := o.token
	if token == "" {
		token = lookupEnv(env, "ICEBOX_ADMIN_TOKEN", "")
	}
	if token == "" {
		return usagef("sessions: an admin token is required (--token or ICEBOX_ADMIN_TOKEN)")
	}
	api := adminClient{base: base, token: token, what: "sessions " + sub}

	switch sub {
	case "list":
		body, err := api.do(ctx, http.MethodGet, "/admin/allocations"+filterQuery(o.user, o.call), nil)
		if err != nil {
			return err
		}
		if o.json {
			_, err = stdout.Write(body)
			return err
		}
		return printSessions(stdout, body)
	case "kill":
		var path string
		switch {
		case pos != "" && (o.user != "" || o.call != ""):
			return usagef("sessions kill: give an ID or --user/--call, not both")
		case pos != "":
			path = "/admin/allocations/" + url.PathEscape(pos)
		case o.user != "" || o.call != "":
			path = "/admin/allocations" + filterQuery(o.user, o.call)
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
		case o.set != "" && o.clear:
			return usagef("sessions bandwidth: --set or --clear, not both")
		case o.clear:
			method = http.MethodDelete
		case o.set != "":
			var bps int64
			if _, err := fmt.Sscan(o.set, &bps); err != nil || bps < 0 {
				return usagef("sessions bandwidth: --set %q: want bits per second, 0 for unlimited", o.set)
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
