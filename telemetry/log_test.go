package telemetry

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// A library's standard-library logger writes through StdLogger as a debug
// line of ours: JSON, and with a held value scrubbed.
func TestStdLoggerWritesScrubbedJSONDebugLines(t *testing.T) {
	var out bytes.Buffer
	r := NewRedactor()
	const secret = "s3cr3t-value-0123456789"
	r.Add(secret)
	log, err := NewLogger(&out, "debug", "json", r)
	if err != nil {
		t.Fatal(err)
	}
	StdLogger(log).Printf("http2: server connection error from 127.0.0.1: saw %s\n", secret)
	line := strings.TrimSpace(out.String())
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("not a JSON line: %q: %v", line, err)
	}
	if m["level"] != "debug" || !strings.HasPrefix(m["msg"].(string), "http2: server connection error") {
		t.Errorf("line %q", line)
	}
	if strings.Contains(line, secret) {
		t.Errorf("held value logged: %q", line)
	}

	// Above debug, nothing is written.
	out.Reset()
	log.SetLevel(logrus.InfoLevel)
	StdLogger(log).Print("quiet")
	if out.Len() != 0 {
		t.Errorf("wrote %q at info level", out.String())
	}
}
