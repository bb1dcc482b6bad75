package injector

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func sh(script string) ExecSource {
	return ExecSource{Command: []string{"sh", "-c", script}}
}

func TestExecSourceOutput(t *testing.T) {
	tests := []struct {
		name   string
		script string
		want   Secret
	}{
		{"plain", `echo "  tok-123  "`, Secret{Value: "tok-123"}},
		{"plain multi-line", `printf 'line1\nline2\n'`, Secret{Value: "line1\nline2"}},
		{"json expires_at RFC 3339",
			`echo '{"token": " tok-json ", "expires_at": "2030-01-02T03:04:05Z", "username": "bob", "count": 3, "ok": true, "gone": null}'`,
			Secret{Value: "tok-json", ExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), Fields: map[string]string{"username": "bob"}}},
		{"json expires_at Unix seconds",
			`echo '{"token": "tok-json", "expires_at": 1893553445}'`,
			Secret{Value: "tok-json", ExpiresAt: time.Unix(1893553445, 0)}},
		{"json expires_at fractional seconds",
			`echo '{"token": "tok-json", "expires_at": 1893553445.5}'`,
			Secret{Value: "tok-json", ExpiresAt: time.Unix(1893553445, 5e8)}},
		{"json without expiry", `echo '{"token": "tok-json"}'`, Secret{Value: "tok-json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := sh(tt.script).Fetch(context.Background())
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if s.Value != tt.want.Value || !s.ExpiresAt.Equal(tt.want.ExpiresAt) || !reflect.DeepEqual(s.Fields, tt.want.Fields) {
				t.Errorf("Fetch = %q, %v, %v; want %q, %v, %v",
					s.Value, s.ExpiresAt, s.Fields, tt.want.Value, tt.want.ExpiresAt, tt.want.Fields)
			}
		})
	}
}

func TestExecSourceExpiresIn(t *testing.T) {
	before := time.Now()
	s, err := sh(`echo '{"token": "t", "expires_in": 60}'`).Fetch(context.Background())
	after := time.Now()
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if s.ExpiresAt.Before(before.Add(time.Minute)) || s.ExpiresAt.After(after.Add(time.Minute)) {
		t.Errorf("ExpiresAt = %v, want a minute after %v", s.ExpiresAt, before)
	}
}

func TestParseJSONSecretEarlierExpiryWins(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
	}{
		{`{"token": "t", "expires_at": "2030-01-01T00:10:00Z", "expires_in": 60}`, now.Add(time.Minute)},
		{`{"token": "t", "expires_at": "2030-01-01T00:00:30Z", "expires_in": 60}`, now.Add(30 * time.Second)},
	}
	for _, tt := range tests {
		s, err := parseJSONSecret([]byte(tt.in), now)
		if err != nil {
			t.Fatalf("parseJSONSecret(%s): %v", tt.in, err)
		}
		if !s.ExpiresAt.Equal(tt.want) {
			t.Errorf("parseJSONSecret(%s).ExpiresAt = %v, want %v", tt.in, s.ExpiresAt, tt.want)
		}
	}
}

