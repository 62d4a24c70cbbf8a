//go:build !unix

package matrixtest

import (
	"errors"
	"os"
)

// tryLock: Dendrite test slots are counted with flock, which this system
// lacks; the package builds here so the module cross-compiles, but its
// tests run on Linux only.
func tryLock(*os.File) error {
	return errors.New("matrixtest: no flock on this system")
}
