//go:build crashpoint

package crashpoint

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
)

// Env names the points at which the process kills itself: a comma list of
// "point:op" (after-commit:initiate). It is read at each Hit, so nothing is
// kept in the package. It does not start with ICEBOX_: icebox refuses
// ICEBOX_ variables it does not know.
const Env = "CRASHPOINT"

// Hit kills the process with SIGKILL, as the OOM killer or a power cut
// would (no deferred function, no flush, no close), if point:op is listed
// in $CRASHPOINT. The line on stderr lets a test tell this death from
// another.
func Hit(point, op string) {
	want := os.Getenv(Env)
	if want == "" || !slices.Contains(strings.Split(want, ","), point+":"+op) {
		return
	}
	fmt.Fprintf(os.Stderr, "crashpoint: %s:%s: SIGKILL\n", point, op)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way; nothing after Hit may run
}
