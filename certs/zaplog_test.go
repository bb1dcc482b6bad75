package certs

import (
	"errors"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"go.uber.org/zap"
)

func TestZapLoggerGoesToLogrus(t *testing.T) {
	log, hook := test.NewNullLogger()
	log.Level = logrus.InfoLevel
	zl := zapLogger(log).Named("maintenance").With(zap.String("cache", "c1"))
	zl.Debug("hidden")
	zl.Info("certificate obtained", zap.String("identifier", "a.test"), zap.Error(errors.New("boom")))
	zl.DPanic("not a panic")

	entries := hook.AllEntries()
	if len(entries) != 2 {
		t.Fatalf("%d entries, want 2 (debug filtered out, dpanic logged)", len(entries))
	}
	e := entries[0]
	if e.Message != "certificate obtained" || e.Level != logrus.InfoLevel || e.Data["identifier"] != "a.test" ||
		e.Data["error"] != "boom" || e.Data["cache"] != "c1" || e.Data["logger"] != "maintenance" ||
		e.Data[fieldComponent] != "certmagic" {
		t.Fatalf("entry = %s %v %v", e.Message, e.Level, e.Data)
	}
	if entries[1].Level != logrus.ErrorLevel {
		t.Fatalf("DPanic logged at %v, want error", entries[1].Level)
	}
	zapLogger(nil).Error("discarded") // a nil logger discards
}
