package main

// Tests of what ships next to the binary: the Dockerfile and .dockerignore,
// the systemd unit, sysusers entry and example configuration,
// scripts/install.sh (make install), and the metrics documentation and
// Grafana dashboard. They use the real tools where they exist (go build,
// systemd-analyze, systemd-sysusers, make); no Docker engine is needed.
// Everything builds into t.TempDir(): nothing in the repository changes.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// deployRoot is the repository root (go test runs in cmd/icebox).
func deployRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

func deployRead(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// deployTool finds a tool the deployment tests run. Without it the test
// fails under CI=true and skips elsewhere, saying which Debian package to
// install.
func deployTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (%v); CI must install Debian's %s package: apt-get install %s", name, err, pkg, pkg)
	}
	t.Skipf("%s not found: install Debian's %s package (apt-get install %s)", name, pkg, pkg)
	return ""
}

// deployEnv is this process's environment without anything icebox reads as
// configuration or as systemd state, plus extra ("K=V").
func deployEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "ICEBOX_"), strings.HasPrefix(k, "MATRIX_"),
			k == "TURN_SERVER_URL", k == "TURN_USERNAME", k == "TURN_PASSWORD", k == "STUN_SERVER_URL",
			k == "NOTIFY_SOCKET", strings.HasPrefix(k, "WATCHDOG_"):
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// runDeploy runs a command with a deadline and returns its combined output
// and exit code (-1 if it did not run or was killed).
func runDeploy(t *testing.T, dir string, env []string, name string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s %s: still running after 2m; output:\n%s", name, strings.Join(args, " "), out.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	default:
		t.Fatalf("%s: %v", name, err)
		return "", -1
	}
}

// --- Dockerfile --------------------------------------------------------------

// dfInstr is one Dockerfile instruction, continuation lines joined.
type dfInstr struct {
	line int
	cmd  string // upper case
	args string
}

type dfStage struct {
	index  int
	name   string // "" if unnamed
	image  string
	instrs []dfInstr
}

// parseDockerfile splits a Dockerfile into stages. Global ARGs (before the
// first FROM) are expanded in FROM lines.
func parseDockerfile(t *testing.T, text string) []*dfStage {
	t.Helper()
	var instrs []dfInstr
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\"))
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(trimmed)
		full := cur.String()
		cur.Reset()
		cmd, args, _ := strings.Cut(full, " ")
		instrs = append(instrs, dfInstr{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
	}
	if cur.Len() > 0 {
		t.Fatalf("Dockerfile ends inside a continued instruction")
	}
	globalArgs := map[string]string{}
	var stages []*dfStage
	for _, in := range instrs {
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			for len(f) > 0 && strings.HasPrefix(f[0], "--") { // --platform=...
				f = f[1:]
			}
			if len(f) == 0 {
				t.Fatalf("Dockerfile:%d: FROM without an image", in.line)
			}
			st := &dfStage{index: len(stages), image: expandVars(f[0], globalArgs)}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			} else if len(f) != 1 {
				t.Fatalf("Dockerfile:%d: cannot read FROM %q", in.line, in.args)
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile:%d: %s before the first FROM", in.line, in.cmd)
			}
			k, v, _ := strings.Cut(in.args, "=")
			globalArgs[k] = v
			continue
		}
		st := stages[len(stages)-1]
		st.instrs = append(st.instrs, in)
	}
	if len(stages) == 0 {
		t.Fatal("Dockerfile has no FROM")
	}
	return stages
}

var varRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

func expandVars(s string, vars map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		name := strings.Trim(m, "${}")
		return vars[name]
	})
}

// dfCopy is a COPY or ADD: its flags, sources and destination.
type dfCopy struct {
	from    string
	sources []string
	dest    string
}

func parseCopy(t *testing.T, in dfInstr) dfCopy {
	t.Helper()
	var c dfCopy
	rest := in.args
	for strings.HasPrefix(rest, "--") {
		flag, after, _ := strings.Cut(rest, " ")
		if v, ok := strings.CutPrefix(flag, "--from="); ok {
			c.from = v
		}
		rest = strings.TrimSpace(after)
	}
	var parts []string
	if strings.HasPrefix(rest, "[") {
		if err := json.Unmarshal([]byte(rest), &parts); err != nil {
			t.Fatalf("Dockerfile:%d: %s %s: %v", in.line, in.cmd, rest, err)
		}
	} else {
		parts = strings.Fields(rest)
	}
	if len(parts) < 2 {
		t.Fatalf("Dockerfile:%d: %s needs a source and a destination: %q", in.line, in.cmd, in.args)
	}
	c.sources, c.dest = parts[:len(parts)-1], parts[len(parts)-1]
	return c
}

// execForm decodes an instruction in exec (JSON array) form, failing on the
// shell form: the final image has no shell.
func execForm(t *testing.T, in dfInstr) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(in.args), &argv); err != nil {
		t.Fatalf("Dockerfile:%d: %s %s: want the exec form [\"...\"] (distroless has no shell): %v", in.line, in.cmd, in.args, err)
	}
	return argv
}

