package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load returns the configuration: Default, then the YAML file at path (if
// path is not ""), then the environment variables in environ (os.Environ
// format, "KEY=value"; see applyEnv), then Validate.
//
// A missing or unreadable file is an error naming it. An empty file leaves
// the defaults. Unknown keys are errors naming the key's full path
// ("line 3: field turn.lissten not found"). Durations are strings such as
// "24h". Every error that is about the content matches ErrInvalid.
func Load(path string, environ []string) (Config, error) {
	cfg := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		if err := decode(path, data, &cfg); err != nil {
			return Config{}, err
		}
	}
	if err := applyEnv(&cfg, environ); err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// decode overlays the YAML document in data (read from name) on cfg.
//
// It first checks the document against the Config types itself, because
// yaml's own errors name only the last key and the Go type ("field lissten
// not found in type config.Listen"), which does not tell a user where to
// look in a nested file. The strict decode that follows then does the work.
func decode(name string, data []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty, or only comments: the defaults stand
		}
		return invalid(fmt.Sprintf("config: %s: %s", name, yamlText(err)))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return invalid(fmt.Sprintf("config: %s: line %d: a second YAML document; icebox reads one", name, extra.Line))
	} else if !errors.Is(err, io.EOF) {
		return invalid(fmt.Sprintf("config: %s: %s", name, yamlText(err)))
	}

	var problems []string
	checkNode(&doc, reflect.TypeFor[Config](), "", &problems)
	if len(problems) > 0 {
		errs := make([]error, len(problems))
		for i, p := range problems {
			errs[i] = invalid(fmt.Sprintf("config: %s: %s", name, p))
		}
		return errors.Join(errs...)
	}

	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(cfg); err != nil {
		return invalid(fmt.Sprintf("config: %s: %s", name, yamlText(err)))
	}
	return nil
}

var linePrefix = regexp.MustCompile(`^line \d+: `)

// yamlText is a yaml error's text without the "yaml: " prefix and with a
// type error's list on one line.
func yamlText(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return strings.Join(te.Errors, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

// checkNode walks node against type t and appends a problem, with the full
// field path, for each unknown key and each value that does not decode into
// its field's type.
func checkNode(n *yaml.Node, t reflect.Type, path string, problems *[]string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return
		}
		n = n.Content[0]
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // "key:" with no value: a section keeps its defaults, a list is emptied
	}
	switch {
	case isSection(t):
		checkMapping(n, t, path, problems)
	case t.Kind() == reflect.Slice && isSection(t.Elem()) && n.Kind == yaml.SequenceNode:
		for i, e := range n.Content {
			checkNode(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), problems)
		}
	default:
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			msg := linePrefix.ReplaceAllString(yamlText(err), "")
			*problems = append(*problems, fmt.Sprintf("line %d: %s: %s", n.Line, path, msg))
		}
	}
}

func checkMapping(n *yaml.Node, t reflect.Type, path string, problems *[]string) {
	if n.Kind != yaml.MappingNode {
		where := path
		if where == "" {
			where = "the document"
		}
		*problems = append(*problems, fmt.Sprintf("line %d: %s: must be a mapping of keys, not %s", n.Line, where, n.ShortTag()))
		return
	}
	fields := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.ShortTag() == "!!merge" {
			checkMerge(v, t, path, problems)
			continue
		}
		f, ok := fieldByKey(fields, k.Value)
		if !ok {
			*problems = append(*problems, fmt.Sprintf("line %d: field %s not found", k.Line, joinPath(path, k.Value)))
			continue
		}
		checkNode(v, f.typ, joinPath(path, k.Value), problems)
	}
}

// checkMerge checks the value of a "<<" merge key: a mapping, or a list of them.
func checkMerge(v *yaml.Node, t reflect.Type, path string, problems *[]string) {
	for v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if v.Kind == yaml.SequenceNode {
		for _, e := range v.Content {
			checkNode(e, t, path, problems)
		}
		return
	}
	checkNode(v, t, path, problems)
}

func fieldByKey(fields []yamlField, key string) (yamlField, bool) {
	for _, f := range fields {
		if f.key == key {
			return f, true
		}
	}
	return yamlField{}, false
}
