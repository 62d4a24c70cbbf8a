package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// quickStartBlock returns the README's quick-start code block: the first
// sh block that starts `make run` in the background.
func quickStartBlock(t *testing.T, readme string) string {
	t.Helper()
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(readme, -1)
	for _, b := range blocks {
		if strings.Contains(b[1], "make run &") {
			return b[1]
		}
	}
	t.Fatalf("README.md has no sh block with \"make run &\" (%d sh blocks)", len(blocks))
	return ""
}

// TestReadmeNoInternalWords: the README is for operators; it does not speak
// of the project's issue numbers or the names of what it grew from.
func TestReadmeNoInternalWords(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []*regexp.Regexp{regexp.MustCompile(`(?i)\bseed\b`), regexp.MustCompile(`(?i)\bissues? #?\d+`)} {
		for _, m := range re.FindAllString(string(b), -1) {
			t.Errorf("README.md says %q", m)
		}
	}
}

// TestReadmeQuickStart runs the README's quick-start block verbatim with
// bash in the repository, as a reader pastes it, on ports and a state
// directory of its own given by the ICEBOX_* variables `make run` honours
// (not the defaults, which a developer's icebox may hold), and checks what
// the README says happens: alice gets ICE servers, the admin token makes the
// conversation and lists the keyring, creds mints, and afterwards the
// status page is served and the conversation lists alice and bob.
func TestReadmeQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs icebox through make")
	}
	for _, tool := range []string{"make", "curl", "sha256sum", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found (%v); CI must install it (make test-deps)", tool, err)
			}
			t.Skipf("%s not found: the quick start needs it", tool)
		}
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	block := quickStartBlock(t, string(readme))

	httpPort, turnPort := freePort(t), freePort(t)
	state := t.TempDir()
	env := append(iceboxEnv(),
		"GO="+goTool(),
		"ICEBOX_STATE_DIR="+state,
		"ICEBOX_HTTP_LISTEN="+loopback(httpPort),
		"ICEBOX_TURN_LISTEN_UDP="+loopback(turnPort),
		"ICEBOX_TURN_LISTEN_TCP="+loopback(turnPort),
		// freePort's ports are outside the tests' relay range, not the default one.
		"ICEBOX_TURN_RELAY_MIN_PORT="+strconv.Itoa(relayMinPort),
		"ICEBOX_TURN_RELAY_MAX_PORT="+strconv.Itoa(relayMaxPort),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // the first build of bin/icebox
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-c", block)
	cmd.Dir, cmd.Env = repo, env
	// Its own process group: `make run &` outlives the block, and the
	// cleanup stops the whole group (make, then bin/icebox).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Files, not pipes: the background job keeps its copy of the block's
	// stdout open, and Wait would wait for a pipe's end.
	outFile, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	errFile, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	cmd.Stdout, cmd.Stderr = outFile, errFile
	read := func(f *os.File) string { b, _ := os.ReadFile(f.Name()); return string(b) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() { stopGroup(t, pgid) })
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the quick start failed: %v\nstdout:\n%s\nstderr:\n%s", err, read(outFile), read(errFile))
	}
	out := read(outFile)
	t.Logf("quick start output:\n%s", out)

	// What each command printed, in order.
	for _, want := range []string{
		`"ice_servers"`, "turn:" + loopback(turnPort), // curl ice_servers as alice: her TURN URLs on our port
		`"participants":["alice","bob"]`, // the PUT of the conversation
		`"conversations":[{"id":"demo"`,  // bob's conversations
		`"active_kid"`,                   // keyring list with the admin token
		`"username"`, `"password"`,       // creds
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the quick start's output lacks %s", want)
		}
	}
	if strings.Contains(out, `"error"`) {
		t.Errorf("a quick-start command answered an error")
	}

	// What the README says comes next: the pages and the conversation.
	api := "http://" + loopback(httpPort)
	for _, page := range []string{"/ui/status", "/ui/call"} {
		resp, err := httpClient.Get(api + page)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("GET %s: %d %s, want a page", page, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	tokens := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)\b(ALICE|BOB|ADMIN)=(\S+)`).FindAllStringSubmatch(block, -1) {
		tokens[m[1]] = m[2]
	}
	req, _ := http.NewRequest(http.MethodGet, api+"/admin/conversations/demo", nil)
	req.Header.Set("Authorization", "Bearer "+tokens["ADMIN"])
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var conv struct {
		Participants []string `json:"participants"`
	}
	err = json.NewDecoder(resp.Body).Decode(&conv)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || strings.Join(conv.Participants, ",") != "alice,bob" {
		t.Errorf("GET /admin/conversations/demo: %d %v %v, want alice and bob", resp.StatusCode, conv.Participants, err)
	}
	// The state went where ICEBOX_STATE_DIR said, not to ./data.
	if _, err := os.Stat(filepath.Join(state, "secrets", "k1")); err != nil {
		t.Errorf("no generated secret in the test's state directory: %v", err)
	}
}

// stopGroup stops a process group the test started: SIGTERM (icebox drains
// and exits, make with it), then SIGKILL if it is still there after a while.
func stopGroup(t *testing.T, pgid int) {
	t.Helper()
	gone := func() bool { return len(groupMembers(pgid)) == 0 }
	if gone() {
		return
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	if waitFor(70*time.Second, gone) {
		return
	}
	t.Errorf("process group %d still running 70 s after SIGTERM (%v): killed", pgid, groupMembers(pgid))
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	waitFor(10*time.Second, gone)
}

// groupMembers lists the live processes of a process group. Zombies do not
// count: the block's background job is orphaned when bash exits, and the
// reaping of orphans is up to whatever runs as PID 1.
func groupMembers(pgid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}
