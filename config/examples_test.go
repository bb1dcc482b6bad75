package config

import (
	"path/filepath"
	"testing"
)

// Every example config in the repository parses and validates, so the docs
// never show a file that sidekey would refuse.
func TestExamplesValidate(t *testing.T) {
	files, err := filepath.Glob("../examples/*/sidekey.yaml")
	if err != nil || len(files) < 5 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%s:\n%v", f, err)
		}
	}
}
