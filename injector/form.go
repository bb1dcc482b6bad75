package injector

import (
	"encoding/base64"
	"fmt"
	"net/textproto"
	"strings"

	"github.com/sidekey/sidekey/config"
)

// Request is the part of an outgoing request that an injection form edits.
// The proxy implements it over its own request type, so this package never
// depends on an HTTP library. Names are canonical header names.
type Request interface {
	SetHeader(name string, value []byte)
	DelHeader(name string)
	SetQueryArg(name string, value []byte)
	DelQueryArg(name string)
}

// Form injects a credential into a request. A Form is immutable and safe
// for concurrent use.
type Form interface {
	// Strip removes from the application's request everything this form
	// sets, so the application can neither choose nor see the credential.
	Strip(r Request)
	// Apply injects s into r. scratch is a caller-owned buffer reused across
	// requests; Apply returns it, possibly grown. Apply keeps no reference
	// to r, s or scratch.
	Apply(r Request, s *Secret, scratch []byte) []byte
}

// NewForm builds the form for a route's inject section.
func NewForm(in config.Inject) (Form, error) {
	switch in.As {
	case config.AsBearer, "":
		return headerForm{name: "Authorization", prefix: "Bearer "}, nil
	case config.AsHeader:
		name := textproto.CanonicalMIMEHeaderKey(in.Header)
		prefix, suffix := "", ""
		if in.Format != "" {
			i := strings.Index(in.Format, "%s")
			if i < 0 || strings.Count(in.Format, "%") != 1 {
				return nil, fmt.Errorf("format %q must contain %%s exactly once", in.Format)
			}
			prefix, suffix = in.Format[:i], in.Format[i+2:]
		}
		return headerForm{name: name, prefix: prefix, suffix: suffix}, nil
	case config.AsBasic:
		return basicForm{username: in.Username}, nil
	case config.AsQuery:
		return queryForm{param: in.Param}, nil
	case config.AsSigV4:
		return newSigV4Form(in)
	}
	return nil, fmt.Errorf("injection form %q is not supported", in.As)
}

type headerForm struct{ name, prefix, suffix string }

func (f headerForm) Strip(r Request) { r.DelHeader(f.name) }

func (f headerForm) Apply(r Request, s *Secret, b []byte) []byte {
	b = append(b[:0], f.prefix...)
	b = append(b, s.Value...)
	b = append(b, f.suffix...)
	r.SetHeader(f.name, b)
	return b
}

// basicForm sends RFC 7617 basic credentials: the configured user name (else
// the secret's "username" field) and the secret's "password" field (else its
// Value).
type basicForm struct{ username string }

func (basicForm) Strip(r Request) { r.DelHeader("Authorization") }

func (f basicForm) Apply(r Request, s *Secret, b []byte) []byte {
	user := f.username
	if user == "" {
		user = s.Fields["username"]
	}
	pass, ok := s.Fields["password"]
	if !ok {
		pass = s.Value
	}
	// Build "user:pass" at the tail of b, then encode it in front.
	n := len(user) + 1 + len(pass)
	enc := base64.StdEncoding.EncodedLen(n)
	need := len("Basic ") + enc + n
	if cap(b) < need {
		b = make([]byte, 0, need)
	}
	b = b[:need]
	raw := b[len("Basic ")+enc:]
	copy(raw, user)
	raw[len(user)] = ':'
	copy(raw[len(user)+1:], pass)
	copy(b, "Basic ")
	base64.StdEncoding.Encode(b[len("Basic "):], raw)
	hdr := b[:len("Basic ")+enc]
	r.SetHeader("Authorization", hdr)
	clear(raw)
	return b[:0]
}

type queryForm struct{ param string }

func (f queryForm) Strip(r Request) { r.DelQueryArg(f.param) }

func (f queryForm) Apply(r Request, s *Secret, b []byte) []byte {
	b = append(b[:0], s.Value...)
	r.SetQueryArg(f.param, b)
	return b
}

// QueryParam returns the query parameter a form injects, for redacting it
// from logged paths, or "".
func QueryParam(f Form) string {
	if q, ok := f.(queryForm); ok {
		return q.param
	}
	return ""
}
