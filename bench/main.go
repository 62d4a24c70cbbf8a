//go:build linux

// Command bench measures icebox against coturn on one machine (issue 7):
// relay throughput and CPU per message with coturn's turnutils_uclient,
// allocation rate, memory with 10 000 allocations held, and icebox's HTTP
// and WebSocket signaling latency. `bench run` (what `make bench` runs, as
// root) orchestrates everything and writes a Markdown report; the other
// subcommands are the load generators it runs inside the servers' network
// namespaces.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: bench <command> [flags]

  run       run the whole benchmark (root; see bench/README.md)
  allocs    allocation-rate load generator
  hold      hold N allocations until stdin closes
  relayrate step the offered ChannelData rate through a relay until loss (veth bed)
  httpload  keep-alive HTTP GET load generator
  ceiling   bare Go HTTP handler returning a fixed JSON body
  siglat    WebSocket initiate → CallInvite latency
  userinfo  stand-in homeserver answering OpenID userinfo
  tokenload MatrixRTC POST /get_token load generator
`

func main() {
	if err := dispatch(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func dispatch(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "run":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return cmdRun(ctx, args[1:])
	case "allocs":
		return cmdAllocs(args[1:])
	case "hold":
		return cmdHold(args[1:])
	case "relayrate":
		return cmdRelayRate(args[1:])
	case "httpload":
		return cmdHTTPLoad(args[1:])
	case "ceiling":
		return cmdCeiling(args[1:])
	case "siglat":
		return cmdSigLat(args[1:])
	case "userinfo":
		return cmdUserinfo(args[1:])
	case "tokenload":
		return cmdTokenLoad(args[1:])
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}
