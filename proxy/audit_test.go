package proxy

import (
	"strconv"
	"testing"
	"time"
)

func TestAppendMillisMatchesAppendFloat(t *testing.T) {
	for _, d := range []time.Duration{0, time.Microsecond, 999 * time.Microsecond, time.Millisecond,
		1234567 * time.Nanosecond, 90 * time.Second, -1500 * time.Microsecond, 1<<62 + 12345} {
		want := strconv.AppendFloat(nil, float64(d.Microseconds())/1000, 'f', 3, 64)
		if got := appendMillis(nil, d); string(got) != string(want) {
			t.Errorf("%v: got %s, want %s", d, got, want)
		}
	}
}
