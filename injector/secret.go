package injector

import (
	"context"
	"time"
)

// Secret is one fetched credential value. A Secret is immutable once a
// source returns it: the holder shares it between goroutines without locks.
type Secret struct {
	// Value is the primary secret (a token, an API key, a password).
	Value string
	// Fields holds further named parts of the secret, e.g. "username",
	// "access_key", "secret_key", "session_token". May be nil.
	Fields map[string]string
	// Version is a source-defined version (e.g. a KV metadata version).
	// Zero lets the holder number versions itself.
	Version uint64
	// IssuedAt is when the value was issued; zero means "when fetched".
	IssuedAt time.Time
	// ExpiresAt is when the value stops being valid; zero means never.
	ExpiresAt time.Time
	// Handle is source-private state carried with the value (a lease ID,
	// a token to revoke). The holder passes it back to Revoker.Revoke.
	Handle any
}

// Field returns the named field, or Value for the empty name or "token"
// when no such field exists.
func (s *Secret) Field(name string) string {
	if v, ok := s.Fields[name]; ok {
		return v
	}
	if name == "" || name == "token" {
		return s.Value
	}
	return ""
}

// Values lists every non-empty secret string in s, for redaction.
func (s *Secret) Values() []string {
	out := make([]string, 0, 1+len(s.Fields))
	if s.Value != "" {
		out = append(out, s.Value)
	}
	for _, v := range s.Fields {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// Source fetches the current value of a credential. Fetch must be safe to
// call from one goroutine at a time; it honours ctx for cancellation.
type Source interface {
	Fetch(ctx context.Context) (*Secret, error)
}

// Watcher is an optional Source capability: Watch blocks until ctx ends,
// calling changed whenever the underlying value may have changed (a file
// rewritten or replaced). The holder then fetches again.
type Watcher interface {
	Watch(ctx context.Context, changed func()) error
}

// Revoker is an optional Source capability: Revoke invalidates a superseded
// value at its issuer once no request holds it any more.
type Revoker interface {
	Revoke(ctx context.Context, s *Secret) error
}

// Renewer is an optional Source capability: Renew extends the life of s
// without changing its value, returning the renewed Secret.
type Renewer interface {
	Renew(ctx context.Context, s *Secret) (*Secret, error)
}
