package livekitproc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Version is the livekit-server release icebox writes its config for and
// scripts/install-livekit.sh installs (LIVEKIT_VERSION there; a test keeps
// the two equal). Its config file format is checked strictly: a newer
// release may refuse keys this one writes, or need keys it does not.
const Version = "v1.13.5"

// BinaryName is the executable's name, as the install script names it.
const BinaryName = "livekit-server"

// FindBinary returns the livekit-server to run: configured when set (it
// must be an executable file), else livekit-server on PATH, else in $GOBIN
// or $GOPATH/bin (default ~/go/bin), where the install script puts it.
func FindBinary(configured string) (string, error) {
	if configured != "" {
		return executable(configured)
	}
	if path, err := exec.LookPath(BinaryName); err == nil {
		return filepath.Abs(path)
	}
	dirs := binDirs()
	for _, dir := range dirs {
		if path, err := executable(filepath.Join(dir, BinaryName)); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("%w on PATH or in %s; run scripts/install-livekit.sh (it installs %s) or set matrixrtc.livekit.managed.binary",
		errNotFound, strings.Join(dirs, ", "), Version)
}

// binDirs are where `go install` puts binaries: $GOBIN, else each
// $GOPATH/bin, else ~/go/bin (go env GOPATH's default).
func binDirs() []string {
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	if gopath := os.Getenv("GOPATH"); gopath != "" {
		for _, gp := range filepath.SplitList(gopath) {
			dirs = append(dirs, filepath.Join(gp, "bin"))
		}
	} else if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	return dirs
}

func executable(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("livekitproc: %w", err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("livekitproc: %s is not an executable file", path)
	}
	return filepath.Abs(path)
}
