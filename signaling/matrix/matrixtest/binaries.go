package matrixtest

import (
	"fmt"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// DendriteVersion is the Dendrite release the tests run against; it must match
// DENDRITE_VERSION in scripts/install-dendrite.sh (TestInstallScriptPinsSameVersion
// checks). v0.13.8 is the last matrix-org (Apache-2.0) release; later ones are
// the AGPL element-hq fork, which the project does not use.
const DendriteVersion = "v0.13.8"

// installHint is what a developer without the binaries is told to run.
const installHint = "run scripts/install-dendrite.sh (needs Go module proxy access; " +
	"installs github.com/matrix-org/dendrite/cmd/{dendrite,generate-config,generate-keys,create-account}@" +
	DendriteVersion + " into $(go env GOPATH)/bin)"

// binaries are the absolute paths of the Dendrite programs StartDendrite runs.
type binaries struct {
	dendrite       string
	generateConfig string
	generateKeys   string
}

// The binaries are looked up and version-checked once per test process.
var (
	findOnce sync.Once
	found    binaries
	errFind  error
)

// requireBinaries returns the Dendrite binaries or ends the test: under
// CI=true a missing or wrong-version install is a failure (CI must have run
// the install script); on a developer machine the test is skipped with the
// command to run.
func requireBinaries(t testing.TB) binaries {
	t.Helper()
	findOnce.Do(func() { found, errFind = findBinaries() })
	if errFind == nil {
		return found
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v; CI must run scripts/install-dendrite.sh first (make test-deps)", errFind)
	}
	t.Skipf("%v; %s", errFind, installHint)
	return binaries{}
}

// findBinaries looks in $DENDRITE_BIN, then on $PATH, then in $GOBIN and
// $(go env GOPATH)/bin — where `go install` (and the install script) puts
// them, which is often not on PATH — and checks the version of dendrite.
func findBinaries() (binaries, error) {
	var b binaries
	for _, p := range []struct {
		name string
		dst  *string
	}{
		{"dendrite", &b.dendrite},
		{"generate-config", &b.generateConfig},
		{"generate-keys", &b.generateKeys},
	} {
		path, err := lookBinary(p.name)
		if err != nil {
			return binaries{}, err
		}
		*p.dst = path
	}
	out, err := exec.Command(b.dendrite, "-version").CombinedOutput()
	if err != nil {
		return binaries{}, fmt.Errorf("matrixtest: %s -version: %w: %s", b.dendrite, err, out)
	}
	if got, want := strings.TrimSpace(string(out)), strings.TrimPrefix(DendriteVersion, "v"); got != want {
		return binaries{}, fmt.Errorf("matrixtest: %s is version %s, want %s", b.dendrite, got, want)
	}
	return b, nil
}

func lookBinary(name string) (string, error) {
	if dir := os.Getenv("DENDRITE_BIN"); dir != "" {
		return executable(filepath.Join(dir, name))
	}
	if path, err := exec.LookPath(name); err == nil {
		return filepath.Abs(path)
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	// build.Default.GOPATH is $GOPATH or its default, ~/go.
	for _, gp := range filepath.SplitList(build.Default.GOPATH) {
		dirs = append(dirs, filepath.Join(gp, "bin"))
	}
	for _, dir := range dirs {
		if path, err := executable(filepath.Join(dir, name)); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("matrixtest: %s not found in $PATH, $GOBIN or %s", name, strings.Join(dirs, ", "))
}

func executable(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("matrixtest: %w", err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("matrixtest: %s is not an executable file", path)
	}
	return path, nil
}
