package injector

import (
	"context"
	"fmt"

	"github.com/sidekey/sidekey/config"
)

// RefSource returns the Source behind a secret reference: env:NAME and
// file:PATH now; vault:PATH#FIELD needs a Vault client.
func RefSource(r config.Ref) (Source, error) {
	switch r.Kind {
	case config.RefEnv:
		return &EnvSource{Name: r.Name}, nil
	case config.RefFile:
		return &FileSource{Path: r.Name}, nil
	case config.RefVault:
		return nil, fmt.Errorf("%s: %w", r, ErrNoVault)
	}
	return nil, fmt.Errorf("%s: %w", r, ErrUnsupportedSource)
}

// Resolve fetches the current value of a secret reference once.
func Resolve(ctx context.Context, r config.Ref) (string, error) {
	src, err := RefSource(r)
	if err != nil {
		return "", err
	}
	s, err := src.Fetch(ctx)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", r, err)
	}
	return s.Value, nil
}
