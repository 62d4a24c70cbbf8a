package config

import (
	"reflect"
	"strings"
	"time"
)

var durationType = reflect.TypeFor[time.Duration]()

// yamlField is one field of a config struct, known by its yaml key.
type yamlField struct {
	key   string
	index int
	typ   reflect.Type
}

// yamlFields lists the fields of struct type t that have a yaml key. The
// decoder, the unknown-key check and the environment overlay all walk the
// types through it, so a new field is picked up by all three.
func yamlFields(t reflect.Type) []yamlField {
	fields := make([]yamlField, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || key == "" || key == "-" {
			continue
		}
		fields = append(fields, yamlField{key: key, index: i, typ: f.Type})
	}
	return fields
}

// isSection reports whether t is a nested section (a struct other than a
// scalar type such as time.Duration).
func isSection(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t != durationType
}

// joinPath appends key to a dotted field path.
func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
