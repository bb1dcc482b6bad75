package config

import (
	"fmt"
	"strings"
)

// ParseRef parses a secret reference: env:NAME, file:PATH or
// vault:PATH#FIELD (split at the last '#'). A value that is not a reference
// gives ErrLiteralSecret; a malformed one wraps ErrBadRef. No error ever
// contains s: it may be a literal secret.
func ParseRef(s string) (Ref, error) {
	if strings.TrimSpace(s) == "" {
		return Ref{}, fmt.Errorf("%w: the value is empty", ErrBadRef)
	}
	kind, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Ref{}, ErrLiteralSecret
	}
	switch RefKind(kind) {
	case RefEnv:
		if !envNameRE.MatchString(rest) {
			return Ref{}, fmt.Errorf("%w: env: needs a variable name (letters, digits and '_')", ErrBadRef)
		}
		return Ref{Kind: RefEnv, Name: rest}, nil
	case RefFile:
		if strings.TrimSpace(rest) == "" || strings.ContainsAny(rest, "\r\n") {
			return Ref{}, fmt.Errorf("%w: file: needs a path", ErrBadRef)
		}
		return Ref{Kind: RefFile, Name: rest}, nil
	case RefVault:
		i := strings.LastIndexByte(rest, '#')
		if i <= 0 || i == len(rest)-1 || strings.ContainsAny(rest, "\r\n") {
			return Ref{}, fmt.Errorf("%w: vault: needs PATH#FIELD", ErrBadRef)
		}
		return Ref{Kind: RefVault, Name: rest[:i], Field: rest[i+1:]}, nil
	}
	return Ref{}, ErrLiteralSecret
}
