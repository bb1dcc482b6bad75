package certs

import (
	"io"
	"maps"

	"github.com/sirupsen/logrus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// fieldComponent names certmagic's lines among the proxy's.
const fieldComponent = "component"

// zapLogger returns a zap logger (certmagic logs through zap) whose lines
// go to log as logrus entries, with their fields, so they pass the same
// hooks (the redactor) and formatter as every other line. A nil log
// discards them.
func zapLogger(log logrus.FieldLogger) *zap.Logger {
	if log == nil {
		return zap.NewNop()
	}
	return zap.New(&logrusCore{log: log.WithField(fieldComponent, "certmagic")})
}

// logrusCore is a zapcore.Core writing to a logrus logger.
type logrusCore struct {
	log    logrus.FieldLogger
	fields []zapcore.Field
}

func (c *logrusCore) Enabled(l zapcore.Level) bool {
	lv := logrusLevel(l)
	switch lg := c.log.(type) {
	case *logrus.Entry:
		return lg.Logger.IsLevelEnabled(lv)
	case *logrus.Logger:
		return lg.IsLevelEnabled(lv)
	}
	return true
}

func (c *logrusCore) With(fs []zapcore.Field) zapcore.Core {
	return &logrusCore{log: c.log, fields: append(append([]zapcore.Field(nil), c.fields...), fs...)}
}

func (c *logrusCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// Write logs one entry. zap's DPanic, Panic and Fatal levels are logged as
// errors: a library must not end the process.
func (c *logrusCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fs {
		f.AddTo(enc)
	}
	fields := logrus.Fields(maps.Clone(enc.Fields))
	if e.LoggerName != "" {
		fields["logger"] = e.LoggerName
	}
	c.log.WithFields(fields).Log(logrusLevel(e.Level), e.Message)
	return nil
}

func (c *logrusCore) Sync() error { return nil }

func logrusLevel(l zapcore.Level) logrus.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return logrus.DebugLevel
	case l == zapcore.InfoLevel:
		return logrus.InfoLevel
	case l == zapcore.WarnLevel:
		return logrus.WarnLevel
	}
	return logrus.ErrorLevel
}

// discardLogger is the logrus logger used when none is given.
func discardLogger() logrus.FieldLogger {
	l := logrus.New()
	l.Out = io.Discard
	l.Level = logrus.PanicLevel
	return l
}
