package injector

import (
	"context"
	"strings"
	"testing"
)

func TestEnvSource(t *testing.T) {
	env := map[string]string{
		"PLAIN":  "tok-123",
		"SPACED": " \ttok-456\n",
		"BLANK":  " \n",
		"EMPTY":  "",
	}
	lookup := func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
	tests := []struct {
		name    string
		want    string
		wantErr string
	}{
		{"PLAIN", "tok-123", ""},
		{"SPACED", "tok-456", ""},
		{"BLANK", "", "environment variable BLANK is empty"},
		{"EMPTY", "", "environment variable EMPTY is empty"},
		{"MISSING", "", "environment variable MISSING is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := EnvSource{Name: tt.name, Lookup: lookup}.Fetch(context.Background())
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Fetch error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if s.Value != tt.want || !s.ExpiresAt.IsZero() {
				t.Errorf("Fetch = %q expiring %v, want %q never expiring", s.Value, s.ExpiresAt, tt.want)
			}
		})
	}
}

func TestEnvSourceProcessEnvironment(t *testing.T) {
	t.Setenv("SIDEKEY_TEST_ENV_TOKEN", "  from-process-env  ")
	s, err := EnvSource{Name: "SIDEKEY_TEST_ENV_TOKEN"}.Fetch(context.Background())
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if s.Value != "from-process-env" {
		t.Errorf("Value = %q", s.Value)
	}

	t.Setenv("SIDEKEY_TEST_ENV_TOKEN", "   ")
	_, err = EnvSource{Name: "SIDEKEY_TEST_ENV_TOKEN"}.Fetch(context.Background())
	if err == nil || !strings.Contains(err.Error(), "SIDEKEY_TEST_ENV_TOKEN") {
		t.Errorf("Fetch of a blank variable: error = %v", err)
	}
}
