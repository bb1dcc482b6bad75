package injector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

const (
	// defaultExecTimeout bounds a command whose ExecSource has no Timeout.
	defaultExecTimeout = 10 * time.Second
	// execWaitDelay is how long Fetch waits, once the command has exited or
	// been killed, for descendants outside its process group that still
	// hold its output open.
	execWaitDelay = time.Second
	// maxStderr bounds the stderr kept for an error message.
	maxStderr = 4 << 10
	// maxStderrLine bounds the part of stderr that an error message quotes.
	maxStderrLine = 200
)

// errOutputTooLarge stops the copy of an over-long stdout; the command then
// meets a closed pipe.
var errOutputTooLarge = errors.New("output too large")

// ExecSource runs a command and takes the credential from its stdout,
// trimmed of surrounding whitespace. The command runs without a shell, with
// an empty stdin, in a process group of its own that is killed when Timeout
// passes or ctx ends. Fetch is safe for concurrent use; each call runs the
// command once.
//
// Stdout is either the bare value, or, when it starts with "{", a JSON
// object: "token" (the value, required); "expires_at", RFC 3339 or Unix
// seconds; "expires_in", seconds from now (the earlier of the two wins); any
// other string field goes to Secret.Fields. Stdout over 1 MiB is an error.
//
// Errors never show stdout. A failing command's error quotes the first line
// of its stderr, cut to 200 bytes, since that is usually the only clue to
// what went wrong: a helper that prints its secret to stderr would leak
// that much into the logs.
type ExecSource struct {
	// Command is the program and its arguments.
	Command []string
	// Timeout bounds one run; zero means 10s.
	Timeout time.Duration
	// Env, when non-nil, is the command's entire environment; nil
	// inherits the proxy's (as with exec.Cmd.Env).
	Env []string
}

// Fetch runs the command and parses its output.
func (s ExecSource) Fetch(ctx context.Context) (*Secret, error) {
	if len(s.Command) == 0 || s.Command[0] == "" {
		return nil, errors.New("running credential command: no command")
	}
	name := s.Command[0] // arguments stay out of messages
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = defaultExecTimeout
	}
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	stdout := &boundedBuffer{max: maxSecretSize, strict: true}
	stderr := &boundedBuffer{max: maxStderr}
	cmd := exec.CommandContext(runCtx, name, s.Command[1:]...)
	cmd.Env = s.Env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	cmd.WaitDelay = execWaitDelay

	err := cmd.Run()
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("running %s: %w", name, ctx.Err())
	case stdout.overflow:
		return nil, fmt.Errorf("running %s: stdout larger than %d bytes", name, maxSecretSize)
	case errors.Is(runCtx.Err(), context.DeadlineExceeded) && err != nil:
		return nil, fmt.Errorf("running %s: no result within %s: %w", name, timeout, context.DeadlineExceeded)
	case err != nil:
		return nil, commandError(name, err, stderr.buf.Bytes())
	}
	out := stdout.buf.Bytes()
	defer clear(out) // the captured output: the Secret's strings are the only copies left
	return parseCommandOutput(name, out, time.Now())
}

// killGroup kills the process group led by pid: the command and whatever it
// started, so that no grandchild keeps the output pipe open.
func killGroup(pid int) error {
	err := syscall.Kill(-pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// commandError describes a failed run: the exit status, and the first line
// of stderr, cut short.
func commandError(name string, err error, stderr []byte) error {
	line, _, _ := bytes.Cut(bytes.TrimSpace(stderr), []byte("\n"))
	if len(line) > maxStderrLine {
		line = line[:maxStderrLine]
		for len(line) > 0 && !utf8.Valid(line) {
			line = line[:len(line)-1]
		}
	}
	if len(line) == 0 {
		return fmt.Errorf("running %s: %w", name, err)
	}
	return fmt.Errorf("running %s: %w (stderr: %q)", name, err, line)
}

// parseCommandOutput turns a command's stdout into a Secret; now anchors
// "expires_in".
func parseCommandOutput(name string, out []byte, now time.Time) (*Secret, error) {
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return nil, fmt.Errorf("running %s: empty output", name)
	}
	if out[0] != '{' {
		return &Secret{Value: string(out)}, nil
	}
	s, err := parseJSONSecret(out, now)
	if err != nil {
		return nil, fmt.Errorf("running %s: %w", name, err)
	}
	return s, nil
}

// parseJSONSecret parses {"token", "expires_at", "expires_in", ...}. Its
// errors name fields, never show values.
func parseJSONSecret(b []byte, now time.Time) (*Secret, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, errors.New("output starts with '{' but is not a JSON object")
	}
	s := &Secret{}
	var expiresIn time.Time
	for k, v := range raw {
		if string(v) == "null" {
			continue
		}
		var err error
		switch k {
		case "token":
			if json.Unmarshal(v, &s.Value) != nil {
				err = errors.New(`"token" is not a string`)
			}
		case "expires_at":
			s.ExpiresAt, err = parseExpiresAt(v)
		case "expires_in":
			var sec float64
			if json.Unmarshal(v, &sec) != nil || math.Abs(sec) > 1e11 {
				err = errors.New(`"expires_in" is not a number of seconds`)
			}
			expiresIn = now.Add(time.Duration(sec * float64(time.Second)))
		default:
			var str string
			if json.Unmarshal(v, &str) == nil {
				if s.Fields == nil {
					s.Fields = make(map[string]string)
				}
				s.Fields[k] = str
			}
		}
		if err != nil {
			return nil, err
		}
	}
	s.Value = strings.TrimSpace(s.Value)
	if s.Value == "" {
		return nil, errors.New(`JSON output has no "token"`)
	}
	if !expiresIn.IsZero() && (s.ExpiresAt.IsZero() || expiresIn.Before(s.ExpiresAt)) {
		s.ExpiresAt = expiresIn
	}
	return s, nil
}

// parseExpiresAt reads an RFC 3339 string or a number of Unix seconds.
func parseExpiresAt(v json.RawMessage) (time.Time, error) {
	var str string
	if json.Unmarshal(v, &str) == nil {
		t, err := time.Parse(time.RFC3339, str)
		if err != nil {
			return time.Time{}, errors.New(`"expires_at" is not an RFC 3339 time`)
		}
		return t, nil
	}
	var sec float64
	if json.Unmarshal(v, &sec) != nil || sec < 0 || sec > 1e11 {
		return time.Time{}, errors.New(`"expires_at" is neither an RFC 3339 time nor Unix seconds`)
	}
	whole, frac := math.Modf(sec)
	return time.Unix(int64(whole), int64(frac*1e9)), nil
}

// boundedBuffer keeps the first max bytes written to it. When strict, a
// write past max fails, which ends the copy from the command's pipe;
// otherwise the excess is dropped silently. os/exec writes to it from one
// goroutine and Wait returns only after that goroutine ends.
type boundedBuffer struct {
	buf      bytes.Buffer
	max      int
	strict   bool
	overflow bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	room := b.max - b.buf.Len()
	if len(p) <= room {
		return b.buf.Write(p)
	}
	b.overflow = true
	b.buf.Write(p[:room])
	if b.strict {
		return room, errOutputTooLarge
	}
	return len(p), nil
}
