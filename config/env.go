package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Environment variables beyond the generic ICEBOX_<PATH> ones.
const (
	// EnvSecret and EnvSecretFile replace credentials.secrets with one
	// active compat secret whose kid is EnvKID (default "k1").
	EnvSecret     = "ICEBOX_CREDENTIALS_SECRET"
	EnvSecretFile = "ICEBOX_CREDENTIALS_SECRET_FILE"
	EnvKID        = "ICEBOX_CREDENTIALS_KID"

	// EnvStaticTokens replaces auth.static_tokens with comma-separated
	// "sha256:user" or "sha256:user:admin" entries. The user is everything
	// between the hash and an optional final ":admin", so Matrix user IDs
	// (@alice:example.org) need no escaping; a user ID that itself ends in
	// ":admin" can only be configured in the file.
	EnvStaticTokens = "ICEBOX_AUTH_STATIC_TOKENS"

	// The seed's names, kept as aliases: each URL variable appends an
	// entry to ice_servers.external.
	EnvTURNServerURL = "TURN_SERVER_URL"
	EnvTURNUsername  = "TURN_USERNAME"
	EnvTURNPassword  = "TURN_PASSWORD"
	EnvSTUNServerURL = "STUN_SERVER_URL"

	// The seed's Matrix names, kept as aliases of the ICEBOX_MATRIX_*
	// variables (see matrixAliases for which). Each applies when non-empty
	// and its ICEBOX_MATRIX_* twin is not set: the explicit name wins.
	EnvMatrixEnabled       = "MATRIX_ENABLED"
	EnvMatrixHomeserverURL = "MATRIX_HOMESERVER_URL"
	EnvMatrixServiceUser   = "MATRIX_SERVICE_USER"
	EnvMatrixAccessToken   = "MATRIX_ACCESS_TOKEN"
	EnvMatrixVoIPEnabled   = "MATRIX_VOIP_ENABLED"
	EnvMatrixVoIPVersion   = "MATRIX_VOIP_VERSION"
)

// matrixAliases pairs each seed name with the generic variable it stands for.
var matrixAliases = []struct{ alias, name string }{
	{EnvMatrixEnabled, "ICEBOX_MATRIX_ENABLED"},
	{EnvMatrixHomeserverURL, "ICEBOX_MATRIX_HOMESERVER_URL"},
	{EnvMatrixServiceUser, "ICEBOX_MATRIX_SERVICE_USER"},
	{EnvMatrixAccessToken, envMatrixToken},
	{EnvMatrixVoIPEnabled, "ICEBOX_MATRIX_VOIP_ENABLED"},
	{EnvMatrixVoIPVersion, "ICEBOX_MATRIX_VOIP_VERSION"},
}

// The generic variables of the Matrix login, which applyMatrixLoginEnv
// treats as one choice.
const (
	envMatrixToken        = "ICEBOX_MATRIX_ACCESS_TOKEN"
	envMatrixTokenFile    = "ICEBOX_MATRIX_ACCESS_TOKEN_FILE"
	envMatrixPassword     = "ICEBOX_MATRIX_PASSWORD"
	envMatrixPasswordFile = "ICEBOX_MATRIX_PASSWORD_FILE"
)

const envPrefix = "ICEBOX"

// cliEnv are the ICEBOX_* variables that are not configuration but read by
// the command line or the tests; applyEnv lets them be. Any other ICEBOX_*
// name that is no configuration variable is a mistake, reported like an
// unknown YAML key.
var cliEnv = []string{
	"ICEBOX_ADMIN_TOKEN",    // keyring and sessions: the admin bearer token
	"ICEBOX_CHECK_SECRET",   // check: the TURN REST secret
	"ICEBOX_CHECK_PASSWORD", // check: the TURN password
	"ICEBOX_CHECK_TOKEN",    // check: the bearer token of --ice-servers-url
	"ICEBOX_URL",            // the CLI's API base URL in scripts and the browser tests
	// The name wrappers and container entrypoints give a config path; icebox
	// takes --config, and passing the path on is theirs.
	"ICEBOX_CONFIG",
	"ICEBOX_SCREENSHOTS_DIR", // the browser tests' screenshot directory
}

// cliEnvPrefixes are families of test and benchmark switches.
var cliEnvPrefixes = []string{"ICEBOX_TEST_", "ICEBOX_BENCH_"}

