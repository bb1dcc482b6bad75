package injector

import (
	"errors"
	"fmt"

	"github.com/sidekey/sidekey/config"
)

// ErrUnsupportedSource reports a credential source that this build cannot
// fetch from. Classify with errors.Is.
var ErrUnsupportedSource = errors.New("not available in this build")

// maxSecretSize bounds what a source reads for one value: a file's size, a
// command's stdout. Credentials are small; anything larger is a mistake.
const maxSecretSize = 1 << 20

// NewSource builds the Source for one configured credential. It does not
// fetch: a credential that cannot be fetched yet is the holder's concern,
// not a construction failure. The error names the credential, never a value.
func NewSource(c config.Credential) (Source, error) {
	switch c.Source {
	case config.SourceEnv:
		if c.EnvName == "" {
			return nil, fmt.Errorf("credential %q: env source needs a variable name", c.Name)
		}
		return EnvSource{Name: c.EnvName}, nil
	case config.SourceFile:
		if c.Path == "" {
			return nil, fmt.Errorf("credential %q: file source needs a path", c.Name)
		}
		return FileSource{Path: c.Path}, nil
	case config.SourceExec:
		if len(c.Command) == 0 || c.Command[0] == "" {
			return nil, fmt.Errorf("credential %q: exec source needs a command", c.Name)
		}
		return ExecSource{Command: c.Command, Timeout: c.Timeout}, nil
	case config.SourceOAuth2:
		return newOAuth2Source(c)
	case config.SourceVaultKV, config.SourceVaultLease:
		return nil, fmt.Errorf("credential %q: source %q is %w", c.Name, c.Source, ErrNoVault)
	default:
		return nil, fmt.Errorf("credential %q: source %q is %w", c.Name, c.Source, ErrUnsupportedSource)
	}
}
