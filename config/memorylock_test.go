package config

import (
	"strings"
	"testing"
)

func TestParseMemoryLock(t *testing.T) {
	tests := []struct {
		name    string
		line    string // a top-level line, or none
		want    bool
		problem string // the whole error, or "" for none
	}{
		{"absent", "", false, ""},
		{"on", "memory_lock: true", true, ""},
		{"off", "memory_lock: false", false, ""},
		{"null", "memory_lock:", false, ""},
		{"not a bool", "memory_lock: yes", false, "m.yaml:1: memory_lock: expected true or false"},
		{"a string", `memory_lock: "true"`, false, "m.yaml:1: memory_lock: expected true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.line + "\nlisten: 127.0.0.1:18080\n"
			cfg, err := Parse("m.yaml", []byte(src))
			if tt.problem != "" {
				if err == nil || strings.TrimSpace(err.Error()) != tt.problem {
					t.Errorf("Parse error = %v, want %q", err, tt.problem)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if cfg.MemoryLock != tt.want {
				t.Errorf("MemoryLock = %v, want %v", cfg.MemoryLock, tt.want)
			}
		})
	}
}
