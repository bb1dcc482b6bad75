package injector

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestStatusJSONNullTimes(t *testing.T) {
	b, err := json.Marshal(Status{Name: "n", State: StateFresh, IssuedAt: time.Unix(100, 0)})
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{`"expires_at":null`, `"next_refresh":null`, `"issued_at":"1970-01-01T00:01:40Z"`, `"name":"n"`} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %s in %s", want, s)
		}
	}
	if strings.Count(s, `"expires_at"`) != 1 {
		t.Errorf("duplicate keys: %s", s)
	}
}
