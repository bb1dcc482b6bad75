package config

import (
	"errors"
	"fmt"
)

// StdinName is the file name problems carry when Load reads standard input.
const StdinName = "<stdin>"

// Sentinel errors returned by ParseRef. Their text never contains the value
// that was parsed: it may be a literal secret.
var (
	// ErrLiteralSecret: the value is not a reference at all.
	ErrLiteralSecret = errors.New("a literal secret is not allowed; use env:NAME, file:PATH or vault:PATH#FIELD")
	// ErrBadRef: the value starts like a reference but is malformed.
	ErrBadRef = errors.New("malformed secret reference")
)

// Problem is one thing wrong with a configuration file. Parse and Load
// return every problem they find joined with errors.Join, in line order, so
// err.Error() prints one "FILE:LINE: message" per line.
type Problem struct {
	File string
	Line int
	Msg  string
}

// Error renders the problem as FILE:LINE: message.
func (p Problem) Error() string { return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg) }

// Problems returns the problems held by an error from Parse or Load, in
// order. It returns nil for an error that holds none, such as a file that
// could not be read.
func Problems(err error) []Problem {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var out []Problem
		for _, e := range joined.Unwrap() {
			out = append(out, Problems(e)...)
		}
		return out
	}
	var p Problem
	if errors.As(err, &p) {
		return []Problem{p}
	}
	return nil
}
