// Command icebox is a TURN/STUN relay with per-call credentials and call
// signaling. See README.md.
package main

import (
	"fmt"
	"os"
)

func main() {
	sig := watchSignals()
	err := run(sig, os.Args[1:], os.Stdout, os.Stderr, os.Environ())
	sig.stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "icebox:", err)
	}
	os.Exit(exitCode(err))
}
