package acmetest

import (
	"os"
	"regexp"
	"testing"
)

// TestInstallScriptPinsSameVersion: the install script builds the pebble
// this package expects.
func TestInstallScriptPinsSameVersion(t *testing.T) {
	b, err := os.ReadFile("../../../scripts/install-pebble.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^PEBBLE_VERSION=(\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("scripts/install-pebble.sh sets no PEBBLE_VERSION")
	}
	if string(m[1]) != Version {
		t.Errorf("scripts/install-pebble.sh installs %s, acmetest.Version is %s", m[1], Version)
	}
}
