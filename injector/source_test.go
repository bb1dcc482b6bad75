package injector

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sidekey/sidekey/config"
)

func TestNewSource(t *testing.T) {
	tests := []struct {
		name string
		cred config.Credential
		want Source
	}{
		{"env", config.Credential{Name: "c", Source: config.SourceEnv, EnvName: "TOKEN"}, EnvSource{Name: "TOKEN"}},
		{"file", config.Credential{Name: "c", Source: config.SourceFile, Path: "/run/token"}, FileSource{Path: "/run/token"}},
		{"exec", config.Credential{Name: "c", Source: config.SourceExec, Command: []string{"gh", "auth", "token"}, Timeout: 3 * time.Second},
			ExecSource{Command: []string{"gh", "auth", "token"}, Timeout: 3 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NewSource(tt.cred)
			if err != nil {
				t.Fatalf("NewSource: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("NewSource = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestNewSourceFileIsWatcher(t *testing.T) {
	src, err := NewSource(config.Credential{Name: "c", Source: config.SourceFile, Path: "/run/token"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := src.(Watcher); !ok {
		t.Errorf("%T is not a Watcher", src)
	}
}

func TestNewSourceErrors(t *testing.T) {
	tests := []struct {
		name        string
		cred        config.Credential
		unsupported bool
		want        string
	}{
		{"vault-kv", config.Credential{Name: "gh", Source: config.SourceVaultKV}, true, `source "vault-kv" is not available in this build`},
		{"oauth2 without token_url", config.Credential{Name: "gh", Source: config.SourceOAuth2}, false, "oauth2 source needs a token_url"},
		{"unknown", config.Credential{Name: "gh", Source: "carrier-pigeon"}, true, `source "carrier-pigeon"`},
		{"env without name", config.Credential{Name: "gh", Source: config.SourceEnv}, false, "variable name"},
		{"file without path", config.Credential{Name: "gh", Source: config.SourceFile}, false, "path"},
		{"exec without command", config.Credential{Name: "gh", Source: config.SourceExec}, false, "command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSource(tt.cred)
			if err == nil {
				t.Fatal("NewSource succeeded")
			}
			if got := errors.Is(err, ErrUnsupportedSource); got != tt.unsupported {
				t.Errorf("errors.Is(%v, ErrUnsupportedSource) = %v", err, got)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `"gh"`) {
				t.Errorf("error %q does not contain %q and the credential name", err, tt.want)
			}
		})
	}
}
