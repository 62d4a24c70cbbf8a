//go:build linux

package main

// TURN load generators on pion's client, run by the harness inside a
// server's namespace:
//
//	allocs: workers loop {new UDP socket, Allocate (401 then authenticated),
//	        close the relay (Refresh lifetime 0, not waiting for the answer),
//	        close the socket} for a fixed duration.
//	hold:   make N allocations, each on its own socket, print a line, hold
//	        them until stdin closes (bounded), then release them.

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"
)

// restCredential mints a TURN REST credential as coturn's --use-auth-secret
// and icebox's compat secret verify it: "<expiry>:<user>" and
// base64(HMAC-SHA1(secret, username)).
func restCredential(secret, user string, now time.Time) (username, password string) {
	username = fmt.Sprintf("%d:%s", now.Add(24*time.Hour).Unix(), user)
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func quietLoggers() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelError
	return f
}

// allocation is one live allocation of the generator.
type allocation struct {
	pc     net.PacketConn
	client *turn.Client
	relay  net.PacketConn
}

var loggers = quietLoggers()

// nextSource spreads the generators' sockets over 127.0.0.2–127.0.0.251
// (all of 127/8 is on loopback). From one address, a thousand allocations a
// second cycle through the ephemeral ports within seconds, and coturn still
// knows a 5-tuple for a while after its allocation was deleted: an Allocate
// from a reused one gets 437 (Allocation Mismatch). Real clients come from
// many addresses too.
var nextSource atomic.Uint32

func sourceAddr() string {
	return fmt.Sprintf("127.0.0.%d:0", 2+nextSource.Add(1)%250)
}

func allocateOnce(server, user, pass string) (*allocation, error) {
	return allocateFrom(sourceAddr(), server, user, pass)
}

// allocateFrom allocates from a socket bound to src.
func allocateFrom(src, server, user, pass string) (*allocation, error) {
	pc, err := net.ListenPacket("udp4", src)
	if err != nil {
		return nil, err
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server,
		TURNServerAddr: server,
		Username:       user,
		Password:       pass,
		Conn:           pc,
		LoggerFactory:  loggers,
	})
	if err != nil {
		pc.Close()
		return nil, err
	}
	if err := c.Listen(); err != nil {
		c.Close()
		pc.Close()
		return nil, err
	}
	relay, err := c.Allocate()
	if err != nil {
		c.Close()
		pc.Close()
		return nil, err
	}
	return &allocation{pc: pc, client: c, relay: relay}, nil
}

// release sends Refresh(lifetime 0) and closes everything.
func (a *allocation) release() {
	_ = a.relay.Close() // sends the Refresh; an error only means it was closed already
	a.client.Close()
	_ = a.pc.Close()
}

// allocsResult is what `bench allocs` prints.
type allocsResult struct {
	OK         int64   `json:"ok"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
}

func cmdAllocs(args []string) error {
	fs := flag.NewFlagSet("allocs", flag.ContinueOnError)
	server := fs.String("server", turnAddr, "TURN server address")
	secret := fs.String("secret", "", "TURN REST secret (or $BENCH_TURN_SECRET)")
	workers := fs.Int("workers", 16, "concurrent workers")
	duration := fs.Duration("duration", 10*time.Second, "how long to allocate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sec := secretFlag(*secret)
	var ok, nerr atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	deadline := start.Add(*duration)
	var wg sync.WaitGroup
	for w := range *workers {
		wg.Go(func() {
			user, pass := restCredential(sec, fmt.Sprintf("allocs%d", w), time.Now())
			for time.Now().Before(deadline) {
				a, err := allocateOnce(*server, user, pass)
				if err != nil {
					nerr.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
				a.release()
			}
		})
	}
	wg.Wait()
	res := allocsResult{OK: ok.Load(), Errors: nerr.Load(), Seconds: time.Since(start).Seconds()}
	if e, _ := firstErr.Load().(string); e != "" {
		res.FirstError = e
	}
	return printJSON(res)
}

// holdResult is what `bench hold` prints, twice: when the allocations are
// held (Phase "held"), and when they are released (Phase "released").
type holdResult struct {
	Phase      string  `json:"phase"`
	Held       int     `json:"held"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
}

func cmdHold(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	server := fs.String("server", turnAddr, "TURN server address")
	secret := fs.String("secret", "", "TURN REST secret (or $BENCH_TURN_SECRET)")
	n := fs.Int("n", 10000, "allocations to hold")
	workers := fs.Int("workers", 32, "concurrent Allocates")
	maxHold := fs.Duration("max-hold", 2*time.Minute, "release after this long even if stdin stays open")
	bind := fs.String("bind", "", "the clients' source address (default: spread over 127/8)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sec := secretFlag(*secret)
	if err := raiseNoFile(uint64(*n) + 1024); err != nil {
		return err
	}
	start := time.Now()
	allocs := make([]*allocation, *n)
	var next atomic.Int64
	var nerr atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := range *workers {
		wg.Go(func() {
			user, pass := restCredential(sec, fmt.Sprintf("hold%d", w), time.Now())
			for {
				i := int(next.Add(1) - 1)
				if i >= *n {
					return
				}
				src := sourceAddr()
				if *bind != "" {
					src = net.JoinHostPort(*bind, "0")
				}
				a, err := allocateFrom(src, *server, user, pass)
				if err != nil {
					nerr.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				allocs[i] = a
			}
		})
	}
	wg.Wait()
	held := 0
	for _, a := range allocs {
		if a != nil {
			held++
		}
	}
	res := holdResult{Phase: "held", Held: held, Errors: int(nerr.Load()), Seconds: time.Since(start).Seconds()}
	if e, _ := firstErr.Load().(string); e != "" {
		res.FirstError = e
	}
	if err := printJSON(res); err != nil {
		return err
	}

	// Hold until the harness closes stdin (it has read the server's memory).
	ctx, cancel := context.WithTimeout(context.Background(), *maxHold)
	defer cancel()
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString(0) // returns at EOF
		cancel()
	}()
	<-ctx.Done()

	start = time.Now()
	ch := make(chan *allocation)
	for range *workers {
		wg.Go(func() {
			for a := range ch {
				a.release()
			}
		})
	}
	for _, a := range allocs {
		if a != nil {
			ch <- a
		}
	}
	close(ch)
	wg.Wait()
	return printJSON(holdResult{Phase: "released", Held: held, Seconds: time.Since(start).Seconds()})
}

func secretFlag(s string) string {
	if s != "" {
		return s
	}
	return os.Getenv("BENCH_TURN_SECRET")
}

func printJSON(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", data)
	return err
}