func TestExecSourceBadOutput(t *testing.T) {
	tests := []struct {
		name, script, wantErr string
	}{
		{"empty", `true`, "empty output"},
		{"blank", `echo "   "`, "empty output"},
		{"not json", `echo '{s3cret'`, "not a JSON object"},
		{"token not a string", `echo '{"token": 5}'`, `"token" is not a string`},
		{"no token", `echo '{"username": "s3cret"}'`, `no "token"`},
		{"empty token", `echo '{"token": " "}'`, `no "token"`},
		{"bad expires_at", `echo '{"token": "s3cret", "expires_at": "s3cret-time"}'`, `"expires_at" is not an RFC 3339 time`},
		{"negative expires_at", `echo '{"token": "s3cret", "expires_at": -5}'`, `"expires_at" is neither`},
		{"bad expires_in", `echo '{"token": "s3cret", "expires_in": "s3cret"}'`, `"expires_in" is not a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sh(tt.script).Fetch(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Fetch error = %v, want one containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows output: %v", err)
			}
		})
	}
}

func TestExecSourceNonZeroExit(t *testing.T) {
	_, err := sh(`echo s3cret-stdout; echo "token expired, run login" >&2; echo second-line >&2; exit 3`).Fetch(context.Background())
	if err == nil {
		t.Fatal("Fetch succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"running sh", "exit status 3", "token expired, run login"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	for _, leak := range []string{"s3cret-stdout", "second-line"} {
		if strings.Contains(msg, leak) {
			t.Errorf("error %q contains %q", msg, leak)
		}
	}
}

func TestExecSourceStderrCut(t *testing.T) {
	_, err := sh(`head -c 5000 /dev/zero | tr '\0' x >&2; exit 1`).Fetch(context.Background())
	if err == nil {
		t.Fatal("Fetch succeeded")
	}
	cut := strings.Repeat("x", maxStderrLine)
	if !strings.Contains(err.Error(), cut) || strings.Contains(err.Error(), cut+"x") {
		t.Errorf("error does not quote exactly %d bytes of stderr: %v", maxStderrLine, err)
	}
}

func TestExecSourceNoArgumentsInErrors(t *testing.T) {
	_, err := ExecSource{Command: []string{"sh", "-c", "exit 1", "--password=s3cret"}}.Fetch(context.Background())
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Fetch error = %v, want one without the arguments", err)
	}
}

func TestExecSourceMissingCommand(t *testing.T) {
	_, err := ExecSource{Command: []string{filepath.Join(t.TempDir(), "no-such-helper")}}.Fetch(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no-such-helper") {
		t.Errorf("Fetch error = %v, want one naming the command", err)
	}
}

func TestExecSourceStdinEmptyAndEnv(t *testing.T) {
	s, err := ExecSource{
		Command: []string{"sh", "-c", `read line; echo "[$line]$SIDEKEY_TEST_VAR"`},
		Env:     []string{"SIDEKEY_TEST_VAR=from-env"},
	}.Fetch(context.Background())
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if s.Value != "[]from-env" {
		t.Errorf("Value = %q, want %q", s.Value, "[]from-env")
	}
}

// TestExecSourceTimeoutKillsGroup runs a command whose grandchild keeps
// stdout open; only killing the whole process group ends the run before
// the grandchild's 30 seconds.
func TestExecSourceTimeoutKillsGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	src := ExecSource{
		Command: []string{"sh", "-c", `sleep 30 & echo $! > "$1"; wait`, "sh", pidFile},
		Timeout: 200 * time.Millisecond,
	}
	start := time.Now()
	_, err := src.Fetch(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Fetch error = %v, want a timeout", err)
	}
	if elapsed := time.Since(start); elapsed > 20*time.Second {
		t.Fatalf("Fetch took %s: the grandchild was waited for", elapsed)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the command did not start its grandchild: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := awaitExit(pid, watchDeadline); err != nil {
		t.Errorf("grandchild %d: %v", pid, err)
	}
}

// awaitExit waits for any process (not only a child) to exit; it may be
// in the middle of dying when Fetch returns.
func awaitExit(pid int, d time.Duration) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil // gone and reaped
	}
	if err != nil {
		return fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(d.Milliseconds()))
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("poll: %w", err)
		case n == 0:
			return fmt.Errorf("still running after %s", d)
		}
		return nil
	}
}

func TestExecSourceCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := sh(`echo tok`).Fetch(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Fetch error = %v, want context.Canceled", err)
	}
}

func TestExecSourceHugeOutput(t *testing.T) {
	_, err := ExecSource{Command: []string{"yes", "s3cret"}}.Fetch(context.Background())
	if err == nil || !strings.Contains(err.Error(), "stdout larger than") {
		t.Fatalf("Fetch error = %v, want stdout too large", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error shows output: %v", err)
	}
}

func FuzzParseCommandOutput(f *testing.F) {
	f.Add([]byte("tok"))
	f.Add([]byte(`{"token": "t", "expires_at": "2030-01-02T03:04:05Z", "user": "u"}`))
	f.Add([]byte(`{"token": "t", "expires_at": 1893553445.25, "expires_in": 1e300}`))
	f.Add([]byte(`{"token": null, "expires_in": -1}`))
	f.Fuzz(func(t *testing.T, out []byte) {
		s, err := parseCommandOutput("helper", out, time.Unix(0, 0))
		if err != nil {
			return
		}
		if s.Value == "" || s.Value != strings.TrimSpace(s.Value) {
			t.Errorf("Value %q is empty or untrimmed", s.Value)
		}
	})
}
