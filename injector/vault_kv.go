package injector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// VaultKVSource reads one field of a KV version 2 secret. The value has no
// expiry: the holder re-reads it every RefreshEvery (the credential's
// refresh), and a new KV version is a new credential version while a
// re-read of the same version is not a rotation.
//
// Configure it through the exported fields before the first Fetch and do
// not change them afterwards. Fetch is safe for concurrent use.
type VaultKVSource struct {
	Client *VaultClient
	// Path is the secret's path, e.g. secret/data/github. A path without
	// a /data/ segment gets one after its first segment, the mount:
	// secret/github reads secret/data/github.
	Path string
	// Field names the field that is the Secret's Value.
	Field string
}

// Fetch reads the latest version of the secret. The Secret's Value is
// Field, its Fields every string field of the secret (Field included),
// its Version the KV version and its IssuedAt the version's creation time.
// A missing secret, a deleted or destroyed version and a missing or
// non-string field are errors, which name the path and field only.
func (s *VaultKVSource) Fetch(ctx context.Context) (*Secret, error) {
	if s.Client == nil {
		return nil, fmt.Errorf("vault-kv %s: %w", s.Path, ErrNoVault)
	}
	path := kvDataPath(s.Path)
	sec, err := s.Client.Read(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	out, err := kvSecret(sec, s.Field)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return out, nil
}

// kvDataPath returns the KV v2 data path of p: p itself (without
// surrounding slashes) when it has a /data/ segment, else p with data/
// inserted after its first segment. Mounts of more than one segment must
// be written with their data/ segment.
func kvDataPath(p string) string {
	p = strings.Trim(p, "/")
	if strings.Contains(p, "/data/") {
		return p
	}
	mount, rest, ok := strings.Cut(p, "/")
	if !ok {
		return p
	}
	return mount + "/data/" + rest
}

// kvSecret turns a KV v2 read into a Secret whose Value is field.
func kvSecret(sec *api.Secret, field string) (*Secret, error) {
	if sec == nil || sec.Data == nil {
		return nil, errors.New("no secret")
	}
	meta, _ := sec.Data["metadata"].(map[string]any)
	raw, hasData := sec.Data["data"]
	if meta == nil && !hasData {
		return nil, errors.New("not a KV version 2 secret (no data and metadata)")
	}
	data, _ := raw.(map[string]any)
	if data == nil {
		return nil, fmt.Errorf("KV version %d is deleted or destroyed", kvVersion(meta))
	}
	fields := stringFields(data)
	v, ok := data[field]
	if !ok {
		return nil, fmt.Errorf("no field %q", field)
	}
	value, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("field %q is not a string", field)
	}
	out := &Secret{Value: value, Fields: fields, Version: kvVersion(meta)}
	if t, err := time.Parse(time.RFC3339Nano, fmt.Sprint(meta["created_time"])); err == nil {
		out.IssuedAt = t
	}
	return out, nil
}

// kvVersion reads the version from KV metadata; zero when absent.
func kvVersion(meta map[string]any) uint64 {
	switch v := meta["version"].(type) {
	case json.Number:
		n, err := v.Int64()
		if err == nil && n > 0 {
			return uint64(n)
		}
	case float64:
		if v > 0 {
			return uint64(v)
		}
	}
	return 0
}

// stringFields copies the string values of data; others are skipped. Nil
// when there are none.
func stringFields(data map[string]any) map[string]string {
	var out map[string]string
	for k, v := range data {
		if s, ok := v.(string); ok {
			if out == nil {
				out = make(map[string]string, len(data))
			}
			out[k] = s
		}
	}
	return out
}
