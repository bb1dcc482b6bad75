package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

var yamlErrRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Load reads and parses the configuration file at path; "-" reads standard
// input, and its problems then name the file StdinName. The returned
// Config's File is path as given.
//
// A file that cannot be read gives a plain error; a file that can be read
// gives every problem Parse finds (see Problems).
func Load(path string) (*Config, error) {
	name, data, err := read(path)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(name, data)
	if err != nil {
		return nil, err
	}
	cfg.File = path
	return cfg, nil
}

func read(path string) (name string, data []byte, err error) {
	if path == "-" {
		data, err = io.ReadAll(os.Stdin)
		if err != nil {
			return "", nil, fmt.Errorf("read config from stdin: %w", err)
		}
		return StdinName, data, nil
	}
	data, err = os.ReadFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("read config: %w", err)
	}
	return path, data, nil
}

// Parse parses and validates a configuration file; name is used in
// problems and as the Config's File. On failure it returns a nil Config and
// an error joining (errors.Join) every Problem found, in line order, each
// printing as "NAME:LINE: message". An empty file is a valid configuration
// of defaults.
func Parse(name string, data []byte) (*Config, error) {
	c := newChecker(name)
	c.probs = append(c.probs, Lint(name, data)...)
	var f fileConfig
	if root := c.parseYAML(data); root != nil {
		c.decode(root, reflect.ValueOf(&f).Elem(), "", root.Line)
	}
	cfg := c.build(&f)
	if err := c.err(); err != nil {
		return nil, err
	}
	cfg.File = name
	return cfg, nil
}

// parseYAML returns the root node of the single YAML document in data, or
// nil for an empty file or a syntax error (reported).
func (c *checker) parseYAML(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc, more yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			c.yamlError(err)
		}
		return nil
	}
	switch err := dec.Decode(&more); {
	case err == nil:
		c.add(max(more.Line, 1), "", "only one YAML document is allowed")
	case !errors.Is(err, io.EOF):
		c.yamlError(err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	return doc.Content[0]
}

// yamlError reports a YAML syntax error at its line (line 1 when the
// parser gives none).
func (c *checker) yamlError(err error) {
	msg, line := err.Error(), 1
	if m := yamlErrRE.FindStringSubmatch(msg); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil && n > 0 {
			line, msg = n, m[2]
		}
	}
	c.add(line, "", "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
}