// unknownEnv returns an error for each ICEBOX_* variable in env that is
// neither configuration nor the command line's, naming the nearest known
// variable when the name looks like a typo of it.
func unknownEnv(env map[string]string) []error {
	known := map[string]bool{EnvSecret: true, EnvSecretFile: true, EnvKID: true, EnvStaticTokens: true}
	for _, ev := range envVars() {
		known[ev.name] = true
	}
	var unknown []string
	for k := range env {
		if !strings.HasPrefix(k, envPrefix+"_") || known[k] || slices.Contains(cliEnv, k) ||
			slices.ContainsFunc(cliEnvPrefixes, func(p string) bool { return strings.HasPrefix(k, p) }) {
			continue
		}
		unknown = append(unknown, k)
	}
	slices.Sort(unknown)
	var errs []error
	for _, k := range unknown {
		msg := fmt.Sprintf("config: environment: %s is not a configuration variable", k)
		if near := nearestName(k, known); near != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", near)
		}
		errs = append(errs, invalid(msg+" (a variable is ICEBOX_ + the key path in capitals: turn.realm is ICEBOX_TURN_REALM)"))
	}
	return errs
}

// nearestName returns the known name closest to name by edit distance, if
// it is close enough to be a typo (a third of the name's length, at most
// 4 edits), else "". Ties go to the alphabetically first, for stable
// messages.
func nearestName(name string, known map[string]bool) string {
	limit := min(4, len(name)/3)
	best, bestD := "", limit+1
	for k := range known {
		d := editDistance(name, k)
		if d < bestD || (d == bestD && k < best) {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two ASCII names.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// envVar is one generic variable: ICEBOX_ + the yaml path upper-cased and
// joined with "_" (turn.relay.public_ip → ICEBOX_TURN_RELAY_PUBLIC_IP).
type envVar struct {
	name  string
	index []int
	typ   reflect.Type
}

// envVars lists the generic variables, in field order. Lists of sections
// (credentials.secrets, ice_servers.external, auth.static_tokens) have
// none: they have the dedicated variables above instead.
func envVars() []envVar {
	var vars []envVar
	var walk func(t reflect.Type, name string, index []int)
	walk = func(t reflect.Type, name string, index []int) {
		for _, f := range yamlFields(t) {
			n := name + "_" + strings.ToUpper(f.key)
			idx := append(append([]int(nil), index...), f.index)
			switch {
			case isSection(f.typ):
				walk(f.typ, n, idx)
			case f.typ.Kind() == reflect.Slice && f.typ.Elem().Kind() != reflect.String,
				f.typ.Kind() == reflect.Map:
				// A list of sections or a map: not expressible as one variable.
			default:
				vars = append(vars, envVar{name: n, index: idx, typ: f.typ})
			}
		}
	}
	walk(reflect.TypeFor[Config](), envPrefix, nil)
	return vars
}

// parseEnviron turns "K=V" entries into a map. As with os.Getenv, the first
// of duplicate entries wins.
func parseEnviron(environ []string) map[string]string {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		if _, dup := env[k]; !dup {
			env[k] = v
		}
	}
	return env
}

// applyEnv overlays environment variables on cfg.
//
// A set ICEBOX_<PATH> variable applies even when empty: an empty string, or
// an empty list (ICEBOX_TURN_LISTEN_TCP= turns the TCP listener off); an
// empty number, boolean or duration is an error. Lists are comma-separated.
// The credential variables and the seed's aliases apply only when non-empty,
// since deployments that template them often pass them empty; a seed Matrix
// name is ignored when its ICEBOX_MATRIX_* twin is set, even empty. A Matrix
// login (token or password) from the environment replaces the file's (see
// applyMatrixLoginEnv). An ICEBOX_* name that is not a config variable is
// an error, as an unknown key in the file is, unless the command line or
// the tests read it (cliEnv).
// EnvStaticTokens follows the generic rule: set and empty, it empties
// auth.static_tokens.
func applyEnv(cfg *Config, environ []string) error {
	env := parseEnviron(environ)
	errs := unknownEnv(env)
	root := reflect.ValueOf(cfg).Elem()
	for _, ev := range envVars() {
		s, ok := env[ev.name]
		if !ok {
			continue
		}
		if err := setFromString(root.FieldByIndex(ev.index), s); err != nil {
			errs = append(errs, invalid(fmt.Sprintf("config: environment: %s: %v", ev.name, err)))
		}
	}
	errs = append(errs, applySecretEnv(cfg, env)...)
	errs = append(errs, applyStaticTokensEnv(cfg, env)...)
	errs = append(errs, applyAliases(cfg, env)...)
	errs = append(errs, applyMatrixAliases(cfg, env)...)
	applyMatrixLoginEnv(cfg, env)
	return errors.Join(errs...)
}

// setFromString sets a scalar or []string field from a variable's text.
func setFromString(v reflect.Value, s string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 24h, 90m)", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		v.SetInt(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", s)
		}
		v.SetFloat(f)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not a boolean (true or false)", s)
		}
		v.SetBool(b)
	case reflect.Slice:
		v.Set(reflect.ValueOf(splitList(s)))
	default:
		// Unreachable while Config holds only the kinds above; a test walks
		// every variable to keep it so.
		return fmt.Errorf("unsupported field type %s", v.Type())
	}
	return nil
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty items; "" is the empty list.
func splitList(s string) []string {
	list := []string{}
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			list = append(list, item)
		}
	}
	return list
}

