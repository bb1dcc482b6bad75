package main

import (
	"strings"
	"testing"

	"github.com/sidekey/sidekey/config"
)

func TestReloadRefusesAMemoryLockChange(t *testing.T) {
	tests := []struct {
		old, new bool
		refused  bool
	}{
		{false, false, false},
		{true, true, false},
		{false, true, true},
		{true, false, true},
	}
	for _, tt := range tests {
		err := reloadable(&config.Config{MemoryLock: tt.old}, &config.Config{MemoryLock: tt.new})
		if tt.refused != (err != nil) || (err != nil && !strings.Contains(err.Error(), "memory_lock: a change needs a restart")) {
			t.Errorf("memory_lock %v -> %v: reloadable = %v, want refused %v", tt.old, tt.new, err, tt.refused)
		}
	}
}