func stageInstrs(st *dfStage, cmd string) []dfInstr {
	var out []dfInstr
	for _, in := range st.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// goBuildRun finds the build stage's `go build` and returns its words, as
// the shell would split them after substituting vars.
func goBuildRun(t *testing.T, stages []*dfStage, vars map[string]string) (env, args []string) {
	t.Helper()
	for _, st := range stages {
		for _, in := range stageInstrs(st, "RUN") {
			for _, cmd := range regexp.MustCompile(`&&|;`).Split(in.args, -1) {
				words := shellWords(t, cmd, vars)
				i := 0
				for i < len(words) && regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`).MatchString(words[i]) {
					i++
				}
				if len(words) > i+1 && words[i] == "go" && words[i+1] == "build" {
					return words[:i], words[i+1:]
				}
			}
		}
	}
	t.Fatal("Dockerfile: no RUN ... go build")
	return nil, nil
}

// shellWords splits a POSIX shell command into words: single and double
// quotes, backslash escapes, $VAR and ${VAR} (outside single quotes).
func shellWords(t *testing.T, s string, vars map[string]string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				t.Fatalf("unterminated ' in %q", s)
			}
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(s) {
				t.Fatalf("unterminated \" in %q", s)
			}
			w.WriteString(expandVars(strings.ReplaceAll(s[i+1:j], `\"`, `"`), vars))
			i = j
			inWord = true
		case c == '\\' && i+1 < len(s):
			w.WriteByte(s[i+1])
			i++
			inWord = true
		case c == '$':
			m := varRef.FindString(s[i:])
			if m == "" || !strings.HasPrefix(s[i:], m) {
				w.WriteByte(c)
			} else {
				w.WriteString(expandVars(m, vars))
				i += len(m) - 1
			}
			inWord = true
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// dockerignored reports whether .dockerignore excludes rel (slash path
// relative to the context), with Docker's rules for the patterns it uses:
// path.Match per pattern, "**" for any directories, a match on a parent
// directory excluding what is under it, later "!" patterns re-including.
func dockerignored(patterns []string, rel string) bool {
	excluded := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		p = strings.Trim(filepath.ToSlash(filepath.Clean(p)), "/")
		re := globRegexp(p)
		matched := false
		for dir := rel; ; {
			if re.MatchString(dir) {
				matched = true
				break
			}
			i := strings.LastIndexByte(dir, '/')
			if i < 0 {
				break
			}
			dir = dir[:i]
		}
		if matched {
			excluded = !neg
		}
	}
	return excluded
}

func globRegexp(p string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case strings.HasPrefix(p[i:], "**/"):
			b.WriteString("(.*/)?")
			i += 2
		case strings.HasPrefix(p[i:], "**"):
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func readDockerignore(t *testing.T) []string {
	t.Helper()
	var patterns []string
	sc := bufio.NewScanner(strings.NewReader(deployRead(t, ".dockerignore")))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	return patterns
}

// TestDockerfile checks the Dockerfile without a Docker engine: its stages
// and COPY sources, the build flags, the final image's user, ports, volume,
// environment, health check and entry point, and .dockerignore.
func TestDockerfile(t *testing.T) {
	root := deployRoot(t)
	stages := parseDockerfile(t, deployRead(t, "Dockerfile"))
	ignore := readDockerignore(t)

	for _, p := range []string{".git", "bin/icebox", "data/icebox.db", "data/secrets/k1"} {
		if !dockerignored(ignore, p) {
			t.Errorf(".dockerignore: %s is sent to the builder; exclude it (bin/, data/ hold binaries and a real secret)", p)
		}
	}

	// Every COPY source exists, is not excluded by .dockerignore, and every
	// --from names a stage defined before it.
	defined := map[string]*dfStage{}
	for _, st := range stages {
		for _, in := range st.instrs {
			if in.cmd != "COPY" && in.cmd != "ADD" {
				continue
			}
			c := parseCopy(t, in)
			if c.from != "" {
				src, ok := defined[c.from]
				if !ok {
					if n, err := strconv.Atoi(c.from); err == nil && n < st.index {
						src, ok = stages[n], true
					}
				}
				if !ok {
					if strings.ContainsAny(c.from, ":/") {
						continue // an image reference, not a stage
					}
					t.Errorf("Dockerfile:%d: COPY --from=%s: no stage of that name before it", in.line, c.from)
					continue
				}
				// The source should be something that stage makes.
				for _, s := range c.sources {
					made := false
					for _, run := range stageInstrs(src, "RUN") {
						if strings.Contains(run.args, s) {
							made = true
						}
					}
					if !made {
						t.Errorf("Dockerfile:%d: COPY --from=%s %s: no RUN in stage %q mentions %s", in.line, c.from, s, c.from, s)
					}
				}
				continue
			}
			for _, s := range c.sources {
				if strings.Contains(s, "://") {
					continue // ADD of a URL
				}
				matches, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(s)))
				if err != nil || len(matches) == 0 {
					t.Errorf("Dockerfile:%d: %s source %q does not exist in the repository", in.line, in.cmd, s)
					continue
				}
				for _, m := range matches {
					rel, _ := filepath.Rel(root, m)
					if rel = filepath.ToSlash(rel); rel != "." && dockerignored(ignore, rel) {
						t.Errorf("Dockerfile:%d: %s source %q is excluded by .dockerignore", in.line, in.cmd, rel)
					}
				}
			}
		}
		if st.name != "" {
			defined[st.name] = st
		}
	}
	// What `COPY . .` must carry for the build.
	for _, p := range []string{"go.mod", "go.sum", "cmd/icebox/main.go", "config/icebox.example.yaml"} {
		if dockerignored(ignore, p) {
			t.Errorf(".dockerignore excludes %s, which the build needs", p)
		}
	}

	// The builder's Go is the one go.mod asks for.
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(deployRead(t, "go.mod"))
	if goVersion == nil {
		t.Fatal("go.mod: no go directive")
	}
	if want := "golang:" + goVersion[1] + "-bookworm"; stages[0].image != want {
		t.Errorf("builder image = %q, want %q (go.mod says go %s; bookworm as in CI)", stages[0].image, want, goVersion[1])
	}

	env, args := goBuildRun(t, stages, map[string]string{"VERSION": "v0"})
	if !slices.Contains(env, "CGO_ENABLED=0") {
		t.Errorf("Dockerfile go build env = %q, want CGO_ENABLED=0 (a static binary for distroless/static)", env)
	}
	for _, want := range [][]string{{"-tags", "goolm"}, {"-trimpath"}} {
		if !containsSeq(args, want) {
			t.Errorf("Dockerfile go build %q lacks %q (as make build)", args, want)
		}
	}
	if i := slices.Index(args, "-ldflags"); i < 0 || !strings.Contains(args[i+1], "-X main.version=v0") {
		t.Errorf("Dockerfile go build %q: want -ldflags with -X main.version=$VERSION", args)
	}

	final := stages[len(stages)-1]
	if !strings.HasPrefix(final.image, "gcr.io/distroless/static") && final.image != "scratch" {
		t.Errorf("final image = %q, want gcr.io/distroless/static-debian12:nonroot", final.image)
	}
	last := func(cmd string) (dfInstr, bool) {
		ins := stageInstrs(final, cmd)
		if len(ins) == 0 {
			t.Errorf("final stage has no %s", cmd)
			return dfInstr{}, false
		}
		return ins[len(ins)-1], true
	}
	if in, ok := last("USER"); ok && in.args != "nonroot" && in.args != "65532" && in.args != "65532:65532" {
		t.Errorf("USER %s, want nonroot", in.args)
	}
	if in, ok := last("VOLUME"); ok && !strings.Contains(in.args, "/var/lib/icebox") {
		t.Errorf("VOLUME %s, want /var/lib/icebox", in.args)
	}
	var envs []string
	for _, in := range stageInstrs(final, "ENV") {
		envs = append(envs, shellWords(t, in.args, nil)...)
	}
	for _, want := range []string{"ICEBOX_STATE_DIR=/var/lib/icebox", "ICEBOX_HTTP_LISTEN=0.0.0.0:8080"} {
		if !slices.Contains(envs, want) {
			t.Errorf("final stage ENV %q lacks %s", envs, want)
		}
	}
	var exposed []string
	for _, in := range stageInstrs(final, "EXPOSE") {
		exposed = append(exposed, strings.Fields(in.args)...)
	}
	for _, want := range []string{"3478/udp", "3478/tcp", "5349/tcp", "8080/tcp"} {
		if !slices.Contains(exposed, want) {
			t.Errorf("EXPOSE %q lacks %s", exposed, want)
		}
	}
	if in, ok := last("HEALTHCHECK"); ok {
		_, cmd, found := strings.Cut(in.args, "CMD ")
		if !found {
			t.Errorf("HEALTHCHECK %s: no CMD", in.args)
		} else if got := execForm(t, dfInstr{line: in.line, cmd: "HEALTHCHECK CMD", args: cmd}); !slices.Equal(got, []string{"/usr/local/bin/icebox", "health"}) {
			t.Errorf("HEALTHCHECK CMD %q, want [/usr/local/bin/icebox health]", got)
		}
	}
	if in, ok := last("ENTRYPOINT"); ok {
		if got := execForm(t, in); !slices.Equal(got, []string{"/usr/local/bin/icebox"}) {
			t.Errorf("ENTRYPOINT %q, want [/usr/local/bin/icebox]", got)
		}
	}
	if in, ok := last("CMD"); ok {
		if got := execForm(t, in); !slices.Equal(got, []string{"serve"}) {
			t.Errorf("CMD %q, want [serve]", got)
		}
	}
	// The binary lands where ENTRYPOINT runs it.
	installed := false
	for _, in := range stageInstrs(final, "COPY") {
		if c := parseCopy(t, in); c.dest == "/usr/local/bin/icebox" {
			installed = true
		}
	}
	if !installed {
		t.Error("final stage: no COPY to /usr/local/bin/icebox")
	}
}

func containsSeq(s, seq []string) bool {
	for i := 0; i+len(seq) <= len(s); i++ {
		if slices.Equal(s[i:i+len(seq)], seq) {
			return true
		}
	}
	return false
}

// --- the binary, the unit, the example config, make install --------------------

// deployVersion is the version the build stamps, to see -ldflags work.
const deployVersion = "v0.0.0-deploytest"

// TestDeployBinary builds icebox exactly as the Dockerfile does, then checks
// what runs it: the systemd unit, the example configuration, the image's
// environment, and scripts/install.sh.
func TestDeployBinary(t *testing.T) {
	root := deployRoot(t)
	stages := parseDockerfile(t, deployRead(t, "Dockerfile"))
	dfEnv, args := goBuildRun(t, stages, map[string]string{"VERSION": deployVersion})
	bin := filepath.Join(t.TempDir(), "icebox")
	for i := range args {
		if args[i] == "-o" && i+1 < len(args) {
			args[i+1] = bin
		}
	}
	if !slices.Contains(args, bin) {
		t.Fatalf("Dockerfile go build %q has no -o", args)
	}
	// GOFLAGS from the developer's shell would change the build; -buildvcs=false
	// matches the image, whose context has no .git (.dockerignore).
	goEnv := deployEnv(append(slices.Clone(dfEnv), "GOFLAGS=-buildvcs=false")...)
	if out, code := runDeploy(t, root, goEnv, "go", args...); code != 0 {
		t.Fatalf("go %s (the Dockerfile's build): exit %d\n%s", strings.Join(args, " "), code, out)
	}

	t.Run("build_info", func(t *testing.T) {
		out, code := runDeploy(t, root, deployEnv(), "go", "version", "-m", bin)
		if code != 0 {
			t.Fatalf("go version -m: exit %d\n%s", code, out)
		}
		// -ldflags is not recorded under -trimpath (go.dev/issue/52372);
		// the version subtest sees it work.
		for _, want := range []string{"\tCGO_ENABLED=0", "\t-tags=goolm", "\t-trimpath=true"} {
			if !strings.Contains(out, want) {
				t.Errorf("go version -m lacks %q:\n%s", strings.TrimSpace(want), out)
			}
		}
	})

	t.Run("version", func(t *testing.T) {
		out, code := runDeploy(t, root, deployEnv(), bin, "version")
		if code != 0 || !strings.HasPrefix(out, "icebox "+deployVersion+" ") {
			t.Errorf("icebox version: exit %d, output %q; want \"icebox %s (...)\"", code, out, deployVersion)
		}
	})

	t.Run("health_command", func(t *testing.T) {
		// The image's HEALTHCHECK runs `icebox health`: it must exist and
		// fail as a runtime failure (1), not as an unknown command (2),
		// when nothing listens.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		out, code := runDeploy(t, root, deployEnv(), bin, "health", "--url", "http://"+addr+"/readyz")
		if code != exitFailure {
			t.Errorf("icebox health with nothing listening: exit %d, want %d\n%s", code, exitFailure, out)
		}
	})

	t.Run("systemd_example_config", func(t *testing.T) {
		// As the unit runs it: its Environment= lines on top of the file.
		unitEnv := systemdEnvironment(t, deployRead(t, "systemd/icebox.service"))
		cfg := filepath.Join(root, "systemd", "icebox.yaml")
		out, code := runDeploy(t, root, deployEnv(unitEnv...), bin, "config", "check", "--config", cfg)
		if code != 0 {
			t.Fatalf("icebox config check --config systemd/icebox.yaml (with %q): exit %d\n%s", unitEnv, code, out)
		}
		if !strings.Contains(out, "state_dir /var/lib/icebox") {
			t.Errorf("config check: %q; want state_dir /var/lib/icebox", out)
		}
		// Without the unit's environment too (icebox config check by hand).
		if out, code := runDeploy(t, root, deployEnv(), bin, "config", "check", "--config", cfg); code != 0 {
			t.Errorf("config check without the unit's environment: exit %d\n%s", code, out)
		}
	})

	t.Run("docker_env_config", func(t *testing.T) {
		// The image ships no config file: the defaults plus its ENV must be valid.
		var envs []string
		for _, in := range stageInstrs(stages[len(stages)-1], "ENV") {
			envs = append(envs, shellWords(t, in.args, nil)...)
		}
		empty := filepath.Join(t.TempDir(), "empty.yaml")
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		out, code := runDeploy(t, root, deployEnv(envs...), bin, "config", "check", "--config", empty)
		if code != 0 {
			t.Errorf("config check with the image's ENV %q: exit %d\n%s", envs, code, out)
		}
	})

	t.Run("systemd_analyze_verify", func(t *testing.T) {
		analyze := deployTool(t, "systemd-analyze", "systemd")
		unit := systemdUnitForTest(t, bin)
		out, code := runDeploy(t, filepath.Dir(unit), deployEnv(), analyze, "verify", "--man=no", unit)
		var bad []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if strings.Contains(l, "icebox") && !harmlessVerifyLine(l) {
				bad = append(bad, l)
			}
		}
		if code != 0 || len(bad) > 0 {
			t.Errorf("systemd-analyze verify icebox.service: exit %d, problems:\n%s\nfull output:\n%s", code, strings.Join(bad, "\n"), out)
		}
	})

	t.Run("systemd_analyze_security", func(t *testing.T) {
		analyze := deployTool(t, "systemd-analyze", "systemd")
		unit := systemdUnitForTest(t, bin)
		out, code := runDeploy(t, filepath.Dir(unit), deployEnv(), analyze, "security", "--offline=yes", "--no-pager", unit)
		m := regexp.MustCompile(`Overall exposure level for icebox\.service: (\d+\.\d+)`).FindStringSubmatch(out)
		if m == nil {
			if strings.Contains(out, "--offline") || strings.Contains(out, "unrecognized option") {
				t.Skipf("this systemd-analyze cannot judge a unit file offline (needs systemd 250+):\n%s", out)
			}
			t.Fatalf("systemd-analyze security: exit %d, no exposure level:\n%s", code, out)
		}
		// 1.9 when written; the hardening above keeps it "OK". A higher score
		// means a protection was dropped.
		if level, _ := strconv.ParseFloat(m[1], 64); level > 2.5 {
			t.Errorf("systemd-analyze security: exposure %s, want <= 2.5; the ✗ lines:\n%s", m[1], grepLines(out, "✗"))
		}
	})

	t.Run("install", func(t *testing.T) { testInstall(t, root, bin) })
}

// harmlessVerifyLines are systemd-analyze verify messages about the unit
// that do not point at a mistake in it. None is known today; add a pattern
// here, with the reason, if a systemd version prints one.
var harmlessVerifyLines = []*regexp.Regexp{}

func harmlessVerifyLine(l string) bool {
	for _, re := range harmlessVerifyLines {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// systemdDirectives are the unit's [Service] lines that deployment relies
// on; a change to any of them should be deliberate (and change this list).
var systemdDirectives = []string{
	"Type=notify", "NotifyAccess=main", "WatchdogSec=30s",
	"ExecStart=/usr/local/bin/icebox serve --config /etc/icebox/icebox.yaml",
	"ExecReload=/bin/kill -HUP $MAINPID",
	"Environment=ICEBOX_STATE_DIR=/var/lib/icebox",
	"Restart=on-failure", "RestartSec=2s", "RestartPreventExitStatus=2", "TimeoutStopSec=90s",
	"DynamicUser=yes", "StateDirectory=icebox", "ConfigurationDirectory=icebox", "UMask=0077",
	"AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
	"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes",
	"ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes",
	"ProtectControlGroups=yes", "ProtectClock=yes", "ProtectHostname=yes",
	"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
	"RestrictNamespaces=yes", "RestrictRealtime=yes", "RestrictSUIDSGID=yes", "LockPersonality=yes",
	"MemoryDenyWriteExecute=yes", "SystemCallArchitectures=native", "SystemCallFilter=@system-service",
	"SystemCallErrorNumber=EPERM", "LimitNOFILE=1048576",
}

// systemdUnitForTest writes the unit into a temp dir with ExecStart running
// bin (verify needs the binary to exist) and checks the original has the
// directives deployment relies on.
func systemdUnitForTest(t *testing.T, bin string) string {
	t.Helper()
	unit := deployRead(t, "systemd/icebox.service")
	lines := map[string]bool{}
	for _, l := range strings.Split(unit, "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, d := range systemdDirectives {
		if !lines[d] {
			t.Errorf("systemd/icebox.service lacks the line %q", d)
		}
	}
	const execStart = "ExecStart=/usr/local/bin/icebox "
	if strings.Count(unit, execStart) != 1 {
		t.Fatalf("systemd/icebox.service: want exactly one %q line", execStart)
	}
	path := filepath.Join(t.TempDir(), "icebox.service")
	rewritten := strings.Replace(unit, execStart, "ExecStart="+bin+" ", 1)
	if err := os.WriteFile(path, []byte(rewritten), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// systemdEnvironment returns the unit's Environment= assignments.
func systemdEnvironment(t *testing.T, unit string) []string {
	t.Helper()
	var env []string
	for _, l := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Environment="); ok {
			env = append(env, shellWords(t, v, nil)...)
		}
	}
	return env
}

// testInstall runs scripts/install.sh into a DESTDIR, twice (the second run
// must keep an edited config), and checks `make install` runs it.
func testInstall(t *testing.T, root, bin string) {
	dest := t.TempDir()
	env := deployEnv("DESTDIR="+dest, "PREFIX=/opt/icebox", "BIN="+bin)
	out, code := runDeploy(t, root, env, filepath.Join(root, "scripts", "install.sh"))
	if code != 0 {
		t.Fatalf("DESTDIR=%s scripts/install.sh: exit %d\n%s", dest, code, out)
	}
	for _, f := range []struct {
		path string
		mode fs.FileMode
	}{
		{"opt/icebox/bin/icebox", 0o755},
		{"etc/systemd/system/icebox.service", 0o644},
		{"etc/sysusers.d/icebox.conf", 0o644},
		{"etc/icebox/icebox.yaml", 0o640},
	} {
		fi, err := os.Stat(filepath.Join(dest, f.path))
		if err != nil {
			t.Errorf("install: %v", err)
			continue
		}
		if fi.Mode().Perm() != f.mode {
			t.Errorf("install: %s has mode %04o, want %04o", f.path, fi.Mode().Perm(), f.mode)
		}
	}
	if out, code := runDeploy(t, root, deployEnv(), filepath.Join(dest, "opt/icebox/bin/icebox"), "version"); code != 0 || !strings.Contains(out, deployVersion) {
		t.Errorf("installed binary: icebox version: exit %d, %q", code, out)
	}
	unit, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system/icebox.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nExecStart=/opt/icebox/bin/icebox serve --config /etc/icebox/icebox.yaml\n") {
		t.Errorf("installed unit does not run PREFIX's binary:\n%s", grepLines(string(unit), "ExecStart"))
	}
	for _, want := range []string{"systemctl daemon-reload", "enable --now icebox"} {
		if !strings.Contains(out, want) {
			t.Errorf("install output lacks the next step %q:\n%s", want, out)
		}
	}

	// A second install keeps the operator's configuration.
	cfg := filepath.Join(dest, "etc/icebox/icebox.yaml")
	edited := []byte("# edited by the operator\nstate_dir: /var/lib/icebox\n")
	if err := os.WriteFile(cfg, edited, 0o640); err != nil {
		t.Fatal(err)
	}
	if out, code := runDeploy(t, root, env, filepath.Join(root, "scripts", "install.sh")); code != 0 {
		t.Fatalf("second install: exit %d\n%s", code, out)
	}
	if got, _ := os.ReadFile(cfg); !bytes.Equal(got, edited) {
		t.Errorf("second install overwrote icebox.yaml:\n%s", got)
	}

	// Without a binary it says what to do.
	out, code = runDeploy(t, root, deployEnv("DESTDIR="+dest, "BIN="+filepath.Join(dest, "missing")), filepath.Join(root, "scripts", "install.sh"))
	if code == 0 || !strings.Contains(out, "make build") {
		t.Errorf("install without a binary: exit %d, %q; want a failure naming make build", code, out)
	}

	// The sysusers entry creates the user (in a throw-away root).
	if sysusers, err := exec.LookPath("systemd-sysusers"); err == nil {
		sroot := t.TempDir()
		if err := os.MkdirAll(filepath.Join(sroot, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(dest, "etc/sysusers.d/icebox.conf")
		if out, code := runDeploy(t, root, deployEnv(), sysusers, "--root="+sroot, conf); code != 0 {
			t.Errorf("systemd-sysusers icebox.conf: exit %d\n%s", code, out)
		}
		passwd, _ := os.ReadFile(filepath.Join(sroot, "etc/passwd"))
		if !regexp.MustCompile(`(?m)^icebox:x:\d+:\d+:`).Match(passwd) {
			t.Errorf("systemd-sysusers did not create the icebox user; /etc/passwd:\n%s", passwd)
		}
	}

	// `make install` passes DESTDIR and PREFIX through to the script.
	if mk, err := exec.LookPath("make"); err == nil {
		out, code := runDeploy(t, root, deployEnv(), mk, "-n", "install", "DESTDIR=/x", "PREFIX=/y")
		if code != 0 || !strings.Contains(out, "scripts/install.sh") || !strings.Contains(out, "DESTDIR='/x'") || !strings.Contains(out, "PREFIX='/y'") {
			t.Errorf("make -n install: exit %d\n%s", code, out)
		}
	}
}

// --- metrics documentation and dashboard ----------------------------------------

// metricDef is a metric the code defines.
type metricDef struct {
	name        string
	typ         string   // counter, gauge, histogram, summary
	labels      []string // nil if not known from the source
	constLabels []string // ConstLabels keys
	pos         string
}

// codeMetrics finds every metric defined in the repository's non-test Go
// files: each prometheus.*Opts literal (its Name, with Namespace and
// Subsystem), the type from the Opts, and the label names from the
// []string literal passed beside it. A plain grep for `Name: "icebox_…"`
// backs it up, so a metric defined some other way is still found by name.
func codeMetrics(t *testing.T, root string) map[string]*metricDef {
	t.Helper()
	defs := map[string]*metricDef{}
	byDir := map[string][]*ast.File{}
	fset := token.NewFileSet()
	grep := regexp.MustCompile(`Name:\s*"(icebox_[a-zA-Z0-9_]+)"`)
	grepped := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch name := d.Name(); {
			case path == root:
			case strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" || name == "node_modules" ||
				(filepath.Dir(path) == root && (name == "bin" || name == "data")):
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, m := range grep.FindAllStringSubmatch(string(src), -1) {
			grepped[m[1]] = rel
		}
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			return fmt.Errorf("parse %s: %w", rel, err)
		}
		byDir[filepath.Dir(path)] = append(byDir[filepath.Dir(path)], f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, files := range byDir {
		consts := stringConsts(files)
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CallExpr:
					if len(n.Args) == 0 {
						return true
					}
					// prometheus.NewDesc("name", help, labels, constLabels)
					// describes a metric of a custom Collector; its type is
					// only known where the value is made.
					if strings.HasSuffix(calledName(n.Fun), "NewDesc") && len(n.Args) >= 3 {
						if name, ok := stringValue(n.Args[0], consts); ok && strings.HasPrefix(name, "icebox_") {
							defs[name] = &metricDef{name: name, labels: stringList(n.Args[2], consts), pos: fset.Position(n.Pos()).String()}
						}
						return true
					}
					d := optsMetric(fset, n.Args[0], consts)
					if d == nil {
						return true
					}
					// NewCounterVec(opts, []string{...}) has labels;
					// NewCounter(opts), NewGaugeFunc(opts, f) have none.
					d.labels = []string{}
					if fn := calledName(n.Fun); strings.HasSuffix(fn, "Vec") {
						d.labels = nil // unknown unless a literal list
						if len(n.Args) >= 2 {
							d.labels = stringList(n.Args[1], consts)
						}
					}
					if d.labels != nil {
						d.labels = append(d.labels, d.constLabels...)
					}
					defs[d.name] = d
					return false // its Opts literal is done
				case *ast.CompositeLit:
					if d := optsMetric(fset, n, consts); d != nil {
						if _, seen := defs[d.name]; !seen {
							defs[d.name] = d
						}
					}
				}
				return true
			})
		}
	}
	for name, file := range grepped {
		if _, ok := defs[name]; !ok {
			defs[name] = &metricDef{name: name, pos: file}
		}
	}
	return defs
}

// calledName is the name of the called function or method.
func calledName(fun ast.Expr) string {
	switch f := fun.(type) {
	case *ast.SelectorExpr:
		return f.Sel.Name
	case *ast.Ident:
		return f.Name
	}
	return ""
}

// optsMetric reads a prometheus.<Kind>Opts{...} literal.
func optsMetric(fset *token.FileSet, e ast.Expr, consts map[string]string) *metricDef {
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil
	}
	sel, ok := lit.Type.(*ast.SelectorExpr)
	if !ok {
		return nil
	}
	if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "prometheus" {
		return nil
	}
	kind, ok := strings.CutSuffix(sel.Sel.Name, "Opts")
	if !ok {
		return nil
	}
	typ := map[string]string{"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram", "Summary": "summary", "Untyped": "untyped"}[kind]
	if typ == "" {
		return nil
	}
	var ns, sub, name string
	var constLabels []string
	for _, el := range lit.Elts {
		kv, ok := el.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		key, _ := kv.Key.(*ast.Ident)
		if key == nil {
			continue
		}
		v, _ := stringValue(kv.Value, consts)
		switch key.Name {
		case "Namespace":
			ns = v
		case "Subsystem":
			sub = v
		case "Name":
			name = v
		case "ConstLabels":
			if m, ok := kv.Value.(*ast.CompositeLit); ok {
				for _, e := range m.Elts {
					if kv, ok := e.(*ast.KeyValueExpr); ok {
						if k, ok := stringValue(kv.Key, consts); ok {
							constLabels = append(constLabels, k)
						}
					}
				}
			}
		}
	}
	if name == "" {
		return nil
	}
	full := name
	if sub != "" {
		full = sub + "_" + full
	}
	if ns != "" {
		full = ns + "_" + full
	}
	return &metricDef{name: full, typ: typ, constLabels: constLabels, pos: fset.Position(lit.Pos()).String()}
}

// stringList reads a []string{...} literal of strings and constants; nil
// if it is anything else.
func stringList(e ast.Expr, consts map[string]string) []string {
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil
	}
	if at, ok := lit.Type.(*ast.ArrayType); !ok || fmt.Sprint(at.Elt) != "string" {
		return nil
	}
	out := []string{}
	for _, el := range lit.Elts {
		v, ok := stringValue(el, consts)
		if !ok {
			return nil
		}
		out = append(out, v)
	}
	return out
}

func stringValue(e ast.Expr, consts map[string]string) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind == token.STRING {
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		}
	case *ast.Ident:
		s, ok := consts[e.Name]
		return s, ok
	}
	return "", false
}

// stringConsts maps a package's string constants to their values.
func stringConsts(files []*ast.File) map[string]string {
	consts := map[string]string{}
	for _, f := range files {
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if s, ok := stringValue(vs.Values[i], nil); ok {
							consts[n.Name] = s
						}
					}
				}
			}
		}
	}
	return consts
}

// docMetric is a row of a metrics table in docs/metrics.md.
type docMetric struct {
	typ     string
	labels  []string
	pending bool
	line    int
}

// docMetrics reads the rows of docs/metrics.md's tables whose first cell
// names metrics (`name`, several separated by ·): type from the second
// cell, label names (in backticks) from the third.
func docMetrics(t *testing.T, doc string) map[string]docMetric {
	t.Helper()
	out := map[string]docMetric{}
	tick := regexp.MustCompile("`([^`]+)`")
	for i, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 3 {
			continue
		}
		var labels []string
		if len(cells) >= 4 { // metric | type | labels | meaning
			for _, m := range tick.FindAllStringSubmatch(cells[2], -1) {
				labels = append(labels, m[1])
			}
		}
		for _, m := range tick.FindAllStringSubmatch(cells[0], -1) {
			out[m[1]] = docMetric{
				typ:     strings.TrimSpace(cells[1]),
				labels:  labels,
				pending: strings.Contains(line, "*(pending)*"),
				line:    i + 1,
			}
		}
	}
	return out
}

// TestMetricsDocumented checks docs/metrics.md against the code: every
// metric is listed with its type and label names, and every icebox_ metric
// listed exists (unless its row is marked pending).
func TestMetricsDocumented(t *testing.T) {
	root := deployRoot(t)
	defs := codeMetrics(t, root)
	if _, ok := defs["icebox_turn_allocations_active"]; !ok || len(defs) < 5 {
		t.Fatalf("found only %d metrics in the code; is the scan broken?", len(defs))
	}
	docs := docMetrics(t, deployRead(t, "docs/metrics.md"))
	names := make([]string, 0, len(defs))
	for n := range defs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		d := defs[n]
		row, ok := docs[n]
		switch {
		case !ok:
			t.Errorf("%s (%s) is not in docs/metrics.md; add a row: | `%s` | %s | %s | meaning |", n, d.pos, n, d.typ, backticked(d.labels))
			continue
		case row.pending:
			t.Errorf("docs/metrics.md:%d: %s is defined now (%s); remove its *(pending)* mark", row.line, n, d.pos)
		}
		if d.typ != "" && !strings.Contains(row.typ, d.typ) {
			t.Errorf("docs/metrics.md:%d: %s has type %q, the code (%s) makes a %s", row.line, n, row.typ, d.pos, d.typ)
		}
		if d.labels != nil {
			got, want := slices.Sorted(slices.Values(row.labels)), slices.Sorted(slices.Values(d.labels))
			if !slices.Equal(got, want) {
				t.Errorf("docs/metrics.md:%d: %s has labels %q, the code (%s) has %q", row.line, n, got, d.pos, want)
			}
		}
	}
	for n, row := range docs {
		if strings.HasPrefix(n, "icebox_") && !row.pending {
			if _, ok := defs[n]; !ok {
				t.Errorf("docs/metrics.md:%d: %s is documented but no code defines it (renamed? removed? or mark it *(pending)*)", row.line, n)
			}
		}
	}
}

func backticked(labels []string) string {
	var b []string
	for _, l := range labels {
		b = append(b, "`"+l+"`")
	}
	return strings.Join(b, ", ")
}

// TestMetricsGrafanaDashboard checks docs/grafana-dashboard.json: valid
// JSON, a Prometheus data-source variable every panel uses, unique panel IDs,
// a panel for each area the brief asks for, and only documented metrics.
func TestMetricsGrafanaDashboard(t *testing.T) {
	raw := deployRead(t, "docs/grafana-dashboard.json")
	var dash struct {
		Title         string `json:"title"`
		UID           string `json:"uid"`
		SchemaVersion int    `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal([]byte(raw), &dash); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Errorf("dashboard title %q, uid %q: want both", dash.Title, dash.UID)
	}
	if dash.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want a current dashboard (>= 36)", dash.SchemaVersion)
	}
	hasDS := false
	for _, v := range dash.Templating.List {
		if v.Name == "DS_PROMETHEUS" && v.Type == "datasource" && v.Query == "prometheus" {
			hasDS = true
		}
	}
	if !hasDS {
		t.Error("templating: no datasource variable DS_PROMETHEUS of type prometheus")
	}

	type target struct {
		Expr       string `json:"expr"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	}
	type panel struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource *struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
		Targets []target          `json:"targets"`
		Panels  []json.RawMessage `json:"panels"` // a collapsed row's
	}
	var panels []panel
	var walk func([]json.RawMessage)
	walk = func(raws []json.RawMessage) {
		for _, r := range raws {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("panel: %v", err)
			}
			panels = append(panels, p)
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	ids := map[int]string{}
	var exprs []string
	for _, p := range panels {
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q: datasource %+v, want uid ${DS_PROMETHEUS}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q: a target's datasource uid is %q, want ${DS_PROMETHEUS}", p.Title, tg.Datasource.UID)
			}
			if strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") || strings.Count(tg.Expr, "{") != strings.Count(tg.Expr, "}") {
				t.Errorf("panel %q: unbalanced query %q", p.Title, tg.Expr)
			}
			exprs = append(exprs, tg.Expr)
		}
	}

	doc := deployRead(t, "docs/metrics.md")
	documented := docMetrics(t, doc)
	metricRef := regexp.MustCompile(`\b((?:icebox|process|go)_[a-z0-9_]+)\b`)
	queried := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricRef.FindAllStringSubmatch(e, -1) {
			name := m[1]
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suffix); ok {
					if row, ok := documented[base]; ok && (row.typ == "histogram" || row.typ == "summary") {
						name = base
					}
				}
			}
			queried[name] = true
			if _, ok := documented[name]; !ok && !strings.Contains(doc, "`"+name+"`") {
				t.Errorf("the dashboard queries %s, which docs/metrics.md does not list", name)
			}
		}
	}
	for _, want := range []string{
		"icebox_turn_allocations_active", "icebox_turn_allocations_total", "icebox_turn_auth_total",
		"icebox_turn_peer_denied_total", "icebox_turn_relayed_bytes_total", "icebox_turn_relayed_packets_total",
		"icebox_turn_quota_rejections_total", "icebox_ws_connections",
		"icebox_http_requests_total", "icebox_http_request_duration_seconds",
		"process_cpu_seconds_total", "process_resident_memory_bytes",
	} {
		if !queried[want] {
			t.Errorf("no dashboard panel queries %s", want)
		}
	}
}