// applySecretEnv applies EnvSecret, EnvSecretFile and EnvKID.
func applySecretEnv(cfg *Config, env map[string]string) []error {
	secret, file, kid := env[EnvSecret], env[EnvSecretFile], env[EnvKID]
	if secret == "" && file == "" {
		if kid != "" {
			return []error{invalid(fmt.Sprintf("config: environment: %s is set without %s or %s", EnvKID, EnvSecret, EnvSecretFile))}
		}
		return nil
	}
	if kid == "" {
		kid = "k1"
	}
	// Both set is left for Validate to refuse, with the field path.
	cfg.Credentials.Secrets = []Secret{{KID: kid, Secret: secret, SecretFile: file, Compat: true}}
	return nil
}

// applyStaticTokensEnv applies EnvStaticTokens. Entries are never echoed in
// errors: one that does not parse may hold a token rather than its hash.
func applyStaticTokensEnv(cfg *Config, env map[string]string) []error {
	s, ok := env[EnvStaticTokens]
	if !ok {
		return nil
	}
	var errs []error
	tokens := []StaticToken{}
	for i, entry := range splitList(s) {
		hash, user, ok := strings.Cut(entry, ":")
		if !ok {
			errs = append(errs, invalid(fmt.Sprintf("config: environment: %s[%d]: want sha256:user or sha256:user:admin", EnvStaticTokens, i)))
			continue
		}
		user, admin := strings.CutSuffix(user, ":admin")
		tokens = append(tokens, StaticToken{SHA256: hash, User: user, Admin: admin})
	}
	if len(errs) > 0 {
		return errs
	}
	// Hashes and users are left for Validate to check, with field paths.
	cfg.Auth.StaticTokens = tokens
	return nil
}

// applyAliases applies the seed's TURN_SERVER_URL and STUN_SERVER_URL.
func applyAliases(cfg *Config, env map[string]string) []error {
	ext := &cfg.ICEServers.External
	if u := env[EnvTURNServerURL]; u != "" {
		*ext = append(*ext, ExternalServer{
			URLs:       splitList(u),
			Username:   env[EnvTURNUsername],
			Credential: env[EnvTURNPassword],
		})
	} else if env[EnvTURNUsername] != "" || env[EnvTURNPassword] != "" {
		return []error{invalid(fmt.Sprintf("config: environment: %s or %s is set without %s", EnvTURNUsername, EnvTURNPassword, EnvTURNServerURL))}
	}
	if u := env[EnvSTUNServerURL]; u != "" {
		*ext = append(*ext, ExternalServer{URLs: splitList(u)})
	}
	return nil
}

// applyMatrixAliases applies the seed's MATRIX_* names. A bad value is an
// error naming the variable; values are never echoed but for the booleans'.
func applyMatrixAliases(cfg *Config, env map[string]string) []error {
	vars := map[string]envVar{}
	for _, ev := range envVars() {
		vars[ev.name] = ev
	}
	root := reflect.ValueOf(cfg).Elem()
	var errs []error
	for _, a := range matrixAliases {
		s := env[a.alias]
		if s == "" {
			continue
		}
		if _, explicit := env[a.name]; explicit {
			continue
		}
		if err := setFromString(root.FieldByIndex(vars[a.name].index), s); err != nil {
			errs = append(errs, invalid(fmt.Sprintf("config: environment: %s: %v", a.alias, err)))
		}
	}
	return errs
}

// applyMatrixLoginEnv lets a login given by the environment replace the
// file's, as the environment overrides the file: when any of the login
// variables is non-empty (ICEBOX_MATRIX_ACCESS_TOKEN or MATRIX_ACCESS_TOKEN,
// ICEBOX_MATRIX_ACCESS_TOKEN_FILE, ICEBOX_MATRIX_PASSWORD,
// ICEBOX_MATRIX_PASSWORD_FILE), the file's access_token, access_token_file,
// password and password_file that the environment does not give are
// cleared. Two of them given by the environment are left for Validate to
// refuse.
func applyMatrixLoginEnv(cfg *Config, env map[string]string) {
	token, explicit := env[envMatrixToken]
	if !explicit {
		token = env[EnvMatrixAccessToken]
	}
	m := &cfg.Matrix
	logins := []struct {
		fromEnv bool
		field   *string
	}{
		{token != "", &m.AccessToken},
		{env[envMatrixTokenFile] != "", &m.AccessTokenFile},
		{env[envMatrixPassword] != "", &m.Password},
		{env[envMatrixPasswordFile] != "", &m.PasswordFile},
	}
	anyFromEnv := false
	for _, l := range logins {
		anyFromEnv = anyFromEnv || l.fromEnv
	}
	if !anyFromEnv {
		return
	}
	for _, l := range logins {
		if !l.fromEnv {
			*l.field = ""
		}
	}
}
