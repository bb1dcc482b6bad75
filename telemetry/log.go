package telemetry

import (
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/sirupsen/logrus"
)

// Field names shared by every log line about a request or a credential.
const (
	FieldCredential = "credential"
	FieldRoute      = "route"
	FieldError      = "error"
)

// NewLogger builds the process logger: level debug|info|warn|error, format
// json|text, written to w through r's scrubbing writer and hook.
func NewLogger(w io.Writer, level, format string, r *Redactor) (*logrus.Logger, error) {
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	log := logrus.New()
	log.SetLevel(lvl)
	switch format {
	case "json", "":
		log.SetFormatter(&jsonFormatter{std: logrus.JSONFormatter{TimestampFormat: "2006-01-02T15:04:05.000Z07:00"}})
	case "text":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	default:
		return nil, fmt.Errorf("log format %q: want json or text", format)
	}
	log.SetOutput(r.Writer(w))
	log.AddHook(r)
	return log, nil
}

// Printf adapts a logger to fasthttp's Logger interface at debug level, so
// that library messages are scrubbed like every other line.
type Printf struct{ Log logrus.FieldLogger }

// Printf implements fasthttp.Logger.
func (p Printf) Printf(format string, args ...any) { p.Log.Debugf(format, args...) }

// DebugWriter writes each line a library logs (through a standard
// library *log.Logger) as a debug line of ours: JSON like the others, and
// scrubbed.
type DebugWriter struct{ Log logrus.FieldLogger }

func (w DebugWriter) Write(b []byte) (int, error) {
	w.Log.Debug(strings.TrimSpace(string(b)))
	return len(b), nil
}

// StdLogger is a standard library logger that writes through DebugWriter,
// for a library's ErrorLog.
func StdLogger(l logrus.FieldLogger) *log.Logger { return log.New(DebugWriter{l}, "", 0) }
