package config

import (
	"reflect"
	"slices"
	"strings"
)

// liveKeys are the keys a running icebox applies on SIGHUP without a
// restart; an entry ending in "." covers every key under it. Every other
// key needs a restart: its sockets, state or child process were made from
// it at start. Keep README.md's "Reload" paragraph in step.
var liveKeys = []string{
	"log.level",
	"turn.allowed_peers",
	"turn.denied_peers",
	"turn.quotas.",
	"turn.error_rate", "turn.error_burst", "turn.binding_rate", "turn.binding_burst",
	"calls.initiate_rate", "calls.initiate_burst",
	"credentials.secrets", // the keyring (secret files are read again too)
	"http.cors.allowed_origins",
	"ice_servers.",
	"auth.",
	"matrixrtc.livekit.turn.peers",
}

// IsLiveKey reports whether key (a dotted yaml path, as Diff returns) is
// applied by a reload without a restart.
func IsLiveKey(key string) bool {
	for _, l := range liveKeys {
		if key == l || (strings.HasSuffix(l, ".") && strings.HasPrefix(key, l)) {
			return true
		}
	}
	return false
}

// LiveKeys lists the keys (or "section." prefixes) a reload applies live,
// for documentation and tests.
func LiveKeys() []string { return slices.Clone(liveKeys) }

// Diff lists the yaml key paths ("turn.quotas.per_user") whose values
// differ between a and b, in the order of the Config type. A list or map is
// one key (its elements are not named: an entry may hold a secret); an
// empty list equals a missing one.
func Diff(a, b Config) []string {
	var out []string
	diffValue(reflect.ValueOf(a), reflect.ValueOf(b), "", &out)
	return out
}

func diffValue(a, b reflect.Value, path string, out *[]string) {
	if isSection(a.Type()) {
		for _, f := range yamlFields(a.Type()) {
			diffValue(a.Field(f.index), b.Field(f.index), joinPath(path, f.key), out)
		}
		return
	}
	switch a.Kind() {
	case reflect.Slice, reflect.Map:
		if a.Len() == 0 && b.Len() == 0 {
			return
		}
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		*out = append(*out, path)
	}
}

// Changes splits Diff(old, next) into the keys a reload applies (live) and
// those that need a restart.
func Changes(old, next Config) (live, restart []string) {
	for _, k := range Diff(old, next) {
		if IsLiveKey(k) {
			live = append(live, k)
		} else {
			restart = append(restart, k)
		}
	}
	return live, restart
}

// WithKeys returns dst with the values of keys (yaml key paths, as Diff
// returns them) taken from src: the running configuration after a reload
// applied those keys.
func WithKeys(dst, src Config, keys []string) Config {
	d, s := reflect.ValueOf(&dst).Elem(), reflect.ValueOf(src)
	for _, k := range keys {
		copyKey(d, s, strings.Split(k, "."))
	}
	return dst
}

func copyKey(d, s reflect.Value, path []string) {
	if len(path) == 0 {
		d.Set(s)
		return
	}
	if !isSection(d.Type()) {
		return
	}
	for _, f := range yamlFields(d.Type()) {
		if f.key == path[0] {
			copyKey(d.Field(f.index), s.Field(f.index), path[1:])
			return
		}
	}
}
