package injector

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// EnvSource reads a credential from an environment variable, trimmed of
// surrounding whitespace. The value never expires. Fetch is safe for
// concurrent use when Lookup is; a variable that is unset or blank is an
// error naming the variable, never showing a value.
type EnvSource struct {
	// Name is the environment variable.
	Name string
	// Lookup reads a variable; nil means os.LookupEnv. Tests set it.
	Lookup func(name string) (string, bool)
}

// Fetch returns the variable's current value.
func (s EnvSource) Fetch(ctx context.Context) (*Secret, error) {
	lookup := s.Lookup
	if lookup == nil {
		lookup = os.LookupEnv
	}
	v, ok := lookup(s.Name)
	if !ok {
		return nil, fmt.Errorf("environment variable %s is not set", s.Name)
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, fmt.Errorf("environment variable %s is empty", s.Name)
	}
	return &Secret{Value: v}, nil
}
