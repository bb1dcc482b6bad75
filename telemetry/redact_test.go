package telemetry

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestRedactorScrubsEveryField(t *testing.T) {
	const secret = "s3cr3t-value-123"
	r := NewRedactor()
	r.Add(secret)
	var out bytes.Buffer
	log, err := NewLogger(&out, "debug", "json", r)
	if err != nil {
		t.Fatal(err)
	}
	log.WithFields(logrus.Fields{
		"plain":  "token=" + secret,
		"err":    errors.New("bad " + secret),
		"bytes":  []byte(secret),
		"struct": struct{ V string }{secret},
	}).Debug("value " + secret)
	log.Info(`escaped "` + secret + `"`)
	if strings.Contains(out.String(), secret) {
		t.Fatalf("secret leaked: %s", strings.ReplaceAll(out.String(), secret, "<LEAK>"))
	}
	if got := strings.Count(out.String(), Mask); got < 6 {
		t.Fatalf("want at least 6 masks, got %d in %s", got, out.String())
	}
}

func TestRedactorRefCountAndOverlap(t *testing.T) {
	r := NewRedactor()
	r.Add("abc", "abcdef")
	r.Add("abc")
	if got := r.String("xx abcdef abc"); got != "xx "+Mask+" "+Mask {
		t.Fatalf("got %q", got)
	}
	r.Remove("abc")
	if got := r.String("abc"); got != Mask {
		t.Fatalf("after one remove: %q", got)
	}
	r.Remove("abc", "abcdef")
	if got := r.String("abc abcdef"); got != "abc abcdef" {
		t.Fatalf("after all removed: %q", got)
	}
}

func TestNewLoggerRejectsBadLevelAndFormat(t *testing.T) {
	r := NewRedactor()
	if _, err := NewLogger(&bytes.Buffer{}, "loud", "json", r); err == nil {
		t.Fatal("bad level accepted")
	}
	if _, err := NewLogger(&bytes.Buffer{}, "info", "xml", r); err == nil {
		t.Fatal("bad format accepted")
	}
}
