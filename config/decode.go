package config

import (
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The decoder walks a yaml.Node tree against the file format's types,
// reporting unknown keys, duplicate keys and type errors with their lines,
// and carries on past each so that one run finds every problem.

const (
	// maxAliasChain bounds a chain of aliases followed by deref.
	maxAliasChain = 8
	// maxValues bounds the values decoded from one file, so that aliases
	// naming aliases cannot make a small file expand without end.
	maxValues = 100_000
)

// leaf is implemented by value: a node that is read whole.
type leaf interface{ setNode(n *yaml.Node) string }

// mapping is implemented by file structs embedding meta.
type mapping interface {
	setMeta(line int, keys map[string]int)
}

// entry is one key of a mapping and its value.
type entry struct {
	name  string
	line  int
	value *yaml.Node
}

// decode fills v from n, reporting problems under path. line is where the
// value was named: its key's line, or its list item's line. A null node
// leaves v unset.
func (c *checker) decode(n *yaml.Node, v reflect.Value, path string, line int) {
	n = deref(n)
	if isNull(n) || c.tooMany(n) {
		return
	}
	if v.Kind() == reflect.Pointer {
		p := reflect.New(v.Type().Elem())
		c.decode(n, p.Elem(), path, line)
		v.Set(p)
		return
	}
	if l, ok := v.Addr().Interface().(leaf); ok {
		if msg := l.setNode(n); msg != "" {
			c.add(n.Line, path, "%s", msg)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		c.decodeStruct(n, v, path, line)
	case reflect.Slice:
		c.decodeList(n, v, path)
	case reflect.Map:
		c.decodeMap(n, v, path)
	}
}

// tooMany counts a decoded value and reports, once, a file that expands
// past maxValues.
func (c *checker) tooMany(n *yaml.Node) bool {
	c.values++
	if c.values == maxValues {
		c.add(n.Line, "", "the file expands to more than %d values; are aliases nested?", maxValues)
	}
	return c.values >= maxValues
}

func (c *checker) decodeStruct(n *yaml.Node, v reflect.Value, path string, line int) {
	if !c.isKind(n, yaml.MappingNode, path, "a mapping") {
		return
	}
	keys := map[string]int{}
	for _, e := range c.entries(n, path) {
		i := fieldIndex(v.Type(), e.name)
		if i < 0 {
			c.add(e.line, path, "unknown key %s", quote(e.name))
			continue
		}
		if !isNull(deref(e.value)) {
			keys[e.name] = e.line
		}
		c.decode(e.value, v.Field(i), join(path, e.name), e.line)
	}
	if m, ok := v.Addr().Interface().(mapping); ok {
		m.setMeta(line, keys)
	}
}

func (c *checker) decodeList(n *yaml.Node, v reflect.Value, path string) {
	if !c.isKind(n, yaml.SequenceNode, path, "a list") {
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		if isNull(deref(item)) {
			c.add(item.Line, p, "empty list item")
			continue
		}
		c.decode(item, s.Index(i), p, item.Line)
	}
	v.Set(s)
}

func (c *checker) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if !c.isKind(n, yaml.MappingNode, path, "a mapping") {
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	for _, e := range c.entries(n, path) {
		p := join(path, e.name)
		if isNull(deref(e.value)) {
			c.add(e.line, p, "missing value")
			continue
		}
		ev := reflect.New(v.Type().Elem()).Elem()
		c.decode(e.value, ev, p, e.line)
		if ev.Kind() != reflect.Pointer || !ev.IsNil() {
			m.SetMapIndex(reflect.ValueOf(e.name), ev)
		}
	}
	v.Set(m)
}

// entries lists the entries of mapping n in order, then those its merge
// keys (<<) bring in; an explicit key wins over a merged one. Duplicate and
// non-scalar keys are reported and skipped.
func (c *checker) entries(n *yaml.Node, path string) []entry {
	seen := map[string]int{}
	var out []entry
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := deref(n.Content[i])
		switch first, dup := seen[k.Value]; {
		case isMerge(k):
			continue
		case k.Kind != yaml.ScalarNode:
			c.add(k.Line, path, "keys must be plain strings")
			continue
		case dup:
			c.add(k.Line, path, "duplicate key %s (first at line %d)", quote(k.Value), first)
			continue
		}
		seen[k.Value] = k.Line
		out = append(out, entry{k.Value, k.Line, n.Content[i+1]})
	}
	for _, e := range c.merged(n, path, map[*yaml.Node]bool{n: true}) {
		if _, dup := seen[e.name]; !dup {
			seen[e.name] = e.line
			out = append(out, e)
		}
	}
	return out
}

// merged lists the entries that the merge keys of n bring in, nearest
// first, following merges of merges. done holds the mappings already
// merged: each is merged once, which also stops cycles.
func (c *checker) merged(n *yaml.Node, path string, done map[*yaml.Node]bool) []entry {
	var out []entry
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !isMerge(deref(n.Content[i])) {
			continue
		}
		for _, m := range c.mergeSources(deref(n.Content[i+1]), path) {
			if done[m] {
				continue
			}
			done[m] = true
			out = append(out, plainEntries(m)...)
			out = append(out, c.merged(m, path, done)...)
		}
	}
	return out
}

// plainEntries lists the scalar keys of mapping m, merge keys left out.
func plainEntries(m *yaml.Node) []entry {
	var out []entry
	for j := 0; j+1 < len(m.Content); j += 2 {
		if k := deref(m.Content[j]); k.Kind == yaml.ScalarNode && !isMerge(k) {
			out = append(out, entry{k.Value, k.Line, m.Content[j+1]})
		}
	}
	return out
}

// mergeSources returns the mappings a merge key's value names: one mapping
// or a list of them.
func (c *checker) mergeSources(v *yaml.Node, path string) []*yaml.Node {
	items := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		items = v.Content
	}
	var out []*yaml.Node
	for _, it := range items {
		if it = deref(it); it.Kind != yaml.MappingNode {
			c.add(it.Line, path, "<< must merge a mapping or a list of mappings")
			continue
		}
		out = append(out, it)
	}
	return out
}

func (c *checker) isKind(n *yaml.Node, k yaml.Kind, path, what string) bool {
	if n.Kind == k {
		return true
	}
	c.add(n.Line, path, "expected %s", what)
	return false
}

// fieldIndex returns the index of the field of struct type t whose yaml tag
// is key, or -1.
func fieldIndex(t reflect.Type, key string) int {
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag != "" && tag != "-" && tag == key {
			return i
		}
	}
	return -1
}

// deref follows an alias to the node it names.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < maxAliasChain; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func isMerge(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!merge"
}

// join extends a dotted path with a key.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
