package injector

import (
	"encoding/json"
	"time"
)

// MarshalJSON renders a Status for the admin API. Times that are not set —
// a value that never expires, no refresh scheduled — are null rather than
// the zero time.
func (s Status) MarshalJSON() ([]byte, error) {
	type plain Status
	return json.Marshal(struct {
		plain
		IssuedAt    *time.Time `json:"issued_at"`
		ExpiresAt   *time.Time `json:"expires_at"`
		NextRefresh *time.Time `json:"next_refresh"`
	}{plain(s), optTime(s.IssuedAt), optTime(s.ExpiresAt), optTime(s.NextRefresh)})
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
