package injector

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

func TestKVDataPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"secret/data/github", "secret/data/github"},
		{"/secret/data/github/", "secret/data/github"},
		{"secret/github", "secret/data/github"},
		{"kv/team/app", "kv/data/team/app"},
		{"team/kv/data/app", "team/kv/data/app"},
		{"secret", "secret"},
	}
	for _, tt := range tests {
		if got := kvDataPath(tt.in); got != tt.want {
			t.Errorf("kvDataPath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func kvRead(data map[string]any, version any) *api.Secret {
	return &api.Secret{Data: map[string]any{
		"data":     data,
		"metadata": map[string]any{"version": version, "created_time": "2030-01-02T03:04:05.123456Z"},
	}}
}

func TestKVSecret(t *testing.T) {
	sec, err := kvSecret(kvRead(map[string]any{"token": "t0k", "user": "svc", "port": json.Number("5432")}, json.Number("7")), "token")
	if err != nil {
		t.Fatal(err)
	}
	want := &Secret{
		Value:    "t0k",
		Fields:   map[string]string{"token": "t0k", "user": "svc"},
		Version:  7,
		IssuedAt: time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC),
	}
	if !reflect.DeepEqual(sec, want) {
		t.Errorf("kvSecret = %+v, want %+v", sec, want)
	}
	if !sec.ExpiresAt.IsZero() {
		t.Error("a KV value must not expire")
	}
}

func TestKVSecretErrors(t *testing.T) {
	tests := []struct {
		name  string
		sec   *api.Secret
		field string
		want  string
	}{
		{"nothing", nil, "token", "no secret"},
		{"kv v1", &api.Secret{Data: map[string]any{"token": "hunter2"}}, "token", "not a KV version 2 secret"},
		{"deleted", kvRead(nil, json.Number("3")), "token", "KV version 3 is deleted"},
		{"missing field", kvRead(map[string]any{"token": "hunter2"}, json.Number("1")), "password", `no field "password"`},
		{"not a string", kvRead(map[string]any{"token": json.Number("42")}, json.Number("1")), "token", "is not a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := kvSecret(tt.sec, tt.field)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error holds the value: %v", err)
			}
		})
	}
}
